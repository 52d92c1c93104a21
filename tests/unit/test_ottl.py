"""OTTL conditions (src/traceo_sampler/ottl): grammar, comparison rules,
paths, converters, error modes — cases ported from the Collector's pkg/ottl
v0.161.0 tests (the upstream file is named above each table; case names are
upstream's), plus our own where upstream tests the Go API instead."""
from __future__ import annotations

import pytest
from opentelemetry.proto.common.v1 import common_pb2 as C
from opentelemetry.proto.resource.v1 import resource_pb2 as R
from opentelemetry.proto.trace.v1 import trace_pb2 as T

from traceo_sampler.ottl import CompileError, ConditionSequence, Ctx, EvalError
from traceo_sampler.ottl.values import (
    EQ,
    GT,
    GTE,
    LT,
    LTE,
    NE,
    Duration,
    Time,
    compare,
    go_float,
)


def _put(kvs, k, v):
    a = kvs.add(key=k)
    _set(a.value, v)


def _set(av, v):
    if isinstance(v, bool):
        av.bool_value = v
    elif isinstance(v, int):
        av.int_value = v
    elif isinstance(v, float):
        av.double_value = v
    elif isinstance(v, bytes):
        av.bytes_value = v
    elif isinstance(v, dict):
        av.kvlist_value.SetInParent()
        for k, x in v.items():
            _put(av.kvlist_value.values, k, x)
    elif isinstance(v, list):
        av.array_value.SetInParent()
        for x in v:
            _set(av.array_value.values.add(), x)
    elif v is None:
        pass
    else:
        av.string_value = v


def ctx(name="bear", attrs=None, res=None, scope="lib", kind=2, status=0, parent=b"",
        events=(), trace_state="", flags=0):
    sp = T.Span(name=name, kind=kind, trace_id=bytes(range(1, 17)), span_id=bytes(range(1, 9)),
                parent_span_id=parent, start_time_unix_nano=1_000, end_time_unix_nano=4_000,
                trace_state=trace_state, flags=flags)
    sp.status.code = status
    for k, v in (attrs or {}).items():
        _put(sp.attributes, k, v)
    for ev in events:
        e = sp.events.add(name=ev.get("name", "test event"), time_unix_nano=2_000)
        for k, v in (ev.get("attrs") or {}).items():
            _put(e.attributes, k, v)
    r = R.Resource()
    for k, v in (res or {}).items():
        _put(r.attributes, k, v)
    return Ctx(sp, C.InstrumentationScope(name=scope, version="1.2"), "", r, "")


def holds(cond, c=None, context="span", mode="propagate"):
    return ConditionSequence([cond], context, mode).eval(c if c is not None else ctx())


# ----------------------------------------------------------------------------
# pkg/ottl/compare_test.go Test_comparison (the pcommon.Value rows are the
# same raw values here: attribute reads convert at once, as GetValue does)
sa, sb, sn = "1", "2", ""
ta, tb = False, True
ba, bb = b"1", b"2"
i64a, i64b, f64a, f64b = 1, 2, 1.0, 2.0
m1, m2 = {"test": True}, {"test": False}
sl1, sl2 = ["value1"], ["value2"]


class _A:
    def __init__(self, v):
        self.v = v

    def __eq__(self, o):
        return type(o) is _A and o.v == self.v


class _B(_A):
    def __eq__(self, o):
        return type(o) is _B and o.v == self.v


