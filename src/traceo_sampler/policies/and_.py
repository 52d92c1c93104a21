"""``and``: sampled when every sub-policy samples.

The kept probability is that of the strictest probabilistic part, so the
threshold is the largest of the sub-policies' thresholds."""
from .base import NO, SAMPLED


class And:
    def __init__(self, name, subs):
        self.name = name
        self.subs = subs

    def attribute_keys(self) -> set[str]:
        return set().union(*(s.attribute_keys() for s in self.subs))

    def evaluate(self, trace):
        th = 0
        for s in self.subs:
            d, t = s.evaluate(trace)
            if d != SAMPLED:
                return NO
            if t > th:
                th = t
        return (SAMPLED, th)


def build(cfg, build_sub):
    return And(cfg.name, [build_sub(c) for c in cfg.and_["and_sub_policy"]])
