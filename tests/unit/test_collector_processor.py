"""The Collector's processor decision tests, ported (tailsamplingprocessor
v0.161.0, processor_decisions_test.go): the same test names, through
Traceo's Pipeline in Collector semantics with a fake clock and its 1 s
decision tick. The upstream tests drive mock evaluators returning chosen
decisions; here mock policies return the same decisions (Traceo's policies
return sampled / not sampled / dropped: the Collector's InvertSampled and
InvertNotSampled no longer come from any of its policy types, its
``disableinvertdecisions`` gate being stable, so the rows that need them
use the real ``invert_match`` they stand for, and say so).
"""
from __future__ import annotations

from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

from traceo_sampler.config import loads
from traceo_sampler.pipeline import Pipeline
from traceo_sampler.policies.base import DROPPED, NO, YES
from traceo_sampler.telemetry import Metrics


class Mock:
    """mockPolicyEvaluator: a set decision, evaluations counted."""

    def __init__(self, name, decision=NO):
        self.name = name
        self.decision = decision
        self.count = 0

    def attribute_keys(self):
        return set()

    def evaluate(self, trace):
        self.count += 1
        return self.decision


class Capture:
    name = "capture"

    def __init__(self):
        self.spans = 0
        self.trace_ids = []

    def submit(self, item):
        self.spans += item.spans
        self.trace_ids += item.trace_ids
        return True


def traces(tid=b"\x01" * 16, span_index=1, attrs=None):
    req = ExportTraceServiceRequest()
    sp = req.resource_spans.add().scope_spans.add().spans.add(
        trace_id=tid, span_id=span_index.to_bytes(8, "big"), name="op",
        start_time_unix_nano=1, end_time_unix_nano=2)
    for k, v in (attrs or {}).items():
        sp.attributes.add(key=k).value.string_value = v
    return req.SerializeToString()


class Harness:
    def __init__(self, policies_yaml="[{name: placeholder, type: always_sample}]", mocks=None,
                 extra=""):
        self.now = [0.0]
        cfg = loads(f"sampler: {{semantics: collector, decision_wait: 2s, {extra}"
                    f"policies: {policies_yaml}}}")
        self.sink = Capture()
        self.p = Pipeline(cfg, Metrics(), [self.sink], clock=lambda: self.now[0])
        if mocks is not None:
            self.p.decider.policies = mocks
        self.p.tick()               # the ticker starts with the processor

    def consume(self, raw):
        self.p.ingest(raw)

    def wait_for_tick(self):
        self.now[0] += 1.0
        self.p.tick()


def test_sampling_policy_typical_path():
    """TestSamplingPolicyTypicalPath"""
    m = Mock("mock-policy-1", YES)
    h = Harness(mocks=[m])
    h.consume(traces())
    h.wait_for_tick()            # the first tick won't decide it (decision_wait 2 s)
    assert m.count == 0
    h.wait_for_tick()
    assert m.count == 1 and h.sink.spans == 1


def test_sampling_policy_invert_sampled():
    """TestSamplingPolicyInvertSampled: the mock's InvertSampled is what an
    invert_match that does not match returns today: Sampled."""
    h = Harness("[{name: not-health, type: string_attribute, string_attribute: "
                "{key: http.route, values: [/health], invert_match: true}}]")
    h.consume(traces(attrs={"http.route": "/api"}))
    h.wait_for_tick()
    h.wait_for_tick()
    assert h.sink.spans == 1


def test_sampling_multiple_policies():
    """TestSamplingMultiplePolicies"""
    m1, m2 = Mock("mock-policy-1", YES), Mock("mock-policy-2", YES)
    h = Harness(mocks=[m1, m2])
    h.consume(traces())
    h.wait_for_tick()
    assert (m1.count, m2.count) == (0, 0)
    h.wait_for_tick()
    assert (m1.count, m2.count) == (1, 1) and h.sink.spans == 1


def test_sampling_policy_decision_not_sampled():
    """TestSamplingPolicyDecisionNotSampled"""
    m1, m2 = Mock("mock-policy-1", NO), Mock("mock-policy-2", NO)
    h = Harness(mocks=[m1, m2])
    h.consume(traces())
    h.wait_for_tick()
    h.wait_for_tick()
    assert (m1.count, m2.count) == (1, 1) and h.sink.spans == 0


