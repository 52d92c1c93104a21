"""Issue 16: five services, each its own OpenTelemetry SDK TracerProvider
with the SDK's default BatchSpanProcessor (a batch every 5 s), their
timers in independent phases, one trace crossing all five with errors in
downstream services. On the embedded default (root_wait / idle_timeout:
auto) every error trace reaches the backend whole; the same senders at the
same time into a second sampler with the old fixed root_wait 2s make its
``late_spans_would_change_total`` rise.

Both samplers are fed at once (each provider has one default
BatchSpanProcessor per sampler), so the test takes one generation run:
~5 s of phase offsets, ~27 s of traffic, ~16 s for the last batches and
decisions."""
from __future__ import annotations

import json
import os
import random
import time

import pytest
from opentelemetry import trace as otel_trace
from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import Status, StatusCode

from support_otlp import CaptureSink
from support_serve import Serve
from traceo_sampler.scan import scan_py

pytestmark = pytest.mark.e2e

# the embedded default's policies (config.DEFAULT_YAML)
DEFAULT_POLICIES = [
    {"name": "errors", "type": "status_code", "status_code": {"status_codes": ["ERROR"]}},
    {"name": "slow", "type": "latency", "latency": {"threshold_ms": 1000}},
    {"name": "rest", "type": "probabilistic", "probabilistic": {"sampling_percentage": 10}},
]
SERVICES = ["frontend", "cart", "pricing", "inventory", "payments"]
N_TRACES = 320
RATE = 12.0          # traces/s
ERROR_SHARE = 0.15


class Services:
    """Five TracerProviders; each sends to every endpoint through its own
    BatchSpanProcessor at the SDK's defaults, and keeps a copy in memory."""

    def __init__(self, endpoints: list[str], rng: random.Random):
        for k in [k for k in os.environ if k.startswith("OTEL_BSP_")]:
            del os.environ[k]     # the SDK's defaults, not the environment's
        self.memory = InMemorySpanExporter()
        self.providers, self.tracers = [], []
        # phases spread over the whole 5 s period in a random order, one
        # downstream service close to the worst case (its batch leaves
        # almost 5 s after the root's)
        downstream = [1.0, 2.0, 3.0, 4.6]
        rng.shuffle(downstream)
        offsets = [0.0] + [d + rng.uniform(0, 0.3) for d in downstream]
        self.phases = dict(zip(SERVICES, offsets))
        t0 = time.monotonic()
        for name, off in sorted(zip(SERVICES, offsets), key=lambda x: x[1]):
            # a BatchSpanProcessor's timer starts when it is made: starting
            # them at random moments puts them in independent phases, as in
            # separate processes
            time.sleep(max(0.0, t0 + off - time.monotonic()))
            p = TracerProvider(resource=Resource.create({"service.name": name}))
            for ep in endpoints:
                p.add_span_processor(BatchSpanProcessor(OTLPSpanExporter(endpoint=f"http://{ep}", insecure=True)))
            p.add_span_processor(SimpleSpanProcessor(self.memory))
            self.providers.append(p)
            self.tracers.append(p.get_tracer("shop", "1.0"))
        order = [n for n, _ in sorted(zip(SERVICES, offsets), key=lambda x: x[1])]
        self.tracers = [self.tracers[order.index(n)] for n in SERVICES]
        self.providers = [self.providers[order.index(n)] for n in SERVICES]

    def make_trace(self, rng: random.Random, error_in: int | None) -> int:
        """frontend -> cart -> pricing -> inventory -> payments, two spans
        per downstream service; children end before their parents."""
        t0 = time.time_ns()
        dur = rng.randint(20, 300) * 1_000_000
        root = self.tracers[0].start_span("GET /checkout", start_time=t0, kind=otel_trace.SpanKind.SERVER)
        ctx = otel_trace.set_span_in_context(root)
        open_spans = []
        for i in range(1, len(SERVICES)):
            start = t0 + i * dur // 20
            server = self.tracers[i].start_span(f"{SERVICES[i]} handle", context=ctx, start_time=start,
                                                kind=otel_trace.SpanKind.SERVER)
            inner_ctx = otel_trace.set_span_in_context(server)
            inner = self.tracers[i].start_span(f"{SERVICES[i]} work", context=inner_ctx, start_time=start + 1000)
            if error_in == i:
                inner.set_status(Status(StatusCode.ERROR, "boom"))
            open_spans.append((i, server, inner, start))
            ctx = inner_ctx
        for i, server, inner, start in reversed(open_spans):
            end = t0 + dur - (len(SERVICES) - i) * dur // 20
            inner.end(end_time=end - 1000)
            server.end(end_time=end)
        root.end(end_time=t0 + dur)
        return root.get_span_context().trace_id

    def close(self):
        for p in self.providers:
            p.shutdown()


