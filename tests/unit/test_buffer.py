"""TraceBuffer: both implementations, driven by a controllable clock.

Every completion trigger of docs/design.md §2, memory pressure, the decision
cache and late spans, and the re-encoding of kept spans (byte-identical
apart from the appended tracestate) -- each through both ways in (``add`` of
a scan result, and the fused ``ingest``); the span consistency checks; and a
differential test feeding one random request stream to the pure and the
compiled buffer."""
import os
import random

import pytest
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.proto.trace.v1.trace_pb2 import Span

from conftest import PURE, twins
from support_otlp import make_request, trace
from traceo_sampler.buffer import ENTRY_HDR, TRACE_OVERHEAD, TraceBufferPy, encode_late
from traceo_sampler.scan import scan_py


class Impl:
    """One buffer implementation and one way of putting a request in."""

    def __init__(self, cls, scan, mode):
        self.cls = cls
        self.scan = scan
        self.mode = mode

    def put(self, buf, raw, now, keys=frozenset()):
        if self.mode == "ingest":
            return buf.ingest(raw, keys, now)
        return buf.add(self.scan(raw, keys), raw, now)


# python-add, python-ingest, then cython-add, cython-ingest (conftest.twins)
BY_ID = {f"{b.id}-{mode}": Impl(b.values[0].TraceBuffer, s.values[0].scan, mode)
         for b, s in zip(twins("buffer", TraceBuffer=TraceBufferPy), twins("scan", scan=scan_py))
         for mode in ("add", "ingest")}
IMPLS = [pytest.param(impl, id=name) for name, impl in BY_ID.items()]
PY, PY_ADD = BY_ID["python-ingest"], BY_ID["python-add"]
CY, CY_ADD = BY_ID.get("cython-ingest"), BY_ID.get("cython-add")


@pytest.fixture(params=IMPLS)
def impl(request):
    return request.param


def mkbuf(impl, **kw):
    args = dict(decision_wait=30.0, root_wait=2.0, idle_timeout=5.0, max_spans_per_trace=10_000,
                memory_limit=1 << 30, cache_sampled=1000, cache_not_sampled=1000)
    args.update(kw)
    return impl.cls(**args)


def add(impl, buf, raw, now, keys=frozenset()):
    return impl.put(buf, raw, now, keys)


def decode(blob):
    return ExportTraceServiceRequest.FromString(blob)


def test_root_wait_trigger(impl):
    buf = mkbuf(impl)
    add(impl, buf, make_request([trace(3)]), 0.0)
    assert buf.ntraces == 1 and buf.nspans == 3
    assert buf.due(1.9) == []
    due = buf.due(2.0)
    assert [trig for _, trig in due] == ["root"]
    assert buf.ntraces == 0 and buf.nspans == 0 and buf.nbytes == 0


def test_idle_trigger_moves_with_new_spans(impl):
    buf = mkbuf(impl)
    t = trace(4, root=False)
    add(impl, buf, make_request([t[:2]]), 0.0)
    add(impl, buf, make_request([t[2:]]), 4.0)     # resets the idle clock
    assert buf.due(5.0) == []
    assert buf.due(8.9) == []
    due = buf.due(9.0)
    assert [trig for _, trig in due] == ["idle"]
    assert due[0][0].span_count == 4


def test_max_wait_trigger(impl):
    buf = mkbuf(impl, decision_wait=10.0, idle_timeout=5.0)
    t = trace(12, root=False)
    for i in range(12):       # a span every 3 s keeps it from going idle
        add(impl, buf, make_request([[t[i]]]), 3.0 * i)
        if 3.0 * i >= 10.0:
            break
        assert buf.due(3.0 * i) == []
    due = buf.due(10.0)
    assert [trig for _, trig in due] == ["max_wait"]


def test_max_spans_trigger_and_late_spans_follow(impl):
    buf = mkbuf(impl, max_spans_per_trace=5)
    t = trace(8)
    res = add(impl, buf, make_request([t[:6]]), 0.0)
    assert len(res.full) == 1 and res.full[0].span_count == 5
    full = res.full[0]
    assert buf.ntraces == 0 or full.trace_id not in buf.traces
    # the 6th span of the same request starts... no: it follows the decision
    # only once the decision is remembered, so decide it now
    blob, per_service = buf.finish(full, True, "errors", 0)
    assert per_service == {"svc": [5, sum(len(b) for b in _span_bytes(make_request([t[:5]])))]}
    res2 = add(impl, buf, make_request([t[6:]]), 1.0)
    assert len(res2.late_kept) == 2 and res2.late_dropped == 0
    req = decode(encode_late(res2.late_kept))
    spans = [s for rs in req.resource_spans for ss in rs.scope_spans for s in ss.spans]
    assert [s.span_id for s in spans] == [x["span_id"] for x in t[6:]]
    assert all(s.trace_state == "ot=th:0" for s in spans)


def test_late_spans_of_dropped_trace_are_dropped(impl):
    buf = mkbuf(impl)
    t = trace(3)
    add(impl, buf, make_request([t[:2]]), 0.0)
    (tr, _), = buf.due(2.0)
    assert buf.finish(tr, False, "", 1 << 56) is None
    res = add(impl, buf, make_request([t[2:]]), 3.0)
    assert res.late_dropped == 1 and res.late_kept == [] and buf.ntraces == 0


