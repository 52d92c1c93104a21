"""CPU of service.workers' hand-off, in one process: what N workers spend on
the ingest of a load against what one worker spends, for N = 1, 2, 4, 8, 16.

One worker: ``Pipeline.ingest`` of every request. N workers: the receiving
worker's one walk (``Pipeline.ingest`` with ``shards``: its own spans
buffered, one request cut out per other shard), then each owner's ingest of
what it was handed, ``--per-tick`` requests' parts to one owner joined in one
frame as ``workers.Peer`` sends them. Requests are spread over the receiving
workers round-robin (as the kernel spreads connections). The socket itself
is not in it (the full-path benchmark, benchmarks/run.py --workers 1,2, has
everything); this is the part that grows with N, for the many-core estimate.

    .venv/bin/python benchmarks/bench_workers.py [--spans 300000] [--reps 3]

Prints one JSON document: CPU µs per span for each N (best of ``--reps``),
its ratio to one worker, and the extra µs per span handed over.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "src"))

from traceo_sampler import loadgen  # noqa: E402
from traceo_sampler.config import loads  # noqa: E402
from traceo_sampler.pipeline import Pipeline  # noqa: E402
from traceo_sampler.telemetry import Metrics  # noqa: E402

POLICIES = """
  policies:
    - {name: errors, type: status_code, status_code: {status_codes: [ERROR]}}
    - {name: slow, type: latency, latency: {threshold_ms: 1000}}
    - {name: rest, type: probabilistic, probabilistic: {sampling_percentage: 10}}
"""


class _Null:
    blocking = False

    def submit(self, item) -> bool:
        return True


def _pipelines(n: int) -> list:
    cfg = loads("sampler:\n  decision_wait: 5m\n  root_wait: 5m\n  idle_timeout: 5m\n" + POLICIES)
    return [Pipeline(cfg, Metrics(), [_Null()], clock=time.monotonic) for _ in range(n)]


def run(reqs, n: int, per_tick: int) -> tuple[float, int]:
    """CPU seconds of the ingest of every request by n workers, and the
    spans handed over."""
    ps = _pipelines(n)
    handed = 0
    t0 = time.process_time()
    if n == 1:
        for data in reqs:
            ps[0].ingest(data)
        return time.process_time() - t0, 0
    out: list[list[list[bytes]]] = [[[] for _ in range(n)] for _ in range(n)]   # [from][to]
    for k, data in enumerate(reqs):
        i = k % n
        res = ps[i].ingest(data, shards=(n, i))
        for j, part in enumerate(res.parts):
            if part:
                out[i][j].append(part)
                handed += res.counts[j]
        if k % per_tick == per_tick - 1 or k == len(reqs) - 1:
            for src in range(n):
                for j in range(n):
                    if out[src][j]:
                        ps[j].ingest(b"".join(out[src][j]))
                        out[src][j] = []
    return time.process_time() - t0, handed


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--spans", type=int, default=300_000)
    ap.add_argument("--spans-per-request", type=int, default=512)
    ap.add_argument("--per-tick", type=int, default=8,
                    help="requests whose parts for one owner go in one frame (default %(default)s)")
    ap.add_argument("--workers", default="1,2,4,8,16")
    ap.add_argument("--reps", type=int, default=3)
    args = ap.parse_args(argv)
    reqs = loadgen.build_requests(n_spans=args.spans, spans_per_request_target=args.spans_per_request,
                                  seed=1)
    spans = reqs.n_spans
    rows: dict = {}
    for rep in range(args.reps):
        for n in (int(x) for x in args.workers.split(",")):
            cpu, handed = run(list(reqs), n, args.per_tick)
            row = rows.setdefault(str(n), {"cpu_us_per_span_runs": [], "spans_handed_over": handed})
            row["cpu_us_per_span_runs"].append(round(cpu / spans * 1e6, 3))
    one = min(rows["1"]["cpu_us_per_span_runs"]) if "1" in rows else None
    for n, row in rows.items():
        best = min(row["cpu_us_per_span_runs"])
        row["cpu_us_per_span"] = best
        if one:
            row["over_one_worker"] = round(best / one, 3)
            if row["spans_handed_over"]:
                row["extra_us_per_span_handed_over"] = round(
                    (best - one) * spans / row["spans_handed_over"], 3)
    print(json.dumps({"benchmark": "workers-hand-off", "spans": spans,
                      "spans_per_request": args.spans_per_request, "per_tick": args.per_tick,
                      "cpu_s_source": "time.process_time, one process", "by_workers": rows},
                     indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
