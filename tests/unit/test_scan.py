"""Scanner tests (docs/scan-contract.md), run against both implementations.

The walk is shared with the fused ``TraceBuffer.ingest`` (ext/_walk.pxi), so
section (f) feeds the same generated, truncated, mutated and garbage inputs
to ``ingest`` and checks it reports and raises what the scanner does.

Every test is parametrized over ``impl`` in ("cython", "python"). The compiled
one must import: its tests fail (not skip) when ``traceo_sampler._scan`` is
missing, unless TRACEO_SAMPLER_PURE=1 asks for the pure twin only.

The reference for the differential tests is the protobuf library: the same
bytes are parsed into messages and the expected ScanResult is derived from
those messages (``_model``), then compared field by field.
"""
from __future__ import annotations

import math
import os
import re
import struct
from types import SimpleNamespace

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.proto.common.v1.common_pb2 import (
    AnyValue,
    ArrayValue,
    InstrumentationScope,
    KeyValue,
    KeyValueList,
)
from opentelemetry.proto.resource.v1.resource_pb2 import Resource
from opentelemetry.proto.trace.v1.trace_pb2 import ResourceSpans, ScopeSpans, Span, Status

from conftest import twins
from traceo_sampler import accel
from traceo_sampler import scan as scan_mod

PURE = os.environ.get("TRACEO_SAMPLER_PURE", "") == "1"
# "python", and "cython" unless TRACEO_SAMPLER_PURE=1 (conftest.twins: the
# compiled one must import)
SCANS = {p.id: p.values[0].scan for p in twins("scan", scan=scan_mod.scan_py)}
IMPLS = list(SCANS)
MASK64 = (1 << 64) - 1
SUPPORTED = ("string_value", "bool_value", "int_value", "double_value", "bytes_value")

FAST = settings(
    deadline=None,
    max_examples=int(os.environ.get("TRACEO_HYPOTHESIS_EXAMPLES", "100")),
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)


def get_scan(impl: str):
    return SCANS[impl]


# ---------------------------------------------------------------------------
# raw protobuf encoding helpers
# ---------------------------------------------------------------------------
def uvarint(n: int) -> bytes:
    n &= MASK64
    out = bytearray()
    while True:
        b = n & 0x7F
        n >>= 7
        if n:
            out.append(b | 0x80)
        else:
            out.append(b)
            return bytes(out)


def tag(field: int, wt: int) -> bytes:
    return uvarint(field << 3 | wt)


def f_len(field: int, payload: bytes) -> bytes:
    return tag(field, 2) + uvarint(len(payload)) + payload


def f_varint(field: int, v: int) -> bytes:
    return tag(field, 0) + uvarint(v)


def f_fixed64(field: int, v: int) -> bytes:
    return tag(field, 1) + struct.pack("<Q", v & MASK64)


def f_fixed32(field: int, v: int) -> bytes:
    return tag(field, 5) + struct.pack("<I", v & 0xFFFFFFFF)


def wrap(groups: list[tuple[bytes, bytes, list[bytes]]]) -> bytes:
    """Request from raw parts: [(resource_fields, scope_fields, [span bodies])]."""
    out = b""
    for resource_fields, scope_fields, spans in groups:
        ss = scope_fields + b"".join(f_len(2, s) for s in spans)
        out += f_len(1, resource_fields + f_len(2, ss))
    return out


# ---------------------------------------------------------------------------
# reference model (from protobuf-decoded messages) and comparison
# ---------------------------------------------------------------------------
def norm(v):
    """Type-exact, NaN-tolerant comparable form of a result value."""
    if isinstance(v, dict):
        return ("dict", sorted((k, norm(x)) for k, x in v.items()))
    if isinstance(v, float):
        return ("float", "nan" if math.isnan(v) else struct.pack("<d", v))
    if isinstance(v, (tuple, list)):
        return (type(v).__name__, [norm(x) for x in v])
    return (type(v).__name__, v)


def canon(res) -> tuple:
    return (
        norm(res.groups),
        norm(res.spans),
        norm(res.rejected),
        norm(res.errors),
        norm(res.reasons),
        norm(res.span_bytes),
    )


def outcome(fn, data, keys):
    try:
        return ("ok", canon(fn(data, keys)))
    except ValueError as exc:
        return ("ValueError", str(exc))


def _model_attrs(kvs, keys, resource: bool):
    d = None
    service = ""
    for kv in kvs:
        which = kv.value.WhichOneof("value")
        if resource and kv.key == "service.name" and which == "string_value":
            service = kv.value.string_value
        if keys and kv.key in keys and which in SUPPORTED:
            if d is None:
                d = {}
            d[kv.key] = getattr(kv.value, which)
    return d, service


def _model_problem(sp: Span):
    # content first, in byte order: only links can be bad in a message
    # protobuf serialized (its strings are always UTF-8)
    for link in sp.links:
        if len(link.trace_id) not in (0, 16):
            return "link_id_length", "link trace_id at byte *"
        if len(link.span_id) not in (0, 8):
            return "link_id_length", "link span_id at byte *"
    if len(sp.trace_id) != 16:
        return "trace_id_length", f"trace_id must be 16 bytes, got {len(sp.trace_id)}"
    if sp.trace_id == bytes(16):
        return "trace_id_zero", "trace_id must not be all zero"
    if len(sp.span_id) != 8:
        return "span_id_length", f"span_id must be 8 bytes, got {len(sp.span_id)}"
    if sp.span_id == bytes(8):
        return "span_id_zero", "span_id must not be all zero"
    if len(sp.parent_span_id) not in (0, 8):
        return (
            "parent_span_id_length",
            f"parent_span_id must be 8 bytes or empty, got {len(sp.parent_span_id)}",
        )
    if sp.start_time_unix_nano == 0:
        return "start_time_zero", "start_time_unix_nano must not be 0"
    if sp.end_time_unix_nano == 0:
        return "end_time_zero", "end_time_unix_nano must not be 0"
    if sp.end_time_unix_nano < sp.start_time_unix_nano:
        return "end_before_start", "end_time_unix_nano before start_time_unix_nano"
    return None


def _model(req: ExportTraceServiceRequest, keys: frozenset[str]):
    groups, spans, errors, reasons = [], [], [], []
    index = 0
    for rs in req.resource_spans:
        rattrs, service = _model_attrs(rs.resource.attributes, keys, True)
        for ss in rs.scope_spans:
            g = len(groups)
            groups.append((rs, ss, service, rattrs))
            for sp in ss.spans:
                i, index = index, index + 1
                problem = _model_problem(sp)
                if problem:
                    reasons.append(problem[0])
                    errors.append(f"span {i}: {problem[1]}")
                    continue
                attrs = _model_attrs(sp.attributes, keys, False)[0] if keys else None
                spans.append((i, sp, g, attrs))
    return SimpleNamespace(groups=groups, spans=spans, errors=errors, reasons=reasons)