def test_forgotten_trace_starts_anew(impl):
    buf = mkbuf(impl, cache_not_sampled=4)
    ts = [trace(1) for _ in range(10)]
    for t in ts:
        add(impl, buf, make_request([t]), 0.0)
    for tr, _ in buf.due(2.0):
        buf.finish(tr, False, "", 1 << 56)
    # the oldest generations were forgotten: a late span of the first trace
    # is a new trace, one of the last is still dropped
    r_first = add(impl, buf, make_request([trace(1, tid=ts[0][0]["trace_id"])]), 3.0)
    r_last = add(impl, buf, make_request([trace(1, tid=ts[-1][0]["trace_id"])]), 3.0)
    assert r_first.new_traces == 1
    assert r_last.late_dropped == 1


def test_kept_cache_is_bounded(impl):
    buf = mkbuf(impl, cache_sampled=3)
    ts = [trace(1) for _ in range(5)]
    for t in ts:
        add(impl, buf, make_request([t]), 0.0)
    for tr, _ in buf.due(2.0):
        buf.finish(tr, True, "p", 0)
    assert buf.cached(ts[0][0]["trace_id"]) is None
    assert buf.cached(ts[-1][0]["trace_id"]) == ("p", 0)


def test_memory_pressure_decides_biggest_first(impl):
    small = [trace(1) for _ in range(20)]
    big = trace(40)
    raw_small = make_request(small)
    raw_big = make_request([big])
    buf = mkbuf(impl, memory_limit=1 << 30)
    add(impl, buf, raw_small, 0.0)
    add(impl, buf, raw_big, 0.0)
    used = buf.nbytes
    buf2 = mkbuf(impl, memory_limit=used + 100)
    add(impl, buf2, raw_small, 0.0)
    add(impl, buf2, raw_big, 0.0)
    incoming = 2000
    out = buf2.make_room(incoming)
    assert out and out[0][1] == "memory"
    assert out[0][0].trace_id == big[0]["trace_id"]
    assert buf2.nbytes + incoming <= buf2.memory_limit
    for tr, _ in out:
        buf2.finish(tr, False, "", 1 << 56)


def test_buffer_never_exceeds_limit_under_load(impl):
    # what Pipeline.ingest does: room for twice the request before, and
    # whatever is still over the limit after it decided at once
    limit = 64 * 1024
    buf = mkbuf(impl, memory_limit=limit)
    decided = 0
    for i in range(200):
        raw = make_request([trace(5) for _ in range(3)])
        out = buf.make_room(2 * len(raw))
        add(impl, buf, raw, float(i) * 0.001)
        if buf.nbytes > limit:
            out += buf.make_room(0)
            assert 0 < buf.nbytes <= 0.9 * limit
        for tr, trig in out:
            assert trig == "memory"
            buf.finish(tr, False, "", 1 << 56)
            decided += 1
        assert buf.nbytes <= limit
    assert decided > 0
    assert decided + buf.ntraces == 600


def test_exact_accounting(impl):
    t = trace(3)
    raw = make_request([t])
    buf = mkbuf(impl)
    res = add(impl, buf, raw, 0.0)
    assert res.accepted == 3 and res.rejected == 0 and res.errors == [] and res.reasons == []
    assert buf.nbytes == TRACE_OVERHEAD + 3 * ENTRY_HDR + res.span_bytes
    assert res.per_service == {"svc": [3, res.span_bytes]}
    assert ENTRY_HDR == 40


def test_drain_decides_everything(impl):
    buf = mkbuf(impl)
    add(impl, buf, make_request([trace(2) for _ in range(7)]), 0.0)
    out = buf.drain()
    assert len(out) == 7 and {t for _, t in out} == {"shutdown"}
    assert buf.ntraces == 0 and buf.nbytes == 0 and buf.nspans == 0
    for tr, _ in out:
        buf.finish(tr, False, "", 1 << 56)
    assert buf.ngroups == 0


def test_summary_fields(impl):
    tid = os.urandom(16)
    spans = trace(3, tid=tid)
    spans[0].update(start=100, end=5000, name="GET /")
    spans[1].update(start=50, end=200, status=2, attrs={"http.route": "/a", "n": 7})
    spans[2].update(start=300, end=9000, status=1, attrs={"http.route": "/b", "flag": True})
    buf = mkbuf(impl)
    add(impl, buf, make_request([spans], service="front"), 0.0,
        frozenset({"http.route", "n", "flag"}))
    t = buf.traces[tid]
    assert t.span_count == 3
    assert (t.min_start, t.max_end) == (50, 9000)
    assert t.status_mask == (1 << 0) | (1 << 2) | (1 << 1)
    assert t.root_seen and t.root_name == "GET /" and t.root_service == "front"
    assert t.services == {"front"}
    assert t.attrs == {"http.route": {"/a", "/b"}, "n": {7}, "flag": {True}}
    assert t.randomness == int.from_bytes(tid[9:], "big")


def test_rv_in_tracestate_is_the_randomness(impl):
    tid = os.urandom(16)
    spans = trace(1, tid=tid, trace_state="ot=rv:0123456789abcd,vendor=x")
    buf = mkbuf(impl)
    add(impl, buf, make_request([spans]), 0.0)
    assert buf.traces[tid].randomness == 0x0123456789abcd