COMPARISON = [
    ("identity string", sa, sa, [True, False, False, True, True, False]),
    ("identity int64", i64a, i64a, [True, False, False, True, True, False]),
    ("identity float64", f64a, f64a, [True, False, False, True, True, False]),
    ("identity bytes", ba, ba, [True, False, False, True, True, False]),
    ("identity nil", None, None, [True, False, False, True, True, False]),
    ("diff strings", sa, sb, [False, True, True, True, False, False]),
    ("string bytes", sa, ba, [False, True, False, False, False, False]),
    ("string int64", sa, i64a, [False, True, False, False, False, False]),
    ("string float64", sa, f64a, [False, True, False, False, False, False]),
    ("string nil", sa, None, [False, True, False, False, False, False]),
    ("diff bytes", ba, bb, [False, True, True, True, False, False]),
    ("bytes string", ba, sa, [False, True, False, False, False, False]),
    ("bytes int64", ba, i64a, [False, True, False, False, False, False]),
    ("bytes float64", ba, f64a, [False, True, False, False, False, False]),
    ("bytes nil", ba, None, [False, True, False, False, False, False]),
    ("false true", ta, tb, [False, True, True, True, False, False]),
    ("true false", tb, ta, [False, True, False, False, True, True]),
    ("true true", ta, ta, [True, False, False, True, True, False]),
    ("false false", ta, ta, [True, False, False, True, True, False]),
    ("bool string", ta, sa, [False, True, False, False, False, False]),
    ("bool int64", ta, i64a, [False, True, False, False, False, False]),
    ("bool float64", ta, f64a, [False, True, False, False, False, False]),
    ("bool and empty string", ta, sn, [False, True, False, False, False, False]),
    ("nil string", None, sa, [False, True, False, False, False, False]),
    ("nil int64", None, i64a, [False, True, False, False, False, False]),
    ("nil float64", None, f64a, [False, True, False, False, False, False]),
    ("nil and empty string", None, sn, [False, True, False, False, False, False]),
    ("int64 string", i64a, sa, [False, True, False, False, False, False]),
    ("int64 bytes", i64a, ba, [False, True, False, False, False, False]),
    ("int64 nil", i64a, None, [False, True, False, False, False, False]),
    ("int64 int64", i64a, i64b, [False, True, True, True, False, False]),
    ("int64 float64", i64a, f64b, [False, True, True, True, False, False]),
    ("diff float64s", f64a, f64b, [False, True, True, True, False, False]),
    ("float64 string", f64a, sa, [False, True, False, False, False, False]),
    ("float64 bytes", f64a, ba, [False, True, False, False, False, False]),
    ("float64 nil", f64a, None, [False, True, False, False, False, False]),
    ("float64 int64", f64a, i64b, [False, True, True, True, False, False]),
    ("non-prim, same type, equal", _A("hi"), _A("hi"), [True, False, False, False, False, False]),
    ("non-prim, same type, not equal", _A("hi"), _A("byte"), [False, True, False, False, False, False]),
    ("non-prim, diff type", _A("hi"), _B("hi"), [False, True, False, False, False, False]),
    ("non-prim, int type", _A("hi"), 5, [False, True, False, False, False, False]),
    ("int, non-prim", 5, _A("hi"), [False, True, False, False, False, False]),
    ("maps diff", m1, m2, [False, True, False, False, False, False]),
    ("maps same", m1, m1, [True, False, False, False, False, False]),
    ("map and other type", m1, sa, [False, True, False, False, False, False]),
    ("slice diff", sl1, sl2, [False, True, False, False, False, False]),
    ("slice same", sl1, sl1, [True, False, False, False, False, False]),
    ("slice and other type", sl1, sa, [False, True, False, False, False, False]),
    ("pvalue int vs pvalue float equal", 0, 0.0, [True, False, False, True, True, False]),
    ("pvalue int vs pvalue float gt", 2, 1.5, [False, True, False, False, True, True]),
    ("pvalue int vs pvalue string", 1, "1", [False, True, False, False, False, False]),
    # ours: Python's 1 == True / 1 == 1.0 in containers must not leak in
    ("ours: map int vs bool value", {"a": 1}, {"a": True}, [False, True, False, False, False, False]),
    ("ours: slice int vs float item", [1], [1.0], [False, True, False, False, False, False]),
]


@pytest.mark.parametrize("a,b,want", [pytest.param(a, b, w, id=n) for n, a, b, w in COMPARISON])
def test_comparison(a, b, want):
    got = [compare(a, b, op) for op in (EQ, NE, LT, LTE, GTE, GT)]
    assert got == want


