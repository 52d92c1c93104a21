"""The Collector's own evaluator tests, ported (issue 11): tailsamplingprocessor
v0.161.0, internal/sampling/*_test.go. Each table names the upstream file and
test function; each row keeps the upstream case name (``Desc``).

Every row runs through the real path: the trace is encoded as OTLP (a
resource, a scope, its spans; several requests for the "across multiple
batches" cases), ingested by the buffer, decided by the Decider with
``semantics="collector"``. Where our own semantics decide differently by
design, the row carries ``ours``: the decision in our mode, checked too
(README, "Coming from the Collector": the mode table).
"""
from __future__ import annotations

import functools
import math

import pytest
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

from traceo_sampler.buffer import TraceBuffer
from traceo_sampler.config import parse
from traceo_sampler.decider import Decider
from traceo_sampler.otlp_size import encoded_size
from traceo_sampler.policies.probabilistic import (CollectorProbabilistic, collector_threshold,
                                                    fnv1a64)

S, N = True, False      # samplingpolicy.Sampled / NotSampled
TID = bytes(range(1, 17))
SEC = 1_000_000_000
MS = 1_000_000
T0 = 1_700_000_000 * SEC


def span(attrs=None, status=0, start=T0, end=T0 + MS, state="", flags=0, sid=None):
    return {"attrs": attrs or {}, "status": status, "start": start, "end": end,
            "state": state, "flags": flags, "sid": sid}


def request(batch, resource=None, tid=TID) -> bytes:
    req = ExportTraceServiceRequest()
    rs = req.resource_spans.add()
    for k, v in (resource or {}).items():
        _put(rs.resource.attributes.add(key=k), v)
    ss = rs.scope_spans.add()
    for i, s in enumerate(batch):
        sp = ss.spans.add(trace_id=tid, span_id=s["sid"] or bytes([1 + i] * 8), name="op",
                          start_time_unix_nano=s["start"], end_time_unix_nano=s["end"],
                          trace_state=s["state"], flags=s["flags"])
        if s["status"]:
            sp.status.code = s["status"]
        for k, v in s["attrs"].items():
            _put(sp.attributes.add(key=k), v)
    return req.SerializeToString()


def _put(kv, v):
    if isinstance(v, bool):
        kv.value.bool_value = v
    elif isinstance(v, int):
        kv.value.int_value = v
    elif isinstance(v, float):
        kv.value.double_value = v
    else:
        kv.value.string_value = v


class Clock:
    def __init__(self):
        self.t = 1000.0

    def __call__(self):
        return self.t


class Run:
    """One Decider over a sequence of traces (stateful policies see them in
    order), each trace through a fresh buffer."""

    def __init__(self, policies, semantics="collector", clock=None):
        cfg = parse({"sampler": {"semantics": semantics, "policies": policies}},
                    ignored_blocks=[] if semantics == "collector" else None)
        self.clock = clock or Clock()
        self.buf = TraceBuffer(decision_wait=30, root_wait=30, idle_timeout=30,
                               max_spans_per_trace=10_000, memory_limit=64 << 20,
                               cache_sampled=0, cache_not_sampled=0)
        self.decider = Decider(cfg.sampler.policies, self.clock, semantics=semantics,
                               spans=self.buf.spans)

    def decide(self, batches, resource=None, tid=TID) -> bool:
        if batches and isinstance(batches[0], dict):
            batches = [batches]
        for b in batches:
            self.buf.ingest(request(b, resource, tid), self.decider.attribute_keys, 0.0)
        (t, _), = self.buf.drain()
        if self.decider.needs_size:
            t.encoded_size = encoded_size(t, self.buf)
        d = self.decider.decide(t)
        self.buf.finish(t, d.sampled, d.policy, d.threshold)
        return d.sampled


def one(policy: dict, batches, resource=None, semantics="collector") -> bool:
    return Run([{"name": "p", **policy}], semantics).decide(batches, resource)


