"""Building blocks of the limiting policies (rate_limiting, bytes_limiting,
service_rate caps, composite budgets).

A limiter here is an *adaptive consistent probability sampler*: it measures
the rate arriving at it, keeps the fraction ``f = min(1, budget / rate)`` by
the trace's randomness (``R >= T(f)``) and records that threshold, so every
kept trace carries the probability it was kept with and adjusted counts
stay exact. A token bucket of ``burst_capacity`` caps short bursts on top,
as the Collector's limiters do: a trace that passes the probability but
finds too few tokens is not sampled (the one place a limiter can make the
adjusted counts low, and only while a burst outruns the rate estimate).

The fraction applied to a trace depends only on the traffic that arrived
before it (and its own cost), never on its randomness, which is what makes
``1/p`` an unbiased weight.
"""
from __future__ import annotations

from ..tracestate import compose, upstream_threshold
from .base import NO, SAMPLED, YES, Verdict

# bytes_limiting: the size of a trace whose summary exposes no ``nbytes``
BYTES_PER_SPAN = 200


def incoming_threshold(trace, t_in: int = 0) -> int:
    """The threshold every trace reaching a limiter already passed: an
    enclosing policy's (``t_in``) or an upstream sampler's ``th`` (the first
    tracestate the buffer kept for the trace), whichever is stricter."""
    up = upstream_threshold(getattr(trace, "trace_state", "") or "")
    return up if up > t_in else t_in


def trace_bytes(trace) -> int:
    """The trace's size as the Collector counts it: its spans encoded as an
    OTLP ``TracesData`` (``encoded_size``, set by the pipeline when a
    policy needs it; see otlp_size.py), else 200 bytes per span."""
    n = getattr(trace, "encoded_size", None)
    return int(n) if n is not None else trace.span_count * BYTES_PER_SPAN


class CollectorBucket:
    """golang.org/x/time/rate's Limiter as the Collector's rate_limiting and
    bytes_limiting use it (``AllowN(now, n)``): starts full at ``burst``,
    refills at ``rate`` per second up to ``burst``, a request of n passes
    when n tokens are there (so n > burst never passes); with rate 0 the
    burst is spent once and never refilled."""

    __slots__ = ("rate", "burst", "tokens", "last")

    def __init__(self, rate: float, burst: int):
        self.rate = float(rate)
        self.burst = int(burst)
        self.tokens = float(burst)
        self.last: float | None = None

    def allow(self, n: int, now: float) -> bool:
        if self.rate == 0:
            if self.burst >= n:
                self.burst -= n
                return True
            return False
        tokens = self.tokens
        if self.last is not None and now > self.last:
            tokens = min(float(self.burst), tokens + (now - self.last) * self.rate)
        tokens -= n
        if tokens < 0:
            return False
        self.last = now if self.last is None or now > self.last else self.last
        self.tokens = tokens
        return True


class CollectorTokenBucket:
    """A Collector-semantics limiter policy (its usetracestate gate off, the
    default): a plain token bucket charged ``cost(trace)`` per trace, no
    probability, kept spans record nothing. rate_limiting charges spans,
    bytes_limiting the trace's encoded bytes."""

    def __init__(self, name, per_second, burst_capacity, cost, clock):
        self.name = name
        self.clock = clock
        self.cost = cost
        # the Collector's config reads 0 as unset: twice the rate
        burst = burst_capacity if burst_capacity else 2 * per_second
        self.bucket = CollectorBucket(per_second, burst)

    def attribute_keys(self) -> set[str]:
        return set()

    def evaluate(self, trace):
        return YES if self.bucket.allow(self.cost(trace), self.clock()) else NO


