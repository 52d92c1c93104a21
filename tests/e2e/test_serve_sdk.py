"""End to end with a real client: the OpenTelemetry Python SDK's OTLP
exporter → ``traceo-sampler serve`` (subprocess) → an OTLP gRPC sink in the
test. Checks completeness, byte identity, the probabilistic share, SIGTERM
drain and late spans."""
from __future__ import annotations

import math
import random
import signal
import time

import grpc
import pytest
from opentelemetry import trace as otel_trace
from opentelemetry.exporter.otlp.proto.common.trace_encoder import encode_spans
from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import Status, StatusCode

from support_otlp import CaptureSink, make_request, trace
from support_serve import Serve
from traceo_sampler.scan import scan_py
from traceo_sampler.tracestate import threshold_for_percentage

pytestmark = pytest.mark.e2e

POLICIES = [
    {"name": "errors", "type": "status_code", "status_code": {"status_codes": ["ERROR"]}},
    {"name": "slow", "type": "latency", "latency": {"threshold_ms": 1000}},
    {"name": "rest", "type": "probabilistic", "probabilistic": {"sampling_percentage": 10}},
]


def sampler_cfg(sink, **sampler):
    s = {"root_wait": "300ms", "idle_timeout": "2s", "decision_wait": "10s", "policies": POLICIES}
    s.update(sampler)
    return {"sampler": s, "exporters": {"otlp": {"endpoint": sink.endpoint}}}


class SdkClient:
    """TracerProvider + BatchSpanProcessor + OTLPSpanExporter, and an
    in-memory copy of every span to know what was sent."""

    def __init__(self, endpoint: str, service: str):
        self.memory = InMemorySpanExporter()
        self.provider = TracerProvider(resource=Resource.create({"service.name": service}))
        self.provider.add_span_processor(BatchSpanProcessor(
            OTLPSpanExporter(endpoint=f"http://{endpoint}", insecure=True),
            max_export_batch_size=256, schedule_delay_millis=100))
        self.provider.add_span_processor(SimpleSpanProcessor(self.memory))
        self.tracer = self.provider.get_tracer("e2e-test", "1.0")

    def make_trace(self, n_children: int, error: bool, duration_ms: int) -> int:
        t0 = time.time_ns()
        root = self.tracer.start_span("GET /checkout", start_time=t0,
                                      kind=otel_trace.SpanKind.SERVER)
        root.set_attribute("http.route", "/checkout")
        ctx = otel_trace.set_span_in_context(root)
        for i in range(n_children):
            child = self.tracer.start_span(f"child-{i}", context=ctx, start_time=t0 + 1000 * (i + 1))
            child.set_attribute("i", i)
            if error and i == n_children - 1:
                child.set_status(Status(StatusCode.ERROR, "boom"))
            child.end(end_time=t0 + 1000 * (i + 1) + 500)
        root.end(end_time=t0 + duration_ms * 1_000_000)
        return root.get_span_context().trace_id

    def close(self):
        self.provider.force_flush()
        self.provider.shutdown()


def _sdk_span_bytes(spans) -> dict[bytes, bytes]:
    raw = encode_spans(spans).SerializeToString()
    sc = scan_py(raw, frozenset())
    return {s[1]: raw[s[8]:s[8] + s[9]] for s in sc.spans}


def _sink_span_bytes(sink) -> dict[bytes, list[bytes]]:
    out: dict[bytes, list[bytes]] = {}
    for raw in list(sink.requests):
        sc = scan_py(raw, frozenset())
        for s in sc.spans:
            out.setdefault(s[1], []).append((s[0], raw[s[8]:s[8] + s[9]], s[10]))
    return out