def check(policy, rows, semantics=("collector", "traceo")):
    for row in rows:
        desc, batches, resource, want = row[:4]
        ours = row[4] if len(row) > 4 else want
        for sem in semantics:
            expected = want if sem == "collector" else ours
            got = one(policy, batches, resource, sem)
            assert got == expected, f"{desc!r} ({sem}): {got} != {expected}"


# ------------------------------------------------------------ latency_test.go
def dur(ms, start_ms=0):
    return span(start=T0 + start_ms * MS, end=T0 + (start_ms + ms) * MS)


# TestEvaluate_Latency (NewLatency(5000, 0)); ours keeps duration >= threshold
LATENCY = [
    ("trace duration shorter than threshold", [dur(4500)], None, N),
    ("trace duration is equal to threshold", [dur(5000)], None, N, S),
    ("total trace duration is longer than threshold but every single span is shorter",
     [dur(3000), dur(3000, 2500)], None, S),
]
# TestEvaluate_Bounded_Latency (NewLatency(5000, 10000))
BOUNDED = [
    ("trace duration shorter than lower bound", [dur(4500)], None, N),
    ("trace duration is equal to lower bound", [dur(5000)], None, N),
    ("trace duration is within lower and upper bounds", [dur(5001)], None, S),
    ("trace duration is above upper bound", [dur(10001)], None, N),
    ("trace duration equals upper bound", [dur(10000)], None, S),
    ("total trace duration is longer than threshold but every single span is shorter",
     [dur(3000), dur(3000, 2500)], None, S),
]


def test_latency():
    check({"type": "latency", "latency": {"threshold_ms": 5000}}, LATENCY)
    check({"type": "latency", "latency": {"threshold_ms": 5000, "upper_threshold_ms": 10000}},
          BOUNDED)


# ------------------------------------------------------------ numeric_tag_filter_test.go
I32_MIN, I32_MAX = -2**31, 2**31 - 1


def num(res, key, val):
    return ("", [span({key: val})], res)


# TestNumericTagFilter: NewNumericAttributeFilter("example", MinInt32, MaxInt32)
NUMERIC = [
    ("nonmatching span attribute", [span({"non_matching": I32_MIN})], {}, N),
    ("span attribute at the lower limit", [span({"example": I32_MIN})], {}, S),
    ("resource attribute at the lower limit", [span({"non_matching": I32_MIN})],
     {"example": I32_MIN}, S),
    ("span attribute at the upper limit", [span({"example": I32_MAX})], {}, S),
    ("resource attribute at the upper limit", [span({"non_matching": 2**63 - 1})],
     {"example": I32_MAX}, S),
    ("span attribute below min limit", [span({"example": I32_MIN - 1})], {}, N),
    ("resource attribute below min limit", [span({"non_matching": I32_MIN})],
     {"example": I32_MIN - 1}, N),
    ("span attribute above max limit", [span({"example": I32_MAX + 1})], {}, N),
    ("resource attribute above max limit", [span({"non_matching": I32_MAX})],
     {"example": I32_MAX + 1}, N),
]


def test_numeric_attribute():
    pol = {"type": "numeric_attribute",
           "numeric_attribute": {"key": "example", "min_value": I32_MIN, "max_value": I32_MAX}}
    check(pol, NUMERIC)
    # TestNumericTagFilterInverted: every decision flips
    inv = {"type": "numeric_attribute", "numeric_attribute": {
        **pol["numeric_attribute"], "invert_match": True}}
    check(inv, [(d, b, r, not w) for d, b, r, w in NUMERIC])


# TestNumericTagFilterOptionalBounds (nil bound = no bound; the config's 0 is nil)
def test_numeric_attribute_optional_bounds():
    def na(**c):
        return {"type": "numeric_attribute", "numeric_attribute": {"key": "example", **c}}
    for name, cfg, value, want in [
        ("only min set - value above min", {"min_value": 100}, 200, S),
        ("only min set - value below min", {"min_value": 100}, 50, N),
        ("only max set - value below max", {"max_value": 100}, 50, S),
        ("only max set - value above max", {"max_value": 100}, 200, N),
    ]:
        assert one(na(**cfg), [span({"example": value})]) == want, name
    # Collector: min_value 0 is "unset", so a negative value is in range; ours: 0 is a bound
    cfg = na(min_value=0, max_value=100)
    assert one(cfg, [span({"example": -5})]) is S
    assert one(cfg, [span({"example": -5})], semantics="traceo") is N
    # Collector: a double reads as Value.Int() == 0; ours compares the double
    cfg = na(min_value=50, max_value=100)
    assert one(cfg, [span({"example": 75.5})]) is N
    assert one(cfg, [span({"example": 75.5})], semantics="traceo") is S


