"""Combines policy verdicts into one decision per trace (docs/design.md §3).

Collector-compatible: any ``drop`` → dropped; else any policy sampled →
sampled; else not sampled (an ``invert_match`` that matches is a plain
not-sampled, as in the current Collector). The first sampling policy in config order is the attribution.
The recorded threshold is the smallest (most permissive) of the sampling
policies' thresholds: the trace would have been kept with that probability.

Why that is exact: every policy's threshold for a trace is fixed before its
randomness R is looked at (stateful policies set it from the traffic before
the trace), and each samples iff ``R >= T_i``; the trace is kept iff
``R >= min T_i``, which is the recorded value, so 1/p of it is an unbiased
weight. Every policy is evaluated for every trace (as in the Collector),
up to a ``drop`` that fires, so the stateful ones see the traffic their
rates are measured on (less what is dropped anyway).
"""
from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Callable

from . import policies as _policies
from .config import PolicyCfg
from .policies.base import DROPPED, SAMPLED, SPAN_DATA, PolicyError
from .spandata import WithSpans
from .tracestate import MAX_T

log = logging.getLogger("traceo_sampler")


@dataclass(slots=True, frozen=True)
class Decision:
    sampled: bool
    policy: str          # attribution; "" when nothing sampled
    threshold: int       # OpenTelemetry rejection threshold T (0 = always)
    dropped: bool = False


NOT_SAMPLED = Decision(False, "", MAX_T)
# over maximum_trace_size_bytes: dropped, attributed to no policy
TOO_LARGE = Decision(False, "", MAX_T, dropped=True)


class Decider:
    def __init__(self, policy_cfgs: list[PolicyCfg], clock: Callable[[], float] | None = None,
                 semantics: str = "traceo", sample_on_first_match: bool = False,
                 spans: Callable[[object], list] | None = None, max_trace_bytes: int = 0):
        """``clock``: what stateful policies (limiters, latency_tail,
        adaptive) read time from; time.monotonic by default. ``semantics``:
        "collector" builds the Collector's variants (policies.build).
        ``sample_on_first_match``: stop at the first policy that samples, as
        the Collector's option (later policies, a drop among them, are not
        asked). ``max_trace_bytes``: the Collector's
        ``maximum_trace_size_bytes``: a trace whose encoded size exceeds it
        is dropped without asking the policies (0: no limit). ``spans``: the buffer's ``spans(trace)``, for policies that
        read span data (policies/base.py SPAN_DATA); without it such a
        policy sees none."""
        # The drop policies are evaluated before the others, as the
        # Collector's processor.go does (evaluateDropPolicies): a dropped
        # trace costs no limiter any budget, and a drop listed after a
        # sampling policy still wins under sample_on_first_match.
        ordered = ([c for c in policy_cfgs if c.type == "drop"]
                   + [c for c in policy_cfgs if c.type != "drop"])
        self.policies = [_policies.build(c, clock, semantics) for c in ordered]
        self.first_match = sample_on_first_match
        self.max_trace_bytes = max_trace_bytes
        self.needs_size = bool(max_trace_bytes) or any(_uses_size(c) for c in policy_cfgs)
        keys: set[str] = set()
        for p in self.policies:
            keys |= p.attribute_keys()
        self.reads_spans = SPAN_DATA in keys
        keys.discard(SPAN_DATA)
        self.attribute_keys = frozenset(keys)
        self.spans = spans if spans is not None else (lambda t: [])
        self._headers: dict = {}    # spandata.decode's cache of decoded headers
        # policy name -> traces it could not evaluate (PolicyError), since
        # the pipeline last moved them to policy_evaluation_errors_total
        self.errors: dict[str, int] = {}

    def decide(self, trace) -> Decision:
        if self.max_trace_bytes and (getattr(trace, "encoded_size", None) or 0) > self.max_trace_bytes:
            return TOO_LARGE
        first = ""
        th = MAX_T
        if self.reads_spans:
            trace = WithSpans(trace, self.spans, self._headers)
        for p in self.policies:
            try:
                d, t = p.evaluate(trace)
            except PolicyError as exc:
                # the Collector's processor: counted, logged, no vote
                self.errors[p.name] = self.errors.get(p.name, 0) + 1
                log.debug("policy %s: %s", p.name, exc)
                continue
            if d == SAMPLED:
                if not first:
                    first = p.name
                if t < th:
                    th = t
                if self.first_match:
                    break
            elif d == DROPPED:
                return Decision(False, p.name, MAX_T, dropped=True)
        if not first:
            return NOT_SAMPLED
        return Decision(True, first, th)


def _uses_size(cfg) -> bool:
    """Whether a policy (or a sub-policy) reads a trace's encoded size."""
    if cfg.type == "bytes_limiting":
        return True
    blk = cfg.block
    for f in getattr(_policies.REGISTRY[cfg.type], "SUB_POLICIES", {}):
        subs = getattr(blk, f)
        if any(_uses_size(s) for s in (subs if isinstance(subs, list) else [subs])):
            return True
    return False