def check(res, data: bytes, keys: frozenset[str], *, canonical: bool, meta=None):
    """Compare a ScanResult with what protobuf decodes from ``data``.

    canonical: data came from SerializeToString (headers can be predicted
    byte for byte); meta: raw-generated parts ({"headers", "spans"}).
    """
    req = ExportTraceServiceRequest.FromString(data)
    exp = _model(req, keys)

    assert len(res.groups) == len(exp.groups)
    for i, (got, (rs, ss, service, rattrs)) in enumerate(zip(res.groups, exp.groups)):
        assert type(got) is tuple and len(got) == 4
        rh, sh, gservice, grattrs = got
        assert type(rh) is bytes and type(sh) is bytes and type(gservice) is str
        h = ResourceSpans.FromString(rh)
        assert len(h.scope_spans) == 0
        assert h.HasField("resource") == rs.HasField("resource")
        assert h.resource == rs.resource
        assert h.schema_url == rs.schema_url
        s = ScopeSpans.FromString(sh)
        assert len(s.spans) == 0
        assert s.HasField("scope") == ss.HasField("scope")
        assert s.scope == ss.scope
        assert s.schema_url == ss.schema_url
        if canonical:
            rs2 = ResourceSpans()
            rs2.CopyFrom(rs)
            del rs2.scope_spans[:]
            ss2 = ScopeSpans()
            ss2.CopyFrom(ss)
            del ss2.spans[:]
            assert rh == rs2.SerializeToString()
            assert sh == ss2.SerializeToString()
        if meta is not None:
            assert (rh, sh) == meta["headers"][i]
        assert gservice == service
        assert norm(grattrs) == norm(rattrs)
        if grattrs is not None:  # the same dict for every group of a resource
            assert all(g[3] is grattrs for g in res.groups if g[0] is rh)

    assert len(res.spans) == len(exp.spans)
    last_end = 0
    total = 0
    for got, (i, sp, g, attrs) in zip(res.spans, exp.spans):
        assert type(got) is tuple and len(got) == 13
        tid, sid, pid, start, end, code, kind, group, off, ln, ts, name, gattrs = got
        assert (type(tid), type(sid), type(pid)) == (bytes, bytes, bytes)
        assert tid == sp.trace_id and sid == sp.span_id
        assert pid == sp.parent_span_id
        assert norm(start) == norm(sp.start_time_unix_nano)
        assert norm(end) == norm(sp.end_time_unix_nano)
        assert norm(code) == norm(sp.status.code)
        assert norm(kind) == norm(sp.kind)
        assert norm(group) == norm(g)
        assert norm(ts) == norm(sp.trace_state)
        assert norm(name) == norm(sp.name)
        assert norm(gattrs) == norm(attrs)
        assert type(off) is int and type(ln) is int
        assert off >= last_end and off + ln <= len(data)
        last_end = off + ln
        body = data[off : off + ln]
        assert Span.FromString(body) == sp
        if canonical:
            assert ln == sp.ByteSize()
        if meta is not None:
            assert body == meta["spans"][i]
        total += ln
    assert res.rejected == len(exp.errors)
    assert len(res.errors) == len(exp.errors)
    for got_msg, want_msg in zip(res.errors, exp.errors):  # "*": the offset is not modelled
        if want_msg.endswith("*"):
            assert got_msg.startswith(want_msg[:-1])
        else:
            assert got_msg == want_msg
    assert res.reasons == exp.reasons
    assert res.span_bytes == total
    assert_exportable(res, data)


def assert_exportable(res, data: bytes) -> None:
    """What the sampler would export from this result -- every accepted span
    under its resource and scope headers -- is what a strict decoder accepts
    (protobuf's upb: UTF-8, nesting depth, framing)."""
    out = []
    for s in res.spans:
        rh, sh = res.groups[s[7]][0], res.groups[s[7]][1]
        out.append(f_len(1, rh + f_len(2, sh + f_len(2, data[s[8]:s[8] + s[9]]))))
    ExportTraceServiceRequest.FromString(b"".join(out))


def check_both_agree(impl: str, data, keys, res=None):
    """The compiled and the pure scanner give identical results / errors,
    and what they accept is exportable."""
    if res is not None:
        assert_exportable(res, data)
    if impl != "cython":
        got = outcome(scan_mod.scan_py, data, keys)
        if got[0] == "ok":
            assert_exportable(scan_mod.scan_py(data, keys), data)
        return
    mine = outcome(get_scan("cython"), data, keys) if res is None else ("ok", canon(res))
    assert mine == outcome(scan_mod.scan_py, data, keys)
    if mine[0] == "ok" and res is None:
        assert_exportable(scan_mod.scan_py(data, keys), data)


# ---------------------------------------------------------------------------
# strategies: protobuf messages (all built once, at import: building
# strategies inside @composite functions makes generation several times slower)
# ---------------------------------------------------------------------------
KEY_POOL = ["service.name", "http.route", "http.status_code", "error", "", "k", "é🙂", "db"]
u64 = st.integers(0, MASK64)
i64 = st.integers(-(1 << 63), (1 << 63) - 1)
i32 = st.integers(-(1 << 31), (1 << 31) - 1)
u32 = st.integers(0, (1 << 32) - 1)
BOOL = st.booleans()
N2 = st.integers(0, 2)
N3 = st.integers(0, 3)
DELTA = st.integers(0, 10**12)
short_text = st.text(max_size=12)
OPT_TEXT = st.one_of(st.just(""), short_text)
KINDS = st.one_of(st.integers(0, 5), i32)
CODES = st.one_of(st.integers(0, 2), i32)
keys_st = st.one_of(st.sampled_from(KEY_POOL), st.text(max_size=6))
attr_keys_st = st.one_of(
    st.just(frozenset(KEY_POOL)),
    st.frozensets(keys_st, max_size=4),
    st.just(frozenset()),
)
ORDERED = st.integers(0, 4).map(lambda i: i < 4)  # end >= start 4 times in 5


def ids(n: int):
    """Mostly valid IDs, some all-zero, some of a wrong length.

    (Hypothesis likes all-zero bytes, so a valid ID gets one bit forced.)
    """
    valid = st.binary(min_size=n, max_size=n).map(lambda b: b[:-1] + bytes([b[-1] | 1]))
    zero = st.just(bytes(n))
    wrong = st.binary(max_size=n + 4).filter(lambda b: len(b) != n)
    return st.integers(0, 9).flatmap(lambda i: valid if i < 8 else zero if i == 8 else wrong)


IDS16 = ids(16)
IDS8 = ids(8)
PARENT_IDS = st.one_of(st.just(b""), IDS8)

scalar_any = st.one_of(
    short_text.map(lambda s: AnyValue(string_value=s)),
    BOOL.map(lambda b: AnyValue(bool_value=b)),
    i64.map(lambda i: AnyValue(int_value=i)),
    st.floats(allow_nan=True, allow_infinity=True).map(lambda f: AnyValue(double_value=f)),
    st.binary(max_size=8).map(lambda b: AnyValue(bytes_value=b)),
    i32.map(lambda i: AnyValue(string_value_strindex=i)),
    st.just(AnyValue()),
)
any_value = st.one_of(
    scalar_any,
    st.lists(scalar_any, max_size=3).map(lambda v: AnyValue(array_value=ArrayValue(values=v))),
    st.lists(st.builds(KeyValue, key=keys_st, value=scalar_any), max_size=2).map(
        lambda v: AnyValue(kvlist_value=KeyValueList(values=v))
    ),
)
_kv_with_value = st.builds(KeyValue, key=keys_st, value=any_value)
_kv_without_value = st.builds(KeyValue, key=keys_st)
key_value = st.integers(0, 5).flatmap(lambda i: _kv_with_value if i < 5 else _kv_without_value)
attributes = st.lists(key_value, max_size=5)
status_st = st.builds(Status, code=CODES, message=short_text)
event_st = st.builds(Span.Event, time_unix_nano=u64, name=short_text, attributes=attributes)
link_st = st.builds(
    Span.Link, trace_id=IDS16, span_id=IDS8, trace_state=short_text, attributes=attributes
)

EVENT_LISTS = st.lists(event_st, max_size=2)
LINK_LISTS = st.lists(link_st, max_size=2)


@st.composite
def _span(draw) -> Span:
    start = draw(u64)
    end = min(MASK64, start + draw(DELTA)) if draw(ORDERED) else draw(u64)
    sp = Span(
        trace_id=draw(IDS16),
        span_id=draw(IDS8),
        parent_span_id=draw(PARENT_IDS),
        trace_state=draw(OPT_TEXT),
        name=draw(short_text),
        kind=draw(KINDS),
        start_time_unix_nano=start,
        end_time_unix_nano=end,
        attributes=draw(attributes),
        dropped_attributes_count=draw(N3),
        flags=draw(u32),
        events=draw(EVENT_LISTS),
        links=draw(LINK_LISTS),
    )
    if draw(BOOL):
        sp.status.CopyFrom(draw(status_st))
    return sp


spans_st = _span()
scope_st = st.builds(
    InstrumentationScope,
    name=short_text,
    version=short_text,
    attributes=attributes,
    dropped_attributes_count=N3,
)
resource_st = st.builds(
    Resource,
    attributes=st.lists(
        st.one_of(
            key_value,
            short_text.map(
                lambda s: KeyValue(key="service.name", value=AnyValue(string_value=s))
            ),
        ),
        max_size=5,
    ),
    dropped_attributes_count=N3,
)
OPT_RESOURCE = st.one_of(st.none(), resource_st)
OPT_SCOPE = st.one_of(st.none(), scope_st)
SPAN_LISTS = st.lists(spans_st, max_size=4)


