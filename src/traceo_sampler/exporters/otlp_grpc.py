"""OTLP/gRPC exporter: batches of re-encoded kept spans, sent as raw bytes
(the batch already is an ExportTraceServiceRequest encoding)."""
from __future__ import annotations

import logging

import grpc
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceResponse

from ..config import OtlpExporter as OtlpCfg
from .base import Exporter

log = logging.getLogger("traceo_sampler.exporters")
METHOD = "/opentelemetry.proto.collector.trace.v1.TraceService/Export"
RETRYABLE = {grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.RESOURCE_EXHAUSTED,
             grpc.StatusCode.DEADLINE_EXCEEDED, grpc.StatusCode.ABORTED,
             grpc.StatusCode.CANCELLED, grpc.StatusCode.OUT_OF_RANGE,
             grpc.StatusCode.DATA_LOSS}


def _identity(b: bytes) -> bytes:
    return b


class OtlpGrpcExporter(Exporter):
    name = "otlp"

    def __init__(self, cfg: OtlpCfg, metrics):
        super().__init__(metrics, cfg.queue_max_bytes, cfg.batch_max_spans, cfg.batch_max_bytes)
        self.cfg = cfg
        ep = cfg.endpoint
        secure = ep.startswith("https://")
        target = ep.split("://", 1)[-1]
        opts = [("grpc.max_send_message_length", 64 << 20)]
        if secure:
            self.channel = grpc.aio.secure_channel(target, grpc.ssl_channel_credentials(), options=opts)
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
        ps = resp.partial_success
        if ps.rejected_spans:
            self.metrics.export_failures_total.labels(self.name).inc()
            log.warning("exporter otlp: backend rejected %d spans: %s", ps.rejected_spans,
                        ps.error_message)

    def retryable(self, exc: Exception) -> bool:
        return isinstance(exc, grpc.aio.AioRpcError) and exc.code() in RETRYABLE

    async def aclose(self) -> None:
        await self.channel.close()
