"""``boolean_attribute``: a bool attribute equal to ``value``."""
from ..cfgtypes import _Base
from .base import NO, YES, attr_values

TYPE = "boolean_attribute"


class BooleanAttributeCfg(_Base):
    # the bool attribute looked up, in span and resource attributes alike
    key: str
    # kept when the attribute has this value
    value: bool
    # keep the traces where no span has it; a match is then a plain not-sampled, no veto
    invert_match: bool = False


Config = BooleanAttributeCfg


class BooleanAttribute:
    def __init__(self, name, key, value, invert=False):
        self.name = name
        self.key = key
        self.value = value
        self.invert = invert

    def attribute_keys(self) -> set[str]:
        return {self.key}

    def evaluate(self, trace):
        hit = any(type(v) is bool and v == self.value for v in attr_values(trace, self.key))
        if self.invert:
            return NO if hit else YES
        return YES if hit else NO


class CollectorBooleanAttribute(BooleanAttribute):
    """The Collector's reading (boolean_tag_filter.go): a value of the key is
    read as pdata's ``Value.Bool()``, so a value of another type reads
    false."""

    def evaluate(self, trace):
        hit = any((v if type(v) is bool else False) == self.value
                  for v in attr_values(trace, self.key))
        if self.invert:
            return NO if hit else YES
        return YES if hit else NO


def build_collector(cfg, build_sub, clock=None):
    c = cfg.boolean_attribute
    return CollectorBooleanAttribute(cfg.name, c.key, c.value, c.invert_match)


def build(cfg, build_sub, clock=None):
    c = cfg.boolean_attribute
    return BooleanAttribute(cfg.name, c.key, c.value, c.invert_match)