@st.composite
def _request(draw) -> ExportTraceServiceRequest:
    req = ExportTraceServiceRequest()
    for _ in range(draw(N3)):
        rs = req.resource_spans.add()
        resource = draw(OPT_RESOURCE)
        if resource is not None:
            rs.resource.CopyFrom(resource)
        rs.schema_url = draw(OPT_TEXT)
        for _ in range(draw(N3)):
            ss = rs.scope_spans.add()
            scope = draw(OPT_SCOPE)
            if scope is not None:
                ss.scope.CopyFrom(scope)
            ss.schema_url = draw(OPT_TEXT)
            ss.spans.extend(draw(SPAN_LISTS))
    return req


requests_st = _request()


# ---------------------------------------------------------------------------
# strategies: raw bytes (field order shuffled, duplicates, unknown fields,
# known fields with the wrong wire type) -- protobuf still parses them
# ---------------------------------------------------------------------------
unknown_field = st.one_of(
    st.tuples(st.integers(17, 5000), u64).map(lambda t: f_varint(*t)),
    st.tuples(st.integers(17, 5000), u64).map(lambda t: f_fixed64(*t)),
    st.tuples(st.integers(17, 5000), u32).map(lambda t: f_fixed32(*t)),
    st.tuples(st.integers(17, 5000), st.binary(max_size=6)).map(lambda t: f_len(*t)),
)


def wrong_wire(fields_by_wt: dict[int, list[int]]):
    """Known field numbers encoded with a wire type protobuf will not accept."""
    options = []
    for wt, numbers in fields_by_wt.items():
        numbers_st = st.sampled_from(numbers)
        if wt != 0:
            options.append(st.tuples(numbers_st, u64).map(lambda t: f_varint(*t)))
        if wt != 1:
            options.append(st.tuples(numbers_st, u64).map(lambda t: f_fixed64(*t)))
        if wt != 5:
            options.append(st.tuples(numbers_st, u32).map(lambda t: f_fixed32(*t)))
        if wt != 2:
            options.append(
                st.tuples(numbers_st, st.binary(max_size=4)).map(lambda t: f_len(*t))
            )
    return st.one_of(options)


def utf8(field: int):
    return short_text.map(lambda s: f_len(field, s.encode()))


raw_any_field = st.one_of(
    utf8(1),
    u64.map(lambda v: f_varint(2, v)),
    u64.map(lambda v: f_varint(3, v)),
    u64.map(lambda v: f_fixed64(4, v)),
    st.lists(scalar_any, max_size=2).map(
        lambda v: f_len(5, ArrayValue(values=v).SerializeToString())
    ),
    st.just(f_len(6, b"")),
    st.binary(max_size=6).map(lambda b: f_len(7, b)),
    u64.map(lambda v: f_varint(8, v)),
    wrong_wire({2: [1, 5, 6, 7], 0: [2, 3, 8], 1: [4]}),
    unknown_field,
)
raw_any = st.lists(raw_any_field, min_size=1, max_size=3).map(b"".join)
RAW_KV_KEY = keys_st.map(lambda k: f_len(1, k.encode()))
RAW_KV_VALUE = raw_any.map(lambda b: f_len(2, b))
RAW_KV_EXTRAS = st.lists(
    st.one_of(
        RAW_KV_KEY,
        RAW_KV_VALUE,
        u64.map(lambda v: f_varint(3, v)),
        wrong_wire({2: [1, 2], 0: [3]}),
        unknown_field,
    ),
    max_size=2,
)


@st.composite
def _raw_key_value(draw) -> bytes:
    fields = [draw(RAW_KV_KEY), draw(RAW_KV_VALUE)] + draw(RAW_KV_EXTRAS)
    return b"".join(draw(st.permutations(fields)))


raw_key_value = _raw_key_value()
raw_status = st.lists(
    st.one_of(
        st.one_of(st.integers(0, 2), u64).map(lambda v: f_varint(3, v)),
        utf8(2),
        wrong_wire({0: [3], 2: [2]}),
        unknown_field,
    ),
    max_size=3,
).map(b"".join)
RAW_SPAN_EXTRAS = st.lists(
    st.one_of(
        IDS16.map(lambda b: f_len(1, b)),
        IDS8.map(lambda b: f_len(2, b)),
        utf8(3),
        PARENT_IDS.map(lambda b: f_len(4, b)),
        utf8(5),
        st.one_of(st.integers(0, 5), u64).map(lambda v: f_varint(6, v)),
        u64.map(lambda v: f_fixed64(7, v)),
        u64.map(lambda v: f_fixed64(8, v)),
        raw_key_value.map(lambda b: f_len(9, b)),
        raw_status.map(lambda b: f_len(15, b)),
        u32.map(lambda v: f_fixed32(16, v)),
        st.integers(0, 5).map(lambda v: f_varint(10, v)),
        st.builds(Span.Event, name=short_text, time_unix_nano=u64).map(
            lambda e: f_len(11, e.SerializeToString())
        ),
        st.builds(Span.Link, trace_id=IDS16, span_id=IDS8).map(
            lambda e: f_len(13, e.SerializeToString())
        ),
        wrong_wire({2: [1, 2, 3, 4, 5, 9, 15], 0: [6, 10], 1: [7, 8], 5: [16]}),
        unknown_field,
    ),
    max_size=10,
)


RAW_ATTR_LISTS = st.lists(raw_key_value.map(lambda b: f_len(9, b)), max_size=4)
RAW_STATUS_LISTS = st.lists(raw_status.map(lambda b: f_len(15, b)), max_size=3)


@st.composite
def _raw_span(draw) -> bytes:
    start = draw(u64)
    end = min(MASK64, start + draw(DELTA)) if draw(ORDERED) else draw(u64)
    fields = [f_len(1, draw(IDS16)), f_len(2, draw(IDS8))]
    if draw(ORDERED):
        fields.append(f_fixed64(7, start))
        fields.append(f_fixed64(8, end))
    fields += draw(RAW_ATTR_LISTS)
    fields += draw(RAW_STATUS_LISTS)  # several: protobuf merges them
    fields += draw(RAW_SPAN_EXTRAS)
    return b"".join(draw(st.permutations(fields)))


raw_span = _raw_span()
raw_resource = st.lists(
    st.one_of(
        raw_key_value.map(lambda b: f_len(1, b)),
        short_text.map(
            lambda s: f_len(
                1, KeyValue(key="service.name", value=AnyValue(string_value=s)).SerializeToString()
            )
        ),
        st.integers(0, 5).map(lambda v: f_varint(2, v)),
        wrong_wire({2: [1], 0: [2]}),
        unknown_field,
    ),
    max_size=5,
).map(b"".join)
RAW_SCOPE = scope_st.map(lambda s: f_len(1, s.SerializeToString()))
RAW_SCHEMA_URL = utf8(3)
RAW_SPAN_LISTS = st.lists(raw_span, max_size=4)
# field 2 with a wrong wire type is not scope_spans / spans: part of the header
RAW_HEADER_EXTRAS = st.lists(st.one_of(unknown_field, wrong_wire({2: [1, 2, 3]})), max_size=2)
RAW_UNKNOWN_LISTS = st.lists(unknown_field, max_size=2)
RESOURCE_COUNT = st.sampled_from([1, 0, 2])