# ------------------------------------------------------------ string_tag_filter_test.go
def sa(values, regex=False, invert=False):
    return {"type": "string_attribute", "string_attribute": {
        "key": "example", "values": values, "enabled_regex_matching": regex,
        "invert_match": invert}}


HC = "grpc.health.v1.HealthCheck"
# TestStringTagFilter: (Desc, resource attrs, span key, span value, filter, Decision)
STRING = [
    ("nonmatching node attribute key", {"non_matching": "value"}, "", "", sa(["value"]), N),
    ("nonmatching node attribute value", {"example": "non_matching"}, "", "", sa(["value"]), N),
    ("matching node attribute", {"example": "value"}, "", "", sa(["value"]), S),
    ("nonmatching span attribute key", None, "nonmatching", "value", sa(["value"]), N),
    ("nonmatching span attribute value", None, "example", "nonmatching", sa(["value"]), N),
    ("matching span attribute", None, "example", "value", sa(["value"]), S),
    ("matching span attribute with regex", None, "example", HC, sa(["v[0-9]+.HealthCheck$"], True), S),
    ("nonmatching span attribute with regex", None, "example", HC,
     sa(["v[a-z]+.HealthCheck$"], True), N),
    ("matching span attribute with regex without CacheSize provided in config", None, "example",
     HC, sa(["v[0-9]+.HealthCheck$"], True), S),
    ("matching plain text node attribute in regex", {"example": "value"}, "", "",
     sa(["value"], True), S),
    ("nonmatching span attribute on empty filter list", None, "example", HC, sa([], True), N),
    ("invert nonmatching node attribute key", {"non_matching": "value"}, "", "",
     sa(["value"], invert=True), S),
    ("invert nonmatching node attribute value", {"example": "non_matching"}, "", "",
     sa(["value"], invert=True), S),
    ("invert nonmatching node attribute list", {"example": "non_matching"}, "", "",
     sa(["first_value", "value", "last_value"], invert=True), S),
    ("invert matching node attribute", {"example": "value"}, "", "", sa(["value"], invert=True), N),
    ("invert matching node attribute list", {"example": "value"}, "", "",
     sa(["first_value", "value", "last_value"], invert=True), N),
    ("invert nonmatching span attribute key", None, "nonmatching", "value",
     sa(["value"], invert=True), S),
    ("invert nonmatching span attribute value", None, "example", "nonmatching",
     sa(["value"], invert=True), S),
    ("invert nonmatching span attribute list", None, "example", "nonmatching",
     sa(["first_value", "value", "last_value"], invert=True), S),
    ("invert matching span attribute", None, "example", "value", sa(["value"], invert=True), N),
    ("invert matching span attribute list", None, "example", "value",
     sa(["first_value", "value", "last_value"], invert=True), N),
    ("invert matching span attribute with regex", None, "example", HC,
     sa(["v[0-9]+.HealthCheck$"], True, True), N),
    ("invert matching span attribute with regex list", None, "example", HC,
     sa(["^http", "v[0-9]+.HealthCheck$", "metrics$"], True, True), N),
    ("invert nonmatching span attribute with regex", None, "example", HC,
     sa(["v[a-z]+.HealthCheck$"], True, True), S),
    ("invert nonmatching span attribute with regex list", None, "example", HC,
     sa(["^http", "v[a-z]+.HealthCheck$", "metrics$"], True, True), S),
]