# pkg/ottl/boolean_value_test.go Test_newComparisonEvaluator, as condition
# text: NAME is the span name ("bear"); TEST_ENUM / TEST_ENUM_TWO are
# enums 0 and 2 (SPAN_KIND_UNSPECIFIED, STATUS_CODE_ERROR here)
COMPARISON_EVALUATOR = [
    ("literals match", '"hello" == "hello"', True),
    ("literals don't match", '"hello" != "goodbye"', True),
    ("path expression matches", 'name == "bear"', True),
    ("path expression not matches", 'name != "cat"', True),
    ("compare Enum to int", "SPAN_KIND_UNSPECIFIED == 0", True),
    ("compare int to Enum", "2 == STATUS_CODE_ERROR", True),
    ("2 > Enum 0", "2 > SPAN_KIND_UNSPECIFIED", True),
    ("not 2 < Enum 0", "2 < SPAN_KIND_UNSPECIFIED", False),
    ("not 6 == 3.14", "6 == 3.14", False),
    ("6 != 3.14", "6 != 3.14", True),
    ("6 > 3.14", "6 > 3.14", True),
    ("6 >= 3.14", "6 >= 3.14", True),
    ("not 6 < 3.14", "6 < 3.14", False),
    ("not 6 <= 3.14", "6 <= 3.14", False),
    ("'foo' > 'bar'", '"foo" > "bar"', True),
    ("'foo' > bear", '"foo" > name', True),
    ("true > false", "true > false", True),
    ("not true > 0", "true > 0", False),
    ("not 'true' == true", '"true" == true', False),
    ("[]byte('a') < []byte('b')", "0x61 < 0x62", True),
    ("nil == nil", "nil == nil", True),
    ("compare equal times", "start_time == start_time", True),
    ("compare less than times", "start_time < end_time", True),
    ("compare not greater than w/ times", "start_time > end_time", False),
]


@pytest.mark.parametrize("cond,want", [pytest.param(c, w, id=n) for n, c, w in COMPARISON_EVALUATOR])
def test_comparison_evaluator(cond, want):
    assert holds(cond) is want


@pytest.mark.parametrize("f,text", [(1.0, "1"), (1.5, "1.5"), (100.0, "100"), (1e20, "100000000000000000000"),
                                    (1e21, "1e+21"), (1e-6, "0.000001"), (1e-7, "1e-7"),
                                    (-2.5e-9, "-2.5e-9"), (123456789.125, "123456789.125")])
def test_string_of_a_float_is_go_json(f, text):
    # encoding/json's float64 format, which String() uses (StringLikeGetter)
    assert go_float(f) == text


def test_durations_and_times_compare_only_with_their_own_kind():
    # boolean_value_test.go's duration rows, on values (no Duration path here)
    assert compare(Duration(1_000_000), Duration(1_000_000), EQ)
    assert compare(Duration(12), Duration(1_000_000), LT)
    assert not compare(Duration(12), 12, EQ) and compare(Duration(12), 12, NE)
    assert not compare(Time(5), 5, EQ) and not compare(Time(5), Time(4), LTE)


# ----------------------------------------------------------------------------
# Boolean structure: boolean_value_test.go Test_newBooleanExpressionEvaluator
# (a..w), with True()/False() written as the literals true/false and the
# comparisons it nests as literal comparisons
BOOLEAN = [
    ("a", "true and false", False),
    ("b", "true and true", True),
    ("c", "true and true and false", False),
    ("d", "true or false", True),
    ("e", "false or true", True),
    ("f", "false or false", False),
    ("g", "false and false or true", True),
    ("h", "true and (false or true)", True),
    ("i", "not false", True),
    ("j", "not true", False),
    ("k", 'not "test" == "not test"', True),
    ("l", "false and not (false or true)", False),
    ("m", "not false and not true or not true", False),
    ("n", 'IsString("x")', True),
    ("o", 'IsString(1)', False),
    ("p", 'IsString("x") and IsString("y")', True),
    ("q", 'IsString("x") and IsString(1)', False),
    ("r", 'IsString(1) and IsString("x")', False),
    ("s", "IsString(1) or IsString(2)", False),
    ("t", 'IsString(1) or IsString("x")', True),
    ("u", 'IsString("x") or IsString(1)', True),
    ("v", 'not IsString("x")', False),
    ("w", "not IsString(1)", True),
    ("ours: precedence and over or", "true or true and false", True),
    ("ours: parenthesised math", "(1 + 2) * 3 == 9", True),
    ("ours: keyword prefix is a path", 'name == "bear" and not (kind == SPAN_KIND_CLIENT)', True),
]