def test_kept_trace_reencodes_byte_identical(impl):
    t1 = trace(3, trace_state="vendor=abc")
    t2 = trace(2)
    raw = make_request([t1, t2], service="s1")
    raw2 = make_request([trace(2, tid=t1[0]["trace_id"])], service="s2", scope="other")
    buf = mkbuf(impl)
    add(impl, buf, raw, 0.0)
    add(impl, buf, raw2, 0.1)
    tr = buf.traces[t1[0]["trace_id"]]
    due = [x for x in buf.due(2.1) if x[0].trace_id == tr.trace_id]
    (tr, trig), = due
    blob, per_service = buf.finish(tr, True, "slow", 0x1234 << 40)
    in_s1 = [b for b in _span_bytes(raw) if Span.FromString(b).trace_id == tr.trace_id]
    assert per_service == {"s1": [3, sum(map(len, in_s1))], "s2": [2, sum(map(len, _span_bytes(raw2)))]}
    req = decode(blob)
    assert [rs.resource.attributes[0].value.string_value for rs in req.resource_spans] == ["s1", "s2"]
    assert req.resource_spans[1].scope_spans[0].scope.name == "other"
    orig = {s.span_id: s for s in (Span.FromString(b) for b in _span_bytes(raw) + _span_bytes(raw2))}
    raw_by_id = {Span.FromString(b).span_id: b for b in _span_bytes(raw) + _span_bytes(raw2)}
    got = [s for rs in req.resource_spans for ss in rs.scope_spans for s in ss.spans]
    assert len(got) == 5
    for s in got:
        o = orig[s.span_id]
        assert s.trace_id == tr.trace_id
        expect_ts = "ot=th:1234" + (",vendor=abc" if o.trace_state else "")
        assert s.trace_state == expect_ts
        # byte-identical prefix: original bytes, then the appended field 3
        enc = _span_bytes_of(blob, s.span_id)
        assert enc.startswith(raw_by_id[s.span_id])
        o.trace_state = expect_ts
        assert Span.FromString(enc) == o
    assert buf.ngroups == 1   # only the second trace of raw is left


def _span_bytes(raw):
    """Raw encodings of every span in a request, via the pure scanner."""
    sc = scan_py(raw, frozenset())
    return [raw[s[8]:s[8] + s[9]] for s in sc.spans]


def _span_bytes_of(blob, span_id):
    for b in _span_bytes(blob):
        if Span.FromString(b).span_id == span_id:
            return b
    raise AssertionError("span not found")


def test_pure_and_compiled_agree():
    if PURE:
        pytest.skip("compiled implementation not requested")
    random.seed(7)
    cy = CY_ADD
    py = PY_ADD
    b1, b2 = mkbuf(py, max_spans_per_trace=7, memory_limit=200_000), mkbuf(cy, max_spans_per_trace=7, memory_limit=200_000)
    ids = [os.urandom(16) for _ in range(60)]
    now = 0.0
    log1, log2 = [], []
    for step in range(300):
        now += random.random() * 0.5
        spans = []
        for _ in range(random.randint(1, 8)):
            tid = random.choice(ids)
            spans.append({"trace_id": tid, "span_id": os.urandom(8),
                          "parent": b"" if random.random() < 0.2 else os.urandom(8),
                          "start": random.randint(0, 10**9), "end": 10**9 + random.randint(0, 10**9),
                          "status": random.choice([0, 0, 1, 2])})
        raw = make_request([spans], service=random.choice(["a", "b"]))
        for b, impl_, log in ((b1, py, log1), (b2, cy, log2)):
            sc = impl_.scan(raw, frozenset())
            room = b.make_room(sc.span_bytes + 16 * len(sc.spans))
            r = b.add(sc, raw, now)
            done = room + [(t, "max_spans") for t in r.full] + b.due(now)
            for t, trig in done:
                keep = t.randomness % 3 == 0
                out = b.finish(t, keep, "p" if keep else "", 0 if keep else 1 << 56)
                log.append((t.trace_id, trig, t.span_count, t.status_mask,
                            out[0] if out else None))
            log.append(("late", len(r.late_kept), r.late_dropped, b.nbytes, b.nspans))
    assert log1 == log2


def test_unknown_status_codes_are_buffered_not_matched(impl):
    t = trace(3)
    t[1]["status"] = -1
    t[2]["status"] = 7
    buf = mkbuf(impl)
    add(impl, buf, make_request([t]), 0.0)
    tr = buf.traces[t[0]["trace_id"]]
    assert tr.span_count == 3
    assert tr.status_mask == (1 << 0) | (1 << 7)


# ---------------------------------------------------------------- ingest errors
def _snapshot(buf):
    """Everything observable of a buffer's state (order included)."""
    return (buf.nbytes, buf.nspans, buf.ntraces, buf.ngroups, buf.next_deadline(),
            [(tid, _trace_state(t)) for tid, t in buf.traces.items()])


def _norm_attrs(attrs):
    if attrs is None:
        return None
    return sorted((k, sorted((type(v).__name__, repr(v)) for v in vs)) for k, vs in attrs.items())


def _trace_state(t):
    return (t.trace_id, t.span_count, t.min_start, t.max_end, t.status_mask, t.root_seen,
            t.root_name, t.root_service, sorted(t.services), _norm_attrs(t.attrs),
            t.randomness, t.first_arrival, t.last_arrival, t.root_arrival, bytes(t.data),
            t.tracestates, t.decided, list(t.entries()))