@pytest.mark.parametrize("desc,res,key,val,pol,want", STRING, ids=[r[0] for r in STRING])
def test_string_attribute(desc, res, key, val, pol, want):
    for sem in ("collector", "traceo"):
        assert one(pol, [span({key: val})], res, sem) == want, sem


# ------------------------------------------------------------ boolean_tag_filter_test.go
def test_boolean_attribute():
    rows = [("non-matching span attribute", [span({"non_matching": True})], {}, N),
            ("span attribute with unwanted boolean value", [span({"example": False})], {}, N),
            ("span attribute with wanted boolean value", [span({"example": True})], {}, S)]
    # TestBooleanTagFilter / TestBooleanTagFilterInverted
    check({"type": "boolean_attribute", "boolean_attribute": {"key": "example", "value": True}},
          rows)
    check({"type": "boolean_attribute", "boolean_attribute": {"key": "example", "value": True,
                                                               "invert_match": True}},
          [(d, b, r, not w) for d, b, r, w in rows])


def test_boolean_attribute_of_another_type():
    """boolean_tag_filter.go reads Value.Bool(): a string value reads false,
    so it matches ``value: false`` there; ours needs a bool"""
    pol = {"type": "boolean_attribute", "boolean_attribute": {"key": "example", "value": False}}
    assert one(pol, [span({"example": "yes"})]) is S
    assert one(pol, [span({"example": "yes"})], semantics="traceo") is N


# ------------------------------------------------------------ status_code_test.go
UNSET, OK, ERROR = 0, 1, 2


def test_status_code():
    # TestStatusCodeSampling
    for desc, on, present, want in [
        ("filter on ERROR - none match", ["ERROR"], [OK, UNSET, OK], N),
        ("filter on OK and ERROR - none match", ["OK", "ERROR"], [UNSET, UNSET], N),
        ("filter on UNSET - matches", ["UNSET"], [UNSET], S),
        ("filter on OK and UNSET - matches", ["OK", "UNSET"], [ERROR, OK], S),
    ]:
        spans = [span(status=c, sid=bytes([9 + i] * 8)) for i, c in enumerate(present)]
        check({"type": "status_code", "status_code": {"status_codes": on}}, [(desc, spans, None, want)])


def test_status_code_error_handling():
    # TestNewStatusCodeFilter_errorHandling: an empty list, an unknown code
    from traceo_sampler.config import ConfigError
    for codes in ([], ["OK", "ERR"]):
        with pytest.raises(ConfigError):
            one({"type": "status_code", "status_code": {"status_codes": codes}}, [span()])


# ------------------------------------------------------------ span_count_sampler_test.go
def batches_of(counts):
    out, k = [], 0
    for n in counts:
        out.append([span(sid=(k + i + 1).to_bytes(8, "big")) for i in range(n)])
        k += n
    return out


def test_span_count():
    # TestEvaluate_OnlyMinSpans (3, 0)
    only_min = [("Spans less than the minSpans, in one single batch", [1], N),
                ("Same number of spans as the minSpans, in one single batch", [3], S),
                ("Spans greater than the minSpans, in one single batch", [4], S),
                ("Spans less than the minSpans, across multiple batches", [1, 1], N),
                ("Same number of spans as the minSpans, across multiple batches", [1, 2, 1], S),
                ("Spans greater than the minSpans, across multiple batches", [1, 2, 3], S)]
    # TestEvaluate_OnlyMaxSpans (0, 20)
    only_max = [("Spans greater than the maxSpans, in one single batch", [21], N),
                ("Same number of spans as the maxSpans, in one single batch", [20], S),
                ("Spans less than the maxSpans, in one single batch", [1], S),
                ("Spans gather than the maxSpans, across multiple batches", [10, 11], N),
                ("Same number of spans as the maxSpans, across multiple batches", [10, 10], S),
                ("Spans less than the maxSpans, across multiple batches", [1, 2], S)]
    # TestEvaluate_RangeOfSpans (3, 20)
    rng = [("Spans less than the minSpans, in one single batch", [1], N),
           ("Spans greater than the maxSpans, in one single batch", [21], N),
           ("Spans range of minSpan and maxSpans, in one single batch", [10], S),
           ("Spans less than the minSpans, across multiple batches", [1, 1], N),
           ("Spans greater than the maxSpans, across multiple batches", [10, 11], N),
           ("Spans range of minSpan and maxSpans, across multiple batches", [5, 5], S),
           ("Same number of spans as the minSpans, in one single batch", [3], S),
           ("Same number of spans as the maxSpans, in one single batch", [20], S),
           ("Same number of spans as the minSpans, across multiple batches", [1, 1, 1], S),
           ("Same number of spans as the maxSpans, across multiple batches", [10, 10], S)]
    for (lo, hi), rows in (((3, 0), only_min), ((0, 20), only_max), ((3, 20), rng)):
        check({"type": "span_count", "span_count": {"min_spans": lo, "max_spans": hi}},
              [(d, batches_of(c), None, w) for d, c, w in rows])


