"""ottl_condition and trace_flags end to end: the OpenTelemetry Python SDK
→ ``traceo-sampler serve`` → an OTLP gRPC sink. Traces that match a
condition (a span attribute with a converter, a resource attribute, a span
event, the sampled flag) are kept whole; the others are not."""
from __future__ import annotations

import os
import time

import grpc
import pytest
from opentelemetry import trace as otel_trace
from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
)
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor
from opentelemetry.sdk.trace.sampling import ALWAYS_ON
from support_otlp import SERVICE, CaptureSink, make_request
from support_serve import Serve

pytestmark = pytest.mark.e2e

POLICIES = [
    {"name": "server-errors", "type": "ottl_condition", "ottl_condition": {
        "error_mode": "ignore",
        "span": ['kind == SPAN_KIND_SERVER and Int(attributes["http.response.status_code"]) >= 500',
                 'IsMatch(ToLowerCase(name), "^post /pay")']}},
    {"name": "checkout", "type": "ottl_condition", "ottl_condition": {
        "span": ['resource.attributes["service.name"] == "checkout" and attributes["vip"] == true']}},
    {"name": "exceptions", "type": "ottl_condition", "ottl_condition": {
        "spanevent": ['name == "exception" and attributes["exception.type"] == "TimeoutError"']}},
    {"name": "upstream-sampled", "type": "and", "and": {"and_sub_policy": [
        {"name": "flags", "type": "trace_flags"},
        {"name": "batch", "type": "ottl_condition",
         "ottl_condition": {"span": ['HasPrefix(name, "batch")']}}]}},
    # fails on every trace (names are shorter than 64 bytes): under
    # propagate it casts no vote and is counted
    {"name": "strict", "type": "ottl_condition", "ottl_condition": {
        "error_mode": "propagate", "span": ['Substring(name, 0, 64) == "x"']}},
]


def _client(endpoint, service, sampler=ALWAYS_ON):
    provider = TracerProvider(resource=Resource.create({"service.name": service}),
                              sampler=sampler)
    provider.add_span_processor(BatchSpanProcessor(
        OTLPSpanExporter(endpoint=f"http://{endpoint}", insecure=True),
        max_export_batch_size=256, schedule_delay_millis=50))
    return provider


def _trace(tracer, name, kind=otel_trace.SpanKind.SERVER, attrs=None, event=None, children=2):
    root = tracer.start_span(name, kind=kind)
    for k, v in (attrs or {}).items():
        root.set_attribute(k, v)
    ctx = otel_trace.set_span_in_context(root)
    for i in range(children):
        c = tracer.start_span(f"child-{i}", context=ctx)
        if event and i == children - 1:
            c.add_event(event[0], event[1])
        c.end()
    root.end()
    return root.get_span_context().trace_id


def _raw_flagged(endpoint, name, flags):
    tid = os.urandom(16)
    spans = [{"trace_id": tid, "span_id": os.urandom(8), "name": name}]
    spans += [{"trace_id": tid, "span_id": os.urandom(8), "parent": spans[0]["span_id"],
               "name": f"child-{i}"} for i in range(2)]
    req = ExportTraceServiceRequest.FromString(make_request([spans], service="batch"))
    for sp in req.resource_spans[0].scope_spans[0].spans:
        sp.flags = flags
    with grpc.insecure_channel(endpoint) as ch:
        ch.unary_unary(f"/{SERVICE}/Export")(req.SerializeToString(), timeout=10)
    return int.from_bytes(tid, "big")