@st.composite
def _raw_request(draw):
    """(data, meta): meta has the expected headers per group and the body of
    every span (valid or not) in request order."""
    headers: list[tuple[bytes, bytes]] = []
    all_spans: list[bytes] = []
    req_fields = []
    for _ in range(draw(N3)):
        rs_fields = []  # (is_scope_spans, encoded, (scope_header, spans))
        for _ in range(draw(N3)):
            ss_fields = []  # (is_span, encoded, span body)
            if draw(BOOL):
                ss_fields.append((False, draw(RAW_SCOPE), None))
            if draw(BOOL):
                ss_fields.append((False, draw(RAW_SCHEMA_URL), None))
            for sp in draw(RAW_SPAN_LISTS):
                ss_fields.append((True, f_len(2, sp), sp))
            for extra in draw(RAW_HEADER_EXTRAS):
                ss_fields.append((False, extra, None))
            ss_fields = draw(st.permutations(ss_fields))
            sh = b"".join(enc for is_span, enc, _ in ss_fields if not is_span)
            sps = [sp for is_span, _, sp in ss_fields if is_span]
            body = b"".join(enc for _, enc, _ in ss_fields)
            rs_fields.append((True, f_len(2, body), (sh, sps)))
        for _ in range(draw(RESOURCE_COUNT)):  # resource may repeat: protobuf merges
            rs_fields.append((False, f_len(1, draw(raw_resource)), None))
        if draw(BOOL):
            rs_fields.append((False, draw(RAW_SCHEMA_URL), None))
        for extra in draw(RAW_HEADER_EXTRAS):
            rs_fields.append((False, extra, None))
        rs_fields = draw(st.permutations(rs_fields))
        rh = b"".join(enc for is_ss, enc, _ in rs_fields if not is_ss)
        for is_ss, _, info in rs_fields:
            if is_ss:
                headers.append((rh, info[0]))
                all_spans.extend(info[1])
        req_fields.append(f_len(1, b"".join(enc for _, enc, _ in rs_fields)))
    for extra in draw(RAW_UNKNOWN_LISTS):  # anywhere, resource_spans keep their order
        req_fields.insert(draw(st.integers(0, len(req_fields))), extra)
    return b"".join(req_fields), {"headers": headers, "spans": all_spans}


raw_request = _raw_request()


# ---------------------------------------------------------------------------
# implementation selection
# ---------------------------------------------------------------------------
def test_selected_implementation():
    if PURE:
        assert scan_mod.IMPLEMENTATION == "python"
        assert scan_mod.scan is scan_mod.scan_py
        return
    assert "scan" not in accel.LOAD_ERRORS, accel.LOAD_ERRORS.get("scan")
    from traceo_sampler import _scan

    assert scan_mod.IMPLEMENTATION == "cython"
    assert scan_mod.scan is _scan.scan


@pytest.mark.parametrize("impl", IMPLS)
def test_empty_request(impl):
    res = get_scan(impl)(b"", frozenset())
    assert (res.groups, res.spans, res.rejected, res.errors, res.reasons, res.span_bytes) == (
        [],
        [],
        0,
        [],
        [],
        0,
    )


# ---------------------------------------------------------------------------
# (a) differential tests against protobuf
# ---------------------------------------------------------------------------
@pytest.mark.parametrize("impl", IMPLS)
@FAST
@given(req=requests_st, keys=attr_keys_st)
def test_differential_messages(impl, req, keys):
    scan = get_scan(impl)
    data = req.SerializeToString()
    res = scan(data, keys)
    check(res, data, keys, canonical=True)
    check_both_agree(impl, data, keys, res)


@pytest.mark.parametrize("impl", IMPLS)
@FAST
@given(generated=raw_request, keys=attr_keys_st)
def test_differential_raw(impl, generated, keys):
    data, meta = generated
    ExportTraceServiceRequest.FromString(data)  # the generator makes valid bytes
    scan = get_scan(impl)
    res = scan(data, keys)
    check(res, data, keys, canonical=False, meta=meta)
    check_both_agree(impl, data, keys, res)


@pytest.mark.parametrize("impl", IMPLS)
@pytest.mark.parametrize("kind", [bytearray, memoryview])
def test_bytes_like_input(impl, kind):
    data = _sample_request().SerializeToString()
    scan = get_scan(impl)
    keys = frozenset({"http.route"})
    assert canon(scan(kind(data), keys)) == canon(scan(data, keys))


# ---------------------------------------------------------------------------
# (b) requests made by the OpenTelemetry SDK
# ---------------------------------------------------------------------------
def _sdk_request() -> ExportTraceServiceRequest:
    from opentelemetry import trace
    from opentelemetry.exporter.otlp.proto.common.trace_encoder import encode_spans
    from opentelemetry.sdk.resources import Resource as SdkResource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
    from opentelemetry.trace import (
        Link,
        NonRecordingSpan,
        SpanContext,
        SpanKind,
        StatusCode,
        TraceFlags,
        TraceState,
    )

    finished = []
    remote = SpanContext(
        trace_id=0x0AF7651916CD43DD8448EB211C80319C,
        span_id=0xB7AD6B7169203331,
        is_remote=True,
        trace_flags=TraceFlags(TraceFlags.SAMPLED),
        trace_state=TraceState([("vendor", "opaque-1"), ("other", "x")]),
    )
    for service, scopes in (("checkout", ("http", "db")), ("payment", ("grpc",)), ("", ("bare",))):
        exporter = InMemorySpanExporter()
        if service:
            resource = SdkResource.create({"service.name": service, "host.name": "h1"})
        else:  # the constructor adds no default service.name
            resource = SdkResource({"host.name": "h2"})
        provider = TracerProvider(resource=resource)
        provider.add_span_processor(SimpleSpanProcessor(exporter))
        for scope in scopes:
            tracer = provider.get_tracer(f"{service}.{scope}", "1.2.3", schema_url="https://s/1")
            ctx = trace.set_span_in_context(NonRecordingSpan(remote))
            with tracer.start_as_current_span(
                "GET /cart", context=ctx, kind=SpanKind.SERVER,
                attributes={"http.route": "/cart", "http.status_code": 500, "retry": True,
                            "ratio": 0.25, "tags": ["a", "b"], "nums": [1, 2]},
                links=[Link(remote, {"link.kind": "follows"})],
            ) as root:
                root.add_event("exception", {"exception.message": "boom"})
                root.set_status(StatusCode.ERROR, "failed")
                for i in range(3):
                    with tracer.start_as_current_span(
                        f"child {i} é", kind=SpanKind.CLIENT,
                        attributes={"db": "pg", "http.status_code": 200 + i},
                    ) as child:
                        child.set_status(StatusCode.OK)
        provider.shutdown()
        finished.extend(exporter.get_finished_spans())
    return encode_spans(finished)


@pytest.mark.parametrize("impl", IMPLS)
@pytest.mark.parametrize(
    "keys",
    [frozenset(), frozenset({"http.route", "http.status_code", "retry", "ratio", "tags", "db"}),
     frozenset({"service.name", "host.name"})],
)
def test_sdk_request(impl, keys):
    req = _sdk_request()
    data = req.SerializeToString()
    res = get_scan(impl)(data, keys)
    check(res, data, keys, canonical=True)
    check_both_agree(impl, data, keys, res)
    assert [g[2] for g in res.groups] == ["checkout", "checkout", "payment", ""]
    assert len(res.spans) == 16 and res.rejected == 0
    roots = [s for s in res.spans if s[2] == bytes.fromhex("b7ad6b7169203331")]
    assert len(roots) == 4
    assert all(s[10] == "vendor=opaque-1,other=x" for s in res.spans)
    if "http.route" in keys:
        assert roots[0][12] == {
            "http.route": "/cart", "http.status_code": 500, "retry": True, "ratio": 0.25
        }  # "tags" is an array value: skipped
        assert roots[0][5] == 2 and roots[0][6] == 2  # STATUS_CODE_ERROR, SPAN_KIND_SERVER
    if "host.name" in keys:
        assert res.groups[0][3] == {"service.name": "checkout", "host.name": "h1"}
        assert res.groups[3][3] == {"host.name": "h2"}
        assert all(s[12] is None for s in res.spans)


