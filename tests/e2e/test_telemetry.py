"""Telemetry through `serve`: the service label cap, cost accounting."""
import time

import grpc
import pytest
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from prometheus_client.parser import text_string_to_metric_families

from support_otlp import CaptureSink, make_request, trace
from support_serve import Serve

pytestmark = pytest.mark.e2e
METHOD = "/opentelemetry.proto.collector.trace.v1.TraceService/Export"


def _samples(srv, name):
    for fam in text_string_to_metric_families(srv.get("/metrics")):
        for s in fam.samples:
            if s.name == name:
                yield s


def test_service_label_cap_holds_with_1000_services():
    cfg = {"sampler": {"root_wait": "100ms", "policies": [{"name": "all", "type": "always_sample"}]},
           "telemetry": {"max_services": 200}}
    with CaptureSink() as sink:
        cfg["exporters"] = {"otlp": {"endpoint": sink.endpoint}}
        with Serve(cfg) as srv:
            ch = grpc.insecure_channel(srv.endpoint)
            export = ch.unary_unary(METHOD)
            req = ExportTraceServiceRequest()
            for i in range(1000):
                req.MergeFromString(make_request([trace(1)], service=f"svc-{i:04d}"))
            export(req.SerializeToString())
            deadline = time.monotonic() + 15
            while srv.metric("traceo_sampler_traces_decided_total") < 1000 and time.monotonic() < deadline:
                time.sleep(0.1)
            received = list(_samples(srv, "traceo_sampler_spans_received_total"))
            labels = {s.labels["service"] for s in received}
            assert len(labels) == 201 and "other" in labels
            assert sum(s.value for s in received) == 1000
            assert next(s.value for s in received if s.labels["service"] == "other") == 800
            for name in ("traceo_sampler_spans_exported_total", "traceo_sampler_cost_usd_total",
                         "traceo_sampler_bytes_received_total"):
                assert len({s.labels["service"] for s in _samples(srv, name)}) <= 201, name
            ch.close()


def test_cost_received_equals_bytes_over_gib_and_exported_not_more():
    cfg = {"sampler": {"root_wait": "100ms", "policies": [
        {"name": "errors", "type": "status_code", "status_code": {"status_codes": ["ERROR"]}}]},
        "cost": {"usd_per_gib": 1.0}}
    with CaptureSink() as sink:
        cfg["exporters"] = {"otlp": {"endpoint": sink.endpoint}}
        with Serve(cfg) as srv:
            ch = grpc.insecure_channel(srv.endpoint)
            export = ch.unary_unary(METHOD)
            for svc in ("a", "b", "c"):
                export(make_request([trace(3, status=2 if i % 3 == 0 else 0) for i in range(30)],
                                    service=svc))
            deadline = time.monotonic() + 15
            while srv.metric("traceo_sampler_traces_decided_total") < 90 and time.monotonic() < deadline:
                time.sleep(0.1)
            time.sleep(0.5)
            for svc in ("a", "b", "c"):
                nbytes = srv.metric("traceo_sampler_bytes_received_total", service=svc)
                usd_in = srv.metric("traceo_sampler_cost_usd_total", service=svc, stage="received")
                usd_out = srv.metric("traceo_sampler_cost_usd_total", service=svc, stage="exported")
                assert nbytes > 0
                assert usd_in == pytest.approx(nbytes / 2**30, rel=1e-9)
                assert 0 < usd_out <= usd_in
            ch.close()
