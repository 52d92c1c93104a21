"""ottl_condition and trace_flags through the buffer (both twins) and the
Decider, on encoded OTLP requests: the span data path of spandata.py.

Ported tables: processor/tailsamplingprocessor internal/sampling
ottl_test.go (TestEvaluate_OTTL, TestEvaluate_OTTL_PathContextNames) and
trace_flags_test.go (TestTraceFlags), v0.161.0, with upstream case names.
"""
from __future__ import annotations

import importlib

import pytest
from conftest import PURE
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
)

from traceo_sampler.buffer import TraceBufferPy
from traceo_sampler.config import ConfigError, parse
from traceo_sampler.decider import Decider

BUFFERS = [pytest.param(TraceBufferPy, id="python")]
if not PURE:
    BUFFERS.append(pytest.param(importlib.import_module("traceo_sampler._buffer").TraceBuffer,
                                id="cython"))
TID = bytes(range(1, 17))


@pytest.fixture(params=BUFFERS)
def buffer_cls(request):
    return request.param


def request_of(spans, resource_attrs=None, scope_name="", flags=None):
    """newTraceWithSpansAttributes / newTraceWithResourceAndScope of
    ottl_test.go: one span per entry, each with one event "test event"."""
    req = ExportTraceServiceRequest()
    rs = req.resource_spans.add()
    for k, v in (resource_attrs or {}).items():
        rs.resource.attributes.add(key=k).value.string_value = v
    ss = rs.scope_spans.add()
    if scope_name:
        ss.scope.name = scope_name
    for i, s in enumerate(spans):
        sp = ss.spans.add(trace_id=TID, span_id=bytes([1, 2, 3, 4, 5, 6, 7, 8 + i]),
                          start_time_unix_nano=1, end_time_unix_nano=2)
        if flags is not None:
            sp.flags = flags
        for k, v in (s.get("span") or {}).items():
            sp.attributes.add(key=k).value.string_value = v
        ev = sp.events.add(name="test event")
        for k, v in (s.get("event") or {}).items():
            ev.attributes.add(key=k).value.string_value = v
    return req.SerializeToString()


def decide(buffer_cls, policies, data):
    cfg = parse({"sampler": {"policies": policies}})
    buf = buffer_cls(decision_wait=30.0, root_wait=2.0, idle_timeout=5.0,
                     max_spans_per_trace=1000, memory_limit=1 << 26,
                     cache_sampled=10, cache_not_sampled=10)
    d = Decider(cfg.sampler.policies, spans=buf.spans)
    assert buf.ingest(data, d.attribute_keys, 0.0).accepted >= 0
    decisions = []
    for t, _trigger in buf.drain():
        dec = d.decide(t)
        buf.finish(t, dec.sampled, dec.policy, dec.threshold)
        decisions.append(dec)
    return decisions, d


def ottl_policy(span, spanevent, mode="ignore"):
    blk = {"error_mode": mode}
    if span:
        blk["span"] = span
    if spanevent:
        blk["spanevent"] = spanevent
    return {"name": "ottl", "type": "ottl_condition", "ottl_condition": blk}


SAMPLED, NOT_SAMPLED = True, False

