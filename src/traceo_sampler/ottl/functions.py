"""The converters conditions use, after pkg/ottl/ottlfuncs (v0.161.0), with
the typed getters of pkg/ottl/expression.go that coerce their arguments.

Each converter declares its parameters (name, kind, optional?) as the Go
Arguments struct does; the compiler checks the arity and argument names and
coerces literal arguments at compile time, so ``Int("abc")`` or
``IsMatch(name, "(")`` is a config error, as in the Collector.
"""
from __future__ import annotations

import json
import math
import re

import re2 as _re2

from .paths import EvalError, TypeErr
from .values import EQ, Duration, SpanID, Time, TraceID, compare, go_float, type_name

# Go's regexp is RE2: the same syntax (no lookaround, no backreferences),
# linear time. Errors are reported here, not logged by RE2 to stderr.
_RE2_OPTIONS = _re2.Options()
_RE2_OPTIONS.log_errors = False


# ----------------------------------------------------------- typed getters
def as_string(v):
    if type(v) is str:
        return v
    raise TypeErr(f"expected string but got {'nil' if v is None else type_name(v)}")


def as_int(v):
    if type(v) is int:
        return v
    raise TypeErr(f"expected int64 but got {'nil' if v is None else type_name(v)}")


def as_float(v):
    if type(v) is float:
        return v
    raise TypeErr(f"expected float64 but got {'nil' if v is None else type_name(v)}")


def as_bool(v):
    if type(v) is bool:
        return v
    raise TypeErr(f"expected bool but got {'nil' if v is None else type_name(v)}")


def as_pmap(v):
    if type(v) is dict:
        return v
    raise TypeErr(f"expected pcommon.Map but got {'nil' if v is None else type_name(v)}")


def as_pslice(v):
    if type(v) is list:
        return v
    raise TypeErr(f"expected pcommon.Slice but got {'nil' if v is None else type_name(v)}")


def as_any(v):
    return v


def as_time(v):
    if type(v) is Time:
        return v
    raise TypeErr(f"expected time but got {'nil' if v is None else type_name(v)}")


def as_duration(v):
    if type(v) is Duration:
        return v
    raise TypeErr(f"expected duration but got {'nil' if v is None else type_name(v)}")


def _json_default(o):
    if type(o) is bytes:
        import base64
        return base64.b64encode(o).decode()
    raise TypeError(type_name(o))


def _go_json(v) -> str:
    t = type(v)
    if t is float:
        return go_float(v)
    if t is bool:
        return "true" if v else "false"
    if t is int or t is str:
        return json.dumps(v, ensure_ascii=False)
    if t is dict:
        return "{" + ",".join(json.dumps(k, ensure_ascii=False) + ":" + _go_json(v[k])
                              for k in sorted(v)) + "}"
    if t is list:
        return "[" + ",".join(_go_json(x) for x in v) + "]"
    if v is None:
        return "null"
    if t is bytes:
        return json.dumps(_json_default(v))
    raise TypeErr(f"unsupported type: {type_name(v)}")


def as_string_like(v):
    """StringLikeGetter: None when there is no value (``ok`` false)."""
    if v is None:
        return None
    t = type(v)
    if t is str:
        return v
    if t is bytes:
        return v.hex()
    if t is TraceID or t is SpanID:
        return v.raw.hex()
    s = _go_json(v)
    # encoding/json escapes HTML-sensitive characters by default
    return s.replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026")


_GO_INT = re.compile(r"[+-]?[0-9]+\Z")
_GO_FLOAT = re.compile(r"[+-]?(?:(?:[0-9]+\.?[0-9]*|\.[0-9]+)(?:[eE][+-]?[0-9]+)?"
                       r"|inf(?:inity)?|nan)\Z", re.IGNORECASE)
_GO_BOOL = {"1": True, "t": True, "T": True, "TRUE": True, "true": True, "True": True,
            "0": False, "f": False, "F": False, "FALSE": False, "false": False, "False": False}
_I64 = 1 << 63


