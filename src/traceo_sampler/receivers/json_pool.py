"""OTLP/JSON bodies decoded off the event loop.

Decoding JSON is CPU work under the GIL: a thread would still stall the
gRPC receiver for the whole msgspec call on a large body. Bodies from
``INLINE_MAX`` bytes on are decoded in one helper process (spawned on first
use), so the receivers' event loop keeps running on the other core; smaller
ones are decoded inline, where handing them over would cost more than it
saves.
"""
from __future__ import annotations

import asyncio
import logging
import multiprocessing
import os
import signal
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool

from ..otlp_json import decode_request

log = logging.getLogger("traceo_sampler.receivers")
INLINE_MAX = 256 << 10


def _quiet(parent: int) -> None:
    # Ctrl-C reaches the whole process group; the parent drains, the helper
    # must not print a KeyboardInterrupt traceback
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    from ..lifetime import die_with_parent
    die_with_parent(parent)


class JsonDecoder:
    def __init__(self):
        self._pool: ProcessPoolExecutor | None = None

    def _executor(self) -> ProcessPoolExecutor:
        if self._pool is None:
            self._pool = ProcessPoolExecutor(1, mp_context=multiprocessing.get_context("spawn"),
                                             initializer=_quiet, initargs=(os.getpid(),))
        return self._pool

    async def decode(self, body: bytes) -> bytes:
        """Raises ValueError as otlp_json.decode_request does."""
        if len(body) < INLINE_MAX:
            return decode_request(body)
        try:
            return await asyncio.get_running_loop().run_in_executor(
                self._executor(), decode_request, body)
        except BrokenProcessPool:
            # the helper died (killed, out of memory): start a new one for the
            # next body, decode this one here
            log.warning("OTLP/JSON helper process died; restarting it")
            self._pool = None
            return decode_request(body)

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=False, cancel_futures=True)
            self._pool = None
