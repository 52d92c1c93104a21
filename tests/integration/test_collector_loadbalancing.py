"""A real OpenTelemetry Collector (v0.161.0) in front of Traceo Sampler, as the
shipped examples in deploy/collector/ configure it:

- loadbalancing.yaml: the loadbalancing exporter routes by trace ID to two `serve`
  instances (static resolver here instead of the example's DNS one). SDK traffic
  whose traces are exported in several batches goes through it; every trace is
  decided exactly once, by one instance, and every kept trace reaches its sink whole
  (no trace at both sinks, none partial).
- otlp-gateway.yaml: the Collector's otlp exporter to one sampler gateway.
"""
from __future__ import annotations

import contextlib
import subprocess
import time
from pathlib import Path

import pytest
import yaml
from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import Status, StatusCode

from support.otelcol import Otelcol, otelcol_binary
from support.procs import free_ports
from support_otlp import CaptureSink
from support_serve import Serve

pytestmark = [pytest.mark.integration, pytest.mark.timeout(600)]

ROOT = Path(__file__).resolve().parents[2]
EXAMPLES = ROOT / "deploy" / "collector"
POLICIES = [
    {"name": "errors", "type": "status_code", "status_code": {"status_codes": ["ERROR"]}},
    {"name": "half", "type": "probabilistic", "probabilistic": {"sampling_percentage": 50}},
]
# Decisions come from the root (+ root_wait): the children of every trace are sent
# first, in earlier SDK batches, so a trace split by routing would be seen partial.
SAMPLER = {"root_wait": "500ms", "idle_timeout": "3s", "decision_wait": "20s", "policies": POLICIES}


def _example(name: str, port: int) -> dict:
    cfg = yaml.safe_load((EXAMPLES / name).read_text())
    cfg["receivers"]["otlp"]["protocols"] = {"grpc": {"endpoint": f"127.0.0.1:{port}"}}
    return cfg


def _send(endpoint, n_traces: int, spans_per_trace: int
          ) -> tuple[dict[bytes, set[bytes]], set[bytes]]:
    """SDK traffic: n traces of spans_per_trace spans, children ended (and exported)
    before their root, every 7th trace an error. Returns (trace id -> span ids sent,
    the error traces' ids)."""
    memory = InMemorySpanExporter()
    from opentelemetry import trace as otel_trace

    def provider_for(service: str) -> TracerProvider:
        # endpoint: where every service sends, or a function of the service (the control)
        to = endpoint(service) if callable(endpoint) else endpoint
        p = TracerProvider(resource=Resource.create({"service.name": service}))
        p.add_span_processor(BatchSpanProcessor(
            OTLPSpanExporter(endpoint=f"http://{to}", insecure=True),
            max_export_batch_size=64, schedule_delay_millis=50))
        p.add_span_processor(SimpleSpanProcessor(memory))
        return p

    # Several services in every trace, as in any distributed trace: the root in
    # "frontend", each child in another service, each service exporting on its own.
    names = ["frontend", "checkout", "payments", "inventory", "shipping", "auth", "search",
             "recommendations", "ads", "currency"]
    providers = [provider_for(names[k % len(names)]) for k in range(spans_per_trace)]
    front, *back = (p.get_tracer("lb-test") for p in providers)
    roots = []
    errors = set()
    for i in range(n_traces):
        root = front.start_span("GET /checkout", kind=otel_trace.SpanKind.SERVER)
        ctx = otel_trace.set_span_in_context(root)
        for j in range(spans_per_trace - 1):
            back[j].start_span(f"child{j}", context=ctx).end()
        roots.append((i, root))
        if i % 20 == 19:
            time.sleep(0.06)  # let the children's batches go out first
    time.sleep(0.2)
    for i, root in roots:
        if i % 7 == 0:
            root.set_status(Status(StatusCode.ERROR))
            errors.add(root.get_span_context().trace_id.to_bytes(16, "big"))
        root.end()
    for p in providers:
        p.force_flush(30_000)
        p.shutdown()
    sent: dict[bytes, set[bytes]] = {}
    for s in memory.get_finished_spans():
        sent.setdefault(s.context.trace_id.to_bytes(16, "big"), set()).add(
            s.context.span_id.to_bytes(8, "big"))
    return sent, errors


def _at_sink(sink: CaptureSink) -> dict[bytes, list[bytes]]:
    out: dict[bytes, list[bytes]] = {}
    for tid, sp, _res, _scope in sink.spans():
        out.setdefault(tid, []).append(sp.span_id)
    return out


