"""``adaptive`` (ours): a kept-throughput target shared across keys.

```yaml
adaptive:
  target_spans_per_second: 2000     # or target_traces_per_second
  key_fields: [service.name, http.route, error]
  adjustment_interval: 5s
```

Every trace belongs to a key built from ``key_fields`` (_keys.py:
``service.name`` is the root span's service, ``error`` the error flag, other
names attribute keys). Each ``adjustment_interval`` the policy turns what
arrived per key in the interval into moving averages of the key's cost rate
(spans/s, or traces/s with ``target_traces_per_second``) and trace rate,
and recomputes the keys' probabilities by water-filling: every key may keep
up to the same cost rate λ, small keys keep everything, and λ is chosen so
the expected kept total equals the target. A key's probability never falls
below what keeps ``min_traces_per_interval`` of its traces per interval (in
expectation), so rare keys stay represented even when that costs more than
the target (the floors win over the target).

Moving averages: ``smoothing`` is the weight of the newest interval (an
exponentially weighted moving average); a measured rate more than twice
the average replaces it at once, so a burst is answered at the next
adjustment rather than over several. A key first seen since
the last adjustment keeps everything until it has used one key's share
(λ per interval) and a shrinking fraction after that. At most ``max_keys``
keys are tracked; later ones share one key. Keys idle for 8 intervals are
forgotten.

Decisions are consistent: kept iff ``R >= T(p)`` with the key's current p
(composed with an upstream or enclosing threshold), recording ``th = T(p)``,
so Σ 1/p over kept traces estimates the arrivals exactly.
"""
from __future__ import annotations

import math
import time
from typing import Annotated

import msgspec

from ..cfgtypes import Duration, NonNegFloat, Positive, PositiveFloat, _Base

from ..tracestate import compose
from ._keys import key_function
from ._limiting import incoming_threshold
from .base import NO, SAMPLED

TYPE = "adaptive"


class AdaptiveCfg(_Base):
    """A kept-throughput target shared across keys (exactly one target)."""

    # kept spans per second to share across the keys (give exactly one of the two targets)
    target_spans_per_second: PositiveFloat | None = None
    # kept traces per second to share across the keys, instead
    target_traces_per_second: PositiveFloat | None = None
    # service.name = the root span's service; error = the error flag;
    # anything else is an attribute key
    key_fields: list[str] = msgspec.field(default_factory=lambda: ["service.name"])
    # how often the keys' probabilities are recomputed from the moving averages
    adjustment_interval: Duration = msgspec.field(default_factory=lambda: Duration("5s"))
    # keys tracked at most; further keys share one
    max_keys: Positive = 1000
    # traces each active key keeps per interval, at least (in expectation)
    min_traces_per_interval: NonNegFloat = 1.0
    # weight of the newest interval in the moving averages (0 < w <= 1)
    smoothing: Annotated[float, msgspec.Meta(gt=0, le=1)] = 0.5


Config = AdaptiveCfg


def check(ad: AdaptiveCfg, path: str, problems: list[str]) -> None:
    if (ad.target_spans_per_second is None) == (ad.target_traces_per_second is None):
        problems.append(f"{path}: set exactly one of target_spans_per_second, "
                        "target_traces_per_second")
    if not ad.key_fields:
        problems.append(f"{path}.key_fields: must not be empty")
    if ad.adjustment_interval.seconds <= 0:
        problems.append(f"{path}.adjustment_interval: must be > 0")

IDLE_INTERVALS = 8
# a measured rate this many times the average replaces it at once (a burst)
JUMP = 2.0
OVERFLOW = ("\x00overflow",)


class _KeyState:
    __slots__ = ("cost", "traces", "rate", "trate", "p", "idle")

    def __init__(self):
        self.cost = 0.0
        self.traces = 0
        self.rate: float | None = None      # cost per second
        self.trate: float | None = None     # traces per second
        self.p = 1.0
        self.idle = 0


