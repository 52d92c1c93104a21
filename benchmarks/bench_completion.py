"""What waiting for real senders costs: buffer memory and decision latency
with ``root_wait: auto`` / ``idle_timeout: auto`` (the defaults) against the
old fixed defaults (root_wait 2 s, idle_timeout 5 s), at the same load, and
what each loses.

Load, on a virtual clock (deterministic, no sockets; the pipeline of
``serve`` with the default policies, exporting to a counting sink): TRACES_PER_S
traces for SECONDS, each crossing five services (root in the first, two
spans in each of the other four, an error in a downstream service in 10 %),
every service an OpenTelemetry SDK with the default BatchSpanProcessor: a
span is sent at its service's next 5 s tick (phases 0, 1.1, 2.2, 3.3, 4.6 s),
up to 512 spans per request. ``dropped_grace`` is measured on top of auto.

Per mode: buffer bytes (mean and peak of the accounted bytes, sampled every
100 ms), decision latency of kept traces from their root's arrival to their
export (p50 / p99), error traces kept whole, late spans that would have
changed a decision, the waits in use at the end, and the CPU seconds the
pipeline spent per million spans (ingest + ticks).

    .venv/bin/python benchmarks/bench_completion.py [--traces-per-s 500] [--seconds 60]
"""
from __future__ import annotations

import argparse
import json
import os
import random
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "src"))

from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest  # noqa: E402

from traceo_sampler.buffer import IMPLEMENTATION  # noqa: E402
from traceo_sampler.config import loads  # noqa: E402
from traceo_sampler.pipeline import Pipeline  # noqa: E402
from traceo_sampler.telemetry import Metrics  # noqa: E402

SERVICES = ["frontend", "cart", "pricing", "inventory", "payments"]
PHASES = [0.0, 1.1, 2.2, 3.3, 4.6]
PERIOD = 5.0
POLICIES = """
  policies:
    - {name: errors, type: status_code, status_code: {status_codes: [ERROR]}}
    - {name: slow, type: latency, latency: {threshold_ms: 1000}}
    - {name: rest, type: probabilistic, probabilistic: {sampling_percentage: 10}}
"""
MODES = {
    "fixed_2s_5s": "  root_wait: 2s\n  idle_timeout: 5s\n",
    "auto": "",
    "auto_with_dropped_grace": "  dropped_grace: {duration: 10s, max_bytes: 67108864}\n",
}


