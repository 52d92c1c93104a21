"""``always_sample``: keep every trace."""
from ..cfgtypes import _Base
from .base import YES

TYPE = "always_sample"
BLOCK_OPTIONAL = True


class AlwaysSampleCfg(_Base):
    """No fields; the block may be omitted."""


Config = AlwaysSampleCfg


class AlwaysSample:
    def __init__(self, name: str, cfg=None):
        self.name = name

    def attribute_keys(self) -> set[str]:
        return set()

    def evaluate(self, trace):
        return YES


def build(cfg, build_sub, clock=None):
    return AlwaysSample(cfg.name)
