"""``string_attribute``: a span or resource attribute equals (or, with
``enabled_regex_matching``, matches a regex of) one of ``values``. Regexes
match anywhere in the value unless anchored, as Go's MatchString does in the
Collector, so pasted Collector patterns keep their meaning.

``invert_match`` keeps traces where no value matches; one where a value
matches is plainly not sampled by this policy, with no veto over the others
(the current Collector: its ``disableinvertdecisions`` gate is stable).

Regexes run on RE2 (the ``google-re2`` package), the engine and syntax of
Go's ``regexp``: matching takes time linear in the value, so no pattern and
value can stall the event loop with backtracking, and a pattern the
Collector refuses (backreferences, lookaround, ``\\Z``...) is refused here."""
import re2

from ..cfgtypes import NonNeg, _Base
from .base import NO, YES, attr_values

TYPE = "string_attribute"


class StringAttributeCfg(_Base):
    # the attribute looked up, in span and resource attributes alike
    key: str
    # kept when a string value of key equals one of these (with enabled_regex_matching: when
    # one of these regexes matches it)
    values: list[str]
    # values are regexes (RE2, Go's syntax), matching anywhere in the value unless anchored
    enabled_regex_matching: bool = False
    # accepted for Collector files, no effect (the Collector's cache of regex results; RE2
    # matching needs none)
    cache_max_size: NonNeg = 0
    # keep the traces where no value matches; a match is then a plain not-sampled of this
    # policy, no veto over the others
    invert_match: bool = False


Config = StringAttributeCfg

_OPTIONS = re2.Options()
_OPTIONS.log_errors = False  # the error is reported as a config problem instead


def compile_regex(pattern: str):
    """Compile as Go's regexp.Compile would; ValueError says why not."""
    if "\\C" in pattern.replace("\\\\", ""):  # RE2 has \C (any byte), Go has not
        raise ValueError("invalid escape sequence: \\C")
    try:
        return re2.compile(pattern, options=_OPTIONS)
    except (re2.error, ValueError, TypeError) as exc:
        msg = exc.args[0] if exc.args else exc
        raise ValueError(msg.decode("utf-8", "replace") if isinstance(msg, bytes)
                         else str(msg)) from None


def check(c: StringAttributeCfg, path: str, problems: list[str]) -> None:
    """A pattern must be one Go's regexp (RE2) accepts, as the Collector
    compiles it: no lookaround, no backreferences; it is matched by RE2 too."""
    if c.enabled_regex_matching:
        for i, v in enumerate(c.values):
            try:
                compile_regex(v)
            except ValueError as exc:
                problems.append(f"{path}.values[{i}]: invalid regex (RE2, as the Collector's "
                                f"Go regexp): {exc}")


class StringAttribute:
    def __init__(self, name, key, values, regex=False, invert=False):
        self.name = name
        self.key = key
        self.values = frozenset(values)
        self.patterns = [compile_regex(v) for v in values] if regex else None
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
