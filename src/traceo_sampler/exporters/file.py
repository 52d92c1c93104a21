"""File exporter: OTLP JSON lines, one ExportTraceServiceRequest per line, as
the Collector's file exporter writes them (IDs as hex, enums as integers)."""
from __future__ import annotations

import asyncio
import json
import os

from ..config import FileExporter as FileCfg
from ..otlp_json import request_to_json
from .base import Exporter


class FileExporter(Exporter):
    name = "file"

    def __init__(self, cfg: FileCfg, metrics):
        super().__init__(metrics, cfg.queue_max_bytes, 8192, 8 << 20, cfg.queue_full)
        self.path = cfg.path
        d = os.path.dirname(os.path.abspath(self.path))
        os.makedirs(d, exist_ok=True)
        self._fh = open(self.path, "a", encoding="utf-8")

    async def send(self, payload: bytes) -> None:
        line = json.dumps(request_to_json(payload), separators=(",", ":"))
        self._fh.write(line + "\n")
        self._fh.flush()
        await asyncio.sleep(0)

    async def aclose(self) -> None:
        self._fh.close()