# ------------------------------------------------------------ trace_state_filter_test.go
def test_trace_state():
    # TestTraceStateFilter
    for desc, state, values, want in [
        ("nonmatching trace_state key", "non_matching=value", ["value"], N),
        ("nonmatching trace_state value", "example=non_matching", ["value"], N),
        ("matching trace_state", "example=value", ["value"], S),
        ("nonmatching trace_state on empty filter list", "example=value", [], N),
        ("nonmatching trace_state on multiple key-values",
         "example=non_matching,non_matching=value", ["value"], N),
        ("matching trace_state on multiple key-values", "example=value,non_matching=value",
         ["value"], S),
        ("nonmatching trace_state on multiple filter list", "example=non_matching",
         ["value1", "value2"], N),
        ("matching trace_state on multiple filter list", "example=value1", ["value1", "value2"], S),
    ]:
        check({"type": "trace_state", "trace_state": {"key": "example", "values": values}},
              [(desc, [span(state=state)], None, want)])


# ------------------------------------------------------------ and_test.go, not_test.go, drop_test.go
def test_and_not_drop():
    str_ok = {"name": "s", "type": "string_attribute",
              "string_attribute": {"key": "attribute_name", "values": ["attribute_value"]}}
    str_inv = {"name": "s", "type": "string_attribute", "string_attribute": {
        "key": "attribute_name", "values": ["no_match"], "invert_match": True}}
    always = {"name": "a", "type": "always_sample"}
    t_match = [span({"attribute_name": "attribute_value"})]
    t_other = [span({"attribute_name": "other"})]
    # TestAndEvaluatorNotSampled / TestAndEvaluatorSampled
    assert one({"type": "and", "and": {"and_sub_policy": [str_ok, always]}}, t_other) is N
    assert one({"type": "and", "and": {"and_sub_policy": [str_ok, always]}}, t_match) is S
    # TestAndEvaluatorStringInvertSampled / ...NotSampled
    assert one({"type": "and", "and": {"and_sub_policy": [str_inv, always]}}, t_match) is S
    inv_hit = {**str_inv, "string_attribute": {**str_inv["string_attribute"],
                                               "values": ["attribute_value"]}}
    assert one({"type": "and", "and": {"and_sub_policy": [inv_hit, always]}}, t_match) is N
    # TestNotSamplingPolicy_Evaluate_Sampled / _NotSampled
    assert one({"type": "not", "not": {"not_sub_policy": str_ok}}, t_match) is N
    assert one({"type": "not", "not": {"not_sub_policy": str_ok}}, t_other) is S
    # TestDropEvaluatorNotSampled / TestDropEvaluatorSampled: a drop is never "sampled"
    run = Run([{"name": "d", "type": "drop", "drop": {"drop_sub_policy": [str_ok]}},
               {"name": "all", "type": "always_sample"}])
    assert run.decide(t_other, tid=b"\x01" * 16) is S
    assert run.decide(t_match, tid=b"\x02" * 16) is N
    # TestDropEvaluatorStringInvertMatch / ...InvertNotMatch
    run = Run([{"name": "d", "type": "drop", "drop": {"drop_sub_policy": [str_inv]}},
               {"name": "all", "type": "always_sample"}])
    assert run.decide(t_match, tid=b"\x03" * 16) is N
    run = Run([{"name": "d", "type": "drop", "drop": {"drop_sub_policy": [inv_hit]}},
               {"name": "all", "type": "always_sample"}])
    assert run.decide(t_match, tid=b"\x04" * 16) is S