@pytest.mark.parametrize("cond,want", [pytest.param(c, w, id=n) for n, c, w in BOOLEAN])
def test_boolean_expression(cond, want):
    assert holds(cond) is want


# ----------------------------------------------------------------------------
# paths of the span / resource / scope contexts (ctxspan/span_test.go et al.,
# read-only)
SPAN_PATHS = [
    ("trace_id", "trace_id == TraceID(0x0102030405060708090a0b0c0d0e0f10)", True),
    ("trace_id string", 'trace_id.string == "0102030405060708090a0b0c0d0e0f10"', True),
    ("trace_id vs bytes is another type", "trace_id == 0x0102030405060708090a0b0c0d0e0f10", False),
    ("span_id string", 'span_id.string == "0102030405060708"', True),
    ("parent_span_id of a root", 'parent_span_id.string == "0000000000000000"', True),
    ("name", 'name == "bear"', True),
    ("kind", "kind == SPAN_KIND_SERVER", True),
    ("kind string", 'kind.string == "Server"', True),
    ("kind deprecated_string", 'kind.deprecated_string == "SPAN_KIND_SERVER"', True),
    ("start_time_unix_nano", "start_time_unix_nano == 1000", True),
    ("end - start", "end_time_unix_nano - start_time_unix_nano >= 3000", True),
    ("status code", "status.code == STATUS_CODE_UNSET", True),
    ("attributes", 'attributes["str"] == "val"', True),
    ("attributes int", 'attributes["int"] == 10', True),
    ("attributes int vs float", 'attributes["int"] == 10.0', True),
    ("attributes double", 'attributes["double"] > 1.1', True),
    ("attributes bool", 'attributes["bool"] == true', True),
    ("attributes bytes", 'attributes["bytes"] == 0x0102', True),
    ("attributes missing is nil", 'attributes["missing"] == nil', True),
    ("attributes nested map", 'attributes["map"]["k"] == "v"', True),
    ("attributes nested slice", 'attributes["slice"][1] == "b"', True),
    ("attributes nested deep", 'attributes["map"]["inner"][0] == 1', True),
    ("attributes map eq literal", 'attributes["map2"] == {"a": 1}', True),
    ("attributes slice eq literal", 'attributes["slice"] == ["a", "b"]', True),
    ("attributes key from a path", 'attributes[attributes["keyname"]] == "val"', True),
    ("span prefix", 'span.attributes["str"] == "val"', True),
    ("resource attributes", 'resource.attributes["service.name"] == "checkout"', True),
    ("scope name", 'scope.name == "lib"', True),
    ("instrumentation_scope version", 'instrumentation_scope.version == "1.2"', True),
    ("trace_state", 'trace_state == "rojo=1,congo=2"', True),
    ("trace_state key", 'trace_state["congo"] == "2"', True),
    ("trace_state missing key is empty", 'trace_state["nope"] == ""', True),
    ("dropped counts", "dropped_attributes_count == 0 and dropped_events_count == 0", True),
    ("flags", "flags == 1", True),
    ("events length", "Len(events) == 1", True),
    ("cache is empty", 'cache["x"] == nil', True),
]


def _rich():
    return ctx(attrs={"str": "val", "int": 10, "double": 1.5, "bool": True, "bytes": b"\x01\x02",
                      "map": {"k": "v", "inner": [1, 2]}, "map2": {"a": 1}, "slice": ["a", "b"],
                      "keyname": "str"},
               res={"service.name": "checkout"}, trace_state="rojo=1,congo=2", flags=1,
               events=[{"name": "exception", "attrs": {"exception.type": "IOError"}}])


@pytest.mark.parametrize("cond,want", [pytest.param(c, w, id=n) for n, c, w in SPAN_PATHS])
def test_span_paths(cond, want):
    assert holds(cond, _rich()) is want


