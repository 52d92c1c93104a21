"""Exporters: each kept trace goes to every configured exporter, each with
its own bounded queue so one slow backend does not stall another."""
from __future__ import annotations

from ..config import Exporters
from .base import Exporter


def build(cfg: Exporters, metrics, kafka_sampled: bool = False) -> list[Exporter]:
    """``kafka_sampled``: exporters.kafka is in mode sampled (config.kafka_mode);
    in router mode the server builds it (exporters/kafka.py) in front of the
    receivers instead."""
    out: list[Exporter] = []
    if cfg.otlp is not None:
        if cfg.otlp.protocol == "http/protobuf":
            from .otlp_http import OtlpHttpExporter
            out.append(OtlpHttpExporter(cfg.otlp, metrics, "otlp"))
        else:
            from .otlp_grpc import OtlpGrpcExporter
            out.append(OtlpGrpcExporter(cfg.otlp, metrics, "otlp"))
    if cfg.file is not None:
        from .file import FileExporter
        out.append(FileExporter(cfg.file, metrics))
    if cfg.kafka is not None and kafka_sampled:
        from .kafka_sampled import KafkaSampledExporter
        out.append(KafkaSampledExporter(cfg.kafka, metrics))
    return out
