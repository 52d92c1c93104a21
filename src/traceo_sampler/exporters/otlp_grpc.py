"""OTLP/gRPC exporter: batches of re-encoded kept spans, sent as raw bytes
(the batch already is an ExportTraceServiceRequest encoding)."""
from __future__ import annotations

import logging

import grpc
from google.rpc import error_details_pb2, status_pb2
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceResponse

from ..config import OtlpExporter as OtlpCfg
from .base import Exporter
from .tls import grpc_credentials, host_port, uses_tls

log = logging.getLogger("traceo_sampler.exporters")
METHOD = "/opentelemetry.proto.collector.trace.v1.TraceService/Export"
# The OTLP specification's retryable gRPC codes.
RETRYABLE = {grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.RESOURCE_EXHAUSTED,
             grpc.StatusCode.DEADLINE_EXCEEDED, grpc.StatusCode.ABORTED,
             grpc.StatusCode.CANCELLED, grpc.StatusCode.OUT_OF_RANGE,
             grpc.StatusCode.DATA_LOSS}


def _identity(b: bytes) -> bytes:
    return b


def retry_info_delay(exc: grpc.aio.AioRpcError) -> float | None:
    """The server's RetryInfo.retry_delay from grpc-status-details-bin."""
    for key, value in exc.trailing_metadata() or ():
        if key == "grpc-status-details-bin":
            try:
                st = status_pb2.Status.FromString(value)
            except Exception:  # noqa: BLE001 - a malformed hint is no hint
                return None
            for detail in st.details:
                if detail.Is(error_details_pb2.RetryInfo.DESCRIPTOR):
                    ri = error_details_pb2.RetryInfo()
                    detail.Unpack(ri)
                    return ri.retry_delay.seconds + ri.retry_delay.nanos / 1e9
    return None


class OtlpGrpcExporter(Exporter):
    name = "otlp"

    def __init__(self, cfg: OtlpCfg, metrics, name: str = "otlp"):
        super().__init__(metrics, cfg.queue_max_bytes, cfg.batch_max_spans, cfg.batch_max_bytes,
                         cfg.queue_full, cfg.retry)
        self.name = name
        self.cfg = cfg
        target = host_port(cfg.endpoint)
        opts: list[tuple[str, int | str]] = [("grpc.max_send_message_length", 64 << 20)]
        if cfg.retry.enabled:
            # gRPC's own reconnect backoff grows to 120 s: after a backend
            # outage of a minute the channel would stay down for another, every
            # retry failing at once while the queue fills and clients are
            # pushed back. It follows the retry settings instead.
            opts += [("grpc.initial_reconnect_backoff_ms",
                      max(100, int(cfg.retry.initial_interval.seconds * 1000))),
                     ("grpc.max_reconnect_backoff_ms",
                      max(100, int(cfg.retry.max_interval.seconds * 1000)))]
        if uses_tls(cfg.endpoint, cfg.tls):
            if cfg.tls is not None and cfg.tls.server_name_override:
                opts.append(("grpc.ssl_target_name_override", cfg.tls.server_name_override))
            self.channel = grpc.aio.secure_channel(target, grpc_credentials(cfg.tls), options=opts)
        else:
            self.channel = grpc.aio.insecure_channel(target, options=opts)
        self._call = self.channel.unary_unary(
            METHOD, request_serializer=_identity,
            response_deserializer=ExportTraceServiceResponse.FromString)
        self.compression = grpc.Compression.Gzip if cfg.compression == "gzip" else None
        self.metadata = tuple((k.lower(), v) for k, v in cfg.headers.items()) or None
        self.timeout = cfg.timeout.seconds

    async def send(self, payload: bytes) -> None:
        resp = await self._call(payload, timeout=self.timeout, metadata=self.metadata,
                                compression=self.compression)
        self.partial_success(resp.partial_success)

    def retryable(self, exc: Exception) -> bool:
        return isinstance(exc, grpc.aio.AioRpcError) and exc.code() in RETRYABLE

    def refused(self, exc: Exception) -> bool:
        return (isinstance(exc, grpc.aio.AioRpcError)
                and exc.code() == grpc.StatusCode.INVALID_ARGUMENT)

    def retry_after(self, exc: Exception) -> float | None:
        if isinstance(exc, grpc.aio.AioRpcError):
            return retry_info_delay(exc)
        return None

    async def aclose(self) -> None:
        await self.channel.close()