# ---------------------------------------------------------------------------
# (c) malformed input
# ---------------------------------------------------------------------------
def _sample_request() -> ExportTraceServiceRequest:
    def kv(k, **v):
        return KeyValue(key=k, value=AnyValue(**v))

    req = ExportTraceServiceRequest()
    for svc in ("a", "b"):
        rs = req.resource_spans.add(
            resource=Resource(attributes=[kv("service.name", string_value=svc), kv("n", int_value=-2)]),
            schema_url="https://x/1",
        )
        ss = rs.scope_spans.add(scope=InstrumentationScope(name="lib", version="1"))
        for i in range(3):
            ss.spans.add(
                trace_id=bytes([i + 1]) * 16,
                span_id=bytes([i + 7]) * 8,
                parent_span_id=b"" if i == 0 else bytes([7]) * 8,
                name=f"op{i}",
                trace_state="k=v",
                kind=i,
                start_time_unix_nano=10,
                end_time_unix_nano=20 + i,
                attributes=[kv("http.route", string_value="/r"), kv("x", double_value=1.5),
                            kv("b", bytes_value=b"\x00\xff"), kv("t", bool_value=True)],
                status=Status(code=i % 3, message="m"),
                events=[Span.Event(name="e", time_unix_nano=15)],
            )
    return req


CUT_KEYS = [frozenset(), frozenset({"http.route", "x", "b", "t", "n", "service.name"})]


@pytest.mark.parametrize("impl", IMPLS)
@pytest.mark.parametrize("keys", CUT_KEYS)
def test_truncated_at_every_cut(impl, keys):
    scan = get_scan(impl)
    for data in (_sample_request().SerializeToString(), _sdk_request().SerializeToString()):
        for cut in range(len(data)):
            got = outcome(scan, data[:cut], keys)  # anything but ValueError propagates
            if got[0] == "ok":
                res = scan(data[:cut], keys)
                for s in res.spans:
                    assert 0 <= s[8] and s[8] + s[9] <= cut
            check_both_agree(impl, data[:cut], keys)


@pytest.mark.parametrize("impl", IMPLS)
@FAST
@given(data=st.binary(max_size=200), keys=st.sampled_from(CUT_KEYS))
def test_garbage(impl, data, keys):
    got = outcome(get_scan(impl), data, keys)
    assert got[0] in ("ok", "ValueError")
    check_both_agree(impl, data, keys)


EDITS = st.lists(
    st.tuples(st.sampled_from(["set", "insert", "delete"]), st.integers(0, 10**6),
              st.integers(0, 255)),
    min_size=1, max_size=4,
)


def _mutated(edits) -> bytes:
    """The sample request with byte edits (set / insert / delete) applied."""
    data = bytearray(_sample_request().SerializeToString())
    for op, pos, byte in edits:
        pos %= len(data) + (op == "insert")
        if op == "set" and pos < len(data):
            data[pos] = byte
        elif op == "insert":
            data.insert(pos, byte)
        elif pos < len(data):
            del data[pos]
    return bytes(data)


@pytest.mark.parametrize("impl", IMPLS)
@FAST
@given(edits=EDITS, keys=st.sampled_from(CUT_KEYS))
def test_mutated_valid_request(impl, edits, keys):
    data = _mutated(edits)
    got = outcome(get_scan(impl), data, keys)
    assert got[0] in ("ok", "ValueError")
    check_both_agree(impl, data, keys)
    if got[0] == "ok":  # whatever the scanner accepted, protobuf must agree on
        try:
            ExportTraceServiceRequest.FromString(data)
        except Exception:
            return  # protobuf looks inside more (events, scope...): fine
        check(get_scan(impl)(data, keys), data, keys, canonical=False)


@pytest.mark.parametrize("impl", IMPLS)
def test_invalid_ids_rejected_valid_kept(impl):
    good_t, good_s = b"\x01" * 16, b"\x02" * 8

    def sp(name, **kw):
        base = dict(trace_id=good_t, span_id=good_s, name=name,
                    start_time_unix_nano=100, end_time_unix_nano=200)
        base.update(kw)
        return Span(**base)

    spans = [
        sp("ok0"),
        sp("bad1", trace_id=b""),
        sp("bad2", span_id=b"\x01\x02\x03\x04"),
        sp("ok3", parent_span_id=b"\x03" * 8),
        sp("bad4", parent_span_id=b"\x01\x02\x03"),
        sp("bad5", end_time_unix_nano=99),
        sp("bad6", trace_id=bytes(16)),
        sp("bad7", span_id=bytes(8)),
        sp("bad8", trace_id=b"\x01" * 17, span_id=b""),  # first failing check wins
        sp("ok9", end_time_unix_nano=100),
    ]
    req = ExportTraceServiceRequest(resource_spans=[
        ResourceSpans(scope_spans=[ScopeSpans(spans=spans[:5]), ScopeSpans(spans=spans[5:])])
    ])
    data = req.SerializeToString()
    res = get_scan(impl)(data, frozenset())
    assert [s[11] for s in res.spans] == ["ok0", "ok3", "ok9"]
    assert [s[7] for s in res.spans] == [0, 0, 1]
    assert res.rejected == 7
    assert res.errors == [
        "span 1: trace_id must be 16 bytes, got 0",
        "span 2: span_id must be 8 bytes, got 4",
        "span 4: parent_span_id must be 8 bytes or empty, got 3",
        "span 5: end_time_unix_nano before start_time_unix_nano",
        "span 6: trace_id must not be all zero",
        "span 7: span_id must not be all zero",
        "span 8: trace_id must be 16 bytes, got 17",
    ]
    assert res.reasons == [
        "trace_id_length", "span_id_length", "parent_span_id_length", "end_before_start",
        "trace_id_zero", "span_id_zero", "trace_id_length",
    ]
    assert res.span_bytes == sum(s[9] for s in res.spans)
    assert res.spans[1][2] == b"\x03" * 8 and res.spans[0][2] == b""
    check(res, data, frozenset(), canonical=True)


SPAN_OK = f_len(1, b"\x01" * 16) + f_len(2, b"\x02" * 8) + f_fixed64(7, 10) + f_fixed64(8, 20)


def _one_span(span_body: bytes, resource: bytes = b"") -> bytes:
    return wrap([(resource, b"", [span_body])])


X = 6 + len(SPAN_OK)  # request, resource_spans, scope_spans headers: 2 bytes each
ERROR_CASES = [
    (b"\x0a\x05abc", "field 1 at byte 0: length 5 runs past the end of its enclosing message (byte 5)"),
    (b"\x0b", "field 1 at byte 0: invalid wire type 3"),
    (b"\x0c", "field 1 at byte 0: invalid wire type 4"),
    (b"\xfe\x01", "field 31 at byte 0: invalid wire type 6"),
    (b"\x0f", "field 1 at byte 0: invalid wire type 7"),
    (b"\x08\x80", "truncated varint at byte 1"),
    (b"\x08", "truncated varint at byte 1"),
    (b"\x80", "truncated varint at byte 0"),
    (b"\x08" + b"\xff" * 10 + b"\x01", "varint longer than 10 bytes at byte 1"),
    (b"\x00", "invalid field number 0 at byte 0"),
    (b"\x80\x00", "invalid field number 0 at byte 0"),
    (b"\x09\x01\x02", "field 1 at byte 0: truncated fixed64 (enclosing message ends at byte 3)"),
    (b"\x0d\x01", "field 1 at byte 0: truncated fixed32 (enclosing message ends at byte 2)"),
    (b"\x0a\x02\x0a\x05", "field 1 at byte 2: length 5 runs past the end of its enclosing message (byte 4)"),
    (f_varint(1 << 29, 1), "field number 536870912 out of range at byte 0"),
    (f_varint(1 << 40, 1), "field number 1099511627776 out of range at byte 0"),
]


@pytest.mark.parametrize("impl", IMPLS)
@pytest.mark.parametrize("data,message", ERROR_CASES)
def test_errors_say_what_and_where(impl, data, message):
    with pytest.raises(ValueError, match="^" + re.escape(message) + "$"):
        get_scan(impl)(data, frozenset())
    with pytest.raises(Exception):
        ExportTraceServiceRequest.FromString(data)  # protobuf rejects it too


def _kv(key: bytes, value: bytes) -> bytes:
    return f_len(1, key) + f_len(2, value)


def _nested(levels: int, kind: str = "kvlist") -> bytes:
    """An AnyValue body nested ``levels`` deep (1: a plain string)."""
    v = f_len(1, b"x")
    for _ in range(levels - 1):
        v = f_len(6, f_len(1, _kv(b"k", v))) if kind == "kvlist" else f_len(5, f_len(1, v))
    return v


