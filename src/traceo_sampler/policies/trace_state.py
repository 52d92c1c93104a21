"""``trace_state``: a span's W3C tracestate has ``key`` = one of ``values``.

As the Collector: the tracestate is parsed by the W3C rules (an invalid one
matches nothing), the value compared exactly; empty values and pairs
longer than the tracestate allows (``len(key) + len(value) >= 256``) are
ignored.

Limitation: the buffer keeps one tracestate per trace for this — the first
one seen (``trace.trace_state``) — so a key set only on later spans of the
trace is not seen.
"""
from ..cfgtypes import _Base
from ..tracestate import parse_w3c
from .base import NO, YES

TYPE = "trace_state"


class TraceStateCfg(_Base):
    # the W3C tracestate list member looked up (in the first tracestate the trace had)
    key: str
    # kept when the member's value equals one of these exactly
    values: list[str]


Config = TraceStateCfg


class TraceState:
    def __init__(self, name, key, values):
        self.name = name
        self.key = key
        self.values = frozenset(v for v in values if v and len(key) + len(v) < 256)
        self._memo: tuple[str, bool] = ("", False)

    def attribute_keys(self) -> set[str]:
        return set()

    def evaluate(self, trace):
        ts = getattr(trace, "trace_state", "") or ""
        if not ts:
            return NO
        last, hit = self._memo
        if ts != last:
            kv = parse_w3c(ts)
            hit = kv is not None and kv.get(self.key) in self.values
            self._memo = (ts, hit)
        return YES if hit else NO


def build(cfg, build_sub, clock=None):
    c = cfg.trace_state
    return TraceState(cfg.name, c.key, c.values)