def water_fill(rates: list[float], floors: list[float], budget: float) -> tuple[float, list[float]]:
    """(λ, p_k): p_k = max(floor_k, min(1, λ / rate_k)) with Σ p_k rate_k = budget
    when possible; λ = inf when everything fits, 0 when the floors alone
    exceed the budget."""
    if sum(rates) <= budget:
        return math.inf, [1.0] * len(rates)
    base = [r * f for r, f in zip(rates, floors)]
    if sum(base) >= budget:
        return 0.0, list(floors)

    def kept(lam: float) -> float:
        return sum(b if b > (r if r < lam else lam) else (r if r < lam else lam)
                   for r, b in zip(rates, base))

    lo, hi = 0.0, max(rates)
    for _ in range(64):
        mid = (lo + hi) / 2
        if kept(mid) < budget:
            lo = mid
        else:
            hi = mid
    lam = (lo + hi) / 2
    return lam, [max(f, 1.0 if r <= lam else lam / r) for r, f in zip(rates, floors)]


class Adaptive:
    def __init__(self, name, target: float, per_trace: bool, key_fields: list[str],
                 interval: float, max_keys: int = 1000, min_traces: float = 1.0,
                 smoothing: float = 0.5, clock=time.monotonic):
        self.name = name
        self.target = float(target)
        self.per_trace = per_trace
        self.key_of, self.attrs = key_function(key_fields)
        self.interval = interval
        self.max_keys = max_keys
        self.min_traces = min_traces
        self.smoothing = smoothing
        self.clock = clock
        self.keys: dict[tuple, _KeyState] = {}
        self.last: float | None = None
        self.lam = math.inf

    def attribute_keys(self) -> set[str]:
        return set(self.attrs)

    def evaluate(self, trace):
        return self.evaluate_after(trace, 0)

    def evaluate_after(self, trace, t_in):
        now = self.clock()
        if self.last is None:
            self.last = now
        elif now - self.last >= self.interval:
            self.adjust(now)
        k = self.key_of(trace)
        ks = self.keys.get(k)
        if ks is None:
            if len(self.keys) >= self.max_keys:
                k = OVERFLOW
                ks = self.keys.get(k)
            if ks is None:
                ks = self.keys[k] = _KeyState()
        cost = 1 if self.per_trace else trace.span_count
        ks.cost += cost
        ks.traces += 1
        p = ks.p
        if ks.rate is None:
            share = self.lam * self.interval
            if ks.cost > share:
                p = share / ks.cost
        th = compose(incoming_threshold(trace, t_in), p)
        if trace.randomness >= th:
            return (SAMPLED, th)
        return NO

    def adjust(self, now: float) -> None:
        """Fold the interval's arrivals into the moving averages and
        recompute every key's probability."""
        assert self.last is not None   # set by the first evaluation, before any adjust
        elapsed = now - self.last
        self.last = now
        n = max(1, int(elapsed / self.interval + 1e-9))
        a = 1.0 - (1.0 - self.smoothing) ** n
        # (key state, its cost rate, its trace rate) of the keys still live
        live: list[tuple[_KeyState, float, float]] = []
        for k, ks in list(self.keys.items()):
            measured = ks.cost / elapsed
            tmeasured = ks.traces / elapsed
            if ks.rate is None or ks.trate is None:   # both set together
                ks.rate, ks.trate = measured, tmeasured
            else:
                s = a * measured + (1 - a) * ks.rate
                ks.rate = measured if measured > JUMP * s else s
                s = a * tmeasured + (1 - a) * ks.trate
                ks.trate = tmeasured if tmeasured > JUMP * s else s
            ks.idle = 0 if ks.traces else ks.idle + n
            ks.cost = 0.0
            ks.traces = 0
            if ks.idle >= IDLE_INTERVALS:
                del self.keys[k]
            elif ks.rate > 0:
                live.append((ks, ks.rate, ks.trate))
        if not live:
            self.lam = math.inf
            return
        floors = [min(1.0, self.min_traces / (trate * self.interval)) if trate > 0 else 1.0
                  for _ks, _rate, trate in live]
        self.lam, ps = water_fill([rate for _ks, rate, _trate in live], floors, self.target)
        for (ks, _rate, _trate), p in zip(live, ps):
            ks.p = p


def build(cfg, build_sub, clock=None):
    c = cfg.adaptive
    per_trace = c.target_spans_per_second is None
    target = c.target_traces_per_second if per_trace else c.target_spans_per_second
    return Adaptive(cfg.name, target, per_trace, c.key_fields, c.adjustment_interval.seconds,
                    c.max_keys, c.min_traces_per_interval, c.smoothing, clock or time.monotonic)