def test_spanevent_paths():
    c = _rich()
    c.event = c.span.events[0]
    c.event_index = 0
    for cond in ['name == "exception"', 'spanevent.name == "exception"',
                 'attributes["exception.type"] == "IOError"', "time_unix_nano == 2000",
                 "event_index == 0", 'span.name == "bear"',
                 'resource.attributes["service.name"] == "checkout"']:
        assert holds(cond, c, context="spanevent"), cond


# ----------------------------------------------------------------------------
# converters (ottlfuncs/func_*_test.go; the upstream case is named after
# the file)
CONVERTERS = [
    ("func_is_match: match", 'IsMatch(attributes["str"], "v.l")', True),
    ("func_is_match: nil target is false", 'IsMatch(attributes["missing"], ".*")', False),
    ("func_is_match: int target as string", 'IsMatch(attributes["int"], "^10$")', True),
    ("func_is_string", 'IsString(attributes["str"]) and not IsString(attributes["int"])', True),
    ("func_is_int", 'IsInt(attributes["int"]) and not IsInt(attributes["double"])', True),
    ("func_is_double", 'IsDouble(attributes["double"]) and not IsDouble(attributes["int"])', True),
    ("func_is_bool", 'IsBool(attributes["bool"]) and not IsBool("true")', True),
    ("func_is_map", 'IsMap(attributes["map"]) and not IsMap(attributes["slice"])', True),
    ("func_is_list", 'IsList(attributes["slice"]) and not IsList(attributes["map"])', True),
    ("func_len: string (bytes)", 'Len("héllo") == 6', True),
    ("func_len: map", 'Len(attributes["map"]) == 2', True),
    ("func_int: string", 'Int("42") == 42', True),
    ("func_int: float truncates", "Int(1.9) == 1", True),
    ("func_int: bool", "Int(true) == 1", True),
    ("func_int: nil", 'Int(attributes["missing"]) == nil', True),
    ("func_double: int", 'Double(attributes["int"]) == 10.0', True),
    ("func_double: string", 'Double("1.5") == 1.5', True),
    ("func_string: int", 'String(attributes["int"]) == "10"', True),
    ("func_string: float", 'String(1.0) == "1"', True),
    ("func_string: bytes hex", 'String(attributes["bytes"]) == "0102"', True),
    ("func_string: map json", 'String(attributes["map2"]) == "{\\"a\\":1}"', True),
    ("func_to_lower_case", 'ToLowerCase("HeLLo") == "hello"', True),
    ("func_to_upper_case", 'ToUpperCase("HeLLo") == "HELLO"', True),
    ("func_substring", 'Substring("123456789", 1, 3) == "234"', True),
    ("func_concat", 'Concat(["a", attributes["int"], attributes["missing"]], "-") == "a-10-<nil>"', True),
    ("func_has_prefix", 'HasPrefix(name, "be")', True),
    ("func_has_suffix", 'HasSuffix(name, "ar")', True),
    ("func_trim_prefix", 'TrimPrefix(name, "be") == "ar"', True),
    ("func_split", 'Split("a,b", ",")[1] == "b"', True),
    ("func_contains_value", 'ContainsValue(attributes["slice"], "b")', True),
    ("func_is_empty", 'IsEmpty(attributes["missing"]) and not IsEmpty(name)', True),
    ("func_bool: string", 'Bool("true") == true', True),
    ("func_is_root_span", "IsRootSpan()", True),
    ("func_span_id", "span_id == SpanID(0x0102030405060708)", True),
    ("func_duration", 'end_time - start_time == Duration("3us")', True),
    ("func_duration: fraction", 'Duration("1.5h") == Duration("90m")', True),
    ("func_nanoseconds", "Nanoseconds(end_time - start_time) == 3000", True),
    ("func_microseconds", "Microseconds(end_time - start_time) == 3", True),
    ("func_milliseconds truncates", 'Milliseconds(Duration("1999us")) == 1', True),
    ("func_seconds", 'Seconds(Duration("1500ms")) == 1.5', True),
    ("func_minutes", 'Minutes(Duration("90s")) == 1.5', True),
    ("func_hours", 'Hours(Duration("90m")) == 1.5', True),
    ("func_unix_nano", "UnixNano(start_time) == 1000", True),
    ("func_unix_micro", "UnixMicro(end_time) == 4", True),
    ("func_unix_milli", "UnixMilli(end_time) == 0", True),
    ("func_unix_seconds", "UnixSeconds(end_time) == 0", True),
    ("func_index: string (bytes)", 'Index("héllo", "l") == 3', True),
    ("func_index: slice", 'Index(attributes["slice"], "b") == 1', True),
    ("func_index: missing", 'Index(attributes["slice"], "z") == -1', True),
    ("func_trim", 'Trim("  x ") == "x" and Trim("aaxa", "a") == "x"', True),
]