def test_always_sample():
    # TestEvaluate_AlwaysSample
    assert one({"type": "always_sample"}, [span()]) is S


# ------------------------------------------------------------ composite_test.go
def test_composite_throttling():
    # TestCompositeEvaluatorThrottling: one always_sample sub-policy, 10 spans/s
    clock = Clock()
    run = Run([{"name": "c", "type": "composite", "composite": {
        "max_total_spans_per_second": 10,
        "composite_sub_policy": [{"name": "eval-1", "type": "always_sample"}],
        "rate_allocation": [{"policy": "eval-1", "percent": 100}]}}], clock=clock)
    got = [run.decide([span()], tid=(i + 1).to_bytes(16, "big")) for i in range(20)]
    assert got == [S] * 10 + [N] * 10
    clock.t += 1
    assert [run.decide([span()], tid=(100 + i).to_bytes(16, "big")) for i in range(10)] == [S] * 10


def test_composite_overflow_always_sampled():
    # TestCompositeEvaluator_OverflowAlwaysSampled: numeric [0, 100] 1 span/s, always 1 span/s,
    # total 3. (The Collector's config cannot say min 0 as a bound; 0 is "unset".)
    run = Run([{"name": "c", "type": "composite", "composite": {
        "max_total_spans_per_second": 3,
        "composite_sub_policy": [
            {"name": "eval-1", "type": "numeric_attribute",
             "numeric_attribute": {"key": "tag", "min_value": 0, "max_value": 100}},
            {"name": "eval-2", "type": "always_sample"}],
        # 34 % of 3 is the upstream test's 1 span/s each (int64, truncated)
        "rate_allocation": [{"policy": "eval-1", "percent": 34}, {"policy": "eval-2", "percent": 34}]}}])
    assert run.decide([span({"tag": 10})], tid=b"\x01" * 16) is S
    assert run.decide([span({"tag": 11})], tid=b"\x02" * 16) is N
    assert run.decide([span({"tag": 1001})], tid=b"\x03" * 16) is S


def test_composite_without_rate_allocation_gets_an_equal_share():
    # composite_helper.go getRateAllocationMap: no entry -> total / len(sub-policies), both modes
    for sem in ("collector", "traceo"):
        run = Run([{"name": "c", "type": "composite", "composite": {
            "max_total_spans_per_second": 100,
            "composite_sub_policy": [
                {"name": "errs", "type": "status_code", "status_code": {"status_codes": ["ERROR"]}},
                {"name": "rest", "type": "always_sample"}],
            "rate_allocation": [{"policy": "errs", "percent": 90}]}}], semantics=sem)
        spans = [span(sid=(i + 1).to_bytes(8, "big")) for i in range(50)]
        assert run.decide(spans, tid=b"\x01" * 16) is S, sem       # 50 <= 100 / 2
        assert run.decide([span()], tid=b"\x02" * 16) is N, sem    # 51 > 50


# ------------------------------------------------------------ rate_limiting_test.go
def spans_n(n):
    return [span(sid=(i + 1).to_bytes(8, "big")) for i in range(n)]