@pytest.mark.parametrize("impl", [p for p in IMPLS if p.values[0].mode == "ingest"])
def test_ingest_error_leaves_buffer_unchanged(impl):
    buf = mkbuf(impl, max_spans_per_trace=4)
    t = trace(3)
    buf.ingest(make_request([t]), frozenset({"http.route"}), 0.0)
    before = _snapshot(buf)
    # valid spans of the same trace and of a new one, then a cut-off field
    raw = make_request([trace(2, tid=t[0]["trace_id"]), trace(2)])
    bad = raw + b"\x0a\x05\x12"
    with pytest.raises(ValueError) as exc:
        buf.ingest(bad, frozenset({"http.route"}), 1.0)
    with pytest.raises(ValueError) as exc_scan:
        scan_py(bad, frozenset({"http.route"}))
    assert str(exc.value) == str(exc_scan.value)
    assert _snapshot(buf) == before
    # invalid UTF-8 in the name of the last span: that span alone is
    # rejected, the others of the request go in
    spans = trace(2)
    spans[1]["name"] = "BADNAME!"
    raw = make_request([trace(2, tid=t[0]["trace_id"]), spans])
    bad = raw.replace(b"BADNAME!", b"\xffADNAME!")
    res = buf.ingest(bad, frozenset(), 1.0)
    assert res.accepted == 3 and res.rejected == 1 and res.reasons == ["invalid_utf8"]
    assert res.errors[0].startswith("span 3: invalid UTF-8 in span name at byte ")
    assert len(res.full) == 1


def test_ingest_reports_invalid_spans(impl):
    t = trace(3)
    t[1]["span_id"] = bytes(8)
    t[2]["end"], t[2]["start"] = 1, 2
    res = add(impl, mkbuf(impl), make_request([t]), 0.0)
    assert res.accepted == 1 and res.rejected == 2
    assert res.reasons == ["span_id_zero", "end_before_start"]
    assert res.errors == ["span 1: span_id must not be all zero",
                          "span 2: end_time_unix_nano before start_time_unix_nano"]


def test_ingest_accepts_bytes_like(impl):
    if impl.mode != "ingest":
        pytest.skip("ingest only")
    raw = make_request([trace(3)])
    a, b = mkbuf(impl), mkbuf(impl)
    a.ingest(raw, frozenset(), 0.0)
    b.ingest(memoryview(raw), frozenset(), 0.0)
    assert _snapshot(a) == _snapshot(b)


@pytest.mark.parametrize("impl", [p for p in IMPLS if p.values[0].mode == "ingest"])
@pytest.mark.parametrize("keys", [frozenset(), frozenset({"http.route", "service.name"})])
def test_checked_ingest_buffers_the_same(impl, keys):
    """A peer's hand-off (checked=True: its spans were checked by the
    worker that received them) is only extracted: the buffer ends up the
    same, attributes the policies read included, as with the full checks;
    bad framing still raises and leaves the buffer as it was."""
    from traceo_sampler import loadgen
    reqs = list(loadgen.build_requests(n_spans=3000, spans_per_request_target=300, seed=3))
    a, b = mkbuf(impl), mkbuf(impl)
    for k, raw in enumerate(reqs):
        ra = a.ingest(raw, keys, float(k))
        rb = b.ingest(raw, keys, float(k), 1, 0, True)
        assert (ra.accepted, ra.rejected, ra.span_bytes, ra.new_traces) == \
            (rb.accepted, rb.rejected, rb.span_bytes, rb.new_traces)
    assert _snapshot(a) == _snapshot(b)
    before = _snapshot(b)
    with pytest.raises(ValueError):
        b.ingest(reqs[0] + b"\x0a\x05\x12", keys, 99.0, 1, 0, True)
    assert _snapshot(b) == before


@pytest.mark.skipif(CY is None, reason="span records come from the compiled ingest")
@pytest.mark.parametrize("owner", [p for p in IMPLS if p.values[0].mode == "ingest"])
@pytest.mark.parametrize("keys", [frozenset(), frozenset({"http.route", "service.name"})])
@pytest.mark.parametrize("n", [2, 3])
def test_hand_off_with_span_records_buffers_the_same(owner, keys, n):
    """service.workers' hand-off carries each forwarded span's record of
    what the sender's walk extracted, so its owner does not walk the span
    again: a frame of several parts and their records (as workers.Peer
    concatenates them) leaves the owner's buffer exactly as the checked
    walk of the same parts without records; spans with attributes the
    policies read are walked anyway. The pure twin skips the records."""
    from traceo_sampler import loadgen
    reqs = list(loadgen.build_requests(n_spans=4000, spans_per_request_target=250, seed=11))
    sender = mkbuf(CY)
    with_recs = [mkbuf(owner) for _ in range(n)]
    without = [mkbuf(owner) for _ in range(n)]
    for k in range(0, len(reqs), 3):
        frames = [[] for _ in range(n)]
        for raw in reqs[k:k + 3]:
            res = sender.ingest(raw, keys, float(k), n, 0)
            for j in range(1, n):
                if res.parts[j]:
                    assert len(res.recs[j]) == 48 * res.counts[j]
                    frames[j].append((res.parts[j], res.recs[j]))
        for j in range(1, n):
            if not frames[j]:
                continue
            body = b"".join(p for p, _ in frames[j])
            recs = b"".join(r for _, r in frames[j])
            ra = with_recs[j].ingest(body + recs, keys, float(k), 1, 0, True, len(recs))
            rb = without[j].ingest(body, keys, float(k), 1, 0, True)
            assert (ra.accepted, ra.rejected, ra.span_bytes, ra.new_traces) == \
                (rb.accepted, rb.rejected, rb.span_bytes, rb.new_traces)
    assert sum(b.nspans for b in with_recs) > 0
    for a, b in zip(with_recs, without):
        assert _snapshot(a) == _snapshot(b)