def test_sampling_policy_decision_invert_not_sampled():
    """TestSamplingPolicyDecisionInvertNotSampled: upstream, a mock returning
    InvertNotSampled vetoes mock-policy-2's Sampled. No policy type returns
    it any more; the matching invert_match it stood for is a plain
    NotSampled, so the other policy's Sampled keeps the trace — in both
    modes (README: invert_match)."""
    h = Harness("[{name: not-health, type: string_attribute, string_attribute: "
                "{key: http.route, values: [/health], invert_match: true}}, "
                "{name: all, type: always_sample}]")
    h.consume(traces(attrs={"http.route": "/health"}))
    h.wait_for_tick()
    h.wait_for_tick()
    assert h.sink.spans == 1


def test_late_arriving_spans_assigned_original_decision():
    """TestLateArrivingSpansAssignedOriginalDecision (NotSampled)"""
    m1, m2 = Mock("mock-policy-1", NO), Mock("mock-policy-2", NO)
    h = Harness(mocks=[m1, m2])
    h.consume(traces(span_index=1))
    h.wait_for_tick()
    h.wait_for_tick()
    assert (m1.count, m2.count) == (1, 1) and h.sink.spans == 0
    h.consume(traces(span_index=2))
    h.wait_for_tick()
    h.wait_for_tick()
    assert (m1.count, m2.count) == (1, 1), "policies evaluated again"
    assert h.sink.spans == 0, "original final decision not honored"


def test_late_arriving_span_uses_decision_cache():
    """TestLateArrivingSpanUsesDecisionCache (Sampled, sampled_cache_size set)"""
    m = Mock("mock-policy-1", YES)
    h = Harness(mocks=[m], extra="decision_cache: {sampled_cache_size: 200}, ")
    h.consume(traces(span_index=1))
    h.wait_for_tick()
    h.wait_for_tick()
    assert h.sink.spans == 1
    h.consume(traces(span_index=2))      # late: forwarded at once, no evaluation
    assert m.count == 1 and h.sink.spans == 2


def test_late_arriving_span_uses_decision_cache_when_dropped():
    """TestLateArrivingSpanUsesDecisionCacheWhenDropped"""
    m = Mock("mock-policy-1", (DROPPED, 0))
    h = Harness(mocks=[m], extra="decision_cache: {non_sampled_cache_size: 200}, ")
    h.consume(traces(span_index=1))
    h.wait_for_tick()
    h.wait_for_tick()
    h.consume(traces(span_index=2))
    h.wait_for_tick()
    h.wait_for_tick()
    assert m.count == 1 and h.sink.spans == 0


def test_sample_on_first_match():
    """TestSampleOnFirstMatch: the second policy samples, the third is not asked"""
    m1, m2, m3 = Mock("mock-policy-1", NO), Mock("mock-policy-2", YES), Mock("mock-policy-3", YES)
    h = Harness(mocks=[m1, m2, m3], extra="sample_on_first_match: true, ")
    h.p.decider.first_match = True
    h.consume(traces())
    h.wait_for_tick()
    h.wait_for_tick()
    assert (m1.count, m2.count, m3.count) == (1, 1, 0) and h.sink.spans == 1


def test_rate_limiter():
    """TestRateLimiter: 11 one-span traces, rate_limiting 2 spans/s, burst 2:
    upstream 1 or 2 are kept depending on the second boundary; with a fake
    clock, the burst: 2."""
    h = Harness("[{name: test-policy-1, type: rate_limiting, "
                "rate_limiting: {spans_per_second: 2, burst_capacity: 2}}]",
                extra="sample_on_first_match: true, ")
    for i in range(11):
        h.consume(traces(tid=(i + 1).to_bytes(16, "big")))
    h.wait_for_tick()
    h.wait_for_tick()
    assert h.sink.spans == 2 and len(set(h.sink.trace_ids)) == 2


def test_decision_wait_after_root_received():
    """decision_wait_after_root_received: a root moves its trace to an
    earlier batch (idbatcher MoveToEarlierBatch)"""
    m = Mock("m", YES)
    h = Harness(mocks=[m], extra="decision_wait: 10s, decision_wait_after_root_received: 1s, ")
    h.consume(traces())          # a root: no parent
    h.wait_for_tick()
    assert m.count == 1 and h.sink.spans == 1


def test_maximum_trace_size_bytes():
    """maximum_trace_size_bytes: a trace larger than it is dropped; the
    policies are not asked"""
    small = traces(tid=b"\x01" * 16)
    m = Mock("m", YES)
    h = Harness(mocks=[m], extra=f"maximum_trace_size_bytes: {len(small)}, ")
    h.consume(small)                                            # exactly the limit: kept
    h.consume(traces(tid=b"\x02" * 16, attrs={"pad": "x" * 100}))  # over it: dropped
    h.wait_for_tick()
    h.wait_for_tick()
    assert h.sink.trace_ids == [b"\x01" * 16] and m.count == 1