def _parse_int(s: str) -> int:
    if not _GO_INT.match(s):
        raise EvalError(f'strconv.ParseInt: parsing "{s}": invalid syntax')
    n = int(s)
    if not -_I64 <= n < _I64:
        raise EvalError(f'strconv.ParseInt: parsing "{s}": value out of range')
    return n


def _parse_float(s: str) -> float:
    if not _GO_FLOAT.match(s):
        raise EvalError(f'strconv.ParseFloat: parsing "{s}": invalid syntax')
    return float(s)


def as_int_like(v):
    if v is None:
        return None
    t = type(v)
    if t is int:
        return v
    if t is str:
        return _parse_int(v)
    if t is float:
        if math.isnan(v) or math.isinf(v):
            raise EvalError(f"cannot convert {v} to int64")
        return int(v)
    if t is bool:
        return 1 if v else 0
    raise TypeErr(f"unsupported type: {type_name(v)}")


def as_float_like(v):
    if v is None:
        return None
    t = type(v)
    if t is float:
        return v
    if t is int:
        return float(v)
    if t is str:
        return _parse_float(v)
    if t is bool:
        return 1.0 if v else 0.0
    raise TypeErr(f"unsupported type: {type_name(v)}")


def as_bool_like(v):
    if v is None:
        return None
    t = type(v)
    if t is bool:
        return v
    if t is int:
        return v != 0
    if t is float:
        return v != 0.0
    if t is str:
        b = _GO_BOOL.get(v)
        if b is None:
            raise EvalError(f'strconv.ParseBool: parsing "{v}": invalid syntax')
        return b
    raise TypeErr(f"unsupported type: {type_name(v)}")


def as_byte_slice_like(v):
    if v is None:
        return None
    t = type(v)
    if t is bytes:
        return v
    if t is str:
        return v.encode()
    if t is int:
        return v.to_bytes(8, "big", signed=True)
    if t is float:
        import struct
        return struct.pack(">d", v)
    if t is bool:
        return b"\x01" if v else b"\x00"
    raise TypeErr(f"unsupported type: {type_name(v)}")


KINDS = {
    "string": as_string, "int": as_int, "float": as_float, "bool": as_bool,
    "pmap": as_pmap, "pslice": as_pslice, "any": as_any,
    "string_like": as_string_like, "int_like": as_int_like, "float_like": as_float_like,
    "bool_like": as_bool_like, "bytes_like": as_byte_slice_like,
    "time": as_time, "duration": as_duration,
}


# ----------------------------------------------------------- converters
def _is(kind):
    conv = KINDS[kind]

    def f(v):
        try:
            conv(v)
        except TypeErr:
            return False
        return True
    return f


def _is_list(v):
    return type(v) is list


def _len(v):
    t = type(v)
    if t is str:
        return len(v.encode("utf-8", "surrogateescape"))   # Go: bytes
    if t is dict or t is list or t is bytes:
        return len(v)
    raise EvalError(f"Len: unsupported target type {type_name(v)}")


def _identity(v):
    # Int/Double/String/Bool: the argument's coercion is the whole work
    return v


def _lower(v):
    return v.lower()


def _upper(v):
    return v.upper()


def _substring(target, s, n, utf8_safe=None):
    if s < 0:
        raise EvalError(f"invalid start for substring function, {s} cannot be negative")
    if n <= 0:
        raise EvalError(f"invalid length for substring function, {n} cannot be negative or zero")
    val = target.encode("utf-8", "surrogateescape")
    if s > len(val) or n > len(val) - s:
        raise EvalError(f"invalid range for substring function, start({s})+length({n}) cannot "
                        f"be greater than the length of target string({len(val)})")
    a, b = s, s + n
    if utf8_safe:
        while a < len(val) and (val[a] & 0xC0) == 0x80:
            a += 1
        while a < b < len(val) and (val[b] & 0xC0) == 0x80:
            b -= 1
        b = max(a, b)
    return val[a:b].decode("utf-8", "surrogateescape")


def _concat(vals, d):
    return d.join("<nil>" if v is None else v for v in vals)


def _has_prefix(v, p):
    return v.startswith(p)


