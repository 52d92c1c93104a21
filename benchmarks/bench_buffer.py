"""Micro-benchmark of the in-process hot path: scan + TraceBuffer.add versus
the fused TraceBuffer.ingest, and the decision side (due() + finish()).

Load: ``loadgen.TraceGenerator(1).build_requests(spans_per_request_target=512,
n_spans=N)`` (collector-style batches). Every figure is the best of
``--repeat`` runs over the whole load into a fresh buffer whose timers and
memory limit never fire during the insert phase. Prints one JSON document:

    .venv/bin/python benchmarks/bench_buffer.py [--spans 200000] [--repeat 3]
        [--pure-spans 50000]

``compiled`` / ``pure``: spans/s of ``scan+add`` and ``ingest``, their
ratio, and traces/s of ``due`` (all traces due at once), ``finish`` (10 % kept,
90 % dropped) and ``consistency`` when the buffer has it.

``steady``: the load replayed as a running sampler sees it -- default timers
(root_wait 2 s, idle 5 s, decision_wait 30 s), a simulated clock advancing
10 ms per request (about 50 000 spans/s), after every request ``due(now)``
and, for each trace it returns, ``consistency`` then ``finish`` (at the end
the clock jumps a minute: all the rest is decided) -- with the
time split per step (microseconds per span / per decided trace) and the
spans/s of the whole buffer path.
"""
from __future__ import annotations

import argparse
import gc
import importlib
import json
import os
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "src"))

from traceo_sampler import loadgen  # noqa: E402
from traceo_sampler.buffer import TraceBufferPy  # noqa: E402
from traceo_sampler.scan import scan_py  # noqa: E402

ATTR_KEYS = frozenset({"http.route", "http.response.status_code", "error.type"})


def _buffer(cls):
    return cls(decision_wait=1e6, root_wait=1e5, idle_timeout=1e5, max_spans_per_trace=10_000,
               memory_limit=1 << 40, cache_sampled=100_000, cache_not_sampled=1_000_000)


def _timed(fn):
    gc.collect()
    gc.disable()
    try:
        t0 = time.perf_counter()
        out = fn()
        return time.perf_counter() - t0, out
    finally:
        gc.enable()


def _insert_scan_add(cls, scan, reqs):
    buf = _buffer(cls)

    def run():
        for i, r in enumerate(reqs):
            buf.add(scan(r, ATTR_KEYS), r, i * 1e-3)
        return buf
    return _timed(run)


def _insert_ingest(cls, reqs):
    buf = _buffer(cls)

    def run():
        for i, r in enumerate(reqs):
            buf.ingest(r, ATTR_KEYS, i * 1e-3)
        return buf
    return _timed(run)


def _decide(buf):
    """(due seconds, finish seconds, consistency seconds or None, traces)."""
    dt_due, due = _timed(lambda: buf.due(1e9))
    has_cons = hasattr(buf, "consistency")

    def cons():
        for t, _ in due:
            buf.consistency(t, 0)
    dt_cons = _timed(cons)[0] if has_cons else None

    def fin():
        for t, _ in due:
            keep = t.randomness % 10 == 0
            buf.finish(t, keep, "p" if keep else "", 0 if keep else 1 << 56)
    dt_fin = _timed(fin)[0]
    return dt_due, dt_fin, dt_cons, len(due)


def _steady(cls, scan, reqs, fused):
    buf = cls(decision_wait=30.0, root_wait=2.0, idle_timeout=5.0, max_spans_per_trace=10_000,
              memory_limit=1 << 40, cache_sampled=100_000, cache_not_sampled=1_000_000)
    has_cons = hasattr(buf, "consistency")
    t_in = t_due = t_cons = t_fin = 0.0
    n_dec = 0
    clock = time.perf_counter
    gc.collect()
    for i, r in enumerate(list(reqs) + [None]):
        now = i * 0.01
        t0 = clock()
        if r is None:       # the end: everything left becomes due
            now += 60.0
        elif fused:
            buf.ingest(r, ATTR_KEYS, now)
        else:
            buf.add(scan(r, ATTR_KEYS), r, now)
        t1 = clock()
        due = buf.due(now)
        t2 = clock()
        if has_cons:
            for t, _ in due:
                buf.consistency(t, 0)
        t3 = clock()
        for t, _ in due:
            keep = t.randomness % 10 == 0
            buf.finish(t, keep, "p" if keep else "", 0 if keep else 1 << 56)
        t4 = clock()
        t_in += t1 - t0
        t_due += t2 - t1
        t_cons += t3 - t2
        t_fin += t4 - t3
        n_dec += len(due)
    n = sum(reqs.span_counts)
    out = {"mode": "ingest" if fused else "scan+add", "decided_traces": n_dec,
           "insert_us_per_span": round(t_in / n * 1e6, 3),
           "due_us_per_trace": round(t_due / n_dec * 1e6, 3),
           "finish_us_per_trace": round(t_fin / n_dec * 1e6, 3)}
    if has_cons:
        out["consistency_us_per_trace"] = round(t_cons / n_dec * 1e6, 3)
    out["path_spans_per_s"] = round(n / (t_in + t_due + t_cons + t_fin))
    return out


