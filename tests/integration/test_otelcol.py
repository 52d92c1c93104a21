"""The real Collector harness works: spans through an otlp receiver, the batch
processor and the otlp exporter reach a capturing sink byte for byte, and the
Collector's own tail_sampling runs in the same binary."""
from __future__ import annotations

import time

import grpc
import pytest

from support.otelcol import Otelcol
from support.procs import free_ports
from support_otlp import CaptureSink, make_request, trace

pytestmark = [pytest.mark.integration, pytest.mark.timeout(900)]

METHOD = "/opentelemetry.proto.collector.trace.v1.TraceService/Export"


def _send(endpoint: str, body: bytes) -> None:
    with grpc.insecure_channel(endpoint) as ch:
        ch.unary_unary(METHOD)(body, timeout=10)


def _wait_spans(sink: CaptureSink, n: int, timeout: float = 20) -> list:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        got = sink.spans()
        if len(got) >= n:
            return got
        time.sleep(0.1)
    return sink.spans()


def test_collector_passes_spans_through_batch_to_sink():
    (port,) = free_ports(1)
    traces = [trace(3) for _ in range(20)]
    with CaptureSink() as sink:
        cfg = {
            "receivers": {"otlp": {"protocols": {"grpc": {"endpoint": f"127.0.0.1:{port}"}}}},
            "processors": {"batch": {"timeout": "100ms"}},
            "exporters": {"otlp": {"endpoint": sink.endpoint, "tls": {"insecure": True}}},
            "service": {"pipelines": {"traces": {
                "receivers": ["otlp"], "processors": ["batch"], "exporters": ["otlp"]}}},
        }
        with Otelcol(cfg):
            _send(f"127.0.0.1:{port}", make_request(traces))
            got = _wait_spans(sink, 60)
    assert {(tid, sp.span_id) for tid, sp, _, _ in got} == {
        (s["trace_id"], s["span_id"]) for t in traces for s in t}


def test_collector_tail_sampling_keeps_errors_only():
    (port,) = free_ports(1)
    errors = [trace(2, status=2) for _ in range(5)]
    ok = [trace(2) for _ in range(5)]
    with CaptureSink() as sink:
        cfg = {
            "receivers": {"otlp": {"protocols": {"grpc": {"endpoint": f"127.0.0.1:{port}"}}}},
            "processors": {"tail_sampling": {"decision_wait": "1s", "policies": [
                {"name": "errors", "type": "status_code",
                 "status_code": {"status_codes": ["ERROR"]}}]}},
            "exporters": {"otlp": {"endpoint": sink.endpoint, "tls": {"insecure": True}}},
            "service": {"pipelines": {"traces": {
                "receivers": ["otlp"], "processors": ["tail_sampling"], "exporters": ["otlp"]}}},
        }
        with Otelcol(cfg):
            _send(f"127.0.0.1:{port}", make_request(errors + ok))
            got = _wait_spans(sink, 10)
            time.sleep(2)  # anything wrongly kept would arrive by now
            got = sink.spans()
    assert {tid for tid, *_ in got} == {t[0]["trace_id"] for t in errors}
