"""What the write-ahead log costs on the hot path (issue 12), in process, no
network: CPU seconds per million spans of ``Pipeline.ingest`` alone against
the same through ``wal.WalFront`` with ``fsync: never`` (the page-cache
write path: the splitter's walk for the trace IDs, the CRC, one ``writev``,
the holds), alternating, best of ``--repeat`` each; and the parts of the
difference measured alone. Timers far away, so nothing is decided: this is
the receive path. Prints one JSON document.

    PYTHONPATH=src .venv/bin/python benchmarks/bench_wal.py [--spans N] [--repeat R]

Load: ``loadgen.TraceGenerator(1).build_requests(spans_per_request_target=512)``.
"""
from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
import zlib

from traceo_sampler import loadgen
from traceo_sampler.config import loads
from traceo_sampler.pipeline import Pipeline
from traceo_sampler.shard import KEY_RAW, split
from traceo_sampler.telemetry import Metrics
from traceo_sampler.wal import WalFront, WalTracker, WriteAheadLog

CFG = """sampler:
  decision_wait: 1h
  root_wait: 1h
  idle_timeout: 1h
  memory_limit_mib: 8192
  policies:
    - {name: errors, type: status_code, status_code: {status_codes: [ERROR]}}
    - {name: slow, type: latency, latency: {threshold_ms: 1000}}
    - {name: rest, type: probabilistic, probabilistic: {sampling_percentage: 10}}
"""


class _Sink:
    name = "sink"
    blocking = False

    def submit(self, item):
        return True


def _once(reqs, wal_dir: str | None) -> float:
    text = CFG
    if wal_dir is not None:
        text += f"  wal: {{dir: {wal_dir}, fsync: never, max_bytes: {1 << 40}}}\n"
    cfg = loads(text)
    metrics = Metrics()
    if wal_dir is None:
        p = Pipeline(cfg, metrics, [_Sink()])
        front = p
    else:
        wal = WriteAheadLog(cfg.sampler.wal, metrics, wal_dir)
        tracker = WalTracker(wal, None)
        p = Pipeline(cfg, metrics, [_Sink()], tracker=tracker)
        tracker.cached = p.buffer.cached
        wal.open()
        front = WalFront(p, wal, tracker)
    t0 = time.process_time()
    for r in reqs:
        front.ingest(r)
    dt = time.process_time() - t0
    assert p.buffer.nspans > 0
    return dt


def _parts(reqs, wal_dir: str) -> dict:
    attr = frozenset({"http.route", "http.response.status_code", "error.type"})
    t0 = time.process_time()
    for r in reqs:
        split(r, 1, attr, KEY_RAW, True)
    walk = time.process_time() - t0
    t0 = time.process_time()
    for r in reqs:
        zlib.crc32(r)
    crc = time.process_time() - t0
    fd = os.open(os.path.join(wal_dir, "w.bin"), os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    t0 = time.process_time()
    for r in reqs:
        os.writev(fd, [b"x" * 17, r])
    write = time.process_time() - t0
    os.close(fd)
    return {"split_walk_s": walk, "crc32_s": crc, "write_s": write}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--spans", type=int, default=300_000)
    ap.add_argument("--repeat", type=int, default=5)
    args = ap.parse_args()
    enc = loadgen.TraceGenerator(1).build_requests(n_spans=args.spans,
                                                   spans_per_request_target=512)
    reqs = list(enc)
    n = len(reqs)
    spans = enc.n_spans
    off: list[float] = []
    on: list[float] = []
    with tempfile.TemporaryDirectory(prefix="bench-wal-") as tmp:
        for i in range(args.repeat):
            off.append(_once(reqs, None))
            d = os.path.join(tmp, f"r{i}")
            on.append(_once(reqs, d))
        parts = {k: min(_parts(reqs, tmp)[k] for _ in range(3)) for k in ("split_walk_s", "crc32_s", "write_s")}
        nbytes = sum(len(r) for r in reqs)
    per_m = 1e6 / spans
    out = {
        "benchmark": "wal hot path (fsync: never, in process)",
        "spans": spans, "requests": n, "bytes": nbytes,
        "load_avg": [round(x, 2) for x in os.getloadavg()],
        "cpu_s_per_million_spans": {"ingest_without_wal": round(min(off) * per_m, 3),
                                    "ingest_with_wal": round(min(on) * per_m, 3)},
        "wal_cost_us_per_span": round((min(on) - min(off)) / spans * 1e6, 3),
        "ratio_with_over_without": round(min(on) / min(off), 3),
        "parts_cpu_s_per_million_spans": {k: round(v * per_m, 3) for k, v in parts.items()},
        "runs": {"without": [round(x, 3) for x in off], "with": [round(x, 3) for x in on]},
    }
    print(json.dumps(out, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
