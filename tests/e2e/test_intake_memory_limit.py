"""The process memory limiter through ``serve``: RSS above
``service.memory_limit_mib`` makes the receivers push back (gRPC
RESOURCE_EXHAUSTED with RetryInfo, HTTP 429 with Retry-After) until it
falls, and an SDK exporter that was pushed back delivers its spans after."""
from __future__ import annotations

import threading
import time
import urllib.error
import urllib.request

import grpc
import psutil
import pytest
from google.rpc import error_details_pb2, status_pb2
from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SpanExportResult

from support_otlp import CaptureSink, make_request, trace
from support_serve import Serve

pytestmark = pytest.mark.e2e
EXPORT = "/opentelemetry.proto.collector.trace.v1.TraceService/Export"
HEADROOM_MIB = 45
# filler traces are dropped (their memory comes back once decided); spans
# with keep=true are kept and exported
POLICIES = [{"name": "keep", "type": "boolean_attribute",
             "boolean_attribute": {"key": "keep", "value": True}}]


def _cfg(sink, limit_mib=0):
    return {"sampler": {"root_wait": "3s", "idle_timeout": "3s", "decision_wait": "4s",
                        "policies": POLICIES},
            "exporters": {"otlp": {"endpoint": sink.endpoint}},
            # one process: the limit is the process's (with service.workers
            # each worker gets its share)
            "service": {"memory_limit_mib": limit_mib, "workers": 1}}


def _idle_rss_mib(sink) -> int:
    with Serve(_cfg(sink)) as srv:
        time.sleep(0.5)
        return psutil.Process(srv.proc.pid).memory_info().rss >> 20


def _retry_delay(err: grpc.RpcError) -> float:
    for k, v in err.trailing_metadata() or ():
        if k == "grpc-status-details-bin":
            for d in status_pb2.Status.FromString(v).details:
                info = error_details_pb2.RetryInfo()
                if d.Unpack(info):
                    return info.retry_delay.seconds + info.retry_delay.nanos / 1e9
    return -1.0


def _sdk_export(endpoint, result: list):
    provider = TracerProvider(resource=Resource.create({"service.name": "pushed-back"}))
    tracer = provider.get_tracer("limiter-test")
    spans = []
    for i in range(5):
        with tracer.start_as_current_span(f"op-{i}", attributes={"keep": True}) as sp:
            spans.append(sp)
    exporter = OTLPSpanExporter(endpoint=f"http://{endpoint}", insecure=True, timeout=30)
    result.append(exporter.export(spans))
    result.append({sp.get_span_context().span_id.to_bytes(8, "big") for sp in spans})
    exporter.shutdown()


def test_receivers_push_back_above_the_limit_and_recover():
    with CaptureSink() as sink:
        limit = _idle_rss_mib(sink) + HEADROOM_MIB
        with Serve(_cfg(sink, limit), http=True) as srv:
            ch = grpc.insecure_channel(srv.endpoint, options=[("grpc.max_send_message_length", 64 << 20)])
            export = ch.unary_unary(EXPORT)
            filler = "x" * 900
            refused = None
            for _ in range(400):
                req = make_request([trace(8, attrs={"payload": filler}) for _ in range(400)])
                try:
                    export(req, timeout=30)
                except grpc.RpcError as e:
                    refused = e
                    break
            assert refused is not None, "RSS never reached the limit"
            # -- pushed back, the way OTLP clients understand
            assert refused.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
            assert "memory_limit_mib" in refused.details()
            assert _retry_delay(refused) == 1.0
            req = urllib.request.Request(f"http://127.0.0.1:{srv.http_port}/v1/traces",
                                         data=make_request([trace(1)]),
                                         headers={"Content-Type": "application/x-protobuf"})
            with pytest.raises(urllib.error.HTTPError) as he:
                urllib.request.urlopen(req, timeout=10)
            assert he.value.code == 429 and he.value.headers["Retry-After"] == "1"
            assert srv.metric("traceo_sampler_memory_limiter_refusing") == 1
            assert srv.metric("traceo_sampler_memory_limit_bytes") == limit << 20
            # -- an SDK exporter pushed back now retries and delivers later
            result: list = []
            t = threading.Thread(target=_sdk_export, args=(srv.endpoint, result))
            t.start()
            # -- buffered traces get decided and their memory handed back:
            # the receivers accept again
            deadline = time.monotonic() + 20
            while True:
                try:
                    export(make_request([trace(1)]), timeout=10)
                    break
                except grpc.RpcError as e:
                    assert e.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
                    assert time.monotonic() < deadline, "RSS did not fall below the limit"
                    time.sleep(0.5)
            t.join(60)
            assert result and result[0] == SpanExportResult.SUCCESS
            deadline = time.monotonic() + 10
            while not result[1] <= {sp.span_id for _t, sp, _r, _s in sink.spans()}:
                assert time.monotonic() < deadline, "the pushed-back SDK spans never arrived"
                time.sleep(0.1)
            # (accepted again means RSS was below the limit at that moment; it
            # may pass it again afterwards, the limit is a threshold, not a cap)
            assert srv.metric("traceo_sampler_receiver_requests_total", outcome="memory_limit") >= 2
            ch.close()
