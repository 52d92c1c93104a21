"""Second line of defence (issue 9, item 2): a backend that refuses a whole
batch permanently because of one trace in it (gRPC INVALID_ARGUMENT, HTTP
400). The exporter splits the batch until that trace is alone; every other
trace of the batch is delivered, the refused one is counted in
``export_refused_traces_total{exporter}`` and logged by ID. Driven end to end:
the OpenTelemetry SDK sends to ``serve`` (subprocess), which exports to a
strict backend in the test, over gRPC and over HTTP/protobuf."""
from __future__ import annotations

import threading
import time
from concurrent import futures
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import grpc
import pytest
from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor

from support_serve import Serve

pytestmark = pytest.mark.e2e
SERVICE = "opentelemetry.proto.collector.trace.v1.TraceService"


class StrictBackend:
    """Refuses any request holding a span named "poison"; records the trace
    IDs of the requests it takes. The first request waits a second, so the
    traces decided meanwhile queue up into one batch."""

    def __init__(self):
        self.kept: dict[bytes, int] = {}
        self.refusals = 0
        self.calls = 0
        self.lock = threading.Lock()

    def judge(self, body: bytes) -> bool:
        with self.lock:
            self.calls += 1
            first = self.calls == 1
        if first:
            time.sleep(1.0)
        req = ExportTraceServiceRequest.FromString(body)
        spans = [sp for rs in req.resource_spans for ss in rs.scope_spans for sp in ss.spans]
        if any(sp.name == "poison" for sp in spans):
            with self.lock:
                self.refusals += 1
            return False
        with self.lock:
            for sp in spans:
                self.kept[sp.trace_id] = self.kept.get(sp.trace_id, 0) + 1
        return True


def grpc_backend(b: StrictBackend):
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=4))

    def export(request, context):
        if not b.judge(request):
            context.abort(grpc.StatusCode.INVALID_ARGUMENT, "span name 'poison' not allowed")
        return b""

    server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(SERVICE, {
        "Export": grpc.unary_unary_rpc_method_handler(export)}),))
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    return {"endpoint": f"127.0.0.1:{port}"}, lambda: server.stop(0)


def http_backend(b: StrictBackend):
    class Handler(BaseHTTPRequestHandler):
        def do_POST(self):
            body = self.rfile.read(int(self.headers["Content-Length"]))
            ok = b.judge(body)
            self.send_response(200 if ok else 400)
            msg = b"" if ok else b"span name 'poison' not allowed"
            self.send_header("Content-Length", str(len(msg)))
            self.end_headers()
            self.wfile.write(msg)

        def log_message(self, *a):
            pass

    srv = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    return ({"endpoint": f"http://127.0.0.1:{srv.server_address[1]}",
             "protocol": "http/protobuf"}, srv.shutdown)


@pytest.mark.parametrize("backend", [grpc_backend, http_backend], ids=["grpc", "http"])
def test_refused_batch_split_to_the_trace_at_fault(backend):
    b = StrictBackend()
    exp_cfg, stop_backend = backend(b)
    try:
        cfg = {"sampler": {"root_wait": "100ms", "idle_timeout": "1s", "decision_wait": "5s",
                           "policies": [{"name": "all", "type": "always_sample"}]},
               "exporters": {"otlp": dict(exp_cfg, retry={"max_elapsed": "5s"})}}
        with Serve(cfg) as s:
            provider = TracerProvider(resource=Resource.create({"service.name": "shop"}))
            provider.add_span_processor(SimpleSpanProcessor(
                OTLPSpanExporter(endpoint=f"http://{s.endpoint}", insecure=True)))
            tracer = provider.get_tracer("t")
            ids = []

            def one(name: str) -> int:
                with tracer.start_as_current_span("GET /") as root:
                    with tracer.start_as_current_span(name):
                        pass
                return root.get_span_context().trace_id

            first = one("warm-up")   # its export is held a second by the backend
            time.sleep(0.5)
            for i in range(24):
                ids.append(one("poison" if i == 13 else f"op{i}"))
            poison = ids[13].to_bytes(16, "big")
            deadline = time.monotonic() + 20
            while time.monotonic() < deadline and (
                    s.metric("traceo_sampler_export_refused_traces_total", exporter="otlp") < 1
                    or len(b.kept) < 24):
                time.sleep(0.2)
            refused = s.metric("traceo_sampler_export_refused_traces_total", exporter="otlp")
            dropped = s.metric("traceo_sampler_export_dropped_spans_total", exporter="otlp")
            provider.shutdown()
            assert s.stop() == 0
        good = [t.to_bytes(16, "big") for t in ids if t != ids[13]]
        assert all(b.kept.get(t) == 2 for t in good + [first.to_bytes(16, "big")]), \
            f"{sum(t in b.kept for t in good)}/23 good traces delivered"
        assert poison not in b.kept
        assert b.refusals >= 2   # a batch with other traces was refused, then split
        assert refused == 1 and dropped == 2
        assert poison.hex() in s.stderr and "refused by the backend as invalid" in s.stderr
    finally:
        stop_backend()
