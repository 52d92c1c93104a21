"""Fuzz target of the request walk and the fused ingest (issue 9, item 10).

One property over structure-aware inputs -- valid requests with every kind
of nested content (events, links, nested AnyValue), then mutated at the
byte level (bytes set, inserted, deleted, bad UTF-8 spliced in, values
nested deep) -- checked on all four implementations of the walk:

* the compiled scanner, the pure scanner, the compiled ``TraceBuffer.ingest``
  and the pure one agree exactly (same spans, groups, rejections, messages,
  or the same ``ValueError`` message), and nothing else is ever raised;
* whatever is accepted, re-encoded as the sampler exports it (each span
  under its resource and scope headers), parses with protobuf's strict
  decoder (upb: UTF-8, framing, nesting depth).

The test command runs a short run (``TRACEO_FUZZ_EXAMPLES``, default 150
inputs). A longer one:

    TRACEO_FUZZ_EXAMPLES=200000 PYTHONPATH=src .venv/bin/python -m pytest \\
        -p no:cacheprovider -q tests/unit/test_fuzz_walk.py

(hypothesis keeps the failing inputs it found in its example database
when one is configured; a failure prints the shrunk input to replay.)
"""
from __future__ import annotations

import os

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

from test_scan import (
    PURE,
    _nested,
    assert_exportable,
    attr_keys_st,
    canon,
    f_len,
    get_buffer,
    get_scan,
    norm,
    outcome,
    raw_request,
    requests_st,
)
from traceo_sampler import scan as scan_mod

EXAMPLES = int(os.environ.get("TRACEO_FUZZ_EXAMPLES", "150"))
FUZZ = settings(
    deadline=None, max_examples=EXAMPLES, database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large,
                           HealthCheck.filter_too_much],
)

BAD_BYTES = [b"\xff", b"\xc3\x28", b"\xed\xa0\x80", b"\xf4\x90\x80\x80", b"\xc0\xaf", b"\xe2\x82",
             b"\x0b", b"\x0c", b"\x80" * 11, b"\x00"]
EDIT = st.one_of(
    st.tuples(st.just("set"), st.integers(0, 1 << 20), st.integers(0, 255)),
    st.tuples(st.just("insert"), st.integers(0, 1 << 20), st.integers(0, 255)),
    st.tuples(st.just("delete"), st.integers(0, 1 << 20), st.just(0)),
    st.tuples(st.just("splice"), st.integers(0, 1 << 20), st.integers(0, len(BAD_BYTES) - 1)),
    st.tuples(st.just("overwrite"), st.integers(0, 1 << 20), st.integers(0, len(BAD_BYTES) - 1)),
)
EDITS = st.lists(EDIT, max_size=4)
BASE = st.one_of(
    requests_st.map(lambda r: r.SerializeToString()),
    raw_request.map(lambda g: g[0]),
    # a span with a value nested around the bound, in an attribute or a link
    st.tuples(st.integers(15, 25), st.booleans()).map(lambda t: _deep_request(*t)),
    st.binary(max_size=64),
)


def _deep_request(levels: int, in_link: bool) -> bytes:
    from test_scan import SPAN_OK, _kv, wrap
    attr = _kv(b"k", _nested(levels))
    body = SPAN_OK + (f_len(13, f_len(4, attr)) if in_link else f_len(9, attr))
    return wrap([(b"", b"", [SPAN_OK, body])])


def mutate(data: bytes, edits) -> bytes:
    b = bytearray(data)
    for op, pos, arg in edits:
        pos %= len(b) + 1
        if op == "set" and pos < len(b):
            b[pos] = arg
        elif op == "insert":
            b.insert(pos, arg)
        elif op == "delete" and pos < len(b):
            del b[pos]
        elif op == "splice":
            b[pos:pos] = BAD_BYTES[arg]
        elif op == "overwrite":
            b[pos:pos + len(BAD_BYTES[arg])] = BAD_BYTES[arg]
    return bytes(b)


def _ingest_outcome(impl: str, data: bytes, keys):
    buf = get_buffer(impl)
    try:
        res = buf.ingest(data, keys, 0.0)
    except ValueError as exc:
        assert (buf.ntraces, buf.nspans, buf.nbytes) == (0, 0, 0)
        return ("ValueError", str(exc))
    spans = sorted((tid, bytes(t.data[off:off + ln]), ts)
                   for tid, t in buf.traces.items() for _g, off, ln, ts in t.entries())
    return ("ok", norm([res.groups, res.accepted, res.rejected, res.errors, res.reasons,
                        res.span_bytes]), spans)


def check_walk(data: bytes, keys) -> None:
    """The fuzz property (see the module docstring)."""
    impls = ["python"] if PURE else ["python", "cython"]
    scans = {i: outcome(get_scan(i), data, keys) for i in impls}
    assert len(set(map(repr, scans.values()))) == 1, scans
    ingests = {i: _ingest_outcome(i, data, keys) for i in impls}
    assert len(set(map(repr, ingests.values()))) == 1, ingests
    got = scans["python"]
    assert got[0] == ingests["python"][0]
    if got[0] == "ok":
        res = scan_mod.scan_py(data, keys)
        assert_exportable(res, data)
        want = sorted((s[0], data[s[8]:s[8] + s[9]], s[10]) for s in res.spans)
        assert ingests["python"][2] == want
        assert ingests["python"][1] == norm([res.groups, len(res.spans), res.rejected,
                                             res.errors, res.reasons, res.span_bytes])
        assert canon(res) == got[1]


@FUZZ
@given(base=BASE, edits=EDITS, keys=attr_keys_st)
def test_fuzz_walk_and_ingest(base, edits, keys):
    check_walk(mutate(base, edits), keys)


@pytest.mark.parametrize("levels", [19, 20, 21, 32, 33, 200])
@pytest.mark.parametrize("in_link", [False, True])
def test_nesting_around_the_bound(levels, in_link):
    data = _deep_request(levels, in_link)
    check_walk(data, frozenset())
    res = scan_mod.scan_py(data, frozenset())
    assert len(res.spans) == (2 if levels <= 20 else 1)
    if levels <= 20:
        ExportTraceServiceRequest.FromString(data)