@pytest.mark.parametrize("workers", [1, 2])
def test_ottl_and_trace_flags_through_serve(workers):
    """With 2 workers, spans reach the worker owning their trace as bytes
    with their headers: the conditions see the same resource and scope."""
    cfg = {"sampler": {"root_wait": "200ms", "idle_timeout": "1s", "decision_wait": "10s",
                       "policies": POLICIES},
           "exporters": {"otlp": {"endpoint": None}}, "service": {"workers": workers}}
    with CaptureSink() as sink:
        cfg["exporters"]["otlp"]["endpoint"] = sink.endpoint
        with Serve(cfg) as srv:
            front = _client(srv.endpoint, "frontend")
            shop = _client(srv.endpoint, "checkout")
            t = front.get_tracer("e2e")
            s = shop.get_tracer("e2e")
            keep, drop = {}, {}
            keep[_trace(t, "GET /api", attrs={"http.response.status_code": "503"})] = "server-errors"
            drop[_trace(t, "GET /api", attrs={"http.response.status_code": "200"})] = ""
            drop[_trace(t, "GET /api", kind=otel_trace.SpanKind.CLIENT,
                        attrs={"http.response.status_code": 503})] = ""
            keep[_trace(t, "POST /payments")] = "server-errors"
            keep[_trace(s, "GET /cart", attrs={"vip": True})] = "checkout"
            drop[_trace(t, "GET /cart", attrs={"vip": True})] = ""           # other service
            drop[_trace(s, "GET /cart", attrs={"vip": "true"})] = ""         # a string, not a bool
            keep[_trace(t, "GET /slow", event=("exception", {"exception.type": "TimeoutError"}))] \
                = "exceptions"
            drop[_trace(t, "GET /slow", event=("exception", {"exception.type": "ValueError"}))] = ""
            # The Python SDK writes only the is-remote bits into Span.flags,
            # not the W3C trace flags: its spans never satisfy trace_flags
            # (nor do they in the Collector, which reads the same byte).
            drop[_trace(t, "batch-job", kind=otel_trace.SpanKind.INTERNAL)] = ""
            # A client that does write them (Span.flags = 0x101: sampled,
            # has-is-remote), as raw OTLP
            keep[_raw_flagged(srv.endpoint, "batch-nightly", 0x101)] = "upstream-sampled"
            drop[_raw_flagged(srv.endpoint, "batch-nightly", 0x100)] = ""
            front.force_flush()
            shop.force_flush()
            deadline = time.monotonic() + 20
            while time.monotonic() < deadline:
                got = {int.from_bytes(s[0], "big") for s in sink.spans()}
                if set(keep) <= got and srv.metric("traceo_sampler_buffer_traces") == 0:
                    break
                time.sleep(0.1)
            front.shutdown()
            shop.shutdown()
            errors = srv.metric("traceo_sampler_policy_evaluation_errors_total", policy="strict")
            assert srv.stop() == 0, srv.stderr[-3000:]
    assert errors == len(keep) + len(drop)
    got: dict[int, int] = {}
    for sp in sink.spans():
        tid = int.from_bytes(sp[0], "big")
        got[tid] = got.get(tid, 0) + 1
    assert set(got) == set(keep), (set(got) - set(keep), set(keep) - set(got))
    assert all(n == 3 for n in got.values())          # kept whole


def test_simulate_previews_an_ottl_condition(tmp_path):
    """`simulate` runs the same policies offline, span data included: an
    OTLP JSON capture (as the file exporter writes it) through an
    ottl_condition and a trace_flags policy."""
    import json
    import subprocess
    import sys
    from pathlib import Path

    from support_otlp import trace

    from traceo_sampler.otlp_json import request_to_json

    cfg = tmp_path / "c.yaml"
    cfg.write_text(
        "sampler:\n  policies:\n"
        "    - name: admin\n      type: ottl_condition\n"
        "      ottl_condition: {span: ['IsMatch(attributes[\"http.route\"], \"^/admin\")']}\n"
        "    - {name: flags, type: trace_flags}\n")
    t0 = 1_700_000_000 * 10**9
    admin = [trace(3, start=t0, end=t0 + 10**6, attrs={"http.route": "/admin/x"}) for _ in range(3)]
    other = [trace(2, start=t0, end=t0 + 10**6, attrs={"http.route": "/api"}) for _ in range(5)]
    flagged = [trace(2, start=t0, end=t0 + 10**6) for _ in range(2)]
    req = ExportTraceServiceRequest.FromString(make_request(admin + other + flagged))
    flagged_ids = {t[0]["trace_id"] for t in flagged}
    for sp in req.resource_spans[0].scope_spans[0].spans:
        if sp.trace_id in flagged_ids:
            sp.flags = 0x101
    capture = tmp_path / "cap.otlp.jsonl"
    capture.write_text(json.dumps(request_to_json(req.SerializeToString())) + "\n")
    root = Path(__file__).resolve().parents[2]
    env = dict(os.environ, PYTHONPATH=str(root / "src"))
    r = subprocess.run([sys.executable, "-m", "traceo_sampler", "simulate", "-c", str(cfg),
                        str(capture)], capture_output=True, text=True, env=env, timeout=120,
                       check=False)
    assert r.returncode == 0, r.stderr
    rep = json.loads(r.stdout)
    assert rep["traces"] == 10 and rep["traces_kept"] == 5
    assert rep["per_policy"] == {"admin": {"traces": 3, "share_of_traces": 0.3},
                                 "flags": {"traces": 2, "share_of_traces": 0.2}}
