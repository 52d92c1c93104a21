"""``span_count``: min_spans <= spans in the trace <= max_spans (0 = no max)."""
from ..cfgtypes import NonNeg, _Base
from .base import NO, YES

TYPE = "span_count"
BLOCK_OPTIONAL = True


class SpanCountCfg(_Base):
    # kept when the trace has at least this many spans
    min_spans: NonNeg = 0
    # and at most this many (0: no maximum)
    max_spans: NonNeg = 0


Config = SpanCountCfg


class SpanCount:
    def __init__(self, name, min_spans, max_spans):
        self.name = name
        self.min = min_spans
        self.max = max_spans

    def attribute_keys(self) -> set[str]:
        return set()

    def evaluate(self, trace):
        n = trace.span_count
        return YES if n >= self.min and (not self.max or n <= self.max) else NO


def build(cfg, build_sub, clock=None):
    c = cfg.span_count or SpanCountCfg()
    return SpanCount(cfg.name, c.min_spans, c.max_spans)
