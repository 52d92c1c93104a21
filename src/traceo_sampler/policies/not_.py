"""``not``: inverts its one sub-policy (sampled ⇄ not sampled).

A trace kept because a probabilistic policy did *not* sample it is kept
with certainty given its randomness, so its threshold is recorded as 0."""
from __future__ import annotations

from .. import policies
from ..cfgtypes import _Base
from .base import NO, SAMPLED, YES

TYPE = "not"
SUB_POLICIES = {"not_sub_policy": "one"}


class NotCfg(_Base):
    # the one sub-policy whose verdict is inverted
    not_sub_policy: policies.PolicyCfg


Config = NotCfg


class Not:
    def __init__(self, name, sub):
        self.name = name
        self.sub = sub

    def attribute_keys(self) -> set[str]:
        return self.sub.attribute_keys()

    def evaluate(self, trace):
        d, _ = self.sub.evaluate(trace)
        return NO if d == SAMPLED else YES


def build(cfg, build_sub, clock=None):
    return Not(cfg.name, build_sub(cfg.not_.not_sub_policy))