def test_sdk_to_serve_to_otlp_sink():
    rng = random.Random(20261127)
    with CaptureSink() as sink, Serve(sampler_cfg(sink)) as srv:
        client = SdkClient(srv.endpoint, "checkout")
        kinds: dict[int, str] = {}
        sizes: dict[int, int] = {}
        for i in range(600):
            n = rng.randint(1, 4)
            error = i % 10 == 3
            slow = i % 10 == 7
            tid = client.make_trace(n, error, 1500 if slow else rng.randint(1, 200))
            kinds[tid] = "error" if error else "slow" if slow else "rest"
            sizes[tid] = n + 1
        client.close()
        sent = client.memory.get_finished_spans()
        assert len(sent) == sum(sizes.values())
        # wait for root_wait plus the export, then drain the rest
        deadline = time.monotonic() + 30
        want_min = sum(1 for k in kinds.values() if k != "rest")
        while time.monotonic() < deadline:
            got = {s[0] for s in sink.spans()}
            if len(got) >= want_min and srv.metric("traceo_sampler_buffer_traces") == 0:
                break
            time.sleep(0.2)
        assert srv.stop() == 0, srv.stderr[-3000:]

    expected = _sdk_span_bytes(sent)
    received = _sink_span_bytes(sink)
    by_trace: dict[int, int] = {}
    for span_id, copies in received.items():
        assert len(copies) == 1, "a span was exported twice"
        tid_b, raw, tstate = copies[0]
        tid = int.from_bytes(tid_b, "big")
        by_trace[tid] = by_trace.get(tid, 0) + 1
        # byte-identical to the SDK's encoding apart from the appended field 3
        orig = expected[span_id]
        assert raw.startswith(orig)
        suffix = raw[len(orig):]
        assert suffix[0] == 0x1A and suffix[2:].decode() == tstate
        if kinds[tid] == "rest":
            assert tstate == "ot=th:e6666666666666"
        else:
            assert tstate == "ot=th:0"
    # every error and slow trace arrives whole; no trace arrives in part
    for tid, kind in kinds.items():
        if kind != "rest":
            assert by_trace.get(tid) == sizes[tid], (kind, hex(tid))
    for tid, n in by_trace.items():
        assert n == sizes[tid], "a trace arrived in part"
    # the probabilistic share lies within binomial bounds (4.5 sigma)
    rest = [tid for tid, k in kinds.items() if k == "rest"]
    kept = sum(1 for tid in rest if tid in by_trace)
    p = 0.10
    mean, sd = len(rest) * p, math.sqrt(len(rest) * p * (1 - p))
    assert abs(kept - mean) <= 4.5 * sd, (kept, mean, sd)
    # and the consistent rule itself: kept iff R >= T
    t = threshold_for_percentage(10)
    for tid in rest:
        assert (tid in by_trace) == ((tid & ((1 << 56) - 1)) >= t)


def test_sigterm_drains_buffered_traces():
    cfg = {"sampler": {"root_wait": "5m", "idle_timeout": "5m", "decision_wait": "10m",
                       "policies": [{"name": "all", "type": "always_sample"}]}}
    with CaptureSink() as sink:
        cfg["exporters"] = {"otlp": {"endpoint": sink.endpoint}}
        with Serve(cfg) as srv:
            client = SdkClient(srv.endpoint, "drain")
            tids = {client.make_trace(2, False, 5) for _ in range(120)}
            client.close()
            deadline = time.monotonic() + 20
            while srv.metric("traceo_sampler_buffer_spans") < 360 and time.monotonic() < deadline:
                time.sleep(0.1)
            assert srv.metric("traceo_sampler_buffer_traces") == 120
            assert sink.requests == []          # nothing decided yet
            assert srv.stop(signal.SIGTERM) == 0, srv.stderr[-3000:]
            summary = srv.summary()
        got = {}
        for tid_b, _sp, _r, _s in sink.spans():
            got[int.from_bytes(tid_b, "big")] = got.get(int.from_bytes(tid_b, "big"), 0) + 1
        assert set(got) == tids
        assert all(n == 3 for n in got.values())
        assert summary["decisions_by_trigger"] == {"shutdown": 120}