OK_TAIL = SPAN_OK + f_len(5, b"fine")
# (span body, (reason, message)): the span is rejected with that message (its
# byte offsets counted from the span's start; "span 1: " prepended) while the
# spans before and after it are kept, and protobuf refuses the same span.
SPAN_ERROR_CASES = [
    # malformed nested messages inside the span
    (SPAN_OK + b"\x2a\x05ab", ("malformed", "field 5 at byte {0}: length 5 runs past the end of its enclosing message (byte {4})")),
    (SPAN_OK + b"\x39\x01", ("malformed", "field 7 at byte {0}: truncated fixed64 (enclosing message ends at byte {2})")),
    (SPAN_OK + b"\x7a\x01\x1b", ("malformed", "field 3 at byte {2}: invalid wire type 3")),
    (SPAN_OK + f_len(11, b"\x12\x05ab"), ("malformed", "field 2 at byte {2}: length 5 runs past the end of its enclosing message (byte {6})")),
    (SPAN_OK + f_len(13, b"\x08\x80"), ("malformed", "truncated varint at byte {3}")),
    (SPAN_OK + f_len(9, _kv(b"k", b"\x0a\x09x")), ("malformed", "field 1 at byte {7}: length 9 runs past the end of its enclosing message (byte {10})")),
    (SPAN_OK + f_len(9, _kv(b"k", f_len(6, b"\x0a\x03\x0a"))), ("malformed", "field 1 at byte {9}: length 3 runs past the end of its enclosing message (byte {12})")),
    (SPAN_OK + f_len(9, _kv(b"k", f_len(5, b"\x0b"))), ("malformed", "field 1 at byte {9}: invalid wire type 3")),
    (SPAN_OK + f_varint(1 << 30, 1), ("malformed", "field number 1073741824 out of range at byte {0}")),
    # strings that are not UTF-8, wherever they are
    (SPAN_OK + b"\x2a\x02\xc3\x28", ("invalid_utf8", "invalid UTF-8 in span name at byte {2}")),
    (SPAN_OK + b"\x1a\x01\xff", ("invalid_utf8", "invalid UTF-8 in span trace_state at byte {2}")),
    (SPAN_OK + b"\x2a\x03\xed\xa0\x80", ("invalid_utf8", "invalid UTF-8 in span name at byte {2}")),  # a surrogate
    (SPAN_OK + b"\x2a\x02\xc0\xaf", ("invalid_utf8", "invalid UTF-8 in span name at byte {2}")),  # overlong
    (SPAN_OK + b"\x2a\x04\xf4\x90\x80\x80", ("invalid_utf8", "invalid UTF-8 in span name at byte {2}")),  # > U+10FFFF
    (SPAN_OK + f_len(9, _kv(b"\xffk", f_len(1, b"v"))), ("invalid_utf8", "invalid UTF-8 in attribute key at byte {4}")),
    (SPAN_OK + f_len(9, _kv(b"k", f_len(1, b"ok\xff"))), ("invalid_utf8", "invalid UTF-8 in attribute value at byte {9}")),
    (SPAN_OK + f_len(9, _kv(b"k", f_len(5, f_len(1, f_len(1, b"\xfe"))))), ("invalid_utf8", "invalid UTF-8 in attribute value at byte {13}")),
    (SPAN_OK + f_len(9, _kv(b"k", f_len(6, f_len(1, _kv(b"\xc3", f_len(1, b"v")))))), ("invalid_utf8", "invalid UTF-8 in attribute key at byte {13}")),
    (SPAN_OK + f_len(11, f_len(2, b"\xff")), ("invalid_utf8", "invalid UTF-8 in event name at byte {4}")),
    (SPAN_OK + f_len(11, f_len(3, _kv(b"k", f_len(1, b"\xff")))), ("invalid_utf8", "invalid UTF-8 in attribute value at byte {11}")),
    (SPAN_OK + f_len(13, f_len(3, b"\xff")), ("invalid_utf8", "invalid UTF-8 in link trace_state at byte {4}")),
    (SPAN_OK + f_len(13, f_len(4, _kv(b"\xff", b""))), ("invalid_utf8", "invalid UTF-8 in attribute key at byte {6}")),
    (SPAN_OK + f_len(15, f_len(2, b"\xff")), ("invalid_utf8", "invalid UTF-8 in status message at byte {4}")),
    # AnyValue nesting
    (SPAN_OK + f_len(9, _kv(b"k", _nested(21))), ("nesting_too_deep", None)),
    (SPAN_OK + f_len(9, _kv(b"k", _nested(21, "array"))), ("nesting_too_deep", None)),
    (SPAN_OK + f_len(11, f_len(3, _kv(b"k", _nested(40)))), ("nesting_too_deep", None)),
    # link IDs a strict decoder (the Collector's pdata) refuses
    (SPAN_OK + f_len(13, f_len(1, b"\x01" * 3)), ("link_id_length", "link trace_id at byte {4} must be 16 bytes or empty, got 3")),
    (SPAN_OK + f_len(13, f_len(2, b"\x01" * 9)), ("link_id_length", "link span_id at byte {4} must be 8 bytes or empty, got 9")),
    # timestamps that mean nothing
    (f_len(1, b"\x01" * 16) + f_len(2, b"\x02" * 8) + f_fixed64(8, 20), ("start_time_zero", "start_time_unix_nano must not be 0")),
    (f_len(1, b"\x01" * 16) + f_len(2, b"\x02" * 8) + f_fixed64(7, 20), ("end_time_zero", "end_time_unix_nano must not be 0")),
    (SPAN_OK + f_fixed64(7, 0), ("start_time_zero", "start_time_unix_nano must not be 0")),
]
# where span 1's body starts in _three_spans(...), and where its extra bytes start
_P1 = 6 + 2 + len(OK_TAIL) + 2


def _three_spans(body: bytes) -> bytes:
    return wrap([(b"", b"", [OK_TAIL, body, OK_TAIL])])


@pytest.mark.parametrize("impl", IMPLS)
@pytest.mark.parametrize("keys", CUT_KEYS)
@pytest.mark.parametrize("body,want", SPAN_ERROR_CASES)
def test_bad_span_rejected_alone(impl, keys, body, want):
    reason, message = want
    assert message is None or len(body) < 128  # one-byte length: _P1 holds
    data = _three_spans(body)
    res = get_scan(impl)(data, keys)
    assert [s[11] for s in res.spans] == ["fine", "fine"]
    assert res.rejected == 1 and res.reasons == [reason]
    if message is not None:
        x = _P1 + (len(SPAN_OK) if body.startswith(SPAN_OK) else 0)
        assert res.errors == ["span 1: " + message.format(*[x + k for k in range(14)])]
    else:
        assert re.fullmatch(r"span 1: attribute value at byte \d+ nested deeper than 20 levels",
                            res.errors[0])
    assert res.span_bytes == 2 * len(OK_TAIL)
    check_both_agree(impl, data, keys, res)
    if reason in ("malformed", "invalid_utf8"):  # (the others are our bounds)
        with pytest.raises(Exception):  # protobuf refuses that span too
            Span.FromString(body)


def test_nesting_bound_inside_what_protobuf_accepts():
    # the deepest value we accept, in a link (the deepest place), still
    # parses; the bound is well inside upb's 100-message limit
    body = SPAN_OK + f_len(13, f_len(4, _kv(b"k", _nested(20))))
    data = _three_spans(body)
    assert len(scan_mod.scan_py(data, frozenset()).spans) == 3
    ExportTraceServiceRequest.FromString(data)
    with pytest.raises(Exception):
        ExportTraceServiceRequest.FromString(
            _three_spans(SPAN_OK + f_len(13, f_len(4, _kv(b"k", _nested(40))))))


