"""Policies and their combination (docs/design.md §3), table-driven.

Each row: a policy config in the Collector's tail_sampling YAML shape, a
trace summary, and the expected verdict ``(decision, threshold)``. The
decider rows check the combination rules: drop beats everything, an
inverted match vetoes sampling, the first sampling policy in config order
is the attribution and the recorded threshold is the smallest one.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import pytest

from traceo_sampler import policies, tracestate
from traceo_sampler.config import parse
from traceo_sampler.decider import NOT_SAMPLED as DECISION_NOT_SAMPLED
from traceo_sampler.decider import Decider, Decision
from traceo_sampler.policies import DROPPED, NOT_SAMPLED, SAMPLED

# Written out rather than computed with tracestate, so a wrong threshold
# computation shows up here too: T = 2**56 * (1 - p), rounded.
MAX_T = 1 << 56
T10 = 0xE6666666666666          # 10 %  -> th:e6666666666666
T50 = 0x80000000000000          # 50 %  -> th:8
T25 = 0xC0000000000000          # 25 %  -> th:c

NS_PER_MS = 1_000_000
START = 1_700_000_000_000_000_000   # ns since the epoch, as in OTLP

YES = (SAMPLED, 0)
NO = (NOT_SAMPLED, 0)
INV = (NOT_SAMPLED, 0)   # an inverted match: plain not sampled (no veto)
DROP = (DROPPED, 0)


@dataclass
class Summary:
    """The TraceSummary fields of policies/base.py."""
    trace_id: bytes = bytes(range(16))
    span_count: int = 3
    min_start: int = START
    max_end: int = START + 5 * NS_PER_MS
    status_mask: int = 1 << 0            # UNSET
    root_seen: bool = True
    services: set = field(default_factory=lambda: {"frontend"})
    attrs: dict[str, set[Any]] | None = None
    randomness: int = 0
    root_name: str = "GET /"
    root_service: str = "frontend"
    # Not in the base summary: the buffer's size of the trace (bytes_limiting
    # falls back to 200 B per span without it) and the first tracestate seen
    # (trace_state; an upstream ``ot=th`` composes with the limiters').
    encoded_size: int | None = None
    trace_state: str = ""


def tr(**kw) -> Summary:
    return Summary(**kw)


def dur(ns: int, **kw) -> Summary:
    """A trace lasting ``ns`` nanoseconds."""
    return Summary(min_start=START, max_end=START + ns, **kw)


def ms(x: float) -> int:
    return round(x * NS_PER_MS)


def attrs(**kv) -> Summary:
    """A trace whose summary holds these attribute values (key -> set)."""
    return Summary(attrs={k.replace("__", "."): v for k, v in kv.items()})


def status(*codes: int) -> Summary:
    m = 0
    for c in codes:
        m |= 1 << c
    return Summary(status_mask=m)


UNSET, OK, ERROR = 0, 1, 2


def pol(type_: str, block: dict | None = None, name: str | None = None, **extra) -> dict:
    d = {"name": name or type_, "type": type_}
    if block is not None:
        d[type_] = block
    d.update(extra)
    return d


def lat(threshold_ms=None, upper_threshold_ms=None):
    b = {}
    if threshold_ms is not None:
        b["threshold_ms"] = threshold_ms
    if upper_threshold_ms is not None:
        b["upper_threshold_ms"] = upper_threshold_ms
    return pol("latency", b)


def sc(*codes):
    return pol("status_code", {"status_codes": list(codes)})


def prob(pct, **kw):
    return pol("probabilistic", {"sampling_percentage": pct, **kw})


def sa(key, values, regex=False, invert=False):
    b = {"key": key, "values": list(values)}
    if regex:
        b["enabled_regex_matching"] = True
    if invert:
        b["invert_match"] = True
    return pol("string_attribute", b)


def na(key, min_value=None, max_value=None, invert=False):
    b = {"key": key}
    if min_value is not None:
        b["min_value"] = min_value
    if max_value is not None:
        b["max_value"] = max_value
    if invert:
        b["invert_match"] = True
    return pol("numeric_attribute", b)


def ba(key, value, invert=False):
    b = {"key": key, "value": value}
    if invert:
        b["invert_match"] = True
    return pol("boolean_attribute", b)


def spans(min_spans=None, max_spans=None):
    b = {}
    if min_spans is not None:
        b["min_spans"] = min_spans
    if max_spans is not None:
        b["max_spans"] = max_spans
    return pol("span_count", b)


def and_(*subs, name="and"):
    return {"name": name, "type": "and", "and": {"and_sub_policy": list(subs)}}


def not_(sub, name="not"):
    return {"name": name, "type": "not", "not": {"not_sub_policy": sub}}


def drop(*subs, name="drop"):
    return {"name": name, "type": "drop", "drop": {"drop_sub_policy": list(subs)}}


def named(p: dict, name: str) -> dict:
    return {**p, "name": name}


def rl(sps, burst=None):
    b = {"spans_per_second": sps}
    if burst is not None:
        b["burst_capacity"] = burst
    return pol("rate_limiting", b)


def bl(bps, burst=None):
    b = {"bytes_per_second": bps}
    if burst is not None:
        b["burst_capacity"] = burst
    return pol("bytes_limiting", b)


def ts(key, values):
    return pol("trace_state", {"key": key, "values": list(values)})


def state(s: str, **kw) -> Summary:
    return Summary(trace_state=s, **kw)


def composite(max_total, subs, order=None, alloc=None, name="composite"):
    b = {"max_total_spans_per_second": max_total, "composite_sub_policy": list(subs)}
    if order is not None:
        b["policy_order"] = list(order)
    if alloc is not None:
        b["rate_allocation"] = [{"policy": k, "percent": v} for k, v in alloc.items()]
    return {"name": name, "type": "composite", "composite": b}


def svc_rate(services=None, default=None, match=None):
    b = {"services": services or {}}
    if default is not None:
        b["default"] = default
    if match is not None:
        b["match"] = match
    return pol("service_rate", b)


def lt(**b):
    return pol("latency_tail", b or None)


def adaptive(**b):
    return pol("adaptive", b)


def svcs(*names, root=None, **kw) -> Summary:
    root = names[0] if root is None else root
    return Summary(services=set(names), root_service=root, **kw)


T1 = 0xFD70A3D70A3D71            # 1 %
T0_1 = 0xFFBE76C8B43958          # 0.1 %
ERR_BIT = 1 << 2
# composite: errors 50 % and always_sample the rest of a 100 spans/s total
ERR_ALWAYS = [named(sc("ERROR"), "errs"), named(pol("always_sample"), "rest")]


def with_spans(*specs):
    """A trace whose span data (ottl_condition, trace_flags) is one span per
    spec: ``{"name", "flags", "attrs"}``, as the buffer hands it over."""
    from opentelemetry.proto.trace.v1 import trace_pb2
    from traceo_sampler.spandata import WithSpans
    rs = trace_pb2.ResourceSpans()
    rs.resource.attributes.add(key="service.name").value.string_value = "frontend"
    rh = rs.SerializeToString()
    sh = trace_pb2.ScopeSpans(scope={"name": "lib"}).SerializeToString()
    triples = []
    for sp in specs:
        m = trace_pb2.Span(name=sp.get("name", "op"), flags=sp.get("flags", 0),
                           trace_id=bytes(range(16)), span_id=bytes(8))
        for k, v in (sp.get("attrs") or {}).items():
            m.attributes.add(key=k).value.string_value = v
        triples.append((rh, sh, m.SerializeToString()))
    return WithSpans(tr(), lambda t: triples)


def ottl(span=(), spanevent=(), **kw):
    return {"name": "p", "type": "ottl_condition",
            "ottl_condition": {"span": list(span), "spanevent": list(spanevent), **kw}}


TRACE_FLAGS = {"name": "p", "type": "trace_flags"}

ROWS = [
    # ------------------------------------------------- ottl_condition, trace_flags
    # (the full ports of their upstream tests are in test_policies_ottl.py)
    ("ottl/one-span-matches", ottl(['name == "b"']), with_spans({"name": "a"}, {"name": "b"}), YES),
    ("ottl/none-matches", ottl(['name == "c"']), with_spans({"name": "a"}, {"name": "b"}), NO),
    ("ottl/resource", ottl(['resource.attributes["service.name"] == "frontend"']),
     with_spans({}), YES),
    ("ottl/no-spans", ottl(["true"]), with_spans(), NO),
    ("trace_flags/sampled", TRACE_FLAGS, with_spans({"flags": 0}, {"flags": 0x101}), YES),
    ("trace_flags/not-sampled", TRACE_FLAGS, with_spans({"flags": 0x100}), NO),
    # ---------------------------------------------------------- always_sample
    ("always/empty-block", pol("always_sample", {}), tr(), YES),
    ("always/no-block", pol("always_sample"), tr(), YES),
    ("always/error-trace", pol("always_sample"), status(ERROR), YES),
    ("always/no-attrs", pol("always_sample"), tr(attrs=None, span_count=1), YES),

    # ---------------------------------------------------------------- latency
    # Duration = max_end - min_start, compared in whole (truncated) ms;
    # without an upper bound: kept when duration >= threshold_ms.
    ("latency/below", lat(1000), dur(ms(999)), NO),
    ("latency/1ns-below-truncates-to-999", lat(1000), dur(ms(1000) - 1), NO),
    ("latency/exact-boundary-kept", lat(1000), dur(ms(1000)), YES),
    ("latency/fraction-above", lat(1000), dur(ms(1000) + 1), YES),
    ("latency/far-above", lat(1000), dur(ms(60_000)), YES),
    ("latency/zero-duration", lat(1000), dur(0), NO),
    ("latency/no-spans", lat(0), tr(span_count=0, min_start=0, max_end=0), NO),
    ("latency/threshold-0-keeps-all", lat(0), dur(0), YES),
    ("latency/no-block-threshold-0", pol("latency"), dur(ms(1)), YES),
    # With upper_threshold_ms: kept when threshold_ms < duration <= upper.
    ("latency/upper/at-lower-excluded", lat(100, 200), dur(ms(100)), NO),
    ("latency/upper/lower+0.9ms-truncates", lat(100, 200), dur(ms(100.9)), NO),
    ("latency/upper/just-above-lower", lat(100, 200), dur(ms(101)), YES),
    ("latency/upper/inside", lat(100, 200), dur(ms(150)), YES),
    ("latency/upper/at-upper-included", lat(100, 200), dur(ms(200)), YES),
    ("latency/upper/upper+0.9ms-truncates", lat(100, 200), dur(ms(200.9)), YES),
    ("latency/upper/above-upper", lat(100, 200), dur(ms(201)), NO),
    ("latency/upper/far-above-upper", lat(100, 200), dur(ms(10_000)), NO),
    ("latency/upper/below", lat(100, 200), dur(ms(50)), NO),
    ("latency/upper-only/zero-excluded", lat(upper_threshold_ms=50), dur(0), NO),
    ("latency/upper-only/inside", lat(upper_threshold_ms=50), dur(ms(50)), YES),
    ("latency/upper-only/above", lat(upper_threshold_ms=50), dur(ms(51)), NO),

    # ------------------------------------------------------------ status_code
    ("status/error-hit", sc("ERROR"), status(ERROR), YES),
    ("status/error-among-others", sc("ERROR"), status(UNSET, OK, ERROR), YES),
    ("status/error-miss-unset", sc("ERROR"), status(UNSET), NO),
    ("status/error-miss-ok", sc("ERROR"), status(OK), NO),
    ("status/error-miss-ok-unset", sc("ERROR"), status(OK, UNSET), NO),
    ("status/ok-hit", sc("OK"), status(OK), YES),
    ("status/ok-miss", sc("OK"), status(ERROR, UNSET), NO),
    ("status/unset-hit", sc("UNSET"), status(UNSET), YES),
    ("status/unset-miss", sc("UNSET"), status(ERROR), NO),
    ("status/list-error-ok/ok", sc("ERROR", "OK"), status(OK), YES),
    ("status/list-error-ok/error", sc("ERROR", "OK"), status(ERROR), YES),
    ("status/list-error-ok/unset", sc("ERROR", "OK"), status(UNSET), NO),
    ("status/list-all", sc("ERROR", "OK", "UNSET"), status(UNSET), YES),
    ("status/empty-mask", sc("ERROR", "OK", "UNSET"), status(), NO),

    # ---------------------------------------------------------- probabilistic
    # Consistent: kept when R >= T, T = 2**56 * (1 - p); the threshold T is
    # returned so the kept spans carry th:T.
    ("prob/0%/max-R", prob(0), tr(randomness=MAX_T - 1), NO),
    ("prob/0%/zero-R", prob(0), tr(randomness=0), NO),
    ("prob/100%/zero-R", prob(100), tr(randomness=0), (SAMPLED, 0)),
    ("prob/100%/max-R", prob(100), tr(randomness=MAX_T - 1), (SAMPLED, 0)),
    ("prob/10%/R=T", prob(10), tr(randomness=T10), (SAMPLED, T10)),
    ("prob/10%/R=T+1", prob(10), tr(randomness=T10 + 1), (SAMPLED, T10)),
    ("prob/10%/R=T-1", prob(10), tr(randomness=T10 - 1), NO),
    ("prob/10%/R=max", prob(10), tr(randomness=MAX_T - 1), (SAMPLED, T10)),
    ("prob/10%/R=0", prob(10), tr(randomness=0), NO),
    ("prob/10%/R=half", prob(10), tr(randomness=T50), NO),
    ("prob/50%/R=T", prob(50), tr(randomness=T50), (SAMPLED, T50)),
    ("prob/50%/R=T-1", prob(50), tr(randomness=T50 - 1), NO),
    ("prob/25%/R=T", prob(25), tr(randomness=T25), (SAMPLED, T25)),
    ("prob/25%/R=T-1", prob(25), tr(randomness=T25 - 1), NO),
    ("prob/float-pct", prob(12.5), tr(randomness=0xE0000000000000), (SAMPLED, 0xE0000000000000)),
    ("prob/float-pct-miss", prob(12.5), tr(randomness=0xE0000000000000 - 1), NO),
    # hash_salt is accepted (Collector configs load unchanged) and changes nothing.
    ("prob/salt/R=T", prob(10, hash_salt="abc"), tr(randomness=T10), (SAMPLED, T10)),
    ("prob/salt/R=T-1", prob(10, hash_salt="abc"), tr(randomness=T10 - 1), NO),
    ("prob/other-salt/R=T", prob(10, hash_salt="zzz"), tr(randomness=T10), (SAMPLED, T10)),
    # The decision uses the summary's randomness, never the trace ID directly.
    ("prob/uses-randomness-not-trace-id", prob(10),
     tr(trace_id=b"\xff" * 16, randomness=0), NO),

    # ------------------------------------------------------- string_attribute
    ("str/exact-hit", sa("http.route", ["/a", "/b"]), attrs(http__route={"/b"}), YES),
    ("str/exact-miss", sa("http.route", ["/a", "/b"]), attrs(http__route={"/c"}), NO),
    ("str/exact-is-not-prefix", sa("http.route", ["/a"]), attrs(http__route={"/ab"}), NO),
    ("str/exact-is-not-substring", sa("http.route", ["/a"]), attrs(http__route={"x/a"}), NO),
    ("str/exact-case-sensitive", sa("env", ["prod"]), attrs(env={"PROD"}), NO),
    ("str/exact-regex-chars-literal", sa("env", [".*"]), attrs(env={"prod"}), NO),
    ("str/exact-regex-chars-literal-hit", sa("env", [".*"]), attrs(env={".*"}), YES),
    ("str/other-key", sa("env", ["prod"]), attrs(region={"prod"}), NO),
    ("str/no-attrs", sa("env", ["prod"]), tr(attrs=None), NO),
    ("str/empty-attrs", sa("env", ["prod"]), tr(attrs={}), NO),
    ("str/empty-set", sa("env", ["prod"]), attrs(env=set()), NO),
    # Resource and span values are merged in the summary: any of them counts
    # (e.g. service.name from the resource, env from one span among many).
    ("str/resource-value", sa("service.name", ["checkout"]),
     attrs(service__name={"frontend", "checkout"}), YES),
    ("str/span-value-among-many", sa("env", ["canary"]), attrs(env={"prod", "canary", "dev"}), YES),
    ("str/many-values-none-match", sa("env", ["canary"]), attrs(env={"prod", "dev"}), NO),
    # Non-string values are ignored, even if their text would match.
    ("str/int-ignored", sa("code", ["1"]), attrs(code={1}), NO),
    ("str/bool-ignored", sa("flag", ["True", "true"]), attrs(flag={True}), NO),
    ("str/float-ignored", sa("x", ["1.5"]), attrs(x={1.5}), NO),
    ("str/bytes-ignored", sa("x", ["ab"]), attrs(x={b"ab"}), NO),
    ("str/regex-non-string-ignored", sa("code", [".*"], regex=True), attrs(code={500, 1.0, False}), NO),
    ("str/non-string-and-string", sa("code", ["500"]), attrs(code={500, "500"}), YES),
    # Regex: as the Collector (Go's MatchString), a pattern matches anywhere
    # in the value unless anchored.
    ("str/regex-full", sa("http.route", ["/api/.*"], regex=True), attrs(http__route={"/api/users"}), YES),
    ("str/regex-search", sa("http.route", ["/api/.*"], regex=True),
     attrs(http__route={"/v1/api/users"}), YES),
    ("str/regex-anchored-not-search", sa("http.route", ["^/api/.*"], regex=True),
     attrs(http__route={"/v1/api/users"}), NO),
    ("str/regex-prefix", sa("http.route", ["/api"], regex=True), attrs(http__route={"/api/users"}), YES),
    ("str/regex-anchored-end", sa("http.route", ["^/api$"], regex=True), attrs(http__route={"/api/users"}), NO),
    ("str/regex-alternation-full", sa("env", ["prod|staging"], regex=True), attrs(env={"staging"}), YES),
    ("str/regex-alternation-partial", sa("env", ["prod|staging"], regex=True), attrs(env={"prod2"}), YES),
    ("str/regex-alternation-anchored", sa("env", ["^(prod|staging)$"], regex=True), attrs(env={"prod2"}), NO),
    ("str/regex-second-pattern", sa("env", ["^dev$", "pr.d"], regex=True), attrs(env={"prod"}), YES),
    ("str/regex-no-match", sa("env", ["dev.*"], regex=True), attrs(env={"prod"}), NO),
    ("str/regex-empty-string", sa("env", [".*"], regex=True), attrs(env={""}), YES),
    ("str/regex-missing-key", sa("env", [".*"], regex=True), attrs(other={"x"}), NO),
    # invert_match: a match vetoes (InvertNotSampled), no match samples.
    ("str/invert-hit", sa("http.route", ["/health"], invert=True), attrs(http__route={"/health"}), INV),
    ("str/invert-miss", sa("http.route", ["/health"], invert=True), attrs(http__route={"/api"}), YES),
    ("str/invert-missing-key", sa("http.route", ["/health"], invert=True), tr(attrs=None), YES),
    ("str/invert-one-of-many", sa("http.route", ["/health"], invert=True),
     attrs(http__route={"/api", "/health"}), INV),
    ("str/invert-non-string", sa("code", ["1"], invert=True), attrs(code={1}), YES),
    ("str/invert-regex-hit", sa("http.route", ["/health.*"], regex=True, invert=True),
     attrs(http__route={"/healthz"}), INV),
    ("str/invert-regex-miss", sa("http.route", ["^/health.*"], regex=True, invert=True),
     attrs(http__route={"/api/health"}), YES),

    # ------------------------------------------------------ numeric_attribute
    ("num/min-inclusive", na("http.status_code", 500, 599), attrs(http__status_code={500}), YES),
    ("num/max-inclusive", na("http.status_code", 500, 599), attrs(http__status_code={599}), YES),
    ("num/inside", na("http.status_code", 500, 599), attrs(http__status_code={503}), YES),
    ("num/below-min", na("http.status_code", 500, 599), attrs(http__status_code={499}), NO),
    ("num/above-max", na("http.status_code", 500, 599), attrs(http__status_code={600}), NO),
    ("num/one-of-many", na("http.status_code", 500, 599), attrs(http__status_code={200, 404, 502}), YES),
    ("num/none-of-many", na("http.status_code", 500, 599), attrs(http__status_code={200, 404}), NO),
    ("num/missing-key", na("http.status_code", 500, 599), tr(attrs=None), NO),
    ("num/string-ignored", na("http.status_code", 500, 599), attrs(http__status_code={"503"}), NO),
    ("num/bool-ignored", na("flag", 0, 5), attrs(flag={True}), NO),
    # An omitted bound is no bound (the Collector's optional min/max); an
    # explicit 0 is a bound like any other.
    ("num/max-omitted-unbounded", na("bytes", 1000), attrs(bytes={10**12}), YES),
    ("num/max-omitted-min-still-applies", na("bytes", 1000), attrs(bytes={999}), NO),
    ("num/min-omitted-unbounded", na("temp", max_value=-1), attrs(temp={-10**9}), YES),
    ("num/min-omitted-max-still-applies", na("temp", max_value=-1), attrs(temp={0}), NO),
    ("num/max-0-is-a-bound", na("delta", -5, 0), attrs(delta={1}), NO),
    ("num/max-0-inclusive", na("delta", -5, 0), attrs(delta={0}), YES),
    ("num/float-value-inside", na("http.status_code", 500, 599), attrs(http__status_code={550.5}), YES),
    ("num/float-value-just-above", na("http.status_code", 500, 599), attrs(http__status_code={599.0001}), NO),
    ("num/float-bounds-min", na("ratio", 0.5, 1.5), attrs(ratio={0.5}), YES),
    ("num/float-bounds-max", na("ratio", 0.5, 1.5), attrs(ratio={1.5}), YES),
    ("num/float-bounds-below", na("ratio", 0.5, 1.5), attrs(ratio={0.49}), NO),
    ("num/float-bounds-above", na("ratio", 0.5, 1.5), attrs(ratio={1.50001}), NO),
    ("num/float-bounds-int-value", na("ratio", 0.5, 1.5), attrs(ratio={1}), YES),
    ("num/negative-range", na("temp", -10, -1), attrs(temp={-5}), YES),
    ("num/negative-range-miss", na("temp", -10, -1), attrs(temp={0}), NO),
    ("num/invert-hit", na("http.status_code", 500, 599, invert=True), attrs(http__status_code={503}), INV),
    ("num/invert-miss", na("http.status_code", 500, 599, invert=True), attrs(http__status_code={200}), YES),
    ("num/invert-missing-key", na("http.status_code", 500, 599, invert=True), tr(attrs=None), YES),

    # ------------------------------------------------------ boolean_attribute
    ("bool/true-hit", ba("debug", True), attrs(debug={True}), YES),
    ("bool/true-miss", ba("debug", True), attrs(debug={False}), NO),
    ("bool/false-hit", ba("debug", False), attrs(debug={False}), YES),
    ("bool/false-miss", ba("debug", False), attrs(debug={True}), NO),
    ("bool/both-values-seen", ba("debug", False), attrs(debug={True, False}), YES),
    ("bool/int-1-not-true", ba("debug", True), attrs(debug={1}), NO),
    ("bool/int-0-not-false", ba("debug", False), attrs(debug={0}), NO),
    ("bool/string-not-bool", ba("debug", True), attrs(debug={"true"}), NO),
    ("bool/missing-key", ba("debug", True), tr(attrs=None), NO),
    ("bool/other-key", ba("debug", True), attrs(verbose={True}), NO),
    ("bool/invert-hit", ba("debug", True, invert=True), attrs(debug={True}), INV),
    ("bool/invert-miss", ba("debug", True, invert=True), attrs(debug={False}), YES),
    ("bool/invert-missing-key", ba("debug", True, invert=True), tr(attrs=None), YES),

    # ------------------------------------------------------------- span_count
    ("spans/below-min", spans(2), tr(span_count=1), NO),
    ("spans/at-min", spans(2), tr(span_count=2), YES),
    ("spans/no-max", spans(2), tr(span_count=1_000_000), YES),
    ("spans/max-0-unbounded", spans(2, 0), tr(span_count=1_000_000), YES),
    ("spans/at-max", spans(2, 5), tr(span_count=5), YES),
    ("spans/above-max", spans(2, 5), tr(span_count=6), NO),
    ("spans/no-block", pol("span_count"), tr(span_count=1), YES),

    # -------------------------------------------------------------------- and
    ("and/all-sample", and_(sc("ERROR"), lat(1000)),
     dur(ms(2000), status_mask=1 << ERROR), YES),
    ("and/one-fails", and_(sc("ERROR"), lat(1000)),
     dur(ms(10), status_mask=1 << ERROR), NO),
    ("and/other-fails", and_(sc("ERROR"), lat(1000)),
     dur(ms(2000), status_mask=1 << OK), NO),
    # The kept probability is the strictest part's: threshold = max of subs.
    ("and/threshold-max-of-subs", and_(prob(50), prob(10)), tr(randomness=MAX_T - 1), (SAMPLED, T10)),
    ("and/threshold-max-order-independent", and_(prob(10), prob(50)), tr(randomness=MAX_T - 1), (SAMPLED, T10)),
    ("and/threshold-with-unconditional", and_(pol("always_sample"), prob(25)), tr(randomness=T25), (SAMPLED, T25)),
    ("and/strict-part-rejects", and_(prob(50), prob(10)), tr(randomness=T10 - 1), NO),
    ("and/invert-veto-is-not-sampled", and_(pol("always_sample"), sa("env", ["prod"], invert=True)),
     attrs(env={"prod"}), NO),
    ("and/invert-no-match-samples", and_(pol("always_sample"), sa("env", ["prod"], invert=True)),
     attrs(env={"dev"}), YES),
    ("and/nested", and_(pol("always_sample"), and_(sc("ERROR"), prob(50))),
     tr(status_mask=1 << ERROR, randomness=T50), (SAMPLED, T50)),
    ("and/nested-miss", and_(pol("always_sample"), and_(sc("ERROR"), prob(50))),
     tr(status_mask=1 << ERROR, randomness=T50 - 1), NO),

    # -------------------------------------------------------------------- not
    ("not/inverts-sampled", not_(sc("ERROR")), status(ERROR), NO),
    ("not/inverts-not-sampled", not_(sc("ERROR")), status(OK), YES),
    ("not/probabilistic-not-sampled-is-th-0", not_(prob(10)), tr(randomness=T10 - 1), YES),
    ("not/probabilistic-sampled", not_(prob(10)), tr(randomness=T10), NO),
    ("not/of-and", not_(and_(sc("ERROR"), lat(1000))), dur(ms(5), status_mask=1 << ERROR), YES),

    # ------------------------------------------------------------------- drop
    ("drop/all-subs-match", drop(sa("http.route", ["/health"])), attrs(http__route={"/health"}), DROP),
    ("drop/no-match", drop(sa("http.route", ["/health"])), attrs(http__route={"/api"}), NO),
    ("drop/every-sub-required", drop(sa("http.route", ["/health"]), sc("OK")),
     Summary(attrs={"http.route": {"/health"}}, status_mask=1 << ERROR), NO),
    ("drop/every-sub-matches", drop(sa("http.route", ["/health"]), sc("OK")),
     Summary(attrs={"http.route": {"/health"}}, status_mask=1 << OK), DROP),
    ("drop/probabilistic-sub", drop(prob(50)), tr(randomness=T50), DROP),
    ("drop/probabilistic-sub-miss", drop(prob(50)), tr(randomness=T50 - 1), NO),
    ("drop/invert-sub-veto-is-no-drop", drop(sa("env", ["prod"], invert=True)), attrs(env={"prod"}), NO),

    # ---------------------------------------------------------- rate_limiting
    # A fresh limiter has measured no traffic: as the Collector's token
    # bucket (starts full at burst_capacity, default 2 x spans_per_second),
    # with th:0. Sequences over time are in test_policies_limits.py.
    ("rate/fits", rl(100), tr(span_count=3), YES),
    ("rate/exactly-default-burst", rl(100), tr(span_count=200), YES),
    ("rate/over-default-burst", rl(100), tr(span_count=201), NO),
    ("rate/explicit-burst-fits", rl(100, 50), tr(span_count=50), YES),
    ("rate/explicit-burst-over", rl(100, 50), tr(span_count=51), NO),
    ("rate/zero-rate", rl(0), tr(span_count=1, randomness=MAX_T - 1), NO),
    ("rate/randomness-irrelevant-under-limit", rl(100), tr(span_count=3, randomness=0), YES),
    # An upstream sampler's th: every arriving trace already passed it, so
    # the kept trace records it (the limiter's fraction composes with it).
    ("rate/upstream-th-recorded", rl(100), state("ot=th:8", randomness=T50), (SAMPLED, T50)),
    ("rate/upstream-th-invalid-ignored", rl(100), state("ot=th:xyz", randomness=0), YES),

    # --------------------------------------------------------- bytes_limiting
    # Size: trace.encoded_size when the summary has it, else 200 B per span.
    ("bytes/encoded_size-fits", bl(10_000), tr(encoded_size=5_000), YES),
    ("bytes/encoded_size-exactly-burst", bl(10_000), tr(encoded_size=20_000), YES),
    ("bytes/encoded_size-over-burst", bl(10_000), tr(encoded_size=20_001), NO),
    ("bytes/encoded_size-not-span-count", bl(10_000), tr(encoded_size=100, span_count=1_000), YES),
    ("bytes/per-span-fallback-fits", bl(10_000), tr(span_count=100), YES),
    ("bytes/per-span-fallback-over", bl(10_000), tr(span_count=101), NO),
    ("bytes/explicit-burst", bl(10_000, 1_000), tr(encoded_size=1_000), YES),
    ("bytes/explicit-burst-over", bl(10_000, 1_000), tr(encoded_size=1_001), NO),
    ("bytes/zero-rate", bl(0), tr(encoded_size=1), NO),

    # ------------------------------------------------------------ trace_state
    # W3C tracestate, exact value match, an invalid tracestate matches nothing.
    ("ts/hit", ts("vendor", ["a", "b"]), state("vendor=a"), YES),
    ("ts/hit-second-value", ts("vendor", ["a", "b"]), state("vendor=b"), YES),
    ("ts/hit-among-members", ts("vendor", ["a"]), state("x=1, vendor=a ,y=2"), YES),
    ("ts/hit-tab-ows", ts("vendor", ["a"]), state("x=1,\tvendor=a"), YES),
    ("ts/empty-members-skipped", ts("vendor", ["a"]), state("x=1,,vendor=a,"), YES),
    ("ts/miss-value", ts("vendor", ["a"]), state("vendor=c"), NO),
    ("ts/value-is-exact-not-prefix", ts("vendor", ["a"]), state("vendor=ab"), NO),
    ("ts/leading-space-is-part-of-value", ts("vendor", ["a"]), state("vendor= a"), NO),
    ("ts/other-key", ts("vendor", ["a"]), state("vendorx=a"), NO),
    ("ts/empty", ts("vendor", ["a"]), state(""), NO),
    ("ts/no-tracestate-attribute", ts("vendor", ["a"]), tr(), NO),
    ("ts/multi-tenant-key", ts("t1@vendor", ["a"]), state("t1@vendor=a"), YES),
    ("ts/ot-entry", ts("ot", ["th:8"]), state("ot=th:8"), YES),
    ("ts/invalid-uppercase-key", ts("vendor", ["a"]), state("Vendor=b,vendor=a"), NO),
    ("ts/invalid-duplicate-key", ts("vendor", ["a"]), state("vendor=a,vendor=b"), NO),
    ("ts/invalid-comma-less-member", ts("vendor", ["a"]), state("vendor=a,junk"), NO),
    ("ts/invalid-33-members", ts("vendor", ["a"]),
     state(",".join([f"k{i}=v" for i in range(32)] + ["vendor=a"])), NO),
    ("ts/32-members-ok", ts("vendor", ["a"]),
     state(",".join([f"k{i}=v" for i in range(31)] + ["vendor=a"])), YES),
    ("ts/empty-configured-value-ignored", ts("vendor", [""]), state("vendor="), NO),
    ("ts/too-long-pair-ignored", ts("k", ["v" * 255]), state("k=" + "v" * 255), NO),
    ("ts/longest-pair-kept", ts("k", ["v" * 254]), state("k=" + "v" * 254), YES),

    # -------------------------------------------------------------- composite
    # Fresh, within one second: errs has 50 of 100 spans/s, rest (no
    # rate_allocation entry) what is left, 50. The first sub-policy that
    # samples decides; over its budget the trace is not sampled, even if a
    # later sub-policy would take it.
    ("comp/error-within-budget", composite(100, ERR_ALWAYS, alloc={"errs": 50}),
     tr(span_count=10, status_mask=ERR_BIT), YES),
    ("comp/error-exactly-budget", composite(100, ERR_ALWAYS, alloc={"errs": 50}),
     tr(span_count=50, status_mask=ERR_BIT), YES),
    ("comp/error-over-budget-no-fallthrough", composite(100, ERR_ALWAYS, alloc={"errs": 50}),
     tr(span_count=51, status_mask=ERR_BIT), NO),
    ("comp/rest-within-remaining", composite(100, ERR_ALWAYS, alloc={"errs": 50}),
     tr(span_count=50), YES),
    ("comp/rest-over-remaining", composite(100, ERR_ALWAYS, alloc={"errs": 50}),
     tr(span_count=51), NO),
    # no rate_allocation entry: an equal share (100 / 2), as the Collector's
    # getRateAllocationMap, not what the entries leave (10)
    ("comp/no-entry-equal-share", composite(100, ERR_ALWAYS, alloc={"errs": 90}),
     tr(span_count=11), YES),
    ("comp/no-entry-equal-share-over", composite(100, ERR_ALWAYS, alloc={"errs": 90}),
     tr(span_count=51), NO),
    ("comp/percent-0-is-equal-share", composite(100, ERR_ALWAYS, alloc={"errs": 0}),
     tr(span_count=50, status_mask=ERR_BIT), YES),
    ("comp/percent-0-is-equal-share-over", composite(100, ERR_ALWAYS, alloc={"errs": 0}),
     tr(span_count=51, status_mask=ERR_BIT), NO),
    ("comp/policy-order-first", composite(100, ERR_ALWAYS, order=["rest", "errs"],
                                          alloc={"errs": 80, "rest": 20}),
     tr(span_count=30, status_mask=ERR_BIT), NO),
    ("comp/policy-order-listed", composite(100, ERR_ALWAYS, order=["errs", "rest"],
                                           alloc={"errs": 80, "rest": 20}),
     tr(span_count=30, status_mask=ERR_BIT), YES),
    ("comp/max-total-caps", composite(20, ERR_ALWAYS, alloc={"errs": 100}),
     tr(span_count=21, status_mask=ERR_BIT), NO),
    ("comp/nothing-matches", composite(100, [named(sc("ERROR"), "e")], alloc={"e": 100}),
     tr(span_count=1), NO),
    # A probabilistic sub-policy that declines falls through to the next.
    ("comp/prob-sub-sampled", composite(100, [named(prob(10), "p"), named(sc("ERROR"), "e")]),
     tr(span_count=1, randomness=T10), (SAMPLED, T10)),
    ("comp/prob-sub-declines-next-takes", composite(100, [named(prob(10), "p"), named(sc("ERROR"), "e")]),
     tr(span_count=1, randomness=0, status_mask=ERR_BIT), YES),
    # Inverted match: the sub-policy does not sample, the next is asked;
    # inverted non-match samples (Collector: InvertSampled counts).
    ("comp/invert-match-skips", composite(100, [named(sa("env", ["prod"], invert=True), "i"),
                                                named(pol("always_sample"), "a")], alloc={"i": 10}),
     Summary(attrs={"env": {"prod"}}, span_count=50), YES),
    ("comp/invert-non-match-takes", composite(100, [named(sa("env", ["prod"], invert=True), "i"),
                                                    named(pol("always_sample"), "a")], alloc={"i": 10}),
     Summary(attrs={"env": {"dev"}}, span_count=50), NO),
    ("comp/nested-and", composite(100, [and_(sc("ERROR"), prob(50), name="errhalf")]),
     tr(span_count=1, status_mask=ERR_BIT, randomness=T50), (SAMPLED, T50)),

    # ----------------------------------------------------------- service_rate
    ("svc/listed-hit", svc_rate({"checkout": {"sampling_percentage": 50}}),
     svcs("checkout", randomness=T50), (SAMPLED, T50)),
    ("svc/listed-miss", svc_rate({"checkout": {"sampling_percentage": 50}}),
     svcs("checkout", randomness=T50 - 1), NO),
    ("svc/unlisted-no-default", svc_rate({"checkout": {"sampling_percentage": 50}}),
     svcs("frontend", randomness=MAX_T - 1), NO),
    ("svc/unlisted-default", svc_rate({"checkout": {"sampling_percentage": 50}},
                                      default={"sampling_percentage": 10}),
     svcs("frontend", randomness=T10), (SAMPLED, T10)),
    ("svc/percentage-defaults-to-100", svc_rate({"checkout": {}}), svcs("checkout"), YES),
    ("svc/0pct", svc_rate({"checkout": {"sampling_percentage": 0}}),
     svcs("checkout", randomness=MAX_T - 1), NO),
    # any_span: every service of the trace applies; the most permissive wins.
    ("svc/any-span-most-permissive", svc_rate({"checkout": {"sampling_percentage": 50}},
                                              default={"sampling_percentage": 10}),
     svcs("frontend", "checkout", randomness=T50), (SAMPLED, T50)),
    ("svc/any-span-stricter-alone", svc_rate({"checkout": {"sampling_percentage": 50}},
                                             default={"sampling_percentage": 10}),
     svcs("frontend", "checkout", randomness=T50 - 1), NO),
    ("svc/any-span-unlisted-default-wins", svc_rate({"checkout": {"sampling_percentage": 10}},
                                                    default={"sampling_percentage": 50}),
     svcs("checkout", "frontend", randomness=T50), (SAMPLED, T50)),
    # root: the root span's service only.
    ("svc/root-only", svc_rate({"checkout": {"sampling_percentage": 50}},
                               default={"sampling_percentage": 10}, match="root"),
     svcs("frontend", "checkout", randomness=T50), NO),
    ("svc/root-only-root-rate", svc_rate({"checkout": {"sampling_percentage": 50}},
                                         default={"sampling_percentage": 10}, match="root"),
     svcs("frontend", "checkout", randomness=T10), (SAMPLED, T10)),
    ("svc/root-listed", svc_rate({"checkout": {"sampling_percentage": 50}}, match="root"),
     svcs("checkout", "frontend", randomness=T50), (SAMPLED, T50)),
    ("svc/root-not-seen-is-unlisted", svc_rate({"checkout": {"sampling_percentage": 50}},
                                               default={"sampling_percentage": 10}, match="root"),
     svcs("checkout", root="", root_seen=False, randomness=T10), (SAMPLED, T10)),
    ("svc/no-services-is-unlisted", svc_rate({}, default={"sampling_percentage": 25}),
     Summary(services=set(), randomness=T25), (SAMPLED, T25)),
    # A spans/s cap: a fresh budget passes what fits its burst (2 x cap).
    ("svc/cap-fits", svc_rate({"checkout": {"spans_per_second": 10}}), svcs("checkout", span_count=20), YES),
    ("svc/cap-over-burst", svc_rate({"checkout": {"spans_per_second": 10}}), svcs("checkout", span_count=21), NO),
    ("svc/cap-over-burst-default-still-keeps",
     svc_rate({"checkout": {"spans_per_second": 10}}, default={"sampling_percentage": 100}),
     svcs("checkout", "frontend", span_count=21), YES),
    ("svc/cap-explicit-burst", svc_rate({"checkout": {"spans_per_second": 10, "burst_capacity": 5}}),
     svcs("checkout", span_count=6), NO),

    # ----------------------------------------------------------- latency_tail
    # A fresh key is in warm-up: kept when duration >= fallback_threshold_ms
    # (default 1000). The running quantile is in test_policies_latency_tail.py.
    ("ltail/warmup-fallback-at", lt(), dur(ms(1000)), YES),
    ("ltail/warmup-fallback-below", lt(), dur(ms(999)), NO),
    ("ltail/warmup-custom-fallback", lt(fallback_threshold_ms=50), dur(ms(60)), YES),
    ("ltail/warmup-custom-fallback-below", lt(fallback_threshold_ms=50), dur(ms(40)), NO),
    ("ltail/no-spans", lt(fallback_threshold_ms=0), tr(span_count=0, min_start=0, max_end=0), NO),
    ("ltail/no-warmup-empty-sketch-keeps-nonzero", lt(warmup_observations=0), dur(ms(1)), YES),
    ("ltail/no-warmup-zero-duration", lt(warmup_observations=0), dur(0), NO),

    # --------------------------------------------------------------- adaptive
    # Before its first adjustment interval the policy has measured nothing
    # and keeps everything (th:0); convergence is in test_policies_adaptive.py.
    ("adaptive/first-interval", adaptive(target_spans_per_second=100), tr(randomness=0), YES),
    ("adaptive/traces-target", adaptive(target_traces_per_second=1, key_fields=["service.name", "http.route"]),
     attrs(http__route={"/a"}), YES),
    ("adaptive/upstream-th", adaptive(target_spans_per_second=100), state("ot=th:c", randomness=T25),
     (SAMPLED, T25)),
    ("adaptive/upstream-th-rejects", adaptive(target_spans_per_second=100), state("ot=th:c", randomness=T25 - 1),
     NO),
]


@pytest.mark.parametrize("cfg,trace,expected", [pytest.param(c, t, e, id=i) for i, c, t, e in ROWS])
def test_policy(cfg, trace, expected):
    p = policies.build(cfg)
    assert p.name == cfg["name"]
    assert p.evaluate(trace) == expected


@pytest.mark.parametrize("cfg,trace,expected", [pytest.param(c, t, e, id=i) for i, c, t, e in ROWS])
def test_policy_built_from_validated_config(cfg, trace, expected):
    """The same rows through config.parse, as the Decider gets them."""
    (pc,) = parse({"sampler": {"policies": [cfg]}}).sampler.policies
    assert policies.build(pc).evaluate(trace) == expected


def test_every_policy_type_has_rows():
    from traceo_sampler.config import POLICY_TYPES
    covered = {c["type"] for _, c, _, _ in ROWS}
    assert covered == set(POLICY_TYPES)


# --------------------------------------------------------- probabilistic extras
@pytest.mark.parametrize("pct,threshold", [(10, T10), (50, T50), (25, T25), (100, 0), (0, MAX_T)])
def test_probabilistic_threshold(pct, threshold):
    assert policies.build(prob(pct)).threshold == threshold


def test_probabilistic_rv_in_tracestate_takes_precedence():
    p = policies.build(prob(10))
    low_id = bytes(16)                       # trace ID randomness 0: never kept at 10 %
    high_id = b"\xff" * 16                   # trace ID randomness max: always kept at 10 %
    # rv above T beats a trace ID whose low 56 bits are 0 ...
    r = tracestate.randomness(low_id, "ot=rv:%014x" % T10)
    assert r == T10
    assert p.evaluate(tr(trace_id=low_id, randomness=r)) == (SAMPLED, T10)
    assert p.evaluate(tr(trace_id=low_id, randomness=tracestate.randomness(low_id, ""))) == NO
    # ... and rv below T beats a trace ID whose low 56 bits are all ones.
    r = tracestate.randomness(high_id, "vendor=x,ot=th:0;rv:%014x" % (T10 - 1))
    assert r == T10 - 1
    assert p.evaluate(tr(trace_id=high_id, randomness=r)) == NO
    assert p.evaluate(tr(trace_id=high_id, randomness=tracestate.randomness(high_id, ""))) == (SAMPLED, T10)


def test_probabilistic_trace_id_randomness_boundary():
    """Without rv: R is the trace ID's last 7 bytes, kept iff R >= T."""
    p = policies.build(prob(10))
    above = bytes(9) + T10.to_bytes(7, "big")
    below = bytes(9) + (T10 - 1).to_bytes(7, "big")
    # The high 9 bytes do not count.
    below_high = b"\xff" * 9 + (T10 - 1).to_bytes(7, "big")
    assert p.evaluate(tr(trace_id=above, randomness=tracestate.randomness(above, ""))) == (SAMPLED, T10)
    assert p.evaluate(tr(trace_id=below, randomness=tracestate.randomness(below, ""))) == NO
    assert p.evaluate(tr(trace_id=below_high, randomness=tracestate.randomness(below_high, ""))) == NO