# ottl_test.go TestEvaluate_OTTL: (desc, span conds, spanevent conds, spans,
# want config error, sampled)
EVALUATE_OTTL = [
    ("OTTL conditions not set", [], [], [{"span": {"attr_k_1": "attr_v_1"}}], True, NOT_SAMPLED),
    ("OTTL conditions match specific span attributes 1",
     ['attributes["attr_k_1"] == "attr_v_1"'], [], [{"span": {"attr_k_1": "attr_v_1"}}],
     False, SAMPLED),
    ("OTTL conditions match specific span attributes 2",
     ['attributes["attr_k_1"] != "attr_v_1"'], [], [{"span": {"attr_k_1": "attr_v_1"}}],
     False, NOT_SAMPLED),
    ("OTTL conditions inverse match(!=) span attributes 2",
     ['attributes["attr_k_1"] != "attr_v_1"'], [], [{"span": {"attr_k_1": "attr_v_2"}}],
     False, SAMPLED),
    ("OTTL conditions match specific span event attributes",
     [], ['attributes["event_attr_k_1"] == "event_attr_v_1"'],
     [{"event": {"event_attr_k_1": "event_attr_v_1"}}], False, SAMPLED),
    ("OTTL conditions match specific span event name",
     [], ['name != "incorrect event name"'], [{}], False, SAMPLED),
    ("OTTL conditions not matched",
     ['attributes["attr_k_1"] == "attr_v_1"'], ['attributes["event_attr_k_1"] == "event_attr_v_1"'],
     [], False, NOT_SAMPLED),
    ("OTTL conditions with span context prefix",
     ['span.attributes["attr_k_1"] == "attr_v_1"'], [], [{"span": {"attr_k_1": "attr_v_1"}}],
     False, SAMPLED),
    ("OTTL conditions inverse match with span context prefix",
     ['span.attributes["attr_k_1"] != "attr_v_1"'], [], [{"span": {"attr_k_1": "attr_v_2"}}],
     False, SAMPLED),
    ("OTTL conditions with spanevent context prefix on attributes",
     [], ['spanevent.attributes["event_attr_k_1"] == "event_attr_v_1"'],
     [{"event": {"event_attr_k_1": "event_attr_v_1"}}], False, SAMPLED),
    ("OTTL conditions with spanevent context prefix on name",
     [], ['spanevent.name != "incorrect event name"'], [{}], False, SAMPLED),
    ("OTTL conditions mixed prefixed and unprefixed in same span list",
     ['attributes["attr_k_1"] == "attr_v_1"', 'span.attributes["attr_k_2"] == "attr_v_2"'], [],
     [{"span": {"attr_k_2": "attr_v_2"}}], False, SAMPLED),
    ("OTTL conditions with invalid context prefix",
     ['badcontext.attributes["x"] == "y"'], [], [{"span": {"attr_k_1": "attr_v_1"}}],
     True, NOT_SAMPLED),
]


@pytest.mark.parametrize("span,spanevent,spans,want_err,sampled",
                         [pytest.param(*r[1:], id=r[0]) for r in EVALUATE_OTTL])
def test_evaluate_ottl(buffer_cls, span, spanevent, spans, want_err, sampled):
    pol = ottl_policy(span, spanevent)
    if want_err:
        with pytest.raises(ConfigError):
            parse({"sampler": {"policies": [pol]}})
        return
    if not spans:
        # upstream evaluates an empty trace: nothing to buffer, nothing kept
        return
    (dec,), _ = decide(buffer_cls, [pol], request_of(spans))
    assert dec.sampled is sampled


# ottl_test.go TestEvaluate_OTTL_PathContextNames
PATH_CONTEXT_NAMES = [
    ("Resource attribute match using resource context prefix on span",
     ['resource.attributes["service.name"] == "checkout"'], [], {"service.name": "checkout"}, ""),
    ("Resource attribute match using resource context prefix on spanevent",
     [], ['resource.attributes["service.name"] == "checkout"'], {"service.name": "checkout"}, ""),
    ("Scope name match using scope context prefix on span",
     ['scope.name == "my-scope"'], [], None, "my-scope"),
    ("Scope name match using instrumentation_scope context prefix on span",
     ['instrumentation_scope.name == "my-scope"'], [], None, "my-scope"),
]


@pytest.mark.parametrize("span,spanevent,res,scope",
                         [pytest.param(*r[1:], id=r[0]) for r in PATH_CONTEXT_NAMES])
def test_evaluate_ottl_path_context_names(buffer_cls, span, spanevent, res, scope):
    (dec,), _ = decide(buffer_cls, [ottl_policy(span, spanevent)],
                       request_of([{}], resource_attrs=res, scope_name=scope))
    assert dec.sampled