RESOURCE_SCOPE_CASES = [
    # (resource fields, scope_spans header fields, reason, message after "span N: ")
    (f_len(1, _kv(b"service.name", f_len(1, b"\xff"))), b"", "invalid_utf8",
     "resource: invalid UTF-8 in attribute value at byte {25}"),
    (f_len(1, _kv(b"host\xff", f_len(1, b"h"))), b"", "invalid_utf8",
     "resource: invalid UTF-8 in attribute key at byte {8}"),
    (f_len(3, f_len(2, b"\xff")), b"", "invalid_utf8",
     "resource: invalid UTF-8 in entity_ref at byte {8}"),
    (f_len(1, _kv(b"k", _nested(25))), b"", "nesting_too_deep", None),
    (f_len(1, _kv(b"k", b"\x0a\x07")), b"", "malformed", None),
    (b"", f_len(1, f_len(1, b"\xfe")), "invalid_utf8", None),
    (b"", f_len(1, f_len(2, b"1\xfe")), "invalid_utf8", None),
    (b"", f_len(1, f_len(3, _kv(b"\xfe", b""))), "invalid_utf8", None),
    (b"", f_len(3, b"\xfe"), "invalid_utf8", None),
]


@pytest.mark.parametrize("impl", IMPLS)
@pytest.mark.parametrize("keys", CUT_KEYS)
@pytest.mark.parametrize("resource,scope,reason,message", RESOURCE_SCOPE_CASES)
def test_bad_resource_or_scope_rejects_its_spans(impl, keys, resource, scope, reason, message):
    good = (f_len(1, f_len(1, _kv(b"service.name", f_len(1, b"ok")))), b"", [OK_TAIL])
    bad_res = f_len(1, resource) if resource else b""
    for scope_last in (False, True):  # the scope may come after the spans
        spans_enc = f_len(2, OK_TAIL) * 2
        ss = spans_enc + scope if scope_last else scope + spans_enc
        data = wrap([good]) + f_len(1, bad_res + f_len(2, ss)) + wrap([good])
        res = get_scan(impl)(data, keys)
        assert len(res.spans) == 2 and res.rejected == 2
        assert [s[7] for s in res.spans] == [0, 2]
        assert res.reasons == [reason, reason]
        what = "resource: " if resource else "scope: "
        assert [e.split(": ", 1)[0] for e in res.errors] == ["span 1", "span 2"]
        assert all(e.split(": ", 1)[1].startswith(what) for e in res.errors)
        if message is not None:  # offsets counted from the bad ResourceSpans
            lead = len(wrap([good]))
            assert res.errors[0] == "span 1: " + message.format(*[lead + k for k in range(26)])
        check_both_agree(impl, data, keys, res)


@pytest.mark.parametrize("impl", IMPLS)
@pytest.mark.parametrize("keys", CUT_KEYS)
def test_repeated_resource_and_scope_headers_read_as_the_first(impl, keys):
    """A request (and a hand-off frame, the parts of several requests)
    repeats a few resource and scope headers across many groups; the
    compiled walk remembers the good ones and reuses them: every group
    still reads as if walked alone, a bad header repeated is rejected
    again with its own offsets, and a header in pieces (schema_url after
    the scope_spans) is compared piece by piece."""
    res_a = f_len(1, f_len(1, _kv(b"service.name", f_len(1, b"a")))
                  + f_len(1, _kv(b"http.route", f_len(1, b"/r"))))
    res_b = f_len(1, f_len(1, _kv(b"service.name", f_len(1, b"b"))))
    bad_res = f_len(1, f_len(1, _kv(b"service.name", f_len(1, b"\xfe"))))
    scope = f_len(1, f_len(1, b"lib"))
    bad_scope = f_len(1, f_len(1, b"\xfe"))
    schema = f_len(3, b"https://opentelemetry.io/schemas/1.21.0")

    def rs(resource, scope_fields, tail=b""):
        return f_len(1, resource + f_len(2, scope_fields + f_len(2, OK_TAIL)) + tail)

    data = b"".join([
        rs(res_a, scope), rs(res_b, scope), rs(res_a, scope), rs(bad_res, scope),
        rs(res_a, bad_scope), rs(bad_res, scope), rs(res_a, scope, schema),
        rs(res_a, scope, schema), rs(res_a, scope + b""), rs(res_a, bad_scope)])
    res = get_scan(impl)(data, keys)
    assert [g[2] for g in res.groups] == ["a", "b", "a", "", "a", "", "a", "a", "a", "a"]
    assert res.groups[6][0] == res.groups[7][0] == res_a + schema
    assert res.groups[6][0] != res.groups[0][0] == res_a
    assert [s[7] for s in res.spans] == [0, 1, 2, 6, 7, 8]
    assert res.reasons == ["invalid_utf8"] * 4 and res.rejected == 4
    # each bad one with its own byte offsets
    assert len(set(res.errors)) == 4
    check_both_agree(impl, data, keys, res)
    want = {"a": {k: v for k, v in {"http.route": "/r", "service.name": "a"}.items() if k in keys},
            "b": {k: v for k, v in {"service.name": "b"}.items() if k in keys}}
    for sp in res.spans:
        g = res.groups[sp[7]]
        assert g[3] == (want[g[2]] or None)


@pytest.mark.parametrize("impl", IMPLS)
def test_unknown_fields_and_wrong_wire_types_are_skipped(impl):
    body = (
        SPAN_OK
        + f_varint(5, 7)  # name as varint: skipped (protobuf: unknown field)
        + f_len(7, b"abcdefgh")  # start time as bytes: skipped
        + f_fixed64(8, 50)
        + f_varint(999, 1)
        + f_len(1000, b"\x0b\x0c")  # unknown: content never looked at
        + f_fixed32(1001, 3)
        + f_fixed64(1002, 4)
    )
    data = _one_span(body) + f_varint(77, 1)
    res = get_scan(impl)(data, frozenset())
    (s,) = res.spans
    assert s[11] == "" and s[3] == 10 and s[4] == 50
    check(res, data, frozenset(), canonical=False)


@pytest.mark.parametrize("impl", IMPLS)
def test_attribute_values(impl):
    def kv(k, v: bytes):
        return f_len(9, f_len(1, k.encode()) + f_len(2, v))

    body = SPAN_OK + b"".join([
        kv("s", f_len(1, "ünï".encode())),
        kv("b", f_varint(2, 2)),
        kv("i", f_varint(3, (1 << 64) - 5)),
        kv("d", f_fixed64(4, struct.unpack("<Q", struct.pack("<d", -2.5))[0])),
        kv("y", f_len(7, b"\x00\x01")),
        kv("arr", f_len(5, b"")),
        kv("kvl", f_len(6, b"")),
        kv("idx", f_varint(8, 3)),
        f_len(9, f_len(1, b"none")),
        kv("dup", f_len(1, b"first")),
        kv("dup", f_len(1, b"second")),
        kv("keep", f_varint(3, 1)),
        kv("keep", f_len(5, b"")),  # unsupported kind: the earlier value stays
        f_len(9, f_len(1, b"merged2") + f_len(2, f_len(1, b"x")) + f_len(2, f_varint(3, 9))),
    ])
    keys = frozenset({"s", "b", "i", "d", "y", "arr", "kvl", "idx", "none", "dup", "keep",
                      "merged", "merged2", "absent"})
    data = _one_span(body)
    res = get_scan(impl)(data, keys)
    assert norm(res.spans[0][12]) == norm({
        "s": "ünï", "b": True, "i": -5, "d": -2.5, "y": b"\x00\x01", "dup": "second",
        "keep": 1, "merged2": 9,
    })
    check(res, data, keys, canonical=False)
    assert get_scan(impl)(data, frozenset({"absent"})).spans[0][12] is None


@pytest.mark.parametrize("impl", IMPLS)
def test_service_name_always_extracted(impl):
    def rkv(k, v: bytes):
        return f_len(1, f_len(1, k) + f_len(2, v))

    scan = get_scan(impl)
    cases = [
        (b"", ""),
        (rkv(b"service.name", f_len(1, b"svc")), "svc"),
        (rkv(b"service.name", f_len(1, b"one")) + rkv(b"service.name", f_len(1, b"two")), "two"),
        (rkv(b"service.name", f_len(1, b"one")) + rkv(b"service.name", f_varint(3, 5)), "one"),
        (rkv(b"service.name", f_varint(3, 5)), ""),
        (rkv(b"service.namex", f_len(1, b"no")), ""),
    ]
    for attrs, service in cases:
        # Resource given twice: protobuf merges, so do the scanners.
        resource = f_len(1, attrs) + f_len(1, b"")
        data = _one_span(SPAN_OK, resource)
        for keys in (frozenset(), frozenset({"service.name"}), frozenset({"other"})):
            res = scan(data, keys)
            assert res.groups[0][2] == service
            check(res, data, keys, canonical=False)


