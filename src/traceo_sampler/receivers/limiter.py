"""The process memory limiter (``service.memory_limit_mib``): what Collector
users know as the ``memory_limiter`` processor, checked against the
resident set size of the whole process (buffer, export queues, requests in
flight, the interpreter itself), not only the buffer's own accounting.

While RSS is above the limit, the receivers push back (gRPC
RESOURCE_EXHAUSTED with RetryInfo, HTTP 429 with Retry-After) and nothing
new is accepted; buffered traces are still decided and exported, which is
what brings RSS down. Freed memory is handed back to the OS (a garbage
collection and glibc's malloc_trim, at most once per second while above the
limit), else RSS would not fall below a high-water mark.
"""
from __future__ import annotations

import ctypes
import gc
import logging
import os
import time

log = logging.getLogger("traceo_sampler.receivers")
_PAGE = os.sysconf("SC_PAGE_SIZE") if hasattr(os, "sysconf") else 4096


def rss_bytes() -> int:
    try:
        with open("/proc/self/statm", "rb") as fh:
            return int(fh.read().split()[1]) * _PAGE
    except OSError:
        import resource       # not Linux: the peak, the best the OS tells
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def _malloc_trim():
    try:
        libc = ctypes.CDLL("libc.so.6")
        return libc.malloc_trim
    except (OSError, AttributeError):
        return None


class MemoryLimiter:
    """``over()`` is what the receivers ask per request: cheap (RSS is read
    at most every ``INTERVAL`` seconds)."""

    INTERVAL = 0.1
    RETRY_AFTER = 1.0
    TRIM_EVERY = 1.0

    def __init__(self, limit_mib: int, metrics=None):
        self.limit = limit_mib << 20
        self.metrics = metrics
        self.rss = 0
        self.refusing = False
        self._trimmed_at = 0.0
        self._trim = _malloc_trim()
        if metrics is not None:
            metrics.memory_limit_bytes.set(self.limit)
        # read now, not INTERVAL later: a receiver started right after must
        # not take its first request (or Kafka fetch) above the limit
        self._sample(time.monotonic())

    def _sample(self, now: float) -> None:
        self._read_at = now
        self.rss = rss_bytes()
        over = self.rss > self.limit
        if over and now - self._trimmed_at >= self.TRIM_EVERY:
            self._trimmed_at = now
            gc.collect()
            if self._trim is not None:
                self._trim(0)
            self.rss = rss_bytes()
            over = self.rss > self.limit
        if over != self.refusing:
            self.refusing = over
            log.warning("process memory %d MiB %s service.memory_limit_mib %d: receivers %s",
                        self.rss >> 20, "above" if over else "back below", self.limit >> 20,
                        "push back" if over else "accept again")
        if self.metrics is not None:
            self.metrics.process_resident_bytes.set(self.rss)
            self.metrics.memory_limiter_refusing.set(1 if over else 0)

    def over(self) -> bool:
        now = time.monotonic()
        if now - self._read_at >= self.INTERVAL:
            self._sample(now)
        return self.refusing
