"""``latency``: trace duration (latest span end minus earliest span start).

As the Collector: with no upper bound, kept when duration >= threshold_ms;
with ``upper_threshold_ms``, kept when threshold_ms < duration <= upper.
Durations are compared in whole milliseconds, as the Collector does.
"""
from ..cfgtypes import NonNeg, _Base
from .base import NO, YES

TYPE = "latency"
BLOCK_OPTIONAL = True


class LatencyCfg(_Base):
    # kept when the trace's duration (latest span end minus earliest start, whole ms) is at
    # least this (Collector semantics: more than this)
    threshold_ms: NonNeg = 0
    # 0: no upper bound; else kept when threshold_ms < duration <= this
    upper_threshold_ms: NonNeg = 0


Config = LatencyCfg


def check(c: LatencyCfg, path: str, problems: list[str]) -> None:
    if c.upper_threshold_ms and c.upper_threshold_ms < c.threshold_ms:
        problems.append(f"{path}.upper_threshold_ms: must be >= threshold_ms")


class Latency:
    def __init__(self, name: str, threshold_ms: int, upper_threshold_ms: int = 0):
        self.name = name
        self.threshold_ms = threshold_ms
        self.upper_ms = upper_threshold_ms

    def attribute_keys(self) -> set[str]:
        return set()

    def evaluate(self, trace):
        if trace.span_count == 0:
            return NO
        ms = (trace.max_end - trace.min_start) // 1_000_000
        if self.upper_ms:
            return YES if self.threshold_ms < ms <= self.upper_ms else NO
        return YES if ms >= self.threshold_ms else NO


class CollectorLatency(Latency):
    """As the Collector v0.161.0 (internal/sampling/latency.go): with no
    upper bound, kept when duration > threshold_ms (strictly)."""

    def evaluate(self, trace):
        if trace.span_count == 0:
            return NO
        ms = (trace.max_end - trace.min_start) // 1_000_000
        if self.upper_ms:
            return YES if self.threshold_ms < ms <= self.upper_ms else NO
        return YES if ms > self.threshold_ms else NO


def build_collector(cfg, build_sub, clock=None):
    c = cfg.latency or LatencyCfg()
    return CollectorLatency(cfg.name, c.threshold_ms, c.upper_threshold_ms)


def build(cfg, build_sub, clock=None):
    c = cfg.latency or LatencyCfg()
    return Latency(cfg.name, c.threshold_ms, c.upper_threshold_ms)
