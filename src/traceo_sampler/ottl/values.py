"""OTTL's value model and its comparison rules (pkg/ottl/compare.go, v0.161.0).

Values are plain Python objects with Go's types kept apart: ``str``,
``bool``, ``int`` (int64), ``float`` (float64), ``bytes``, ``None`` (nil),
``dict`` (a map), ``list`` (a slice), and the wrapper classes below for what
Go keeps as distinct types (trace and span IDs, times, durations, opaque
span parts). A ``bool`` is never an ``int`` here, though Python would let it
be one: every check uses ``type(x) is ...``.

The Collector's pcommon.Value / pcommon.Map / pcommon.Slice never appear:
attribute reads convert to the raw types at once, as ottlcommon.GetValue
does, and every rule of compare.go for a pcommon.Value is the rule of the raw
type it holds.
"""
from __future__ import annotations

import math
from decimal import Decimal

EQ, NE, LT, LTE, GTE, GT = range(6)
OPS = {"==": EQ, "!=": NE, "<": LT, "<=": LTE, ">=": GTE, ">": GT}


class _Id:
    """A fixed-size ID (Go arrays pcommon.TraceID / pcommon.SpanID): equal
    only to the same type with the same bytes, unordered."""

    __slots__ = ("raw",)

    def __init__(self, raw: bytes):
        self.raw = raw

    def __eq__(self, other):
        return type(other) is type(self) and other.raw == self.raw

    def __hash__(self):
        return hash((type(self), self.raw))

    def __repr__(self):
        return f"{type(self).__name__}({self.raw.hex()})"


class TraceID(_Id):
    __slots__ = ()


class SpanID(_Id):
    __slots__ = ()


class Time:
    """A point in time (Go time.Time), nanoseconds since the Unix epoch."""

    __slots__ = ("ns",)

    def __init__(self, ns: int):
        self.ns = ns

    def __eq__(self, other):
        return type(other) is Time and other.ns == self.ns

    def __hash__(self):
        return hash(("time", self.ns))

    def __repr__(self):
        return f"Time({self.ns})"


class Duration:
    """A length of time (Go time.Duration), nanoseconds."""

    __slots__ = ("ns",)

    def __init__(self, ns: int):
        self.ns = ns

    def __eq__(self, other):
        return type(other) is Duration and other.ns == self.ns

    def __hash__(self):
        return hash(("duration", self.ns))

    def __repr__(self):
        return f"Duration({self.ns})"


class Opaque:
    """A span part OTTL hands out as a struct (status, an event, a link):
    equal to the same kind with equal content, nothing else."""

    __slots__ = ("key", "kind")

    def __init__(self, kind: str, key):
        self.kind = kind
        self.key = key

    def __eq__(self, other):
        return type(other) is Opaque and other.kind == self.kind and other.key == self.key

    def __hash__(self):
        return hash((self.kind, self.key))


def type_name(v) -> str:
    """Go's name of a value's type, for error messages."""
    t = type(v)
    return {str: "string", bool: "bool", int: "int64", float: "float64", bytes: "[]byte",
            dict: "pcommon.Map", list: "pcommon.Slice", TraceID: "pcommon.TraceID",
            SpanID: "pcommon.SpanID", Time: "time.Time", Duration: "time.Duration",
            type(None): "nil"}.get(t, getattr(v, "kind", t.__name__))


def _prim(a, b, op: int) -> bool:
    if op == EQ:
        return a == b
    if op == NE:
        return a != b
    if op == LT:
        return a < b
    if op == LTE:
        return a <= b
    if op == GTE:
        return a >= b
    return a > b


def _invalid(op: int) -> bool:
    # comparing values of different types: only "!=" holds
    return op == NE


def deep_equal(a, b) -> bool:
    """reflect.DeepEqual on raw values: types must match exactly (1 is not
    1.0, nor true)."""
    ta = type(a)
    if ta is not type(b):
        return False
    if ta is dict:
        return len(a) == len(b) and all(k in b and deep_equal(v, b[k]) for k, v in a.items())
    if ta is list:
        return len(a) == len(b) and all(deep_equal(x, y) for x, y in zip(a, b))
    if ta is float:
        return a == b      # NaN != NaN, as in Go
    return a == b


def compare(a, b, op: int) -> bool:
    """ottlValueComparator.compare."""
    if a is None and b is None:
        return op in (EQ, LTE, GTE)
    ta = type(a)
    if a is None:
        return compare(b, None, op)
    if ta is bool:
        if type(b) is bool:
            if op == EQ:
                return a == b
            if op == NE:
                return a != b
            if op == LT:
                return not a and b
            if op == LTE:
                return not a or b
            if op == GTE:
                return a or not b
            return a and not b
        return _invalid(op)
    if ta is int:
        tb = type(b)
        if tb is int:
            return _prim(a, b, op)
        if tb is float:
            return _prim(float(a), b, op)
        return _invalid(op)
    if ta is float:
        tb = type(b)
        if tb is int:
            return _prim(a, float(b), op)
        if tb is float:
            return _prim(a, b, op)
        return _invalid(op)
    if ta is str:
        if type(b) is str:
            return _prim(a, b, op)
        return _invalid(op)
    if ta is bytes:
        if b is None:
            return op == NE
        if type(b) is bytes:
            return _prim(a, b, op)
        return _invalid(op)
    if ta is Duration:
        if type(b) is Duration:
            return _prim(a.ns, b.ns, op)
        return _invalid(op)
    if ta is Time:
        if type(b) is Time:
            return _prim(a.ns, b.ns, op)
        return _invalid(op)
    if ta is dict or ta is list:
        if type(b) is ta:
            if op == EQ:
                return deep_equal(a, b)
            if op == NE:
                return not deep_equal(a, b)
        return _invalid(op)
    # any other type: Go's interface equality, unordered
    if op == EQ:
        return a == b
    if op == NE:
        return a != b
    return _invalid(op)


def go_float(f: float) -> str:
    """A float64 as Go's encoding/json writes it (strconv 'f' or 'e',
    shortest)."""
    if math.isnan(f) or math.isinf(f):
        raise TypeError(f"unsupported value: {f}")
    if f == 0:
        return "-0" if math.copysign(1.0, f) < 0 else "0"
    a = abs(f)
    if 1e-6 <= a < 1e21:
        # the shortest digits that round-trip (repr), written without an
        # exponent
        r = format(Decimal(repr(f)), "f")
        if "." in r:
            r = r.rstrip("0").rstrip(".")
        return r
    m, _, e = repr(f).partition("e")
    if not e:
        m, _, e = format(f, "e").partition("e")
    m = m.removesuffix(".0")
    exp = int(e)
    # strconv pads the exponent to two digits; encoding/json then drops the
    # pad of a negative one (1e-07 -> 1e-7)
    return f"{m}e-{-exp}" if exp < 0 else f"{m}e+{exp:02d}"