def _sink_spans(sink) -> dict[bytes, set[bytes]]:
    out: dict[bytes, set[bytes]] = {}
    for raw in list(sink.requests):
        for s in scan_py(raw, frozenset()).spans:
            out.setdefault(s[0], set()).add(s[1])
    return out


def _wait_decided(srv, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if srv.metric("traceo_sampler_buffer_traces") == 0:
            return
        time.sleep(0.5)


def test_default_sdk_batching_every_error_trace_whole():
    rng = random.Random(16)
    with CaptureSink() as sink_auto, CaptureSink() as sink_fixed, \
            Serve({"sampler": {"policies": DEFAULT_POLICIES},
                   "exporters": {"otlp": {"endpoint": sink_auto.endpoint}}}) as auto, \
            Serve({"sampler": {"root_wait": "2s", "idle_timeout": "5s", "policies": DEFAULT_POLICIES},
                   "exporters": {"otlp": {"endpoint": sink_fixed.endpoint}}}) as fixed:
        svcs = Services([auto.endpoint, fixed.endpoint], rng)
        errors: set[int] = set()
        t_start = time.monotonic()
        for n in range(N_TRACES):
            time.sleep(max(0.0, t_start + n / RATE - time.monotonic()))
            err = rng.randint(1, len(SERVICES) - 1) if rng.random() < ERROR_SHARE else None
            tid = svcs.make_trace(rng, err)
            if err is not None:
                errors.add(tid)
        # the SDK's own timers send the last batches (no forced flush)
        time.sleep(5.5)
        svcs.close()
        _wait_decided(auto, 20)
        _wait_decided(fixed, 20)
        status = json.loads(auto.get("/api/status"))
        would_auto = auto.metric("traceo_sampler_late_spans_would_change_total")
        would_fixed = fixed.metric("traceo_sampler_late_spans_would_change_total")
        late_fixed = fixed.metric("traceo_sampler_late_spans_total")
        assert auto.stop() == 0 and fixed.stop() == 0

    sent: dict[int, set[bytes]] = {}
    for s in svcs.memory.get_finished_spans():
        sent.setdefault(s.context.trace_id, set()).add(s.context.span_id.to_bytes(8, "big"))
    assert len(sent) == N_TRACES and all(len(v) == 9 for v in sent.values())
    assert len(errors) >= 30
    got = _sink_spans(sink_auto)
    whole = [tid for tid in errors if got.get(tid.to_bytes(16, "big"), set()) >= sent[tid]]
    lag = status["completion"]["arrival_lag"]
    print("\nphases (s):", {k: round(v, 2) for k, v in svcs.phases.items()})
    print("auto:", json.dumps({k: status["completion"][k] for k in ("root_wait", "idle_timeout")}),
          "error traces whole", len(whole), "/", len(errors))
    for svc in SERVICES:
        print(f"  {svc:10s} since first {lag[svc]['first']}  since root {lag[svc].get('root')}")
    assert len(whole) == len(errors), "error traces lost with the default waits"
    assert would_auto == 0
    assert status["completion"]["root_wait"] == {"mode": "auto", "seconds": 6.0}
    # the SDK's 5 s batches show up as lags of several seconds downstream
    assert any((lag[svc]["root"]["p99_le_s"] or 0) >= 2.0 for svc in SERVICES[1:])

    got_fixed = _sink_spans(sink_fixed)
    whole_fixed = [tid for tid in errors if got_fixed.get(tid.to_bytes(16, "big"), set()) >= sent[tid]]
    print(f"fixed root_wait 2s: error traces whole {len(whole_fixed)}/{len(errors)}, "
          f"late spans {late_fixed:.0f}, would have changed a decision {would_fixed:.0f}")
    assert would_fixed > 0 and len(whole_fixed) < len(errors)