def _has_suffix(v, s):
    return v.endswith(s)


def _trim_prefix(v, p):
    return v[len(p):] if p and v.startswith(p) else v


def _trim_suffix(v, s):
    return v[:-len(s)] if s and v.endswith(s) else v


def _split(v, d):
    if d == "":
        return list(v)     # Go splits into UTF-8 sequences
    return v.split(d)


def _contains_value(sl, it):
    return any(compare(x, it, EQ) for x in sl)


def _is_empty(v):
    if v is None:
        return True
    t = type(v)
    if t in (dict, list, str, bytes):
        return len(v) == 0
    if t is bool:
        return not v
    if t is int or t is float:
        return v == 0
    if t is TraceID or t is SpanID:
        return not any(v.raw)
    return False


def _is_match(v, pattern):
    if v is None:
        return False
    return pattern.search(v) is not None


def _id_of(name, cls, n):
    def f(b):
        if len(b) == n:
            return cls(bytes(b))
        if len(b) == 2 * n:
            try:
                return cls(bytes.fromhex(b.decode("ascii")))
            except (ValueError, UnicodeDecodeError):
                raise EvalError(f"{name}: could not decode ID: invalid hex") from None
        raise EvalError(f"{name}: could not decode ID: invalid length: expected {n} or {2 * n} "
                        f"bytes, got {len(b)}")
    return f


_DUR_UNITS = {"ns": 1, "us": 1_000, "\u00b5s": 1_000, "\u03bcs": 1_000, "ms": 1_000_000,
              "s": 1_000_000_000, "m": 60_000_000_000, "h": 3_600_000_000_000}
_DUR_PART = re.compile(r"([0-9]*)(?:\.([0-9]*))?([^0-9.]+)")


def parse_go_duration(text: str) -> int:
    """time.ParseDuration: nanoseconds, or EvalError as Go words it."""
    bad = EvalError(f'time: invalid duration "{text}"')
    s = text
    neg = False
    if s[:1] in ("-", "+"):
        neg = s[0] == "-"
        s = s[1:]
    if s == "0":
        return 0
    if not s:
        raise bad
    total = 0
    pos = 0
    while pos < len(s):
        m = _DUR_PART.match(s, pos)
        if m is None:
            raise bad
        whole, frac, unit = m.groups()
        if not whole and not frac:
            raise bad
        mult = _DUR_UNITS.get(unit)
        if mult is None:
            raise EvalError(f'time: unknown unit "{unit}" in duration "{text}"')
        v = int(whole or "0") * mult
        if frac:
            # Go adds the fraction through a float64, truncated
            v += int(int(frac) * (mult / 10 ** len(frac)))
        total += v
        if total > (1 << 63) - (0 if neg else 1):
            raise bad
        pos = m.end()
    return -total if neg else total


def _duration(text):
    return Duration(parse_go_duration(text))


def _go_div_trunc(a: int, b: int) -> int:
    q = abs(a) // b
    return q if a >= 0 else -q


def _float_part(d: Duration, unit: int) -> float:
    # Go: float64(d / unit) + float64(d % unit) / unit, both truncated
    whole = _go_div_trunc(d.ns, unit)
    return float(whole) + float(d.ns - whole * unit) / unit


def _index(target, value):
    if type(target) is str:
        if type(value) is not str:
            raise EvalError("invalid value type for Index function, value must be a string")
        return target.encode("utf-8", "surrogateescape").find(
            value.encode("utf-8", "surrogateescape"))
    items = as_pslice(target)
    for i, x in enumerate(items):
        if compare(x, value, EQ):
            return i
    return -1


def _trim(target, cutset=None):
    return target.strip(" " if cutset is None else cutset)


def _is_root_span(ctx):
    p = ctx.span.parent_span_id
    return not any(p)


def compile_regex(pattern: str, func: str):
    try:
        return _re2.compile(pattern, _RE2_OPTIONS)
    except (_re2.error, ValueError, TypeError) as exc:
        why = exc.args[0] if exc.args else exc
        if isinstance(why, bytes):
            why = why.decode("utf-8", "replace")
        raise ValueError(f"invalid regex pattern supplied to {func}, {pattern!r}: {why}") from None


