"""Exporters: each kept trace goes to every configured exporter, each with
its own bounded queue so one slow backend does not stall another."""
from __future__ import annotations

from ..config import Exporters
from .base import Exporter


def build(cfg: Exporters, metrics) -> list[Exporter]:
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
    # exporters.kafka is router mode, not an exporter of kept traces: the
    # server builds it (exporters/kafka.py) in front of the receivers
    return out
