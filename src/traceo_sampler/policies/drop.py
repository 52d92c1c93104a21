"""``drop``: when every sub-policy samples, the trace is dropped, whatever
any other policy says (Collector semantics)."""
from __future__ import annotations

from .. import policies
from ..cfgtypes import _Base
from .base import DROPPED, NO, SAMPLED

TYPE = "drop"
SUB_POLICIES = {"drop_sub_policy": "list"}


class DropCfg(_Base):
    # the sub-policies; when every one samples the trace, it is dropped whatever the other
    # policies say
    drop_sub_policy: list[policies.PolicyCfg]


Config = DropCfg


class Drop:
    def __init__(self, name, subs):
        self.name = name
        self.subs = subs

    def attribute_keys(self) -> set[str]:
        return set().union(*(s.attribute_keys() for s in self.subs))

    def evaluate(self, trace):
        for s in self.subs:
            if s.evaluate(trace)[0] != SAMPLED:
                return NO
        return (DROPPED, 0)


def build(cfg, build_sub, clock=None):
    return Drop(cfg.name, [build_sub(c) for c in cfg.drop.drop_sub_policy])
