"""The building blocks of the config structs: the strict base struct,
durations, constrained numbers. Separate from config.py so the policy
modules, which declare their own config structs, can import them while
config.py imports the policy registry."""
from __future__ import annotations

import re
from typing import Annotated, Any

import msgspec

NonNeg = Annotated[int, msgspec.Meta(ge=0)]
Positive = Annotated[int, msgspec.Meta(gt=0)]
Percent = Annotated[float, msgspec.Meta(ge=0, le=100)]
NonNegFloat = Annotated[float, msgspec.Meta(ge=0)]
PositiveFloat = Annotated[float, msgspec.Meta(gt=0)]
# (0, 1]: an upper bound of 1 exclusive is checked by the policy, whose
# message reads like the others ("must be < 1")
Fraction = Annotated[float, msgspec.Meta(gt=0, le=1)]

_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ns|us|µs|ms|s|m|h)\s*$")
_UNIT = {"ns": 1e-9, "us": 1e-6, "µs": 1e-6, "ms": 1e-3, "s": 1.0, "m": 60.0, "h": 3600.0}


class Duration:
    """A duration written ``250ms``, ``2s``, ``5m`` (Go/Collector style)."""

    __slots__ = ("seconds", "text")

    def __init__(self, text: str):
        m = _DURATION.match(text) if isinstance(text, str) else None
        if m is None:
            raise ValueError("must be a duration such as 250ms, 2s or 5m")
        self.text = text.strip()
        self.seconds = float(m.group(1)) * _UNIT[m.group(2)]

    def __repr__(self) -> str:
        return f"Duration({self.text!r})"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Duration) and other.seconds == self.seconds


class Wait(Duration):
    """``auto`` (learned from the observed arrival lags, completion.py) or a
    fixed duration. ``seconds`` is None for auto."""

    __slots__ = ("auto",)
    seconds: float | None  # type: ignore[assignment]  # a Duration's, None for auto

    def __init__(self, text: str):
        if isinstance(text, str) and text.strip() == "auto":
            self.text = "auto"
            self.seconds = None
            self.auto = True
            return
        try:
            super().__init__(text)
        except ValueError:
            raise ValueError("must be auto or a duration such as 250ms, 2s or 5m") from None
        self.auto = False

    def __eq__(self, other: object) -> bool:
        if isinstance(other, Wait):
            return (other.auto, other.seconds) == (self.auto, self.seconds)
        return isinstance(other, Duration) and not self.auto and other.seconds == self.seconds


def _dec_hook(typ: type, obj: Any) -> Any:
    if typ is Wait:
        return Wait(obj)
    if typ is Duration:
        return Duration(obj)
    raise NotImplementedError(typ)


def _enc_hook(obj: Any) -> Any:
    if isinstance(obj, Duration):
        return obj.text
    raise NotImplementedError(type(obj))


class _Base(msgspec.Struct, forbid_unknown_fields=True, omit_defaults=True):
    pass
