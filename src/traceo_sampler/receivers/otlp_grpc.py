"""OTLP/gRPC receiver: TraceService/Export taking the request as raw bytes.

No protobuf deserializer runs on the hot path: grpc hands us the bytes and
the scanner walks them once.
"""
from __future__ import annotations

import logging

import grpc
from google.protobuf import any_pb2, duration_pb2
from google.rpc import error_details_pb2, status_pb2
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTracePartialSuccess,
    ExportTraceServiceResponse,
)

log = logging.getLogger("traceo_sampler.receivers")
SERVICE = "opentelemetry.proto.collector.trace.v1.TraceService"


def partial_success(rejected: int, errors: list[str]) -> bytes:
    msg = "; ".join(errors[:10])
    if len(errors) > 10:
        msg += f"; and {len(errors) - 10} more"
    return ExportTraceServiceResponse(partial_success=ExportTracePartialSuccess(
        rejected_spans=rejected, error_message=msg)).SerializeToString()


def retry_info_trailer(message: str, delay: float) -> tuple:
    """grpc-status-details-bin carrying RetryInfo, which OTLP clients honour."""
    d = duration_pb2.Duration(seconds=int(delay), nanos=int((delay % 1) * 1e9))
    detail = any_pb2.Any()
    detail.Pack(error_details_pb2.RetryInfo(retry_delay=d))
    st = status_pb2.Status(code=grpc.StatusCode.RESOURCE_EXHAUSTED.value[0], message=message,
                           details=[detail])
    return (("grpc-status-details-bin", st.SerializeToString()),)


def pushback_reason(front) -> str:
    """Why ``front.backpressure()`` holds, for the client (a front without
    ``pushback_reason`` pushes back only for a full exporter queue)."""
    reason = getattr(front, "pushback_reason", None)
    return reason() if reason is not None else "exporter queue full"


class OtlpGrpcReceiver:
    name = "otlp_grpc"
    # service.workers: every worker listens on the same port
    reuse_port = False

    def __init__(self, endpoint: str, pipeline, metrics, max_recv_mib: int = 16, *,
                 tls=None, gate=None):
        self.endpoint = endpoint
        self.pipeline = pipeline
        self.metrics = metrics
        self.max_bytes = max_recv_mib << 20
        self.tls = tls          # config.ServerTls
        self.gate = gate        # receivers.gate.Gate: auth, memory limiter
        self.server: grpc.aio.Server | None = None
        self.port = 0

    async def _export(self, request: bytes, context: grpc.aio.ServicerContext) -> bytes:
        m = self.metrics
        if self.pipeline.backpressure():
            m.receiver_requests_total.labels(self.name, "backpressure").inc()
            msg = pushback_reason(self.pipeline) + "; retry later"
            await context.abort(grpc.StatusCode.RESOURCE_EXHAUSTED, msg,
                                trailing_metadata=retry_info_trailer(msg, self.pipeline.RETRY_AFTER))
        try:
            res = self.pipeline.ingest(request)
        except ValueError as exc:
            m.receiver_requests_total.labels(self.name, "invalid").inc()
            m.invalid_requests_total.labels(self.name).inc()
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT,
                                f"not a valid ExportTraceServiceRequest: {exc}")
        acked = getattr(res, "acked", None)
        if acked is not None:
            # a front that answers once downstream acknowledged (router mode):
            # '' or why not, then the client is told to retry
            err = await acked
            if err:
                m.receiver_requests_total.labels(self.name, "unavailable").inc()
                await context.abort(grpc.StatusCode.UNAVAILABLE, err)
        if res.rejected:
            m.receiver_requests_total.labels(self.name, "partial").inc()
            return partial_success(res.rejected, res.errors)
        m.receiver_requests_total.labels(self.name, "ok").inc()
        return b""

    async def start(self) -> None:
        opts = [("grpc.max_receive_message_length", self.max_bytes),
                ("grpc.so_reuseport", int(self.reuse_port))]
        interceptors = [self.gate.grpc_interceptor()] if self.gate else []
        self.server = grpc.aio.server(options=opts, interceptors=interceptors)
        handler = grpc.method_handlers_generic_handler(SERVICE, {
            "Export": grpc.unary_unary_rpc_method_handler(
                self._export, request_deserializer=None, response_serializer=None)})
        self.server.add_generic_rpc_handlers((handler,))
        if self.tls is not None:
            from .security import CertificateFiles, grpc_credentials
            counter = self.metrics.tls_reloads_total
            certs = CertificateFiles(self.tls, lambda result: counter.labels(self.name, result).inc())
            self.port = self.server.add_secure_port(self.endpoint, grpc_credentials(certs))
        else:
            self.port = self.server.add_insecure_port(self.endpoint)
        if self.port == 0:
            raise OSError(f"cannot listen on {self.endpoint}")
        await self.server.start()
        log.info("OTLP/gRPC receiver listening on %s", self.endpoint)

    async def stop(self, grace: float = 2.0) -> None:
        if self.server is not None:
            await self.server.stop(grace)