def test_probabilistic_hash_salt_has_no_effect():
    plain = policies.build(prob(10))
    salted = [policies.build(prob(10, hash_salt=s)) for s in ("a", "another salt", "x" * 64)]
    step = MAX_T // 997
    for r in list(range(0, MAX_T, step)) + [T10 - 1, T10, MAX_T - 1]:
        t = tr(randomness=r)
        want = plain.evaluate(t)
        assert all(s.evaluate(t) == want for s in salted), r
    assert sum(plain.evaluate(tr(randomness=r))[0] == SAMPLED for r in range(0, MAX_T, step)) in range(95, 106)


# ---------------------------------------------------------- attribute keys
def test_attribute_keys():
    d = Decider(parse({"sampler": {"policies": [
        sc("ERROR"),
        named(sa("http.route", ["/x"]), "s"),
        named(and_(na("http.status_code", 500), not_(ba("debug", True))), "a"),
        named(drop(sa("user_agent", ["probe"])), "d"),
        prob(10),
    ]}}).sampler.policies)
    assert d.attribute_keys == frozenset({"http.route", "http.status_code", "debug", "user_agent"})
    assert policies.build(lat(5)).attribute_keys() == set()


# ------------------------------------------------------------------- decider
def decider(*cfgs) -> Decider:
    return Decider(parse({"sampler": {"policies": list(cfgs)}}).sampler.policies)