@pytest.mark.skipif(CY is None, reason="span records come from the compiled ingest")
def test_span_records_of_other_attr_keys_are_walked_and_bad_ones_raise():
    """A record made with other attr_keys than the owner's (a reload that
    reached one worker first) is not trusted: the span is walked with the
    owner's keys. Records that do not fit their spans raise ValueError and
    leave the buffer as it was."""
    from traceo_sampler import loadgen
    raw = list(loadgen.build_requests(n_spans=600, spans_per_request_target=300, seed=5))[0]
    res = mkbuf(CY).ingest(raw, frozenset(), 0.0, 2, 0)
    part, recs = res.parts[1], res.recs[1]
    assert part and len(recs) == 48 * res.counts[1]
    keys = frozenset({"http.route"})
    a, b = mkbuf(CY), mkbuf(CY)
    a.ingest(part + recs, keys, 1.0, 1, 0, True, len(recs))
    b.ingest(part, keys, 1.0, 1, 0, True)
    assert _snapshot(a) == _snapshot(b)
    assert any(t.attrs for t in a.traces.values())
    c = mkbuf(CY)
    before = _snapshot(c)
    for data, nrec, match in [
            (part + recs[:-48], len(recs) - 48, "more spans than"),      # one record short
            (part + recs + recs[:48], len(recs) + 48, "span records for"),  # one too many
            (part + recs[48:] + recs[:48], len(recs), "not of its span|outside"),  # out of order
            (part + recs, len(recs) - 1, "does not fit"),
            (part + recs, len(part) + len(recs) + 48, "does not fit")]:
        with pytest.raises(ValueError, match=match):
            c.ingest(data, frozenset(), 2.0, 1, 0, True, nrec)
        assert _snapshot(c) == before
    with pytest.raises(ValueError, match="does not fit"):
        c.ingest(part + recs, frozenset(), 2.0, 1, 0, False, len(recs))


# ---------------------------------------------------------------- consistency
def _sp(tid, sid, parent=b"", start=100, end=200, **kw):
    return dict(trace_id=tid, span_id=sid, parent=parent, start=start, end=end, **kw)


def _ids(n):
    return [bytes([i + 1]) * 8 for i in range(n)]


R, A, B, C, D, E, F = _ids(7)   # F: never a span_id

# (name, [(service, spans)], tolerance, expected (duplicates, orphans, skewed, no_root))
CONSISTENCY_CASES = [
    ("clean", [("s", [_sp(0, R, b"", 100, 1000), _sp(0, A, R, 200, 300),
                      _sp(0, B, A, 210, 290)])], 0, (0, {}, {}, False)),
    ("duplicates", [("s", [_sp(0, R), _sp(0, R), _sp(0, A, R), _sp(0, A, R), _sp(0, A, R)])],
     0, (3, {}, {}, False)),
    ("orphans per service", [("s", [_sp(0, R), _sp(0, A, b"\xee" * 8), _sp(0, B, C)]),
                             ("t", [_sp(0, C, F), _sp(0, D, F), _sp(0, E, R)])],
     0, (0, {"s": 1, "t": 2}, {}, False)),
    ("orphan resolved by a later span", [("s", [_sp(0, A, R), _sp(0, R)])], 0,
     (0, {}, {}, False)),
    ("starts too early", [("s", [_sp(0, R, b"", 100, 1000), _sp(0, A, R, 90, 500)])], 9,
     (0, {}, {"s": 1}, False)),
    ("starts early within tolerance", [("s", [_sp(0, R, b"", 100, 1000), _sp(0, A, R, 90, 500)])],
     10, (0, {}, {}, False)),
    ("ends too late", [("s", [_sp(0, R, b"", 100, 1000)]), ("t", [_sp(0, A, R, 500, 1011)])], 10,
     (0, {}, {"t": 1}, False)),
    ("ends late within tolerance", [("s", [_sp(0, R, b"", 100, 1000), _sp(0, A, R, 500, 1011)])],
     11, (0, {}, {}, False)),
    ("both ends out counts once", [("s", [_sp(0, R, b"", 100, 1000), _sp(0, A, R, 1, 2000)])], 0,
     (0, {}, {"s": 1}, False)),
    ("skew against the first of duplicated parents",
     [("s", [_sp(0, R, b"", 100, 200), _sp(0, R, b"", 1, 5000), _sp(0, A, R, 50, 150)])], 0,
     (1, {}, {"s": 1}, False)),
    ("no root", [("s", [_sp(0, A, R), _sp(0, B, A)])], 0, (0, {"s": 1}, {}, True)),
    ("zero parent is neither orphan nor root", [("s", [_sp(0, A, bytes(8))])], 0,
     (0, {}, {}, True)),
    ("huge times", [("s", [_sp(0, R, b"", 2**64 - 10, 2**64 - 1), _sp(0, A, R, 1, 2**64 - 1)])],
     2**64 - 10, (0, {}, {}, False)),
    ("huge times skewed", [("s", [_sp(0, R, b"", 2**64 - 10, 2**64 - 1), _sp(0, A, R, 1, 5)])],
     2**64 - 12, (0, {}, {"s": 1}, False)),
    ("huge tolerance", [("s", [_sp(0, R, b"", 2**64 - 10, 2**64 - 1), _sp(0, A, R, 1, 5)])],
     2**70, (0, {}, {}, False)),
]


