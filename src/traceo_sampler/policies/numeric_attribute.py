"""``numeric_attribute``: an int/double attribute within [min_value, max_value].

Either bound may be omitted and then does not apply (the Collector's
optional bounds); an explicit 0 is a bound like any other."""
from ..cfgtypes import _Base
from .base import INVERT_NOT_SAMPLED, NO, YES, attr_values

TYPE = "numeric_attribute"


class NumericAttributeCfg(_Base):
    key: str
    min_value: int | float | None = None   # omitted: no lower bound
    max_value: int | float | None = None   # omitted: no upper bound
    invert_match: bool = False


Config = NumericAttributeCfg


def check(c: NumericAttributeCfg, path: str, problems: list[str]) -> None:
    if c.max_value is not None and c.min_value is not None and c.max_value < c.min_value:
        problems.append(f"{path}.max_value: must be >= min_value")


class NumericAttribute:
    def __init__(self, name, key, min_value, max_value, invert=False):
        self.name = name
        self.key = key
        self.min = min_value
        self.max = max_value
        self.invert = invert

    def attribute_keys(self) -> set[str]:
        return {self.key}

    def evaluate(self, trace):
        hit = False
        for v in attr_values(trace, self.key):
            if (type(v) in (int, float) and (self.min is None or v >= self.min)
                    and (self.max is None or v <= self.max)):
                hit = True
                break
        if self.invert:
            return (INVERT_NOT_SAMPLED, 0) if hit else YES
        return YES if hit else NO


def build(cfg, build_sub, clock=None):
    c = cfg.numeric_attribute
    return NumericAttribute(cfg.name, c.key, c.min_value, c.max_value, c.invert_match)
