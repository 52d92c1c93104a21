"""What TLS and SASL cost the consumer (receivers.kafka's aiokafka consumer,
built with its own options: kafka_security.aiokafka_options, the fetch
sizes of receivers/kafka.py), same broker, same run, same messages.

One broker with the test listeners (tests/support/kafka.py SecureListeners);
``--messages`` messages of ``--size`` bytes are produced once to a
4-partition topic; then each way of connecting reads them all from the
start with a fresh group, rounds alternating so every way sees the same
machine: PLAINTEXT, SSL (client certificate), SASL_PLAINTEXT and SASL_SSL
(SCRAM-SHA-512), on uvloop as serve runs. Reported per way: MB/s and the consumer process's CPU
seconds per GB (the best round of each), and the ratio to PLAINTEXT.

    PYTHONPATH=src python benchmarks/bench_kafka_tls.py [--messages N] [--size B] [--out F.json]
"""
from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import tempfile
import time
import uuid

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from tests.support.kafka import KafkaBroker, SecureListeners  # noqa: E402

PARTS = 4
WAYS = ("PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL")


def receiver_cfg(b: KafkaBroker, way: str, topic: str):
    from traceo_sampler.config import KafkaAuth, KafkaReceiver, KafkaSasl, Tls
    sec = b.secure
    assert sec is not None
    tls = auth = None
    if "SSL" in way:
        tls = Tls(ca_file=sec.ca_file,
                  **({"cert_file": sec.cert_file, "key_file": sec.key_file}
                     if way == "SSL" else {}))
    if way.startswith("SASL"):
        auth = KafkaAuth(sasl=KafkaSasl(mechanism="SCRAM-SHA-512", username="traceo",
                                        password="traceo-secret"))
    boot = b.bootstrap if way == "PLAINTEXT" else b.bootstrap_of(way)
    return KafkaReceiver(brokers=[boot], topic=topic, tls=tls, auth=auth)


async def consume(cfg, n: int) -> tuple[float, float, int]:
    """(wall s, CPU s, bytes) to read n messages from the start."""
    from aiokafka import AIOKafkaConsumer

    from traceo_sampler.kafka_security import aiokafka_options
    c = AIOKafkaConsumer(cfg.topic, bootstrap_servers=",".join(cfg.brokers),
                         group_id=f"bench-{uuid.uuid4().hex[:8]}", enable_auto_commit=False,
                         auto_offset_reset="earliest", max_partition_fetch_bytes=4 << 20,
                         fetch_max_bytes=16 << 20, **aiokafka_options(cfg))
    await c.start()
    try:
        got = nbytes = 0
        t0, c0 = time.perf_counter(), time.process_time()
        while got < n:
            batches = await c.getmany(timeout_ms=500, max_records=2000)
            for msgs in batches.values():
                got += len(msgs)
                nbytes += sum(len(m.value) for m in msgs)
        return time.perf_counter() - t0, time.process_time() - c0, nbytes
    finally:
        await c.stop()


def produce(bootstrap: str, topic: str, n: int, size: int) -> None:
    from confluent_kafka import Producer
    p = Producer({"bootstrap.servers": bootstrap, "linger.ms": 5,
                  "message.max.bytes": 16 << 20})
    value = os.urandom(size)
    for i in range(n):
        while True:
            try:
                p.produce(topic, value, partition=i % PARTS)
                break
            except BufferError:
                p.poll(0.05)
    assert p.flush(120) == 0


def run(coro):
    try:
        import uvloop
    except ImportError:
        return asyncio.run(coro)
    return uvloop.run(coro)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--messages", type=int, default=4000)
    ap.add_argument("--size", type=int, default=64 * 1024)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--out")
    a = ap.parse_args()
    sec = SecureListeners(tempfile.mkdtemp(prefix="bench-kafka-tls-"))
    # the full JIT: C1 alone (the tests' fast start) makes the broker's own TLS the limit
    with KafkaBroker(num_partitions=PARTS, secure=sec, heap="1g", fast_start=False) as b:
        topic = f"bench-tls-{uuid.uuid4().hex[:8]}"
        b.create_topic(topic, PARTS)
        produce(b.bootstrap, topic, a.messages, a.size)
        rounds: dict[str, list[dict]] = {w: [] for w in WAYS}
        for r in range(a.rounds):
            for w in (WAYS if r % 2 == 0 else tuple(reversed(WAYS))):
                # uvloop, as serve runs (its TLS is not asyncio's sslproto)
                wall, cpu, nbytes = run(consume(receiver_cfg(b, w, topic), a.messages))
                rounds[w].append({"wall_s": round(wall, 3), "cpu_s": round(cpu, 3),
                                  "mb_per_s": round(nbytes / wall / 1e6, 1),
                                  "cpu_s_per_gb": round(cpu / (nbytes / 1e9), 2)})
                print(w, rounds[w][-1], flush=True)
    best = {w: min(rs, key=lambda x: x["cpu_s_per_gb"]) for w, rs in rounds.items()}
    base = best["PLAINTEXT"]
    out = {"messages": a.messages, "size": a.size, "rounds": rounds, "best": best,
           "cpu_ratio_to_plaintext": {w: round(v["cpu_s_per_gb"] / base["cpu_s_per_gb"], 2)
                                      for w, v in best.items()},
           "throughput_ratio_to_plaintext": {w: round(v["mb_per_s"] / base["mb_per_s"], 2)
                                             for w, v in best.items()},
           "load_average": os.getloadavg()}
    print(json.dumps(out, indent=1))
    if a.out:
        with open(a.out, "w") as fh:
            json.dump(out, fh, indent=1)


if __name__ == "__main__":
    main()