def _multi_request(parts):
    raws = []
    for svc, spans in parts:
        raws.append(make_request([spans], service=svc))
    return b"".join(raws)   # concatenated requests are one request (repeated field)


@pytest.mark.parametrize("case", CONSISTENCY_CASES, ids=[c[0] for c in CONSISTENCY_CASES])
def test_consistency(impl, case):
    _name, parts, tol, want = case
    tid = os.urandom(16)
    parts = [(svc, [dict(s, trace_id=tid) for s in spans]) for svc, spans in parts]
    buf = mkbuf(impl)
    res = add(impl, buf, _multi_request(parts), 0.0)
    assert res.rejected == 0
    (t, _), = buf.drain()
    assert buf.consistency(t, tol) == want
    buf.finish(t, True, "p", 0)
    assert buf.ngroups == 0


def test_consistency_across_requests_and_negative_tolerance(impl):
    tid = os.urandom(16)
    buf = mkbuf(impl)
    add(impl, buf, make_request([[_sp(tid, A, R, 50, 60)]], service="x"), 0.0)
    add(impl, buf, make_request([[_sp(tid, R, b"", 100, 200)]], service="y"), 1.0)
    t = buf.traces[tid]
    assert buf.consistency(t, 0) == (0, {}, {"x": 1}, False)
    with pytest.raises(ValueError):
        buf.consistency(t, -1)


# ---------------------------------------------------------------- differential
SERVICES = ["front", "cart", "pay", "db"]
DIFF_KEYS = frozenset({"http.route", "http.status_code", "error", "ratio", "deployment.environment"})
TRACE_STATES = ["", "", "", "vendor=x", "ot=rv:00112233445566", "ot=rv:zz;th:8,k=v",
                "ot=th:8;rv:fedcba98765432,vendor=abc"]


class _Stream:
    """A random request stream: traces reused at random, invalid spans,
    duplicates, orphans, skew, tracestates with rv, attributes, malformed
    requests."""

    def __init__(self, seed):
        self.rng = random.Random(seed)
        self.pool = [self._new_trace() for _ in range(25)]

    def _new_trace(self):
        return {"tid": self.rng.randbytes(16), "sids": [], "t0": self.rng.randint(0, 10**12)}

    def _span(self, ss, tr):
        rng = self.rng
        if tr["sids"] and rng.random() < 0.05:
            sid = rng.choice(tr["sids"])                      # duplicate
        else:
            sid = rng.randbytes(8)
            tr["sids"].append(sid)
        x = rng.random()
        if x < 0.2:
            parent = b""
        elif x < 0.8 and tr["sids"]:
            parent = rng.choice(tr["sids"])
        elif x < 0.9:
            parent = rng.randbytes(8)                         # orphan
        elif x < 0.95:
            parent = bytes(8)
        else:
            parent = rng.randbytes(3)                         # invalid
        tid = tr["tid"]
        y = rng.random()
        if y < 0.03:
            tid = tid[:15]                                    # invalid
        elif y < 0.05:
            tid = bytes(16)                                   # invalid
        elif y < 0.07:
            sid = bytes(8)                                    # invalid
        start = tr["t0"] + rng.randint(-10**6, 10**9)
        end = start + rng.randint(-100, 10**9)               # sometimes before start
        if rng.random() < 0.02:
            start, end = 2**64 - 5, 2**64 - 1
        start, end = max(start, 0), max(end, 0)
        sp = ss.spans.add(trace_id=tid, span_id=sid, parent_span_id=parent,
                          name=rng.choice(["GET /", "op", "é名", "BADNAME!"]),
                          start_time_unix_nano=start, end_time_unix_nano=end,
                          kind=rng.randint(0, 5), trace_state=rng.choice(TRACE_STATES))
        code = rng.choice([0, 0, 0, 1, 2, -1, 7])
        if code:
            sp.status.code = code
        for key in rng.sample(["http.route", "http.status_code", "error", "ratio", "other"],
                              rng.randint(0, 3)):
            a = sp.attributes.add(key=key)
            if key == "http.route":
                a.value.string_value = rng.choice(["/a", "/b", "/ü"])
            elif key == "http.status_code":
                a.value.int_value = rng.choice([200, 404, -1, 2**63 - 1])
            elif key == "error":
                a.value.bool_value = rng.random() < 0.5
            elif key == "ratio":
                a.value.double_value = rng.choice([0.5, 1.0, -0.0])
            else:
                a.value.string_value = "x"

    def request(self):
        rng = self.rng
        for _ in range(rng.choice([0, 0, 1, 2, 3])):
            self.pool[rng.randrange(len(self.pool))] = self._new_trace()
        req = ExportTraceServiceRequest()
        for _ in range(rng.randint(1, 3)):
            rs = req.resource_spans.add()
            rs.resource.attributes.add(key="service.name").value.string_value = \
                rng.choice(SERVICES)
            if rng.random() < 0.5:
                rs.resource.attributes.add(key="deployment.environment").value.string_value = \
                    rng.choice(["prod", "dev"])
            for _ in range(rng.randint(1, 2)):
                ss = rs.scope_spans.add()
                ss.scope.name = rng.choice(["lib", "http"])
                for _ in range(rng.randint(0, 7)):
                    self._span(ss, rng.choice(self.pool))
        raw = req.SerializeToString()
        x = rng.random()
        if x < 0.85:
            raw = raw.replace(b"BADNAME!", b"GOODNAME")
        else:
            raw = raw.replace(b"BADNAME!", b"\xc3(BADNM!")        # invalid UTF-8
        if rng.random() < 0.05 and raw:
            raw = raw[:rng.randrange(len(raw))]                   # cut anywhere
        return raw