@pytest.mark.parametrize("impl", IMPLS)
def test_repeated_singular_messages_merge(impl):
    kv = f_len(9, f_len(1, b"k") + f_len(2, f_varint(3, 7)) + f_len(2, f_len(99, b"")))
    body = (
        SPAN_OK
        + f_len(15, f_varint(3, 2))  # status code ERROR
        + f_len(15, f_len(2, b"message only"))  # merged: the code stays ERROR
        + kv  # value given twice: the second has no oneof field, int_value stays
    )
    data = _one_span(body)
    res = get_scan(impl)(data, frozenset({"k"}))
    assert res.spans[0][5] == 2
    assert res.spans[0][12] == {"k": 7}
    check(res, data, frozenset({"k"}), canonical=False)


# ---------------------------------------------------------------------------
# (d) last occurrence wins: an appended trace_state
# ---------------------------------------------------------------------------
@pytest.mark.parametrize("impl", IMPLS)
def test_appended_trace_state_wins(impl):
    scan = get_scan(impl)
    req = _sdk_request()
    data = req.SerializeToString()
    res = scan(data, frozenset())
    bodies = [data[s[8] : s[8] + s[9]] for s in res.spans]
    assert all(s[10] == "vendor=opaque-1,other=x" for s in res.spans)
    appended = [b + f_len(3, b"sampler=p:0.25") for b in bodies]
    data2 = wrap([(b"", b"", appended)])
    res2 = scan(data2, frozenset())
    assert [s[10] for s in res2.spans] == ["sampler=p:0.25"] * len(bodies)
    assert [data2[s[8] : s[8] + s[9]] for s in res2.spans] == appended
    check(res2, data2, frozenset(), canonical=False)
    # and other singular fields: last one wins too
    body = bodies[0] + f_len(5, b"renamed") + f_varint(6, 4) + f_len(15, f_varint(3, 1))
    res3 = scan(wrap([(b"", b"", [body])]), frozenset())
    assert res3.spans[0][11] == "renamed" and res3.spans[0][6] == 4 and res3.spans[0][5] == 1


@pytest.mark.parametrize("impl", IMPLS)
@FAST
@given(span=spans_st, value=short_text)
def test_appended_trace_state_wins_any_span(impl, span, value):
    span.trace_id, span.span_id, span.parent_span_id = b"\x01" * 16, b"\x02" * 8, b""
    span.start_time_unix_nano = span.start_time_unix_nano or 1
    span.end_time_unix_nano = span.start_time_unix_nano
    del span.links[:]  # their IDs may be of a wrong length
    assert _model_problem(span) is None
    body = span.SerializeToString() + f_len(3, value.encode())
    data = wrap([(b"", b"", [body])])
    res = get_scan(impl)(data, frozenset())
    assert res.spans[0][10] == value
    assert data[res.spans[0][8] : res.spans[0][8] + res.spans[0][9]] == body


# ---------------------------------------------------------------------------
# (f) the fused TraceBuffer.ingest walks like the scanner
# ---------------------------------------------------------------------------
def get_buffer(impl: str):
    if impl == "python":
        from traceo_sampler.buffer import TraceBufferPy as cls
    else:
        if PURE:
            pytest.skip("TRACEO_SAMPLER_PURE=1: compiled buffer not wanted")
        try:
            from traceo_sampler._buffer import TraceBuffer as cls
        except ImportError as exc:
            pytest.fail(f"traceo_sampler._buffer does not import ({exc})")
    return cls(decision_wait=30.0, root_wait=2.0, idle_timeout=5.0,
               max_spans_per_trace=1 << 30, memory_limit=1 << 40,
               cache_sampled=0, cache_not_sampled=0)


def check_ingest(impl: str, data: bytes, keys) -> None:
    """``ingest`` raises what ``scan_py`` raises (and then buffers nothing),
    otherwise reports the scanner's figures and buffers every valid span."""
    want = outcome(scan_mod.scan_py, data, keys)
    buf = get_buffer(impl)
    try:
        res = buf.ingest(data, keys, 0.0)
    except ValueError as exc:
        assert want == ("ValueError", str(exc))
        assert (buf.ntraces, buf.nspans, buf.nbytes, buf.ngroups) == (0, 0, 0, 0)
        return
    assert want[0] == "ok"
    sc = scan_mod.scan_py(data, keys)
    assert norm([res.groups, res.rejected, res.errors, res.reasons, res.span_bytes]) == norm(
        [sc.groups, sc.rejected, sc.errors, sc.reasons, sc.span_bytes])
    assert res.accepted == len(sc.spans) == res.spans == buf.nspans
    got = sorted((tid, bytes(t.data[off:off + ln]), ts)
                 for tid, t in buf.traces.items() for _g, off, ln, ts in t.entries())
    assert got == sorted((s[0], data[s[8]:s[8] + s[9]], s[10]) for s in sc.spans)


@pytest.mark.parametrize("impl", IMPLS)
@FAST
@given(req=requests_st, keys=attr_keys_st)
def test_ingest_differential_messages(impl, req, keys):
    check_ingest(impl, req.SerializeToString(), keys)


@pytest.mark.parametrize("impl", IMPLS)
@FAST
@given(generated=raw_request, keys=attr_keys_st)
def test_ingest_differential_raw(impl, generated, keys):
    check_ingest(impl, generated[0], keys)


@pytest.mark.parametrize("impl", IMPLS)
@pytest.mark.parametrize("keys", CUT_KEYS)
def test_ingest_truncated_at_every_cut(impl, keys):
    for data in (_sample_request().SerializeToString(), _sdk_request().SerializeToString()):
        for cut in range(len(data)):
            check_ingest(impl, data[:cut], keys)


@pytest.mark.parametrize("impl", IMPLS)
@FAST
@given(data=st.binary(max_size=200), keys=st.sampled_from(CUT_KEYS))
def test_ingest_garbage(impl, data, keys):
    check_ingest(impl, data, keys)


@pytest.mark.parametrize("impl", IMPLS)
@FAST
@given(edits=EDITS, keys=st.sampled_from(CUT_KEYS))
def test_ingest_mutated_valid_request(impl, edits, keys):
    check_ingest(impl, _mutated(edits), keys)


BAD_UTF8 = [b"\xff", b"ok\xc3(", b"\xed\xa0\x80", b"\xf4\x90\x80\x80", b"\xc0\xaf"]
SOME_UTF8 = [b"", b"op", "é名🙂".encode()]


@pytest.mark.parametrize("impl", IMPLS)
def test_ingest_invalid_utf8(impl):
    # trace_state and name are checked (not decoded) by ingest for every
    # valid span, in the scanner's order; invalid spans are not looked at
    for ts in SOME_UTF8 + BAD_UTF8[:2]:
        for name in SOME_UTF8 + BAD_UTF8:
            for parent in (b"", b"\x03" * 8):
                for end in (2, 0):   # 0: end before start, an invalid span
                    span = (SPAN_OK + f_len(3, ts) + f_len(4, parent) + f_len(5, name)
                            + f_fixed64(7, 1) + f_fixed64(8, end))
                    data = wrap([(b"", b"", [SPAN_OK, span, SPAN_OK])])
                    check_ingest(impl, data, frozenset())
    for key in SOME_UTF8 + BAD_UTF8:
        for value in SOME_UTF8 + BAD_UTF8:
            kv = f_len(9, f_len(1, key) + f_len(2, f_len(1, value)))
            data = wrap([(b"", b"", [SPAN_OK + kv])])
            for keys in CUT_KEYS + [frozenset({key.decode("utf-8", "replace")})]:
                check_ingest(impl, data, keys)
