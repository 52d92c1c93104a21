"""The real Jaeger v2 test helper (tests/support/jaeger.py) works end to end.

No skip when Jaeger is absent: the binary is built from tools/jaeger/go.mod on
first use (scripts/jaeger.sh build), so a failure here is a real failure.
"""

from __future__ import annotations

import secrets
import sys
from pathlib import Path

import pytest

try:
    from tests.support.jaeger import Jaeger, JaegerError, iter_spans
    from tests.support.jaeger_fixture import jaeger, jaeger_badger  # noqa: F401  (fixtures)
except ModuleNotFoundError:  # pytest started without the repo root on sys.path
    sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
    from tests.support.jaeger import Jaeger, JaegerError, iter_spans
    from tests.support.jaeger_fixture import jaeger, jaeger_badger  # noqa: F401  (fixtures)

from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor

# The first test may build Jaeger (minutes with empty Go caches) and start it.
pytestmark = [pytest.mark.integration, pytest.mark.timeout(3600)]


def send_trace(exporter, service: str = "traceo-test") -> tuple[str, set[str]]:
    """Export one trace of 3 spans (root + 2 children); return (trace id hex, span ids hex)."""
    provider = TracerProvider(resource=Resource.create({"service.name": service}))
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    tracer = provider.get_tracer("tests.integration.test_jaeger")
    span_ids = set()
    with tracer.start_as_current_span("root") as root:
        for name in ("child-a", "child-b"):
            with tracer.start_as_current_span(name) as child:
                span_ids.add(f"{child.get_span_context().span_id:016x}")
        span_ids.add(f"{root.get_span_context().span_id:016x}")
        trace_id = f"{root.get_span_context().trace_id:032x}"
    provider.shutdown()
    return trace_id, span_ids


def grpc_exporter(j: Jaeger) -> OTLPSpanExporter:
    return OTLPSpanExporter(endpoint=j.otlp_grpc_endpoint, insecure=True, timeout=10)


def test_trace_sent_over_otlp_grpc_is_queryable(jaeger: Jaeger) -> None:
    trace_id, sent = send_trace(grpc_exporter(jaeger))
    doc = jaeger.wait_for_trace(trace_id, span_count=3, timeout=15)

    assert jaeger.span_ids(trace_id) == sent
    spans = list(iter_spans(doc))
    assert len(spans) == 3
    assert {s["traceId"] for s in spans} == {trace_id}
    by_name = {s["name"]: s for s in spans}
    assert set(by_name) == {"root", "child-a", "child-b"}
    root_id = by_name["root"]["spanId"]
    assert not by_name["root"].get("parentSpanId")
    assert by_name["child-a"]["parentSpanId"] == root_id
    assert by_name["child-b"]["parentSpanId"] == root_id
    resources = [rs["resource"] for rs in doc["result"]["resourceSpans"]]
    service_names = {
        a["value"]["stringValue"]
        for r in resources
        for a in r.get("attributes", [])
        if a["key"] == "service.name"
    }
    assert service_names == {"traceo-test"}
    assert "traceo-test" in jaeger.services()


def test_trace_sent_over_otlp_http_is_queryable(jaeger: Jaeger) -> None:
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import (
        OTLPSpanExporter as HTTPSpanExporter,
    )

    exporter = HTTPSpanExporter(endpoint=jaeger.otlp_http_traces_url, timeout=10)
    trace_id, sent = send_trace(exporter, service="traceo-test-http")
    jaeger.wait_for_trace(trace_id, span_count=3, timeout=15)
    assert jaeger.span_ids(trace_id) == sent


def test_unknown_trace_is_none(jaeger: Jaeger) -> None:
    unknown = secrets.token_hex(16)
    assert jaeger.get_trace(unknown) is None
    assert jaeger.span_ids(unknown) == set()
    with pytest.raises(ValueError):
        jaeger.get_trace("not-hex")


def test_memory_storage_is_empty_after_restart() -> None:
    with Jaeger(storage="memory") as j:
        endpoint = j.otlp_grpc_endpoint
        trace_id, sent = send_trace(grpc_exporter(j))
        j.wait_for_trace(trace_id, span_count=3)
        assert j.stop() == 0  # SIGTERM: clean shutdown
        assert not j.is_running
        with pytest.raises(JaegerError):
            j.get_trace(trace_id)  # nobody listening
        j.start()
        assert j.otlp_grpc_endpoint == endpoint  # same ports after a restart
        assert j.get_trace(trace_id) is None  # in-memory storage: nothing survives
        trace_id2, sent2 = send_trace(grpc_exporter(j))
        j.wait_for_trace(trace_id2, span_count=3)
        assert j.span_ids(trace_id2) == sent2


def test_badger_storage_survives_stop_and_kill(jaeger_badger: Jaeger) -> None:
    j = jaeger_badger
    endpoint = j.otlp_grpc_endpoint
    trace_id, sent = send_trace(grpc_exporter(j))
    j.wait_for_trace(trace_id, span_count=3)

    assert j.stop() == 0  # SIGTERM
    j.start()
    assert j.otlp_grpc_endpoint == endpoint
    assert j.span_ids(trace_id) == sent

    trace_id2, sent2 = send_trace(grpc_exporter(j))
    j.wait_for_trace(trace_id2, span_count=3)
    j.kill()  # SIGKILL, as a crash: synced writes are still there
    j.start()
    assert j.span_ids(trace_id) == sent
    assert j.span_ids(trace_id2) == sent2
    assert j.started_count == 3
