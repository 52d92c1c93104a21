"""Combines policy verdicts into one decision per trace (DESIGN.md §3).

Collector-compatible: any ``drop`` → dropped; else any inverted match
(``invert_match``) → not sampled; else any policy sampled → sampled; else
not sampled. The first sampling policy in config order is the attribution.
The recorded threshold is the smallest (most permissive) of the sampling
policies' thresholds: the trace would have been kept with that probability.
"""
from __future__ import annotations

from dataclasses import dataclass

from . import policies as _policies
from .config import PolicyCfg
from .policies.base import DROPPED, INVERT_NOT_SAMPLED, SAMPLED
from .tracestate import MAX_T


@dataclass(slots=True, frozen=True)
class Decision:
    sampled: bool
    policy: str          # attribution; "" when nothing sampled
    threshold: int       # OpenTelemetry rejection threshold T (0 = always)
    dropped: bool = False


NOT_SAMPLED = Decision(False, "", MAX_T)


class Decider:
    def __init__(self, policy_cfgs: list[PolicyCfg]):
        self.policies = [_policies.build(c) for c in policy_cfgs]
        keys: set[str] = set()
        for p in self.policies:
            keys |= p.attribute_keys()
        self.attribute_keys = frozenset(keys)

    def decide(self, trace) -> Decision:
        first = ""
        th = MAX_T
        inverted = False
        for p in self.policies:
            d, t = p.evaluate(trace)
            if d == SAMPLED:
                if not first:
                    first = p.name
                if t < th:
                    th = t
            elif d == DROPPED:
                return Decision(False, p.name, MAX_T, dropped=True)
            elif d == INVERT_NOT_SAMPLED:
                inverted = True
        if inverted or not first:
            return NOT_SAMPLED
        return Decision(True, first, th)
