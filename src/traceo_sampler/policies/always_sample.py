"""``always_sample``: keep every trace."""
from .base import YES


class AlwaysSample:
    def __init__(self, name: str, cfg=None):
        self.name = name

    def attribute_keys(self) -> set[str]:
        return set()

    def evaluate(self, trace):
        return YES


def build(cfg, build_sub, clock=None):
    return AlwaysSample(cfg.name)
