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
        # one write(2) per line on an O_APPEND descriptor: the workers of
        # service.workers append to the same file without interleaving
        self._fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)

    async def send(self, payload: bytes) -> None:
        line = json.dumps(request_to_json(payload), separators=(",", ":"))
        data = (line + "\n").encode()
        while data:
            data = data[os.write(self._fd, data):]
        await asyncio.sleep(0)

    async def aclose(self) -> None:
        os.close(self._fd)