def _decided(s: Serve) -> float:
    return s.metric("traceo_sampler_traces_decided_total")


def test_the_shipped_examples_pass_the_collectors_own_validate():
    binary = otelcol_binary()
    for name in ("loadbalancing.yaml", "otlp-gateway.yaml"):
        r = subprocess.run([binary, "validate", "--config", str(EXAMPLES / name)],
                           capture_output=True, text=True, timeout=60)
        assert r.returncode == 0, f"{name}:\n{r.stdout}\n{r.stderr}"


@pytest.mark.parametrize("routing", ["collector", "split"])
def test_loadbalancing_by_trace_id_to_two_samplers_keeps_traces_whole(routing):
    """collector: through the Collector as the example ships it. split: the control
    that shows these checks catch a split — no Collector, each app's SDK sends to
    "its" sampler (the frontend to one, the other services to the other), as a plain
    round-robin Service in front of two gateways would."""
    n_traces, per_trace = 300, 8
    with CaptureSink() as sink_a, CaptureSink() as sink_b, \
            Serve({"sampler": SAMPLER, "exporters": {"otlp": {"endpoint": sink_a.endpoint}}}) as a, \
            Serve({"sampler": SAMPLER, "exporters": {"otlp": {"endpoint": sink_b.endpoint}}}) as b:
        (port,) = free_ports(1)
        cfg = _example("loadbalancing.yaml", port)
        lb = cfg["exporters"]["loadbalancing"]
        lb["resolver"] = {"static": {"hostnames": [a.endpoint, b.endpoint]}}
        with Otelcol(cfg) if routing == "collector" else contextlib.nullcontext():
            to = (f"127.0.0.1:{port}" if routing == "collector" else
                  (lambda svc: a.endpoint if svc == "frontend" else b.endpoint))
            sent, errors = _send(to, n_traces, per_trace)
            assert len(sent) == n_traces and all(len(v) == per_trace for v in sent.values())
            deadline = time.monotonic() + 60
            while time.monotonic() < deadline and _decided(a) + _decided(b) < n_traces:
                time.sleep(0.2)
            # a part of a split trace (no root) is decided by idle_timeout: wait past it
            time.sleep(4)
        da, db = _decided(a), _decided(b)
        late = (a.metric("traceo_sampler_late_spans_total")
                + b.metric("traceo_sampler_late_spans_total"))
        no_root = (a.metric("traceo_sampler_traces_without_root_total")
                   + b.metric("traceo_sampler_traces_without_root_total"))
        assert a.stop() == 0 and b.stop() == 0
    got_a, got_b = _at_sink(sink_a), _at_sink(sink_b)
    if routing == "split":
        # every trace decided by both samplers, each on its part; the parts without
        # a root are counted; error traces reach one sink without their children
        assert da == db == n_traces and no_root == n_traces, (da, db, no_root)
        assert all(len(got_a[t]) == 1 for t in errors)
        return
    # both instances got a share, and together they decided each trace exactly once
    assert da > n_traces * 0.25 and db > n_traces * 0.25, (da, db)
    assert da + db == n_traces, f"decided {da} + {db} for {n_traces} traces: some trace was split"
    assert late == 0 and no_root == 0
    assert not set(got_a) & set(got_b), "a trace reached both sinks"
    kept = {**got_a, **got_b}
    for tid, spans in kept.items():
        assert sorted(spans) == sorted(sent[tid]), f"trace {tid.hex()} arrived partial or twice"
    assert errors <= set(kept), "every error trace is kept"
    assert len(kept) < n_traces, "the probabilistic policy dropped some"


def test_collector_otlp_exporter_to_one_sampler_gateway():
    with CaptureSink() as sink, \
            Serve({"sampler": {**SAMPLER, "policies": [{"name": "all", "type": "always_sample"}]},
                   "exporters": {"otlp": {"endpoint": sink.endpoint}}}) as s:
        (port,) = free_ports(1)
        cfg = _example("otlp-gateway.yaml", port)
        cfg["exporters"]["otlp"]["endpoint"] = s.endpoint
        with Otelcol(cfg):
            sent, _ = _send(f"127.0.0.1:{port}", 40, 4)
            deadline = time.monotonic() + 30
            while time.monotonic() < deadline and len(_at_sink(sink)) < len(sent):
                time.sleep(0.2)
        assert s.stop() == 0
    got = _at_sink(sink)
    assert set(got) == set(sent)
    assert all(sorted(got[t]) == sorted(sent[t]) for t in sent)