def test_rate_limiting():
    clock = Clock()
    # TestRateLimiterTokenBucket (3 spans/s, burst 3)
    run = Run([{"name": "r", "type": "rate_limiting",
                "rate_limiting": {"spans_per_second": 3, "burst_capacity": 3}}], clock=clock)
    assert run.decide(spans_n(3), tid=b"\x01" * 16) is S
    assert run.decide(spans_n(1), tid=b"\x02" * 16) is N
    # TestRateLimiterBurstCapacityRejectsLargeTrace (3, burst 2)
    run = Run([{"name": "r", "type": "rate_limiting",
                "rate_limiting": {"spans_per_second": 3, "burst_capacity": 2}}], clock=clock)
    assert run.decide(spans_n(3)) is N
    # TestRateLimiterDefaultConstructorBurst (2 spans/s: burst 4)
    run = Run([{"name": "r", "type": "rate_limiting", "rate_limiting": {"spans_per_second": 2}}],
              clock=clock)
    assert [run.decide(spans_n(1), tid=bytes([i + 1] * 16)) for i in range(5)] == [S] * 4 + [N]
    # TestRateLimiterTokenRefill (4 spans/s, burst 2; 0.6 s refills 2.4)
    run = Run([{"name": "r", "type": "rate_limiting",
                "rate_limiting": {"spans_per_second": 4, "burst_capacity": 2}}], clock=clock)
    assert run.decide(spans_n(2), tid=b"\x01" * 16) is S
    assert run.decide(spans_n(2), tid=b"\x02" * 16) is N
    clock.t += 0.6
    assert run.decide(spans_n(2), tid=b"\x03" * 16) is S


# ------------------------------------------------------------ bytes_limiting_test.go
def test_bytes_limiting_charges_the_encoded_size():
    # TestCalculateTraceSize: the size is ptrace.ProtoMarshaler.TracesSize of the trace
    run = Run([{"name": "b", "type": "bytes_limiting",
                "bytes_limiting": {"bytes_per_second": 1, "burst_capacity": 10_000}}])
    data = request([span({"k": "v"})], {"service.name": "svc"})
    run.buf.ingest(data, run.decider.attribute_keys, 0.0)
    (t, _), = run.buf.drain()
    # one trace in one request: its TracesData is the request itself
    assert encoded_size(t, run.buf) == len(data)
    run.buf.finish(t, False, "", 0)


def test_bytes_limiting_token_bucket():
    clock = Clock()
    one_span = len(request([span()]))
    # TestBytesLimitingTokenBucket: a bucket of 3 traces' bytes, refilled at 1 trace/s
    run = Run([{"name": "b", "type": "bytes_limiting", "bytes_limiting": {
        "bytes_per_second": one_span, "burst_capacity": 3 * one_span}}], clock=clock)
    got = [run.decide([span()], tid=bytes([i + 1] * 16)) for i in range(4)]
    assert got == [S, S, S, N]
    clock.t += 1.0
    assert run.decide([span()], tid=b"\x09" * 16) is S
    # TestBytesLimitingDefaultConstructor: burst twice the rate
    run = Run([{"name": "b", "type": "bytes_limiting",
                "bytes_limiting": {"bytes_per_second": one_span}}], clock=clock)
    assert [run.decide([span()], tid=bytes([i + 1] * 16)) for i in range(3)] == [S, S, N]


# ------------------------------------------------------------ probabilistic_test.go
M64 = (1 << 64) - 1


def go_pcg(seed1: int, seed2: int):
    """Go's math/rand/v2 PCG (pcg.go): a 128-bit LCG with the DXSM output."""
    mul = (2549297995355413924 << 64) | 4865540595714422341
    inc = (6364136223846793005 << 64) | 1442695040888963407
    state = (seed1 << 64) | seed2
    while True:
        state = (state * mul + inc) & ((1 << 128) - 1)
        hi, lo = state >> 64, state & M64
        hi ^= hi >> 32
        hi = (hi * 0xDA942042E4DD58B5) & M64
        hi ^= hi >> 48
        yield (hi * (lo | 1)) & M64


@functools.lru_cache(maxsize=1)
def random_ids(n):
    """genRandomTraceIDs: the upstream test's trace IDs, PCG(123, 456)."""
    g = go_pcg(123, 456)
    return [next(g).to_bytes(8, "big") + next(g).to_bytes(8, "big") for _ in range(n)]