def test_late_spans_follow_cached_decision():
    cfg_pol = [{"name": "errors", "type": "status_code", "status_code": {"status_codes": ["ERROR"]}}]
    with CaptureSink() as sink:
        cfg = {"sampler": {"root_wait": "100ms", "idle_timeout": "1s", "policies": cfg_pol},
               "exporters": {"otlp": {"endpoint": sink.endpoint}}}
        with Serve(cfg) as srv:
            ch = grpc.insecure_channel(srv.endpoint)
            export = ch.unary_unary("/opentelemetry.proto.collector.trace.v1.TraceService/Export")
            kept = trace(3, status=2)
            dropped = trace(3)
            export(make_request([kept[:2], dropped[:2]]))
            deadline = time.monotonic() + 10
            while srv.metric("traceo_sampler_traces_decided_total") < 2 and time.monotonic() < deadline:
                time.sleep(0.05)
            assert srv.metric("traceo_sampler_traces_decided_total") == 2
            export(make_request([kept[2:], dropped[2:]]))
            deadline = time.monotonic() + 10
            while len(sink.spans()) < 3 and time.monotonic() < deadline:
                time.sleep(0.05)
            time.sleep(0.3)
            assert srv.metric("traceo_sampler_late_spans_total", decision="sampled") == 1
            assert srv.metric("traceo_sampler_late_spans_total", decision="not_sampled") == 1
            ch.close()
        got = [(t, sp.span_id, sp.trace_state) for t, sp, _r, _s in sink.spans()]
        assert sorted(g[1] for g in got) == sorted(s["span_id"] for s in kept)
        assert all(g[0] == kept[0]["trace_id"] and g[2] == "ot=th:0" for g in got)


def test_bad_input_gets_clear_errors():
    with CaptureSink() as sink:
        cfg = {"sampler": {"root_wait": "100ms", "policies": [{"name": "all", "type": "always_sample"}]},
               "exporters": {"otlp": {"endpoint": sink.endpoint}}}
        with Serve(cfg, http=True) as srv:
            ch = grpc.insecure_channel(srv.endpoint)
            export = ch.unary_unary("/opentelemetry.proto.collector.trace.v1.TraceService/Export")
            with pytest.raises(grpc.RpcError) as ei:
                export(b"\x0a\xff\xff\xff\xff\x0f")
            assert ei.value.code() == grpc.StatusCode.INVALID_ARGUMENT
            assert "ExportTraceServiceRequest" in ei.value.details()
            # invalid IDs: partial success; the valid spans of the request are kept
            good = trace(2)
            bad = trace(2)
            bad[0]["trace_id"] = b"short"
            bad[1]["span_id"] = b"\x00" * 8
            from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
                ExportTraceServiceResponse,
            )
            resp = ExportTraceServiceResponse.FromString(export(make_request([good, bad])))
            assert resp.partial_success.rejected_spans == 2
            assert "trace_id must be 16 bytes" in resp.partial_success.error_message
            # too large a message: RESOURCE_EXHAUSTED from grpc, process lives
            with pytest.raises(grpc.RpcError) as ei:
                export(b"\x0a" + b"\x80\x80\x80\x08" + b"x" * (17 << 20))
            assert ei.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
            # OTLP/HTTP: 400 with a readable status for garbage
            import urllib.error
            import urllib.request
            req = urllib.request.Request(f"http://127.0.0.1:{srv.http_port}/v1/traces",
                                         data=b"\xff\xff", headers={"Content-Type": "application/x-protobuf"})
            with pytest.raises(urllib.error.HTTPError) as he:
                urllib.request.urlopen(req, timeout=5)
            assert he.value.code == 400
            deadline = time.monotonic() + 10
            while len(sink.spans()) < 2 and time.monotonic() < deadline:
                time.sleep(0.05)
            assert sorted(sp.span_id for _t, sp, _r, _s in sink.spans()) == sorted(s["span_id"] for s in good)
            assert srv.metric("traceo_sampler_invalid_spans_total") == 2
            ch.close()
