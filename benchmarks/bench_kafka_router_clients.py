"""The router with each producer client (exporters.kafka.client), same
run, same pre-encoded load (loadgen traffic, 512 spans per request, 8 in
flight), rounds alternating: spans/s and the router's CPU seconds per
million spans, and the ratio confluent-kafka / aiokafka.

    PYTHONPATH=src python benchmarks/bench_kafka_router_clients.py [--spans N] [--rounds 2]
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import uuid
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path[:0] = [str(HERE)]

from bench_kafka import KafkaBroker, Proc, _stage, bench, loadgen  # noqa: E402

CLIENTS = ("aiokafka", "confluent-kafka")


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--spans", type=int, default=200_000)
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--concurrency", type=int, default=8)
    ap.add_argument("--out", default=None)
    args = ap.parse_args()
    reqs = loadgen.build_requests(n_spans=args.spans, spans_per_request_target=512, seed=5)
    n = reqs.n_spans
    workdir = Path(f"/tmp/traceo-bench-kclients-{uuid.uuid4().hex[:8]}")
    workdir.mkdir()
    out: dict = {"benchmark": "kafka router, by producer client",
                 "machine": {"cpus": os.cpu_count(), "load_avg_at_start": os.getloadavg()},
                 "params": {**vars(args), "spans_per_request": 512, "spans_sent": n},
                 "runs": {c: [] for c in CLIENTS}}
    try:
        with KafkaBroker(num_partitions=4) as broker:
            for r in range(args.rounds):
                for client in (CLIENTS if r % 2 == 0 else CLIENTS[::-1]):
                    topic = f"bench-{uuid.uuid4().hex[:8]}"
                    broker.create_topic(topic, 4)
                    port = bench.free_port()
                    router = Proc(workdir, f"router-{client}-{r}", {
                        "receivers": {"otlp": {"grpc": {"endpoint": f"127.0.0.1:{port}"}}},
                        "exporters": {"kafka": {"brokers": [broker.bootstrap], "topic": topic,
                                                "client": client}}})
                    router.wait_ready()
                    c0 = router.cpu()
                    res = bench.send(f"127.0.0.1:{port}", reqs.retimed(), args.concurrency)
                    if res["requests_failed"]:
                        raise RuntimeError(f"send failed: {res['errors']}")
                    row = {**_stage(n, res["elapsed_s"], router.cpu() - c0),
                           "client_cpu_s": res["client_cpu_s"]}
                    out["runs"][client].append(row)
                    print(client, row, file=sys.stderr, flush=True)
                    router.stop()
    finally:
        bench._kill_children()
    runs = out["runs"]
    out["ratio_confluent_over_aiokafka"] = {
        "spans_per_s (best)": round(max(x["spans_per_s"] for x in runs["confluent-kafka"])
                                    / max(x["spans_per_s"] for x in runs["aiokafka"]), 2),
        "cpu_s_per_million_spans (best)": round(
            min(x["cpu_s_per_million_spans"] for x in runs["confluent-kafka"])
            / min(x["cpu_s_per_million_spans"] for x in runs["aiokafka"]), 2)}
    out["machine"]["load_avg_at_end"] = os.getloadavg()
    text = json.dumps(out, indent=1)
    print(text)
    if args.out:
        Path(args.out).write_text(text + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
