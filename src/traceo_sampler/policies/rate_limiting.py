"""``rate_limiting``: at most ``spans_per_second`` kept spans per second.

The Collector's fields (``spans_per_second``, ``burst_capacity`` — default
twice the rate, as there). Unlike the Collector's plain token bucket, the
limit is met as a consistent probability: the span rate arriving at the
policy is measured and the trace kept when ``R >= T(f)``, ``f = min(1,
spans_per_second / arriving)``, recording ``th = T(f)`` so adjusted counts
stay exact; the token bucket still caps bursts on top (see _limiting.py).
While the traffic stays under the limit, ``f = 1`` and the policy behaves
exactly as the Collector's: every trace that fits in the bucket, th:0.
"""
import time

from ..cfgtypes import NonNeg, _Base
from ._limiting import CollectorTokenBucket, Limiter, incoming_threshold

TYPE = "rate_limiting"


class RateLimitingCfg(_Base):
    """Collector field names. ``burst_capacity`` defaults to twice
    ``spans_per_second``, as in the Collector."""

    # kept spans per second at most, met as a consistent probability from the arriving span
    # rate (Collector semantics: a token bucket alone)
    spans_per_second: NonNeg
    # size of the token bucket capping bursts, in spans; omitted: 2 x spans_per_second (in
    # Collector semantics 0 means the same)
    burst_capacity: NonNeg | None = None


Config = RateLimitingCfg


class RateLimiting:
    def __init__(self, name, spans_per_second, burst_capacity=None, clock=time.monotonic):
        self.name = name
        self.clock = clock
        self.limiter = Limiter(spans_per_second, burst_capacity)

    def attribute_keys(self) -> set[str]:
        return set()

    def evaluate(self, trace):
        return self.evaluate_after(trace, 0)

    def evaluate_after(self, trace, t_in):
        return self.limiter.decide(trace.span_count, self.clock(), trace.randomness,
                                   incoming_threshold(trace, t_in))


def _span_count(trace):
    return trace.span_count


def build_collector(cfg, build_sub, clock=None):
    c = cfg.rate_limiting
    return CollectorTokenBucket(cfg.name, c.spans_per_second, c.burst_capacity, _span_count,
                                clock or time.monotonic)


def build(cfg, build_sub, clock=None):
    c = cfg.rate_limiting
    return RateLimiting(cfg.name, c.spans_per_second, c.burst_capacity, clock or time.monotonic)
