"""Helpers shared by tests: building requests, a capturing OTLP gRPC sink."""
from __future__ import annotations

import os
import threading
from concurrent import futures

import grpc
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

SERVICE = "opentelemetry.proto.collector.trace.v1.TraceService"


def make_request(traces, service="svc", scope="lib"):
    """traces: list of lists of span dicts (trace_id, span_id, parent,
    start, end, status, name, trace_state, attrs)."""
    req = ExportTraceServiceRequest()
    rs = req.resource_spans.add()
    rs.resource.attributes.add(key="service.name").value.string_value = service
    ss = rs.scope_spans.add()
    ss.scope.name = scope
    for spans in traces:
        for s in spans:
            sp = ss.spans.add(trace_id=s["trace_id"], span_id=s["span_id"],
                              parent_span_id=s.get("parent", b""), name=s.get("name", "op"),
                              start_time_unix_nano=s.get("start", 1_000),
                              end_time_unix_nano=s.get("end", 2_000),
                              trace_state=s.get("trace_state", ""))
            if s.get("status"):
                sp.status.code = s["status"]
            for k, v in (s.get("attrs") or {}).items():
                a = sp.attributes.add(key=k)
                if isinstance(v, bool):
                    a.value.bool_value = v
                elif isinstance(v, int):
                    a.value.int_value = v
                elif isinstance(v, float):
                    a.value.double_value = v
                else:
                    a.value.string_value = v
    return req.SerializeToString()


def trace(n_spans=3, root=True, tid=None, **kw):
    tid = tid or os.urandom(16)
    spans = []
    root_id = os.urandom(8)
    for i in range(n_spans):
        sid = root_id if i == 0 else os.urandom(8)
        parent = b"" if (i == 0 and root) else (os.urandom(8) if i == 0 else root_id)
        d = {"trace_id": tid, "span_id": sid, "parent": parent, "name": f"op{i}"}
        d.update(kw)
        spans.append(d)
    return spans


class ItemSink:
    """An exporter for a Pipeline built in the test: keeps the items it is
    handed; ``ack_all()`` acknowledges them as a backend would."""
    name = "sink"
    blocking = False

    def __init__(self):
        self.items = []

    def submit(self, item):
        self.items.append(item)
        return True

    def ack_all(self):
        for it in self.items:
            if it.ack is not None:
                it.ack()
            it.ack = None

    def trace_ids(self) -> list[bytes]:
        return [t for it in self.items for t in it.trace_ids]

    @property
    def spans(self) -> int:
        return sum(it.spans for it in self.items)


class CaptureSink:
    """An OTLP gRPC server in the test process that records every request."""

    def __init__(self, port: int = 0):
        self.requests: list[bytes] = []
        self.lock = threading.Lock()
        self.server = grpc.server(futures.ThreadPoolExecutor(max_workers=4),
                                  options=[("grpc.max_receive_message_length", 64 << 20)])
        handler = grpc.method_handlers_generic_handler(SERVICE, {
            "Export": grpc.unary_unary_rpc_method_handler(
                self._export, request_deserializer=None, response_serializer=None)})
        self.server.add_generic_rpc_handlers((handler,))
        self.port = self.server.add_insecure_port(f"127.0.0.1:{port}")

    def _export(self, request, context):
        with self.lock:
            self.requests.append(request)
        return b""

    def __enter__(self):
        self.server.start()
        return self

    def __exit__(self, *exc):
        self.server.stop(0)

    @property
    def endpoint(self):
        return f"127.0.0.1:{self.port}"

    def spans(self):
        """[(trace_id, span, resource, scope)] of everything received."""
        out = []
        with self.lock:
            reqs = list(self.requests)
        for raw in reqs:
            req = ExportTraceServiceRequest.FromString(raw)
            for rs in req.resource_spans:
                for ss in rs.scope_spans:
                    for sp in ss.spans:
                        out.append((sp.trace_id, sp, rs.resource, ss.scope))
        return out