class Func:
    """A converter: its parameters [(name, kind, optional)], the Python
    implementation (called with each argument's coerced value, ``None`` for
    an omitted optional one), whether it reads the context itself, and
    whether it folds over its literal arguments at compile time."""

    __slots__ = ("contexts", "fold", "impl", "name", "needs_ctx", "params")

    def __init__(self, name, params, impl, needs_ctx=False, contexts=None, fold=False):
        self.name = name
        self.params = params
        self.impl = impl
        self.needs_ctx = needs_ctx
        self.contexts = contexts
        self.fold = fold


def _p(*names_kinds):
    out = []
    for nk in names_kinds:
        opt = nk.endswith("?")
        name, kind = nk.rstrip("?").split(":")
        out.append((name, kind, opt))
    return out


FUNCTIONS: dict[str, Func] = {f.name: f for f in [
    Func("IsMatch", _p("target:string_like", "pattern:regex"), _is_match),
    Func("IsString", _p("target:any"), _is("string")),
    Func("IsInt", _p("target:any"), _is("int")),
    Func("IsDouble", _p("target:any"), _is("float")),
    Func("IsBool", _p("target:any"), _is("bool")),
    Func("IsMap", _p("target:any"), _is("pmap")),
    Func("IsList", _p("target:any"), _is_list),
    Func("IsEmpty", _p("target:any"), _is_empty),
    Func("Len", _p("target:any"), _len),
    Func("Int", _p("target:int_like"), _identity),
    Func("Double", _p("target:float_like"), _identity),
    Func("String", _p("target:string_like"), _identity),
    Func("Bool", _p("target:bool_like"), _identity),
    Func("ToLowerCase", _p("target:string"), _lower),
    Func("ToUpperCase", _p("target:string"), _upper),
    Func("Substring", _p("target:string", "start:int", "length:int", "utf8_safe:bool_literal?"),
         _substring),
    Func("Concat", _p("vals:list_string_like", "delimiter:string"), _concat),
    Func("HasPrefix", _p("target:string", "prefix:string"), _has_prefix),
    Func("HasSuffix", _p("target:string", "suffix:string"), _has_suffix),
    Func("TrimPrefix", _p("target:string", "prefix:string"), _trim_prefix),
    Func("TrimSuffix", _p("target:string", "suffix:string"), _trim_suffix),
    Func("Split", _p("target:string", "delimiter:string"), _split),
    Func("ContainsValue", _p("target:pslice", "item:any"), _contains_value),
    Func("TraceID", _p("target:bytes_like"), _id_of("TraceID", TraceID, 16), fold=True),
    Func("SpanID", _p("target:bytes_like"), _id_of("SpanID", SpanID, 8), fold=True),
    Func("Duration", _p("duration:string"), _duration),
    Func("Nanoseconds", _p("duration:duration"), lambda d: d.ns),
    Func("Microseconds", _p("duration:duration"), lambda d: _go_div_trunc(d.ns, 1_000)),
    Func("Milliseconds", _p("duration:duration"), lambda d: _go_div_trunc(d.ns, 1_000_000)),
    Func("Seconds", _p("duration:duration"), lambda d: _float_part(d, 1_000_000_000)),
    Func("Minutes", _p("duration:duration"), lambda d: _float_part(d, 60_000_000_000)),
    Func("Hours", _p("duration:duration"), lambda d: _float_part(d, 3_600_000_000_000)),
    Func("UnixNano", _p("time:time"), lambda t: t.ns),
    Func("UnixMicro", _p("time:time"), lambda t: t.ns // 1_000),
    Func("UnixMilli", _p("time:time"), lambda t: t.ns // 1_000_000),
    Func("UnixSeconds", _p("time:time"), lambda t: t.ns // 1_000_000_000),
    Func("Index", _p("target:any", "value:any"), _index),
    Func("Trim", _p("target:string", "replacement:string?"), _trim),
    Func("IsRootSpan", [], _is_root_span, needs_ctx=True, contexts=("span",)),
]}
