"""``numeric_attribute``: an int/double attribute within [min_value, max_value].

Either bound may be omitted and then does not apply (the Collector's
optional bounds); an explicit 0 is a bound like any other."""
from ..cfgtypes import _Base
from .base import NO, YES, attr_values

TYPE = "numeric_attribute"


class NumericAttributeCfg(_Base):
    # the int or double attribute looked up, in span and resource attributes alike
    key: str
    min_value: int | float | None = None   # omitted: no lower bound
    max_value: int | float | None = None   # omitted: no upper bound
    # keep the traces where no value is in range; a value in range is then a plain not-
    # sampled, no veto
    invert_match: bool = False


Config = NumericAttributeCfg


def check(c: NumericAttributeCfg, path: str, problems: list[str]) -> None:
    if c.min_value is None and c.max_value is None:
        problems.append(f"{path}: set min_value or max_value")
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
            return NO if hit else YES
        return YES if hit else NO


class CollectorNumericAttribute(NumericAttribute):
    """The Collector's reading: config bounds of 0 mean "no bound" (its
    int64 fields cannot tell 0 from omitted), and a value is read as
    pdata's ``Value.Int()``: an int as it is, any other type as 0."""

    def evaluate(self, trace):
        hit = False
        lo, hi = self.min, self.max
        for v in attr_values(trace, self.key):
            if type(v) is not int:
                v = 0
            if (lo is None or v >= lo) and (hi is None or v <= hi):
                hit = True
                break
        if self.invert:
            return NO if hit else YES
        return YES if hit else NO


def build_collector(cfg, build_sub, clock=None):
    c = cfg.numeric_attribute
    return CollectorNumericAttribute(cfg.name, c.key, int(c.min_value) if c.min_value else None,
                                     int(c.max_value) if c.max_value else None, c.invert_match)


def check_collector(c: NumericAttributeCfg, path: str, problems: list[str]) -> None:
    if not c.min_value and not c.max_value:
        problems.append(f"{path}: set min_value or max_value (the Collector reads 0 as unset "
                        "and refuses a filter with neither)")


def build(cfg, build_sub, clock=None):
    c = cfg.numeric_attribute
    return NumericAttribute(cfg.name, c.key, c.min_value, c.max_value, c.invert_match)