ERR_SLOW = dur(ms(5000), status_mask=1 << ERROR, attrs={"http.route": {"/health"}}, randomness=MAX_T - 1)
ERR_ONLY = dur(ms(5), status_mask=1 << ERROR, randomness=0)
SLOW_ONLY = dur(ms(5000), status_mask=1 << OK, randomness=0)
BORING = dur(ms(5), status_mask=1 << UNSET, randomness=0)
LUCKY = dur(ms(5), status_mask=1 << UNSET, randomness=MAX_T - 1)

ERRORS = named(sc("ERROR"), "errors")
SLOW = named(lat(1000), "slow")
REST = named(prob(10), "rest")
HALF = named(prob(50), "half")
HEALTH_DROP = drop(sa("http.route", ["/health"]), name="no-health")
NOT_HEALTH = named(sa("http.route", ["/health"], invert=True), "not-health")
ALL = named(pol("always_sample"), "all")

DECIDER_ROWS = [
    ("empty-config", [], LUCKY, DECISION_NOT_SAMPLED),
    ("nothing-samples", [ERRORS, SLOW, REST], BORING, DECISION_NOT_SAMPLED),
    ("errors", [ERRORS, SLOW, REST], ERR_ONLY, Decision(True, "errors", 0)),
    ("slow", [ERRORS, SLOW, REST], SLOW_ONLY, Decision(True, "slow", 0)),
    ("rest-lucky", [ERRORS, SLOW, REST], LUCKY, Decision(True, "rest", T10)),
    # Attribution: the first sampling policy in config order.
    ("attribution-first-in-order", [ERRORS, SLOW, REST], ERR_SLOW, Decision(True, "errors", 0)),
    ("attribution-order-reversed", [SLOW, ERRORS, REST], ERR_SLOW, Decision(True, "slow", 0)),
    ("attribution-skips-non-sampling", [ERRORS, REST, SLOW], SLOW_ONLY, Decision(True, "slow", 0)),
    # Threshold: the smallest of the sampling policies'.
    ("threshold-min-prob-first", [REST, ERRORS], ERR_SLOW, Decision(True, "rest", 0)),
    ("threshold-min-of-probs", [REST, HALF], LUCKY, Decision(True, "rest", T50)),
    ("threshold-min-of-probs-reversed", [HALF, REST], LUCKY, Decision(True, "half", T50)),
    ("threshold-only-sampling-ones-count", [REST, HALF],
     dur(ms(5), randomness=T50), Decision(True, "half", T50)),
    # Drop beats sampled, wherever it sits.
    ("drop-beats-sampled-after", [ERRORS, SLOW, HEALTH_DROP], ERR_SLOW,
     Decision(False, "no-health", MAX_T, dropped=True)),
    ("drop-beats-sampled-before", [HEALTH_DROP, ALL], ERR_SLOW,
     Decision(False, "no-health", MAX_T, dropped=True)),
    ("drop-beats-invert", [NOT_HEALTH, HEALTH_DROP], ERR_SLOW,
     Decision(False, "no-health", MAX_T, dropped=True)),
    ("drop-not-matching", [ERRORS, HEALTH_DROP], ERR_ONLY, Decision(True, "errors", 0)),
    # An inverted match is a plain not-sampled, no veto (the current
    # Collector, its disableinvertdecisions gate being stable).
    ("invert-no-veto-sampled-after", [ALL, ERRORS, NOT_HEALTH], ERR_SLOW,
     Decision(True, ALL["name"], 0)),
    ("invert-no-veto-sampled-before", [NOT_HEALTH, ALL], ERR_SLOW, Decision(True, ALL["name"], 0)),
    ("invert-no-match-samples", [NOT_HEALTH, ERRORS], ERR_ONLY, Decision(True, "not-health", 0)),
    ("invert-no-match-alone", [NOT_HEALTH], BORING, Decision(True, "not-health", 0)),
    ("and-threshold-through-decider", [and_(prob(50), prob(10), name="both"), ERRORS], LUCKY,
     Decision(True, "both", T10)),
    ("not-through-decider", [not_(ERRORS, name="non-errors")], BORING, Decision(True, "non-errors", 0)),
]


@pytest.mark.parametrize("cfgs,trace,expected", [pytest.param(c, t, e, id=i) for i, c, t, e in DECIDER_ROWS])
def test_decider(cfgs, trace, expected):
    got = decider(*cfgs).decide(trace)
    assert got == expected
    assert (got.sampled, got.policy, got.threshold, got.dropped) == (
        expected.sampled, expected.policy, expected.threshold, expected.dropped)


def test_decider_not_sampled_constant():
    assert DECISION_NOT_SAMPLED == Decision(False, "", MAX_T, False)


def test_decider_is_stateless_across_traces():
    d = decider(ERRORS, SLOW, REST)
    seq = [ERR_ONLY, BORING, LUCKY, SLOW_ONLY, BORING]
    first = [d.decide(t) for t in seq]
    second = [d.decide(t) for t in reversed(seq)]
    assert first == list(reversed(second))
    assert [x.policy for x in first] == ["errors", "", "rest", "slow", ""]
