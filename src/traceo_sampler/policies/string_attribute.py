"""``string_attribute``: a span or resource attribute equals (or, with
``enabled_regex_matching``, matches a regex of) one of ``values``. Regexes
match anywhere in the value unless anchored, as Go's MatchString does in the
Collector, so pasted Collector patterns keep their meaning.

Regexes run on RE2 (the ``google-re2`` package), the engine and syntax of
Go's ``regexp``: matching takes time linear in the value, so no pattern and
value can stall the event loop with backtracking, and a pattern the
Collector refuses (backreferences, lookaround, ``\\Z``...) is refused here.

``invert_match`` keeps traces where no value matches, and vetoes those where
one does (the Collector's InvertNotSampled)."""
import re2

from .base import INVERT_NOT_SAMPLED, NO, YES, attr_values

_OPTIONS = re2.Options()
_OPTIONS.log_errors = False  # the error is reported as a config problem instead


def compile_regex(pattern: str):
    """Compile as Go's regexp.Compile would; ValueError says why not."""
    if "\\C" in pattern.replace("\\\\", ""):  # RE2 has \C (any byte), Go has not
        raise ValueError("invalid escape sequence: \\C")
    try:
        return re2.compile(pattern, options=_OPTIONS)
    except re2.error as exc:
        msg = exc.args[0] if exc.args else exc
        raise ValueError(msg.decode("utf-8", "replace") if isinstance(msg, bytes) else str(msg)) from None


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
            return (INVERT_NOT_SAMPLED, 0) if hit else YES
        return YES if hit else NO


def build(cfg, build_sub, clock=None):
    c = cfg.string_attribute
    return StringAttribute(cfg.name, c.key, c.values, c.enabled_regex_matching, c.invert_match)
