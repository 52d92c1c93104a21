"""CPU the pipeline spends per million spans, in process (no sockets): a
loadgen load (fixed seed) ingested, then every trace decided (``drain``),
policies errors / slow / 10 % of the rest, exporting to a sink that only
counts. Reported per phase: ingest, decide (the decision loop with its
counting, batching and metrics) and both.

``--against DIR`` runs the same measurement in another tree (its ``src``,
e.g. the previous commit checked out and built in its own worktree),
alternating the two ``--rounds`` times in the same session, and prints the
ratios (this tree / the other) of the medians and of the minima (the
least disturbed pass): on a noisy shared machine only ratios mean
something.

    .venv/bin/python benchmarks/bench_pipeline_cpu.py [--spans 200000] [--against DIR]
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))

POLICIES = """sampler:
  root_wait: 1h
  idle_timeout: 1h
  decision_wait: 1h
  policies:
    - {name: errors, type: status_code, status_code: {status_codes: [ERROR]}}
    - {name: slow, type: latency, latency: {threshold_ms: 1000}}
    - {name: rest, type: probabilistic, probabilistic: {sampling_percentage: 10}}
"""


def measure(spans: int, repeat: int) -> dict:
    """Run in the tree whose ``src`` is first on sys.path."""
    from traceo_sampler import loadgen
    from traceo_sampler.buffer import IMPLEMENTATION
    from traceo_sampler.config import loads
    from traceo_sampler.pipeline import Pipeline
    from traceo_sampler.telemetry import Metrics

    class Sink:
        name, blocking = "sink", False
        spans = 0

        def submit(self, item):
            Sink.spans += item.spans
            return True

    reqs = loadgen.build_requests(n_spans=spans, spans_per_request_target=512, seed=7)
    cfg = loads(POLICIES)
    best_in = best_dec = float("inf")
    for _ in range(repeat):
        p = Pipeline(cfg, Metrics(), [Sink()], clock=lambda: 0.0)
        t0 = time.process_time()
        for r in reqs:
            p.ingest(r)
        t1 = time.process_time()
        p.drain()
        t2 = time.process_time()
        best_in, best_dec = min(best_in, t1 - t0), min(best_dec, t2 - t1)
    per = 1e6 / reqs.n_spans
    return {"implementation": IMPLEMENTATION, "spans": reqs.n_spans, "traces": len(reqs.traces),
            "ingest_cpu_s_per_million_spans": round(best_in * per, 4),
            "decide_cpu_s_per_million_spans": round(best_dec * per, 4),
            "total_cpu_s_per_million_spans": round((best_in + best_dec) * per, 4)}


def _run_in(src: str, spans: int, repeat: int) -> dict:
    env = dict(os.environ, PYTHONPATH=src)
    out = subprocess.run([sys.executable, __file__, "--spans", str(spans), "--repeat", str(repeat),
                          "--_child"], env=env, capture_output=True, text=True, check=True)
    return json.loads(out.stdout)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--spans", type=int, default=200_000)
    ap.add_argument("--repeat", type=int, default=3, help="best of N passes per measurement")
    ap.add_argument("--rounds", type=int, default=3, help="alternations with --against")
    ap.add_argument("--against", metavar="DIR", help="another tree to compare with")
    ap.add_argument("--_child", action="store_true", help=argparse.SUPPRESS)
    a = ap.parse_args()
    if a._child:
        print(json.dumps(measure(a.spans, a.repeat)))
        return
    here = os.path.join(os.path.dirname(HERE), "src")
    if not a.against:
        print(json.dumps(_run_in(here, a.spans, a.repeat), indent=1))
        return
    other = os.path.join(os.path.abspath(a.against), "src")
    runs: dict[str, list[dict]] = {"this": [], "other": []}
    for _ in range(a.rounds):
        runs["this"].append(_run_in(here, a.spans, a.repeat))
        runs["other"].append(_run_in(other, a.spans, a.repeat))
    out: dict = {"this": here, "other": other, "rounds": a.rounds}
    for key in ("ingest_cpu_s_per_million_spans", "decide_cpu_s_per_million_spans",
                "total_cpu_s_per_million_spans"):
        mine = [r[key] for r in runs["this"]]
        theirs = [r[key] for r in runs["other"]]
        med_a, med_b = statistics.median(mine), statistics.median(theirs)
        out[key] = {"this_median": med_a, "other_median": med_b,
                    "ratio_of_medians": round(med_a / med_b, 3),
                    "this_min": min(mine), "other_min": min(theirs),
                    "ratio_of_minima": round(min(mine) / min(theirs), 3)}
    out["implementation"] = runs["this"][0]["implementation"]
    print(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
