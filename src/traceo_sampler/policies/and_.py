"""``and``: sampled when every sub-policy samples.

The kept probability is that of the strictest probabilistic part, so the
threshold is the largest of the sub-policies' thresholds. A relative part
(a limiter) sees only the traces the parts before it sampled, so it is told
the threshold so far and keeps its fraction of those (base.py,
``evaluate_after``)."""
from __future__ import annotations

from .. import policies
from ..cfgtypes import _Base
from .base import NO, SAMPLED

TYPE = "and"
SUB_POLICIES = {"and_sub_policy": "list"}


class AndCfg(_Base):
    # the sub-policies; the trace is sampled when every one samples it (threshold: the
    # largest of theirs)
    and_sub_policy: list[policies.PolicyCfg]


Config = AndCfg


class And:
    def __init__(self, name, subs):
        self.name = name
        self.subs = subs
        self._calls = [(getattr(s, "evaluate_after", None), s.evaluate) for s in subs]

    def attribute_keys(self) -> set[str]:
        return set().union(*(s.attribute_keys() for s in self.subs))

    def evaluate(self, trace):
        return self.evaluate_after(trace, 0)

    def evaluate_after(self, trace, t_in):
        th = t_in
        for after, plain in self._calls:
            d, t = after(trace, th) if after is not None else plain(trace)
            if d != SAMPLED:
                return NO
            if t > th:
                th = t
        return (SAMPLED, th)


def build(cfg, build_sub, clock=None):
    return And(cfg.name, [build_sub(c) for c in cfg.and_.and_sub_policy])
