"""The one interface every policy implements.

A policy looks at a trace's summary (kept up to date by the buffer as spans
arrive) and returns ``(decision, threshold)``: the decision is one of the
constants below, the threshold the OpenTelemetry rejection threshold T with
which it sampled (0 when it keeps unconditionally; see tracestate.py).
"""
from __future__ import annotations

from typing import Any, Protocol

NOT_SAMPLED = 0
SAMPLED = 1
DROPPED = 3

Verdict = tuple[int, int]
NO: Verdict = (NOT_SAMPLED, 0)
YES: Verdict = (SAMPLED, 0)


class TraceSummary(Protocol):
    trace_id: bytes
    span_count: int
    min_start: int
    max_end: int
    status_mask: int          # bit (1 << code) for every Status.code seen
    root_seen: bool
    services: set[str]
    attrs: dict[str, set[Any]] | None   # referenced keys only
    randomness: int           # R, 56 bits
    root_name: str
    root_service: str


class Policy(Protocol):
    name: str

    def evaluate(self, trace: TraceSummary) -> Verdict: ...

    # Optional, on policies whose probability is relative to what reaches
    # them (the limiters, service_rate, adaptive, composite):
    #
    #   def evaluate_after(self, trace, t_in: int) -> Verdict
    #
    # evaluates a trace already known to satisfy R >= t_in (an earlier part
    # of an ``and`` sampled it with threshold t_in), so the fraction the
    # policy keeps composes with it (tracestate.compose) and the threshold
    # it returns is still the probability of the whole path. ``and`` calls
    # it when present; evaluate(trace) is evaluate_after(trace, 0).

    def attribute_keys(self) -> set[str]:
        """Attribute keys this policy reads, so the scanner extracts them."""
        ...


# A policy that reads the trace's spans themselves at decision time
# (ottl_condition, trace_flags) lists this pseudo-key among its attribute
# keys. Every combinator already forwards its sub-policies' keys, so the
# decider learns from it, wherever the policy is nested, to hand traces over
# as spandata.WithSpans (with ``.spans``); it is never asked of the scanner.
SPAN_DATA = "\x00span_data"


class PolicyError(Exception):
    """A policy could not evaluate a trace (an ottl_condition under
    ``error_mode: propagate``). As in the Collector, the error passes up
    through and/not/drop/composite, and the top-level policy it came from
    casts no vote on that trace."""


def attr_values(trace: TraceSummary, key: str) -> set[Any]:
    a = trace.attrs
    if not a:
        return set()
    return a.get(key) or set()