@pytest.mark.parametrize("cond,want", [pytest.param(c, w, id=n) for n, c, w in CONVERTERS])
def test_converters(cond, want):
    assert holds(cond, _rich()) is want


# ----------------------------------------------------------------------------
# compile errors: config errors naming what is unsupported
COMPILE_ERRORS = [
    ("unknown function", "Foo(name)", "unknown function Foo"),
    ("IsRootSpan not in spanevent", "IsRootSpan()", "unknown function IsRootSpan"),
    ("unknown path", "foo == 1", "unknown path 'foo'"),
    ("extra path section", "name.x == 1", "the path section 'x' was not used"),
    ("keys on an unindexed path", 'name["a"] == 1', "were not used by the context"),
    ("invalid context prefix", 'badcontext.attributes["x"] == "y"', "segment 'badcontext'"),
    ("enum not found (Test_newConditionEvaluator_invalid)", 'SYMBOL_NOT_FOUND == "trash"',
     "enum symbol, SYMBOL_NOT_FOUND, not found"),
    ("bad literal argument", 'Int("abc") == 1', "invalid syntax"),
    ("bad regex", 'IsMatch(name, "(")', "invalid regex pattern supplied to IsMatch"),
    ("RE2 has no lookahead", 'IsMatch(name, "(?=a)")', "invalid regex pattern"),
    ("arity", "Len(name, name) == 1", "incorrect number of arguments"),
    ("editor", "set(name, 1) == 1", "converter names must start with an uppercase letter"),
    ("syntax", "name ==", "invalid syntax"),
    ("odd bytes", "0x123 == name", "even number of hexadecimal digits"),
    ("bare path is not a condition", "name", "invalid syntax"),
]


@pytest.mark.parametrize("cond,msg", [pytest.param(c, m, id=n) for n, c, m in COMPILE_ERRORS])
def test_compile_errors(cond, msg):
    context = "spanevent" if "IsRootSpan" in cond else "span"
    with pytest.raises(CompileError, match=None) as exc:
        ConditionSequence(["name == \"ok\"", cond], context)
    assert msg in str(exc.value)
    assert exc.value.index == 1


# ----------------------------------------------------------------------------
# error modes (parser.go ConditionSequence.Eval)
def test_error_modes():
    bad = 'Substring(name, 10, 2) == "x"'      # out of range at run time
    good = 'name == "bear"'
    with pytest.raises(EvalError, match="failed to eval condition"):
        ConditionSequence([bad, good], "span", "propagate").eval(ctx())
    assert ConditionSequence([bad, good], "span", "ignore").eval(ctx()) is True
    assert ConditionSequence([bad, good], "span", "silent").eval(ctx()) is True
    assert ConditionSequence([bad], "span", "ignore").eval(ctx()) is False
    # the arithmetic of literals fails where it is evaluated, not compiled
    with pytest.raises(EvalError, match="divide by 0"):
        ConditionSequence(["1 / 0 == 1"], "span", "propagate").eval(ctx())
    # a converter used as a condition must return a bool (boolean_value.go
    # converterExpr): checked when evaluated
    with pytest.raises(EvalError, match="must be bool"):
        ConditionSequence(['String("x")'], "span", "propagate").eval(ctx())
    # Duration() of a literal is parsed when evaluated, as in the Collector
    with pytest.raises(EvalError, match='time: unknown unit " parsecs" in duration'):
        ConditionSequence(['Duration("5 parsecs") == nil'], "span", "propagate").eval(ctx())
    with pytest.raises(EvalError, match='time: unknown unit "y"'):
        ConditionSequence(['Duration("5y") == nil'], "span", "propagate").eval(ctx())
