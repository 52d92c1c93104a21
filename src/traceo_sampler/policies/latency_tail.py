"""``latency_tail`` (ours): keep a trace slower than a running quantile of
the durations seen for its key.

Key: ``key`` fields (default the root span's service and name; see _keys.py
for the field names). Per key, a relative-error sketch with exponential
decay (_sketch.py, ``relative_accuracy``, ``half_life``, ``max_buckets``)
holds the durations; at most ``max_keys`` keys get their own sketch, the
rest share one. A trace is kept when its duration exceeds the lower edge of
the sketch bucket holding the ``quantile`` — the error, at most twice
``relative_accuracy``, falls on the side of keeping. Until a key has
``warmup_observations`` durations, it is kept when its duration is at
least ``fallback_threshold_ms`` instead. The trace's own duration is added
after it is judged, so it does not raise its own bar.

The verdict does not depend on the randomness: a kept trace records th:0.
Duration as the ``latency`` policy: latest span end minus earliest start.
"""
from __future__ import annotations

import time

import msgspec

from ..cfgtypes import Duration, Fraction, NonNeg, Positive, _Base
from typing import Annotated
from ._keys import key_function
from ._sketch import DecayingSketch
from .base import NO, YES

TYPE = "latency_tail"
BLOCK_OPTIONAL = True


class LatencyTailCfg(_Base):
    """Keep traces slower than a running quantile of their key's durations."""

    # keep the traces slower than this running quantile of their key's durations
    quantile: Fraction = 0.99
    # fields of the key: root_service (alias service.name), root_name,
    # error, or an attribute key
    key: list[str] = msgspec.field(default_factory=lambda: ["root_service", "root_name"])
    # keys with a sketch of their own at most; further keys share one
    max_keys: Positive = 1000
    # durations a key needs before its quantile is used; until then fallback_threshold_ms
    # applies
    warmup_observations: NonNeg = 100
    # while a key warms up, keep its traces lasting at least this (ms)
    fallback_threshold_ms: NonNeg = 1000
    # an observation's weight halves every half_life, so old traffic fades
    half_life: Duration = msgspec.field(default_factory=lambda: Duration("5m"))
    # relative error of the quantile sketch; the error (at most twice this) falls on the
    # side of keeping
    relative_accuracy: Fraction = 0.01
    # sketch buckets per key at most; past it the lowest are folded together
    max_buckets: Annotated[int, msgspec.Meta(ge=16)] = 2048


Config = LatencyTailCfg


def check(lt: LatencyTailCfg | None, path: str, problems: list[str]) -> None:
    lt = lt or LatencyTailCfg()
    if not lt.key:
        problems.append(f"{path}.key: must not be empty")
    for f in ("quantile", "relative_accuracy"):
        if getattr(lt, f) >= 1:
            problems.append(f"{path}.{f}: must be < 1")
    if lt.half_life.seconds <= 0:
        problems.append(f"{path}.half_life: must be > 0")

# the quantile's bucket is looked up again after this many additions
REFRESH = 8


class _Key:
    __slots__ = ("sketch", "qi", "stale")

    def __init__(self, sketch):
        self.sketch = sketch
        self.qi: int | None = None
        self.stale = 0


class LatencyTail:
    def __init__(self, name: str, cfg: LatencyTailCfg, clock=time.monotonic):
        self.name = name
        self.q = cfg.quantile
        self.key_of, self.attrs = key_function(cfg.key)
        self.max_keys = cfg.max_keys
        self.warmup = cfg.warmup_observations
        self.fallback_ns = cfg.fallback_threshold_ms * 1_000_000
        self.half_life = cfg.half_life.seconds
        self.accuracy = cfg.relative_accuracy
        self.max_buckets = cfg.max_buckets
        self.clock = clock
        self.keys: dict[tuple, _Key] = {}
        self.overflow: _Key | None = None

    def attribute_keys(self) -> set[str]:
        return set(self.attrs)

    def _new(self, now: float) -> _Key:
        return _Key(DecayingSketch(self.accuracy, self.half_life, self.max_buckets, now))

    def _entry(self, trace, now: float) -> _Key:
        k = self.key_of(trace)
        e = self.keys.get(k)
        if e is None:
            if len(self.keys) < self.max_keys:
                e = self.keys[k] = self._new(now)
            else:
                e = self.overflow
                if e is None:
                    e = self.overflow = self._new(now)
        return e

    def threshold_ns(self, trace) -> float:
        """The duration a trace of this key must exceed now (for reports)."""
        e = self._entry(trace, self.clock())
        sk = e.sketch
        if sk.count < self.warmup:
            return self.fallback_ns
        i = sk.quantile_index(self.q)
        return 0.0 if i is None else sk.lower_edge(i)

    def evaluate(self, trace):
        if trace.span_count == 0:
            return NO
        d = trace.max_end - trace.min_start
        now = self.clock()
        e = self._entry(trace, now)
        sk = e.sketch
        if sk.count < self.warmup:
            keep = d >= self.fallback_ns
        else:
            if e.stale <= 0:
                e.qi = sk.quantile_index(self.q)
                e.stale = REFRESH
            e.stale -= 1
            qi = e.qi
            keep = d > 0 and (qi is None or sk.index(d) >= qi)
        sk.add(d, now)
        return YES if keep else NO


def build(cfg, build_sub, clock=None):
    return LatencyTail(cfg.name, cfg.latency_tail or LatencyTailCfg(), clock or time.monotonic)