class _Spans:
    def __init__(self, groups, spans):
        self.groups = groups
        self.spans = spans


def _result(res):
    return dict(
        accepted=res.accepted, rejected=res.rejected, errors=res.errors, reasons=res.reasons,
        span_bytes=res.span_bytes, late_kept=res.late_kept, late_dropped=res.late_dropped,
        full=[t.trace_id for t in res.full], overflow=res.overflow, new_traces=res.new_traces,
        spans=res.spans, per_service=list(res.per_service.items()), groups=res.groups)


def _decide(buf, items, tol):
    out = []
    for t, trig in items:
        cons = buf.consistency(t, tol)
        keep = t.randomness % 3 == 0
        th = (t.randomness % 7) << 50 if keep else 1 << 56
        fin = buf.finish(t, keep, "p" if keep else "", th)
        out.append((trig, _trace_state(t), cons, fin))
    return out


def _run_stream(impls, seed, steps):
    stream = _Stream(seed)
    bufs = [mkbuf(i, decision_wait=4.0, root_wait=1.0, idle_timeout=2.5, max_spans_per_trace=6,
                  memory_limit=40_000, cache_sampled=15, cache_not_sampled=20) for i in impls]
    logs = [[] for _ in impls]
    now = 0.0
    for _step in range(steps):
        rng = stream.rng
        now += rng.choice([0.0, 0.25, 0.5, 0.5, 1.0, rng.random()])
        raw = stream.request()
        keys = DIFF_KEYS if rng.random() < 0.7 else frozenset()
        tol = rng.choice([0, 1000, 10**9])
        room = rng.choice([None, None, 0, 2 * len(raw), 30_000])
        limit = rng.choice([1 << 30, 1 << 30, 1, 3])
        for impl, buf, log in zip(impls, bufs, logs):
            if room is not None:
                log.append(("room", _decide(buf, buf.make_room(room), tol)))
            before = _snapshot(buf)
            try:
                res = impl.put(buf, raw, now, keys)
            except ValueError as exc:
                log.append(("error", str(exc)))
                assert _snapshot(buf) == before
            else:
                log.append(("res", _result(res)))
                if res.full:
                    log.append(("full", _decide(buf, [(t, "max_spans") for t in res.full], tol)))
                    if res.overflow:
                        r2 = buf.add(_Spans(res.groups, res.overflow), raw, now)
                        log.append(("overflow", _result(r2)))
                        assert not r2.full
            log.append(("due", _decide(buf, buf.due(now, limit), tol)))
            log.append(("state", _snapshot(buf)))
    for buf, log in zip(bufs, logs):
        log.append(("drain", _decide(buf, buf.drain(), 0)))
        log.append(("end", _snapshot(buf)))
        assert buf.ngroups == 0 and buf.nbytes == 0 and buf.nspans == 0
    return logs


def test_differential_stream():
    impls = [PY, PY_ADD] if PURE else [PY, CY, CY_ADD]
    seen = set()
    for seed in range(6):
        logs = _run_stream(impls, seed, 250)
        seen |= {e[0] for e in logs[0]}
        assert any(e[0] == "due" and e[1] for e in logs[0])
        for other in logs[1:]:
            assert len(other) == len(logs[0])
            for a, b in zip(logs[0], other):
                assert a == b, seed
    # the streams did reach every path
    assert {"error", "full", "overflow", "room"} <= seen


# ---------------------------------------------------------------- Pipeline.ingest
def test_pipeline_ingest_keeps_the_buffer_under_its_limit():
    from traceo_sampler import loadgen
    from traceo_sampler.config import loads
    from traceo_sampler.pipeline import Pipeline
    from traceo_sampler.telemetry import Metrics

    cfg = loads("""
sampler:
  memory_limit_mib: 1
  max_spans_per_trace: 20
  policies:
    - {name: errors, type: status_code, status_code: {status_codes: [ERROR]}}
    - {name: rest, type: probabilistic, probabilistic: {sampling_percentage: 10}}
""")
    now = [0.0]
    p = Pipeline(cfg, Metrics(), [], clock=lambda: now[0])
    reqs = loadgen.TraceGenerator(3).build_requests(spans_per_request_target=300, n_spans=6000)
    accepted = 0
    for i, raw in enumerate(reqs):
        now[0] = i * 0.01
        res = p.ingest(raw)
        accepted += res.accepted
        assert p.buffer.nbytes <= p.buffer.memory_limit
        if i == 3:
            before = (p.buffer.nbytes, p.buffer.nspans, p.buffer.ntraces)
            with pytest.raises(ValueError):
                p.ingest(raw[:-3])
            assert (p.buffer.nbytes, p.buffer.nspans, p.buffer.ntraces) == before
    assert accepted == reqs.n_spans == p.account.spans_received
    assert p.account.by_trigger.get("memory", 0) > 0 and p.account.by_trigger.get("max_spans", 0) > 0
    p.drain()
    assert p.buffer.ntraces == 0 and p.buffer.ngroups == 0


