"""``string_attribute``: a span or resource attribute equals (or, with
``enabled_regex_matching``, matches a regex of) one of ``values``. Regexes
match anywhere in the value unless anchored, as Go's MatchString does in the
Collector, so pasted Collector patterns keep their meaning.

``invert_match`` keeps traces where no value matches; one where a value
matches is plainly not sampled by this policy, with no veto over the others
(the current Collector: its ``disableinvertdecisions`` gate is stable)."""
import re

import re2

from ..cfgtypes import NonNeg, _Base
from .base import NO, YES, attr_values

TYPE = "string_attribute"


class StringAttributeCfg(_Base):
    key: str
    values: list[str]
    enabled_regex_matching: bool = False
    cache_max_size: NonNeg = 0
    invert_match: bool = False


Config = StringAttributeCfg


_RE2_OPTIONS = re2.Options()
_RE2_OPTIONS.log_errors = False


def check(c: StringAttributeCfg, path: str, problems: list[str]) -> None:
    """A pattern must be one Go's regexp (RE2) accepts, as the Collector
    compiles it: no lookaround, no backreferences."""
    if c.enabled_regex_matching:
        for i, v in enumerate(c.values):
            try:
                re2.compile(v, _RE2_OPTIONS)
            except (re2.error, ValueError, TypeError) as exc:
                msg = exc.args[0] if exc.args else exc
                msg = msg.decode(errors="replace") if isinstance(msg, bytes) else msg
                problems.append(f"{path}.values[{i}]: invalid regex (RE2, as the Collector's "
                                f"Go regexp): {msg}")
                continue
            try:
                re.compile(v)
            except re.error as exc:
                problems.append(f"{path}.values[{i}]: valid in RE2 but not supported by this "
                                f"version's matcher: {exc}")


class StringAttribute:
    def __init__(self, name, key, values, regex=False, invert=False):
        self.name = name
        self.key = key
        self.values = frozenset(values)
        self.patterns = [re.compile(v) for v in values] if regex else None
        self.invert = invert

    def attribute_keys(self) -> set[str]:
        return {self.key}

    def _matches(self, trace) -> bool:
        for v in attr_values(trace, self.key):
            if not isinstance(v, str):
                continue
            if self.patterns is None:
                if v in self.values:
                    return True
            elif any(p.search(v) for p in self.patterns):
                return True
        return False

    def evaluate(self, trace):
        hit = self._matches(trace)
        if self.invert:
            return NO if hit else YES
        return YES if hit else NO


def build(cfg, build_sub, clock=None):
    c = cfg.string_attribute
    return StringAttribute(cfg.name, c.key, c.values, c.enabled_regex_matching, c.invert_match)
