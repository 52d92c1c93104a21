"""``bytes_limiting``: at most ``bytes_per_second`` kept bytes per second.

The Collector's fields (``bytes_per_second``, ``burst_capacity`` — default
twice the rate). A trace's size is what the Collector charges: its spans
encoded as an OTLP ``TracesData`` under their resource and scope
(``trace.encoded_size``, otlp_size.py), or 200 bytes per span for a summary
without one. Limited as
``rate_limiting`` is: a consistent probability from the measured byte rate,
recorded as ``th``, with the token bucket capping bursts (_limiting.py).
"""
import time

from ..cfgtypes import NonNeg, _Base
from ._limiting import CollectorTokenBucket, Limiter, incoming_threshold, trace_bytes

TYPE = "bytes_limiting"


class BytesLimitingCfg(_Base):
    # kept bytes per second at most, a trace costing its OTLP encoded size; met as
    # rate_limiting meets its rate
    bytes_per_second: NonNeg
    # size of the token bucket capping bursts, in bytes; omitted: 2 x bytes_per_second (in
    # Collector semantics 0 means the same)
    burst_capacity: NonNeg | None = None


Config = BytesLimitingCfg


class BytesLimiting:
    def __init__(self, name, bytes_per_second, burst_capacity=None, clock=time.monotonic):
        self.name = name
        self.clock = clock
        self.limiter = Limiter(bytes_per_second, burst_capacity)

    def attribute_keys(self) -> set[str]:
        return set()

    def evaluate(self, trace):
        return self.evaluate_after(trace, 0)

    def evaluate_after(self, trace, t_in):
        return self.limiter.decide(trace_bytes(trace), self.clock(), trace.randomness,
                                   incoming_threshold(trace, t_in))


def build_collector(cfg, build_sub, clock=None):
    c = cfg.bytes_limiting
    return CollectorTokenBucket(cfg.name, c.bytes_per_second, c.burst_capacity, trace_bytes,
                                clock or time.monotonic)


def build(cfg, build_sub, clock=None):
    c = cfg.bytes_limiting
    return BytesLimiting(cfg.name, c.bytes_per_second, c.burst_capacity, clock or time.monotonic)