@pytest.mark.parametrize("name,pct,salt,expected", [
    ("100%", 100, "", 100), ("0%", 0, "", 0), ("25%", 25, "", 25), ("33%", 33, "", 33),
    ("33% - custom salt", 33, "test-salt", 33), ("-%50", -50, "", 0), ("150%", 150, "", 100),
])
def test_probabilistic_sampling(name, pct, salt, expected):
    """TestProbabilisticSampling: over the upstream test's 100 000 trace IDs
    the kept share is within 0.2 points. The evaluator's rule is
    hash(salt + ID) <= threshold; the hashes are computed once per salt."""
    limit = CollectorProbabilistic("p", pct, salt).limit
    hashes = salted_hashes(salt)
    kept = sum(1 for h in hashes if h <= limit)
    assert abs(kept / len(hashes) * 100 - expected) <= 0.2
    # and the evaluator itself agrees with the rule on a sample
    p = CollectorProbabilistic("p", pct, salt)
    for tid, h in list(zip(random_ids(100_000), hashes))[:2000]:
        assert (p.evaluate(type("T", (), {"trace_id": tid})())[0] == 1) == (h <= limit)


@functools.lru_cache(maxsize=4)
def salted_hashes(salt):
    return [fnv1a64((salt or "default-hash-seed").encode() + tid) for tid in random_ids(100_000)]


def test_probabilistic_hash_and_threshold():
    # hashTraceID: FNV-1a 64 of salt then trace ID; calculateThreshold: MaxUint64 * ratio
    assert fnv1a64(b"") == 0xCBF29CE484222325 and fnv1a64(b"a") == 0xAF63DC4C8601EC8C
    assert collector_threshold(1.0) == collector_threshold(1.5) == 2**64 - 1
    assert collector_threshold(0.5) == 2**63 - 1 and collector_threshold(-0.5) == 0
    # the same trace: kept by the Collector's rule, our rv rule is another function
    p = CollectorProbabilistic("p", 10, "")
    h = fnv1a64(b"default-hash-seed" + TID)
    assert (p.evaluate(type("T", (), {"trace_id": TID})())[0] == 1) == (h <= p.limit)
    assert math.isclose(p.limit / 2**64, 0.1, rel_tol=1e-12)


def test_fnv_twins_agree():
    """The compiled FNV-1a (ext/_shard.pyx) and its pure twin, salted and not."""
    from traceo_sampler.policies import probabilistic as pr
    from conftest import PURE
    ids = random_ids(100_000)[:500] + [b"", b"\x00" * 16, b"\xff" * 16]
    compiled = pr._c
    if not PURE:
        assert compiled is not None, "the compiled _shard did not load"
    for tid in ids:
        want = pr.fnv1a64_py(tid)
        salted = pr.fnv1a64_py(tid, pr.fnv1a64_py(b"salt"))
        assert pr.fnv1a64(tid) == want
        if compiled is not None:
            assert compiled.fnv1a64(tid) == want
            assert compiled.fnv1a64(tid, compiled.fnv1a64(b"salt")) == salted


def test_span_bytes_by_group_twins():
    """TraceBuffer.span_bytes_by_group: the compiled buffer, the pure one and
    otlp_size.span_bytes_by_group (from entries()) agree, over several
    resources, scopes and requests."""
    from conftest import twins
    from traceo_sampler import buffer as pybuf
    from traceo_sampler.otlp_size import size_of_groups, span_bytes_by_group
    reqs = [request([span({"k": "v" * i}, sid=bytes([i + 1] * 8)) for i in range(j, j + 3)],
                    {"service.name": f"s{j % 2}"}) for j in range(0, 12, 3)]
    sizes = []
    for cls in [p.values[0].TraceBuffer for p in twins("buffer", TraceBuffer=pybuf.TraceBufferPy)]:
        b = cls(decision_wait=30, root_wait=30, idle_timeout=30, max_spans_per_trace=100,
                memory_limit=1 << 24, cache_sampled=0, cache_not_sampled=0)
        for r in reqs:
            b.ingest(r, frozenset(), 0.0)
        (t, _), = b.drain()
        per = b.span_bytes_by_group(t)
        assert per == span_bytes_by_group(t)
        sizes.append(size_of_groups(per, b.group))
        b.finish(t, False, "", 0)
    assert len(set(sizes)) == 1