class RateEstimator:
    """Cost per second arriving, from tumbling windows of ``window`` seconds.

    Between windows the estimate is a moving average that takes a higher
    rate at once and lets a lower one decay by ``smoothing`` per window
    (fast attack, slow decay: a limiter errs towards keeping less). Within
    a window, once the cost arrived in it exceeds what the budget passes in
    a window plus ``slack`` (the burst the token bucket absorbs), the
    window's own rate counts at once — so a burst is answered before its
    window closes, while traffic within the budget and its burst allowance
    is kept whole, as the Collector's token bucket would.
    """

    __slots__ = ("window", "smoothing", "slack", "start", "acc", "rate")

    def __init__(self, window: float = 1.0, smoothing: float = 0.5, slack: float = 0.0):
        self.window = window
        self.smoothing = smoothing
        self.slack = slack
        self.start: float | None = None
        self.acc = 0.0
        self.rate: float | None = None

    def observe(self, cost: float, now: float) -> float | None:
        """Count ``cost`` arriving at ``now``; the previous windows' rate
        estimate (None before the first window closed)."""
        if self.start is None:
            self.start = now
        else:
            elapsed = now - self.start
            if elapsed >= self.window:
                measured = self.acc / elapsed
                if self.rate is None:
                    self.rate = measured
                else:
                    smoothed = self.smoothing * measured + (1 - self.smoothing) * self.rate
                    self.rate = measured if measured > smoothed else smoothed
                self.start = now
                self.acc = 0.0
        self.acc += cost
        return self.rate

    def fraction(self, cost: float, now: float, budget: float) -> float:
        """Observe ``cost``; the share of arriving traffic ``budget`` allows."""
        rate = self.observe(cost, now)
        if budget <= 0:
            return 0.0
        if self.acc > budget * self.window + self.slack:
            current = self.acc / self.window
            if rate is None or current > rate:
                rate = current
        if rate is None or rate <= budget:
            return 1.0
        return budget / rate


class TokenBucket:
    """Refills continuously at ``rate`` per second up to ``capacity``;
    starts full. ``take(n)`` fails when fewer than n tokens are left (so a
    trace larger than the capacity never passes, as golang.org/x/time/rate's
    AllowN in the Collector)."""

    __slots__ = ("rate", "capacity", "tokens", "last")

    def __init__(self, rate: float, capacity: float):
        self.rate = rate
        self.capacity = capacity
        self.tokens = float(capacity)
        self.last: float | None = None

    def take(self, n: float, now: float, speed: float = 1.0) -> bool:
        """Take n tokens if there are; ``speed`` scales the refill since the
        last call (see OVERLOAD_REFILL)."""
        if self.last is not None and now > self.last:
            self.tokens = min(self.capacity, self.tokens + (now - self.last) * self.rate * speed)
        self.last = now
        if n <= self.tokens:
            self.tokens -= n
            return True
        return False


# While the probability is holding a limiter's rate (f < 1) the kept traffic
# already averages the budget; a bucket refilling at exactly that rate would
# be a critically loaded queue, running dry now and then through ordinary
# variance and clipping traces the probability admitted (adjusted counts
# low). So in that state it refills this much faster and only catches real
# bursts. Under the limit (f = 1) it refills at the budget, as the
# Collector's.
OVERLOAD_REFILL = 1.1


class Limiter:
    """Adaptive consistent sampler at ``budget`` cost/s with a burst cap."""

    __slots__ = ("budget", "estimator", "bucket", "limiting")

    def __init__(self, budget: float, burst: float | None, window: float = 1.0):
        self.budget = float(budget)
        burst = 2 * budget if burst is None else burst
        self.estimator = RateEstimator(window, slack=burst)
        self.bucket = TokenBucket(budget, burst)
        self.limiting = False

    def threshold(self, cost: float, now: float, t_in: int) -> int:
        """Observe the arrival; the threshold it must pass (composed with
        the ``t_in`` every arrival already passed)."""
        f = self.estimator.fraction(cost, now, self.budget)
        self.limiting = f < 1.0
        return compose(t_in, f)

    def take(self, cost: float, now: float) -> bool:
        return self.bucket.take(cost, now, OVERLOAD_REFILL if self.limiting else 1.0)

    def decide(self, cost: float, now: float, randomness: int, t_in: int) -> Verdict:
        t = self.threshold(cost, now, t_in)
        if randomness >= t and self.take(cost, now):
            return (SAMPLED, t)
        return NO