# trace_flags_test.go TestTraceFlags
@pytest.mark.parametrize("flags,sampled", [pytest.param(1, True, id="sampled trace_flags"),
                                           pytest.param(None, False, id="non-sampled trace_flags")])
def test_trace_flags(buffer_cls, flags, sampled):
    (dec,), _ = decide(buffer_cls, [{"name": "tf", "type": "trace_flags"}],
                       request_of([{}], flags=flags))
    assert dec.sampled is sampled
    assert dec.policy == ("tf" if sampled else "")


def test_trace_flags_reads_only_the_low_byte(buffer_cls):
    # Span.flags bits 8-9 carry the parent-is-remote bits, not trace flags
    (dec,), _ = decide(buffer_cls, [{"name": "tf", "type": "trace_flags"}],
                       request_of([{}], flags=0x300))
    assert not dec.sampled


def test_one_matching_span_among_many(buffer_cls):
    spans = [{"span": {"k": "a"}}, {"span": {"k": "b"}}, {"span": {"k": "c"}}]
    (dec,), _ = decide(buffer_cls, [ottl_policy(['attributes["k"] == "c"'], [])], request_of(spans))
    assert dec.sampled and dec.policy == "ottl" and dec.threshold == 0


def test_propagate_error_voids_the_policy_and_its_combinators(buffer_cls):
    """propagate: the first failing condition stops the policy, which casts no
    vote; a ``not`` around it does not turn that into a sample (the error
    passes up, as in the Collector's not.go)."""
    failing = 'Substring(attributes["k"], 5, 5) == "x"'     # "a" is too short
    spans = [{"span": {"k": "a"}}, {"span": {"k": "zzzzzzzzzz"}}]
    pol = ottl_policy([failing, 'attributes["k"] == "zzzzzzzzzz"'], [], mode="propagate")
    (dec,), d = decide(buffer_cls, [pol], request_of(spans))
    assert not dec.sampled and d.errors == {"ottl": 1}
    # ignore: the failure is skipped, the second condition holds on span 2
    pol["ottl_condition"]["error_mode"] = "ignore"
    (dec,), d = decide(buffer_cls, [pol], request_of(spans))
    assert dec.sampled and d.errors == {}
    pol["ottl_condition"]["error_mode"] = "propagate"
    negated = {"name": "neg", "type": "not", "not": {"not_sub_policy": pol}}
    (dec,), d = decide(buffer_cls, [negated, {"name": "all", "type": "always_sample"}],
                       request_of(spans))
    assert dec.sampled and dec.policy == "all" and d.errors == {"neg": 1}


def test_nested_in_and(buffer_cls):
    pol = {"name": "both", "type": "and", "and": {"and_sub_policy": [
        {"name": "tf", "type": "trace_flags"},
        ottl_policy(['resource.attributes["service.name"] == "checkout"'], [])]}}
    (dec,), _ = decide(buffer_cls, [pol], request_of([{}], {"service.name": "checkout"}, flags=1))
    assert dec.sampled and dec.policy == "both"
    (dec,), _ = decide(buffer_cls, [pol], request_of([{}], {"service.name": "cart"}, flags=1))
    assert not dec.sampled


def test_spans_interface_matches_between_twins():
    if PURE:
        pytest.skip("compiled implementation not requested")
    data = request_of([{"span": {"a": "1"}}, {"span": {"b": "2"}}], {"service.name": "x"}, "s")
    out = []
    for cls in (TraceBufferPy, importlib.import_module("traceo_sampler._buffer").TraceBuffer):
        buf = cls(decision_wait=30.0, root_wait=2.0, idle_timeout=5.0, max_spans_per_trace=100,
                  memory_limit=1 << 26, cache_sampled=10, cache_not_sampled=10)
        buf.ingest(data, frozenset(), 0.0)
        (t, _), = buf.drain()
        out.append(buf.spans(t))
        buf.finish(t, False, "", 0)
        with pytest.raises(ValueError, match="finished"):
            buf.spans(t)
    assert out[0] == out[1] and len(out[0]) == 2