def bench(cls, scan, reqs, repeat):
    n_spans = sum(reqs.span_counts) if hasattr(reqs, "span_counts") else None
    out = {"requests": len(reqs), "spans": n_spans}
    best_add = min(_insert_scan_add(cls, scan, reqs)[0] for _ in range(repeat))
    out["scan_add_spans_per_s"] = round(n_spans / best_add)
    if hasattr(cls, "ingest"):
        runs = [_insert_ingest(cls, reqs) for _ in range(repeat)]
        best_ing = min(dt for dt, _ in runs)
        out["ingest_spans_per_s"] = round(n_spans / best_ing)
        out["ingest_over_scan_add"] = round(best_add / best_ing, 2)
        buf = runs[-1][1]
    else:
        buf = _insert_scan_add(cls, scan, reqs)[1]
    out["buffer_traces"] = buf.ntraces
    out["buffer_bytes"] = buf.nbytes
    best = None
    for i in range(repeat):
        if i:   # a fresh buffer for each decision run
            buf = (_insert_ingest(cls, reqs) if hasattr(cls, "ingest")
                   else _insert_scan_add(cls, scan, reqs))[1]
        r = _decide(buf)
        best = r if best is None else tuple(
            min(a, b) if a is not None else None for a, b in zip(r[:3], best[:3])) + (r[3],)
    dt_due, dt_fin, dt_cons, n_tr = best
    out["traces"] = n_tr
    out["due_traces_per_s"] = round(n_tr / dt_due)
    out["finish_traces_per_s"] = round(n_tr / dt_fin)
    out["due_finish_traces_per_s"] = round(n_tr / (dt_due + dt_fin))
    if dt_cons is not None:
        out["consistency_traces_per_s"] = round(n_tr / dt_cons)
    modes = [False, True] if hasattr(cls, "ingest") else [False]
    out["steady"] = [
        min((_steady(cls, scan, reqs, fused) for _ in range(repeat)),
            key=lambda r: -r["path_spans_per_s"])
        for fused in modes]
    return out


class _Subset(list):
    def __init__(self, reqs, n_spans):
        items, counts, total = [], [], 0
        for r, c in zip(reqs, reqs.span_counts):
            if total >= n_spans:
                break
            items.append(r)
            counts.append(c)
            total += c
        super().__init__(items)
        self.span_counts = counts


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--spans", type=int, default=200_000)
    ap.add_argument("--pure-spans", type=int, default=50_000,
                    help="the pure twins run on the first requests holding this many spans")
    ap.add_argument("--repeat", type=int, default=3)
    args = ap.parse_args()
    t0 = time.perf_counter()
    reqs = loadgen.TraceGenerator(1).build_requests(spans_per_request_target=512,
                                                    n_spans=args.spans)
    print(f"built {len(reqs)} requests in {time.perf_counter() - t0:.1f}s", file=sys.stderr)
    doc = {"load": {"requests": len(reqs), "spans": reqs.n_spans, "bytes": reqs.n_bytes,
                    "attr_keys": sorted(ATTR_KEYS)}}
    try:
        cb = importlib.import_module("traceo_sampler._buffer")
        cs = importlib.import_module("traceo_sampler._scan")
    except ImportError as exc:
        doc["compiled"] = {"error": str(exc)}
    else:
        doc["compiled"] = bench(cb.TraceBuffer, cs.scan, reqs, args.repeat)
        print("compiled done", file=sys.stderr)
    doc["pure"] = bench(TraceBufferPy, scan_py, _Subset(reqs, args.pure_spans), args.repeat)
    json.dump(doc, sys.stdout, indent=2)
    print()


if __name__ == "__main__":
    main()
