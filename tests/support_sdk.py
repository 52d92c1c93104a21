"""Five services as separate OpenTelemetry SDK TracerProviders at the SDK's
default export settings (BatchSpanProcessor: a batch every 5 s), their
timers in independent phases: the senders of the issue-16 completion tests
(tests/e2e/test_completion_sdk.py, tests/integration/test_completion_otelcol.py)."""
from __future__ import annotations

import os
import random
import time

from opentelemetry import trace as otel_trace
from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import Status, StatusCode

from traceo_sampler.scan import scan_py

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


def sink_spans(sink) -> dict[bytes, set[bytes]]:
    out: dict[bytes, set[bytes]] = {}
    for raw in list(sink.requests):
        for s in scan_py(raw, frozenset()).spans:
            out.setdefault(s[0], set()).add(s[1])
    return out


def wait_decided(srv, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if srv.metric("traceo_sampler_buffer_traces") == 0:
            return
        time.sleep(0.5)




def run_traffic(svcs: Services, rng: random.Random, n: int = N_TRACES, rate: float = RATE) -> set[int]:
    """n traces at ``rate``/s, ERROR_SHARE of them with an error in a
    random downstream service; returns the error traces' IDs."""
    errors: set[int] = set()
    t_start = time.monotonic()
    for i in range(n):
        time.sleep(max(0.0, t_start + i / rate - time.monotonic()))
        err = rng.randint(1, len(SERVICES) - 1) if rng.random() < ERROR_SHARE else None
        tid = svcs.make_trace(rng, err)
        if err is not None:
            errors.add(tid)
    return errors


def sent_spans(svcs: Services) -> dict[int, set[bytes]]:
    sent: dict[int, set[bytes]] = {}
    for s in svcs.memory.get_finished_spans():
        sent.setdefault(s.context.trace_id, set()).add(s.context.span_id.to_bytes(8, "big"))
    return sent


def whole_traces(sink, sent: dict[int, set[bytes]], tids) -> list[int]:
    """The traces among ``tids`` of which the sink received every span."""
    got = sink_spans(sink)
    return [tid for tid in tids if got.get(tid.to_bytes(16, "big"), set()) >= sent[tid]]