def build_load(traces_per_s: float, seconds: float, seed: int = 16):
    """[(arrival, request bytes)] in arrival order, and per trace
    (root arrival, error?, span count)."""
    rng = random.Random(seed)
    batches: dict[tuple[int, int], list] = {}     # (service, tick) -> [spans]
    info: dict[bytes, list] = {}
    n = int(traces_per_s * seconds)
    for i in range(n):
        t_end = i / traces_per_s + rng.uniform(0.02, 0.3)
        tid = rng.randbytes(16)
        err = rng.randint(1, 4) if rng.random() < 0.1 else 0
        root_id = rng.randbytes(8)
        spans = [(0, dict(trace_id=tid, span_id=root_id, parent_span_id=b"", name="GET /checkout",
                          start_time_unix_nano=int((t_end - 0.3) * 1e9) + 10**18,
                          end_time_unix_nano=int(t_end * 1e9) + 10**18), False)]
        parent = root_id
        for s in range(1, 5):
            a, b = rng.randbytes(8), rng.randbytes(8)
            for sid, par, name in ((a, parent, "handle"), (b, a, "work")):
                spans.append((s, dict(trace_id=tid, span_id=sid, parent_span_id=par, name=name,
                                      start_time_unix_nano=int((t_end - 0.25) * 1e9) + 10**18,
                                      end_time_unix_nano=int((t_end - 0.01) * 1e9) + 10**18),
                              err == s and name == "work"))
            parent = b
        for svc, d, is_err in spans:
            # the BatchSpanProcessor sends it at its service's next tick
            k = int((t_end - PHASES[svc]) // PERIOD) + 1
            batches.setdefault((svc, k), []).append((d, is_err))
        info[tid] = [PHASES[0] + (int((t_end - PHASES[0]) // PERIOD) + 1) * PERIOD, bool(err), 9]
    out = []
    for (svc, k), spans in batches.items():
        at = PHASES[svc] + k * PERIOD
        for j in range(0, len(spans), 512):
            req = ExportTraceServiceRequest()
            rs = req.resource_spans.add()
            rs.resource.attributes.add(key="service.name").value.string_value = SERVICES[svc]
            ss = rs.scope_spans.add()
            ss.scope.name = "shop"
            for d, is_err in spans[j:j + 512]:
                sp = ss.spans.add(**d)
                if is_err:
                    sp.status.code = 2
            out.append((at + 0.001 * j / 512, req.SerializeToString()))
    out.sort(key=lambda x: x[0])
    return out, info


class _Sink:
    name = "sink"
    blocking = False

    def __init__(self, clock):
        self.clock = clock
        self.kept: dict[bytes, list] = {}      # trace -> [first export time, spans]

    def submit(self, item):
        from traceo_sampler.scan import scan
        for s in scan(item.blob, frozenset()).spans:
            row = self.kept.setdefault(s[0], [self.clock[0], 0])
            row[1] += 1
        return True


def _pct(xs, q):
    if not xs:
        return None
    xs = sorted(xs)
    return round(xs[min(len(xs) - 1, int(q * len(xs)))], 3)


def run_mode(name: str, load, info) -> dict:
    cfg = loads("sampler:\n" + MODES[name] + POLICIES)
    now = [0.0]
    sink = _Sink(now)
    p = Pipeline(cfg, Metrics(), [sink], clock=lambda: now[0])
    tick_every, next_tick, next_sample = 0.05, 0.0, 0.0
    samples, grace = [], []
    cpu = 0.0
    events = list(load)
    i = 0
    end = events[-1][0] + 40.0
    while now[0] < end:
        if i >= len(events) or next_tick <= events[i][0]:
            now[0] = next_tick
            t0 = time.process_time()
            p.tick()
            cpu += time.process_time() - t0
            next_tick += tick_every
            if now[0] >= next_sample:
                samples.append(p.buffer.nbytes)
                grace.append(p.completion.grace_bytes)
                next_sample += 0.1
            continue
        now[0] = events[i][0]
        t0 = time.process_time()
        p.ingest(events[i][1])
        cpu += time.process_time() - t0
        i += 1
    p.drain()
    lat = [sink.kept[tid][0] - inf[0] for tid, inf in info.items() if tid in sink.kept]
    errors = [tid for tid, inf in info.items() if inf[1]]
    whole = sum(1 for tid in errors if tid in sink.kept and sink.kept[tid][1] >= info[tid][2])
    st = p.completion.status()
    return {
        "buffer_bytes_mean": round(sum(samples) / len(samples)),
        "buffer_bytes_peak": max(samples),
        "dropped_grace_bytes_peak": max(grace),
        "decision_latency_from_root_arrival_s": {"p50": _pct(lat, 0.5), "p99": _pct(lat, 0.99)},
        "error_traces_whole": f"{whole}/{len(errors)}",
        "late_spans_would_change": st["late_spans_would_change"],
        "rescued": st["dropped_grace"]["rescued"],
        "late_spans": p.account.late_kept + p.account.late_dropped,
        "waits_at_end": {"root_wait": st["root_wait"], "idle_timeout": st["idle_timeout"],
                         "per_root_service": {k: {"root_wait_s": v.get("root_wait_s"),
                                                  "idle_timeout_s": v.get("idle_timeout_s"),
                                                  "tail_quantile_s": v["tail_quantile_s"],
                                                  "gap_quantile_s": v["gap_quantile_s"]}
                                              for k, v in st["per_root_service"].items()}},
        "cpu_s_per_million_spans": round(cpu / (p.account.spans_received / 1e6), 3),
    }


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--traces-per-s", type=float, default=500)
    ap.add_argument("--seconds", type=float, default=60)
    args = ap.parse_args()
    load, info = build_load(args.traces_per_s, args.seconds)
    out = {"buffer": IMPLEMENTATION, "traces": len(info), "spans": 9 * len(info),
           "requests": len(load), "modes": {}}
    for name in MODES:
        out["modes"][name] = run_mode(name, load, info)
    a, f = out["modes"]["auto"], out["modes"]["fixed_2s_5s"]
    g = out["modes"]["auto_with_dropped_grace"]
    out["ratios_auto_over_fixed"] = {
        "buffer_bytes_mean": round(a["buffer_bytes_mean"] / f["buffer_bytes_mean"], 2),
        "buffer_bytes_peak": round(a["buffer_bytes_peak"] / f["buffer_bytes_peak"], 2),
        "decision_latency_p50": round(a["decision_latency_from_root_arrival_s"]["p50"]
                                      / f["decision_latency_from_root_arrival_s"]["p50"], 2),
        "cpu_per_span": round(a["cpu_s_per_million_spans"] / f["cpu_s_per_million_spans"], 2),
    }
    out["dropped_grace_peak_over_auto_buffer_peak"] = round(
        g["dropped_grace_bytes_peak"] / a["buffer_bytes_peak"], 2)
    print(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
