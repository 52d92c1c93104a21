"""File exporter: OTLP JSON lines, one ExportTraceServiceRequest per line, as
the Collector's file exporter writes them (IDs as hex, enums as integers).

The JSON encoding (protobuf decode, dict, ``json.dumps``) costs far more CPU
than anything else an exporter does, so it runs, with the write, in a worker
process of its own: on the shared event loop it held back the OTLP exporter
and the receivers. The worker is started on the first batch and started
again if it dies. A batch that cannot be encoded (a strict decoder refuses
it) is refused, so the queue splits it down to the trace at fault."""
from __future__ import annotations

import asyncio
import json
import multiprocessing
import os
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool

from ..config import FileExporter as FileCfg
from .base import Exporter


class EncodeError(ValueError):
    """The batch is not something OTLP JSON can hold (nothing was written)."""


_fd = -1  # the worker process's file


def _open(path: str, parent: int) -> None:
    global _fd
    from ..lifetime import die_with_parent
    die_with_parent(parent)
    # one write(2) per line on an O_APPEND descriptor: the workers of
    # service.workers append to the same file without interleaving
    _fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)


def _write(payload: bytes) -> int:
    """In the worker: encode one batch and append it as one line."""
    from ..otlp_json import request_to_json
    try:
        line = json.dumps(request_to_json(payload), separators=(",", ":"))
    except Exception as exc:  # noqa: BLE001 - whatever the decoder refuses
        raise EncodeError(f"cannot encode the batch as OTLP JSON: {exc}") from None
    data = (line + "\n").encode()
    n = len(data)
    while data:
        data = data[os.write(_fd, data):]
    return n


class FileExporter(Exporter):
    name = "file"

    def __init__(self, cfg: FileCfg, metrics):
        super().__init__(metrics, cfg.queue_max_bytes, 8192, 8 << 20, cfg.queue_full)
        self.path = cfg.path
        d = os.path.dirname(os.path.abspath(self.path))
        os.makedirs(d, exist_ok=True)
        # checked here so that a path that cannot be written fails at start
        os.close(os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644))
        self._pool: ProcessPoolExecutor | None = None

    def _executor(self) -> ProcessPoolExecutor:
        if self._pool is None:
            # spawn, not fork: the parent runs gRPC threads and an event loop
            self._pool = ProcessPoolExecutor(
                max_workers=1, mp_context=multiprocessing.get_context("spawn"),
                initializer=_open, initargs=(os.path.abspath(self.path), os.getpid()))
        return self._pool

    async def send(self, payload: bytes) -> None:
        loop = asyncio.get_running_loop()
        try:
            await loop.run_in_executor(self._executor(), _write, payload)
        except BrokenProcessPool:
            self._pool = None  # the worker died: a new one on the retry
            raise

    async def worker_pid(self) -> int | None:
        """The encoding worker's process ID (None before the first batch)."""
        if self._pool is None:
            return None
        return await asyncio.get_running_loop().run_in_executor(self._pool, os.getpid)

    def retryable(self, exc: Exception) -> bool:
        return isinstance(exc, (BrokenProcessPool, OSError))

    def refused(self, exc: Exception) -> bool:
        return isinstance(exc, EncodeError)

    async def aclose(self) -> None:
        if self._pool is not None:
            pool, self._pool = self._pool, None
            await asyncio.get_running_loop().run_in_executor(None, pool.shutdown, True)
