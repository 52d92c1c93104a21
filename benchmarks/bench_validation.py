"""What the span validation of the request walk costs (issue 9, item 2):
CPU seconds per million spans of the fused ``TraceBuffer.ingest`` (the
hot path's walk + insert) in this tree against another build of the
package (the previous commit, built in its own tree), both run in the same
session, alternating, best of ``--repeat`` each. Prints one JSON document:

    git archive <previous-commit> | tar -x -C /tmp/base
    (cd /tmp/base && ../path/.venv/bin/python setup.py build_ext --inplace)
    .venv/bin/python benchmarks/bench_validation.py --baseline /tmp/base/src

Load: ``loadgen.TraceGenerator(1).build_requests(spans_per_request_target=512,
n_spans=N)`` (the benchmark's load, with attributes, events and links as
loadgen makes them), attr_keys as the default policies reference them.
"""
from __future__ import annotations

import argparse
import json
import os
import pickle
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
SRC = os.path.join(HERE, "..", "src")
ATTR_KEYS = frozenset({"http.route", "http.response.status_code", "error.type"})


def child(load_path: str) -> None:
    """In a subprocess whose sys.path starts with one build: ingest the
    load into fresh buffers, print CPU seconds of the best run."""
    from traceo_sampler import accel
    from traceo_sampler._buffer import TraceBuffer
    assert "buffer" not in accel.LOAD_ERRORS
    with open(load_path, "rb") as fh:
        reqs = pickle.load(fh)
    best = None
    for _ in range(int(os.environ.get("BENCH_INNER", "3"))):
        buf = TraceBuffer(decision_wait=1e9, root_wait=1e9, idle_timeout=1e9,
                          max_spans_per_trace=1 << 30, memory_limit=1 << 42,
                          cache_sampled=0, cache_not_sampled=0)
        t0 = time.process_time()
        spans = 0
        for r in reqs:
            spans += buf.ingest(r, ATTR_KEYS, 0.0).accepted
        dt = time.process_time() - t0
        best = dt if best is None else min(best, dt)
    print(json.dumps({"cpu_s": best, "spans": spans}))


def run(src: str, load_path: str) -> dict:
    env = dict(os.environ, PYTHONPATH=src)
    out = subprocess.run([sys.executable, __file__, "--child", load_path], env=env,
                         capture_output=True, text=True, check=True)
    return json.loads(out.stdout)


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--baseline", help="src/ of the build to compare with (required)")
    ap.add_argument("--spans", type=int, default=300_000)
    ap.add_argument("--repeat", type=int, default=5, help="alternating runs of each")
    ap.add_argument("--child", default=None, help=argparse.SUPPRESS)
    a = ap.parse_args()
    if a.child:
        child(a.child)
        return 0
    if not a.baseline:
        ap.error("--baseline is required")
    sys.path.insert(0, SRC)
    from traceo_sampler import loadgen
    reqs = loadgen.TraceGenerator(1).build_requests(spans_per_request_target=512,
                                                    n_spans=a.spans)
    reqs = [r if isinstance(r, bytes) else r[0] for r in reqs]
    with tempfile.NamedTemporaryFile(suffix=".pickle", delete=False) as fh:
        pickle.dump(reqs, fh)
    try:
        new, old = [], []
        for _ in range(a.repeat):
            new.append(run(os.path.abspath(SRC), fh.name))
            old.append(run(os.path.abspath(a.baseline), fh.name))
    finally:
        os.unlink(fh.name)
    best_new = min(r["cpu_s"] for r in new)
    best_old = min(r["cpu_s"] for r in old)
    spans = new[0]["spans"]
    assert spans == old[0]["spans"], (spans, old[0]["spans"])
    print(json.dumps({
        "spans": spans,
        "bytes": sum(len(r) for r in reqs),
        "ingest_cpu_s_per_million_spans": {
            "with_validation": round(best_new / spans * 1e6, 4),
            "before": round(best_old / spans * 1e6, 4),
        },
        "ratio": round(best_new / best_old, 4),
        "runs": {"with_validation": [r["cpu_s"] for r in new],
                 "before": [r["cpu_s"] for r in old]},
    }, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
