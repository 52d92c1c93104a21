"""Producer clients side by side: aiokafka (the one the Kafka path uses) and
confluent-kafka (librdkafka), same broker, same run, same messages; and
aiokafka without idempotence (what idempotent producing costs).

Each client produces ``--messages`` messages to a 4-partition topic the way
exporters.kafka does: ``--inflight`` concurrent requests, each one message
per partition, a request done once the broker acked all of it (acks=all,
idempotent, linger 5 ms). Two sizes: the router's and the sampled
exporter's batched form (16 KiB per partition message) and the
``partition_traces_by_id`` form (one small message per trace). Reported:
messages/s and the client process's CPU per message (process time, which
counts librdkafka's own threads), and the ratio confluent/aiokafka, rounds
alternating so both see the same machine.

    PYTHONPATH=src python benchmarks/bench_kafka_clients.py [--messages N] [--out F.json]

confluent-kafka is not a dependency: with it missing, only aiokafka is
measured (pip install confluent-kafka, or put a wheel's target dir on
PYTHONPATH).
"""
from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import threading
import time
import uuid

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from tests.support.kafka import KafkaBroker  # noqa: E402

PARTS = 4


async def run_aiokafka(bootstrap: str, topic: str, n: int, size: int, inflight: int,
                       idempotent: bool = True) -> tuple[float, float]:
    from aiokafka import AIOKafkaProducer
    p = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all", enable_idempotence=idempotent,
                         linger_ms=5, max_request_size=16 << 20, max_batch_size=1 << 20)
    await p.start()
    value = os.urandom(size)
    left = [n // PARTS]

    async def worker():
        while left[0] > 0:
            left[0] -= 1
            futs = [await p.send(topic, value=value, partition=i) for i in range(PARTS)]
            await asyncio.gather(*futs)
    try:
        await asyncio.gather(*[await p.send(topic, value=value, partition=i)
                               for i in range(PARTS)])          # metadata, connections
        t = _start()
        await asyncio.gather(*(worker() for _ in range(inflight)))
        return _stop(t)
    finally:
        await p.stop()


async def run_aiokafka_plain(bootstrap: str, topic: str, n: int, size: int,
                             inflight: int) -> tuple[float, float]:
    return await run_aiokafka(bootstrap, topic, n, size, inflight, idempotent=False)


async def run_confluent(bootstrap: str, topic: str, n: int, size: int,
                        inflight: int) -> tuple[float, float]:
    from confluent_kafka import KafkaException, Producer
    p = Producer({"bootstrap.servers": bootstrap, "acks": "all", "enable.idempotence": True,
                  "linger.ms": 5, "message.max.bytes": 16 << 20})
    loop = asyncio.get_running_loop()
    stop = threading.Event()

    def poller():
        # delivery reports run in poll(): one thread hands them to the loop
        while not stop.is_set():
            p.poll(0.05)
    t = threading.Thread(target=poller, daemon=True)
    t.start()
    value = os.urandom(size)
    left = [n // PARTS]

    def on_delivery(fut, err, _msg):
        if err is not None:
            loop.call_soon_threadsafe(fut.set_exception, KafkaException(err))
        else:
            loop.call_soon_threadsafe(fut.set_result, None)

    async def worker():
        while left[0] > 0:
            left[0] -= 1
            futs = []
            for i in range(PARTS):
                fut = loop.create_future()
                p.produce(topic, value=value, partition=i,
                          on_delivery=lambda err, msg, fut=fut: on_delivery(fut, err, msg))
                futs.append(fut)
            await asyncio.gather(*futs)
    try:
        warm = []
        for i in range(PARTS):
            fut = loop.create_future()
            p.produce(topic, value=value, partition=i,
                      on_delivery=lambda err, msg, fut=fut: on_delivery(fut, err, msg))
            warm.append(fut)
        await asyncio.gather(*warm)                             # metadata, connections
        t0 = _start()
        await asyncio.gather(*(worker() for _ in range(inflight)))
        return _stop(t0)
    finally:
        stop.set()
        t.join()
        p.flush(30)


def _start() -> tuple[float, float]:
    return time.perf_counter(), time.process_time()


def _stop(t: tuple[float, float]) -> tuple[float, float]:
    return time.perf_counter() - t[0], time.process_time() - t[1]


def measure(fn, bootstrap: str, topic: str, n: int, size: int, inflight: int) -> dict:
    import uvloop
    wall, cpu = uvloop.run(fn(bootstrap, topic, n, size, inflight))
    return {"messages": n, "wall_s": round(wall, 3), "cpu_s": round(cpu, 3),
            "messages_per_s": round(n / wall), "cpu_us_per_message": round(cpu / n * 1e6, 2),
            "mb_per_s": round(n * size / wall / 1e6, 1)}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--messages", type=int, default=40000)
    ap.add_argument("--inflight", type=int, nargs="+", default=[8, 64])
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--out", default="")
    args = ap.parse_args()
    clients = {"aiokafka": run_aiokafka, "aiokafka, not idempotent": run_aiokafka_plain}
    try:
        import confluent_kafka
        clients["confluent-kafka"] = run_confluent
        versions = {"confluent-kafka": confluent_kafka.__version__,
                    "librdkafka": confluent_kafka.libversion()[0]}
    except ImportError:
        versions = {}
    import aiokafka
    versions["aiokafka"] = aiokafka.__version__
    # a throughput broker: the full JIT, not the tests' fast start
    os.environ.setdefault("TRACEO_KAFKA_FAST_START", "0")
    forms = {"batched (16 KiB per partition message)": 16 << 10,
             "one message per trace (400 B)": 400}
    out: dict = {"clients": versions, "partitions": PARTS,
                 "acks": "all", "idempotent": True, "cpus": os.cpu_count(), "forms": {}}
    with KafkaBroker(num_partitions=PARTS, heap="1g") as broker:
        for form, size in forms.items():
            for inflight in args.inflight:
                rows: dict[str, list] = {c: [] for c in clients}
                for r in range(args.rounds):
                    order = list(clients) if r % 2 == 0 else list(reversed(clients))
                    for name in order:
                        topic = f"bench-{uuid.uuid4().hex[:8]}"
                        broker.create_topic(topic, PARTS)
                        n = args.messages if size < 4096 else args.messages // 4
                        rows[name].append(measure(clients[name], broker.bootstrap, topic, n,
                                                  size, inflight))
                        print(form, inflight, name, rows[name][-1], file=sys.stderr, flush=True)
                res: dict = {"message_bytes": size, "inflight_requests": inflight, "runs": rows}

                def best(name, key, fn):
                    return fn(x[key] for x in rows[name])
                for other in rows:
                    if other == "aiokafka":
                        continue
                    res[f"ratio {other} / aiokafka (best of the rounds)"] = {
                        "messages_per_s": round(best(other, "messages_per_s", max)
                                                / best("aiokafka", "messages_per_s", max), 2),
                        "cpu_per_message": round(
                            best(other, "cpu_us_per_message", min)
                            / best("aiokafka", "cpu_us_per_message", min), 2)}
                out["forms"][f"{form}, {inflight} in flight"] = res
    text = json.dumps(out, indent=2)
    print(text)
    if args.out:
        with open(args.out, "w") as fh:
            fh.write(text + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