# config errors name the policy field and the condition
CONFIG_ERRORS = [
    ("unknown function", {"span": ["Foo(name)"]},
     "sampler.policies[0].ottl_condition.span[0]: unknown function Foo"),
    ("second condition", {"span": ['name == "a"', "nope == 1"]},
     "sampler.policies[0].ottl_condition.span[1]: unknown path 'nope'"),
    ("spanevent list", {"spanevent": ["IsRootSpan()"]},
     "sampler.policies[0].ottl_condition.spanevent[0]: unknown function IsRootSpan"),
    ("error mode", {"span": ["true"], "error_mode": "loud"},
     "sampler.policies[0].ottl_condition.error_mode: unknown error mode 'loud'"),
    ("no conditions", {},
     "sampler.policies[0].ottl_condition: expected at least one OTTL condition to filter on"),
    ("unknown key", {"span": ["true"], "spans": ["x"]},
     "sampler.policies[0].ottl_condition.spans: unknown field"),
]


@pytest.mark.parametrize("blk,msg", [pytest.param(b, m, id=n) for n, b, m in CONFIG_ERRORS])
def test_config_errors(blk, msg):
    with pytest.raises(ConfigError) as exc:
        parse({"sampler": {"policies": [{"name": "o", "type": "ottl_condition",
                                         "ottl_condition": blk}]}})
    assert any(p.startswith(msg) for p in exc.value.problems), exc.value.problems


def test_every_bad_condition_of_a_list_is_reported():
    with pytest.raises(ConfigError) as exc:
        parse({"sampler": {"policies": [{"name": "o", "type": "ottl_condition", "ottl_condition": {
            "span": ["Foo(name)", 'name == "ok"', 'attributes["x"] =='],
            "spanevent": ['IsMatch(name, "(?=x)")']}}]}})
    assert [p.split(":")[0] for p in exc.value.problems] == [
        "sampler.policies[0].ottl_condition.span[0]", "sampler.policies[0].ottl_condition.span[2]",
        "sampler.policies[0].ottl_condition.spanevent[0]"]
    assert "invalid syntax" in exc.value.problems[1]


def test_nested_config_error_names_the_sub_policy():
    with pytest.raises(ConfigError) as exc:
        parse({"sampler": {"policies": [{"name": "a", "type": "and", "and": {"and_sub_policy": [
            {"name": "o", "type": "ottl_condition", "ottl_condition": {"span": ["Bar()"]}}]}}]}})
    assert exc.value.problems == [
        "sampler.policies[0].and.and_sub_policy[0].ottl_condition.span[0]: unknown function Bar"]


def test_trace_flags_takes_no_settings():
    # the Collector's policy config has no trace_flags field; an empty block
    # is accepted (config.dump writes one), any key in it is not
    parse({"sampler": {"policies": [{"name": "t", "type": "trace_flags", "trace_flags": {}}]}})
    with pytest.raises(ConfigError, match=r"trace_flags\.sampled: unknown field"):
        parse({"sampler": {"policies": [{"name": "t", "type": "trace_flags",
                                         "trace_flags": {"sampled": True}}]}})


def test_error_mode_is_case_insensitive():
    parse({"sampler": {"policies": [ottl_policy(["true"], [], mode="Propagate")]}})


def test_event_index_is_not_set_as_in_the_collector(buffer_cls):
    # found by tests/integration/test_ottl_differential.py: the Collector's
    # policy builds its span event contexts without an index, so reading
    # event_index fails (and, under ignore, the condition does not hold)
    pol = ottl_policy([], ["event_index >= 0"])
    (dec,), _ = decide(buffer_cls, [pol], request_of([{}]))
    assert not dec.sampled
    pol["ottl_condition"]["error_mode"] = "propagate"
    (dec,), d = decide(buffer_cls, [pol], request_of([{}]))
    assert not dec.sampled and d.errors == {"ottl": 1}