def test_finish_once_and_consistency_before(impl):
    buf = mkbuf(impl)
    t = trace(2)
    add(impl, buf, make_request([t]), 0.0)
    live = buf.traces[t[0]["trace_id"]]
    with pytest.raises(ValueError, match="still buffered"):
        buf.finish(live, True, "p", 0)
    assert buf.consistency(live, 0) == (0, {}, {}, False)   # read-only: fine on a live trace
    (tr, _), = buf.drain()
    buf.finish(tr, False, "", 1 << 56)
    with pytest.raises(ValueError, match="already finished"):
        buf.finish(tr, False, "", 1 << 56)
    with pytest.raises(ValueError, match="before finish"):
        buf.consistency(tr, 0)
    assert buf.ngroups == 0


def test_corrupt_entries_raise_not_crash():
    if PURE:
        pytest.skip("the compiled buffer checks its C reads")
    buf = mkbuf(CY)
    add(CY, buf, make_request([trace(3)]), 0.0)
    (t, _), = buf.drain()
    good = bytes(t.data)
    for bad in (good[:-1], good + b"\x00" * 5, b"\xff" * 4 + good[4:]):
        t.data[:] = bad
        with pytest.raises(RuntimeError, match="corrupt"):
            buf.consistency(t, 0)
        if bad[:4] != b"\xff" * 4:     # entries() does not look groups up
            with pytest.raises(RuntimeError, match="corrupt"):
                t.entries()
    t.data[:] = good
    buf.finish(t, True, "p", 0)
    assert buf.ngroups == 0


def test_finish_appends_extra_fields_after_tracestate(impl):
    from traceo_sampler.buffer import POLICY_ATTRIBUTE, policy_attribute
    t = trace(2, trace_state="v=1")
    t[1]["trace_state"] = ""
    buf = mkbuf(impl)
    add(impl, buf, make_request([t]), 0.0)
    (tr, _), = buf.due(2.0)
    blob, _ = buf.finish(tr, True, "errors", 0, policy_attribute("errors"))
    spans = [s for rs in decode(blob).resource_spans for ss in rs.scope_spans for s in ss.spans]
    assert len(spans) == 2
    for s in spans:
        assert s.attributes[-1].key == POLICY_ATTRIBUTE
        assert s.attributes[-1].value.string_value == "errors"
    assert {s.trace_state for s in spans} == {"ot=th:0,v=1", "ot=th:0"}


def test_trace_state_is_the_first_seen(impl):
    t = trace(3)
    t[1]["trace_state"] = "a=1"
    t[2]["trace_state"] = "b=2"
    buf = mkbuf(impl)
    add(impl, buf, make_request([t]), 0.0)
    assert buf.traces[t[0]["trace_id"]].trace_state == "a=1"


def test_discard_forgets_without_deciding(impl):
    """discard (Kafka partitions revoked): the trace leaves the buffer and
    its headers are released, nothing is remembered, so the same spans read
    again start the trace anew, whole."""
    buf = mkbuf(impl)
    t1, t2 = trace(3), trace(2)
    raw = make_request([t1, t2])
    add(impl, buf, raw, 0.0)
    tid = t1[0]["trace_id"]
    assert buf.discard(tid) == 3
    assert buf.discard(tid) == 0
    assert buf.discard(os.urandom(16)) == 0
    assert buf.ntraces == 1 and buf.nspans == 2
    assert buf.cached(tid) is None
    assert buf.ngroups == 1                       # still held by t2
    (x2, _), = buf.due(100.0)                     # no stale entry of t1
    assert x2.trace_id == t2[0]["trace_id"]
    buf.finish(x2, False, "", 0)
    res = add(impl, buf, raw, 200.0)              # read again: t1 whole, not late
    assert res.late_dropped == 2                  # t2 follows its decision
    assert buf.ntraces == 1 and buf.nspans == 3
    due = buf.due(300.0)
    assert [x.span_count for x, _ in due] == [3]
    for x, _ in due:
        buf.finish(x, False, "", 0)
    assert buf.ngroups == 0 and buf.nbytes == 0


def test_discard_last_trace_releases_groups(impl):
    buf = mkbuf(impl)
    t1 = trace(4)
    add(impl, buf, make_request([t1]), 0.0)
    assert buf.discard(t1[0]["trace_id"]) == 4
    assert buf.ngroups == 0 and buf.nbytes == 0 and buf.nspans == 0 and buf.ntraces == 0
    assert buf.due(100.0) == [] and buf.next_deadline() is None


def test_consistency_reports_skew_amounts(impl):
    tid, root = os.urandom(16), os.urandom(8)
    ms = 1_000_000
    spans = [{"trace_id": tid, "span_id": root, "parent": b"", "start": 100 * ms, "end": 200 * ms},
             {"trace_id": tid, "span_id": os.urandom(8), "parent": root, "start": 80 * ms, "end": 150 * ms},
             {"trace_id": tid, "span_id": os.urandom(8), "parent": root, "start": 150 * ms, "end": 230 * ms},
             {"trace_id": tid, "span_id": os.urandom(8), "parent": root, "start": 98 * ms, "end": 150 * ms}]
    buf = mkbuf(impl)
    add(impl, buf, make_request([spans], service="s"), 0.0)
    (tr, _), = buf.due(2.0)
    amounts = []
    _d, _o, skewed, _nr = buf.consistency(tr, 5 * ms, amounts)
    assert skewed == {"s": 2}
    assert sorted(amounts) == [("s", 20 * ms), ("s", 30 * ms)]
    assert buf.consistency(tr, 5 * ms)[2] == {"s": 2}      # amounts stay optional
