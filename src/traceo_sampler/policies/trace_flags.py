"""``trace_flags``: keep a trace when one of its spans has the W3C
``sampled`` flag set in its span flags (the low byte of Span.flags is the
trace-flags byte), as the Collector's (internal/sampling/trace_flags.go,
v0.161.0). The policy has no settings.

The flags are not in the trace summary, so the spans are decoded at
decision time for traces that reach this policy (spandata.py).
"""
from __future__ import annotations

from ..cfgtypes import _Base
from ..spandata import DECODED_SPAN
from .base import NO, SPAN_DATA, YES

TYPE = "trace_flags"
FLAG_SAMPLED = 0x01
BLOCK_OPTIONAL = True


class TraceFlagsCfg(_Base):
    """No fields (the Collector has no block for this type); an empty
    ``trace_flags: {}`` is accepted, so a config written back by
    config.dump loads again."""


Config = TraceFlagsCfg


class TraceFlags:
    def __init__(self, name: str):
        self.name = name

    def attribute_keys(self) -> set[str]:
        return {SPAN_DATA}

    def evaluate(self, trace):
        for sp in trace.spans:
            if sp[DECODED_SPAN].flags & FLAG_SAMPLED:
                return YES
        return NO


def build(cfg, build_sub=None, clock=None):
    return TraceFlags(cfg.name)
