"""The splitter behind service.workers and the router's per-partition
messages: every span lands in exactly one part, byte-identical under its
original headers, every trace whole in one part, the part chosen by Kafka's
partitioner; compiled and pure twins agree."""
import collections

import pytest

from conftest import twins
from traceo_sampler import loadgen, shard
from traceo_sampler.scan import scan_py

TWINS = twins("shard", split=shard.split_py, murmur2=shard.murmur2_py, shard_of=shard.shard_of_py)
IMPLS = [pytest.param(p.values[0].split, id=p.id) for p in TWINS]
COMPILED = [p.values[0] for p in TWINS if p.id == "cython"]


def _spans(data: bytes):
    sc = scan_py(data, frozenset())
    return [(sp[0], sp[1], data[sp[8]:sp[8] + sp[9]], sc.groups[sp[7]][0], sc.groups[sp[7]][1])
            for sp in sc.spans]


@pytest.fixture(scope="module")
def reqs():
    return loadgen.build_requests(n_spans=3000, spans_per_request_target=300, seed=7)


@pytest.mark.parametrize("split", IMPLS)
@pytest.mark.parametrize("n", [1, 2, 3, 8])
@pytest.mark.parametrize("key", [shard.KEY_RAW, shard.KEY_HEX])
def test_every_span_once_traces_whole(split, n, key, reqs):
    owner = {}
    for data in reqs:
        res = split(data, n, frozenset(), key, True)
        assert len(res.parts) == n and res.rejected == 0
        whole = collections.Counter(_spans(data))
        got = collections.Counter()
        for i, part in enumerate(res.parts):
            spans = _spans(part) if part else []
            assert len(spans) == res.counts[i]
            assert {s[0] for s in spans} == res.trace_ids[i]
            for s in spans:
                assert owner.setdefault(s[0], i) == i, "trace split between shards"
                assert shard.shard_of_py(s[0], n, key) == i
            got.update(spans)
        assert got == whole   # same spans, same bytes, same resource/scope headers
        assert res.accepted == sum(whole.values())


def test_twins_agree_byte_for_byte(reqs):
    for c in COMPILED:
        for data in list(reqs)[:5]:
            for n in (2, 5):
                a, b = c.split(data, n, frozenset(), 1, True), shard.split_py(data, n, frozenset(), 1, True)
                assert a.parts == b.parts and a.counts == b.counts and a.trace_ids == b.trace_ids


def test_partition_is_kafkas():
    from aiokafka.partitioner import murmur2 as kafka_murmur2
    import os
    for _ in range(200):
        tid = os.urandom(16)
        key = tid.hex().encode()
        assert shard.murmur2_py(key) == kafka_murmur2(key)
        assert shard.shard_of_py(tid, 7, shard.KEY_HEX) == (kafka_murmur2(key) & 0x7FFFFFFF) % 7
        for c in COMPILED:
            assert c.murmur2(key) == kafka_murmur2(key)
            assert c.shard_of(tid, 7, shard.KEY_HEX) == shard.shard_of_py(tid, 7, shard.KEY_HEX)


@pytest.mark.parametrize("split", IMPLS)
def test_invalid_spans_reported_and_left_out(split):
    from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
    req = ExportTraceServiceRequest()
    ss = req.resource_spans.add().scope_spans.add()
    good = ss.spans.add(trace_id=b"\x01" * 16, span_id=b"\x02" * 8, name="ok",
                        start_time_unix_nano=1, end_time_unix_nano=2)
    ss.spans.add(trace_id=b"\x01" * 15, span_id=b"\x02" * 8, name="bad")
    res = split(req.SerializeToString(), 2)
    assert res.rejected == 1 and res.reasons == ["trace_id_length"] and res.accepted == 1
    kept = [s for p in res.parts if p for s in _spans(p)]
    assert [s[2] for s in kept] == [good.SerializeToString()]
    with pytest.raises(ValueError, match="runs past the end"):
        split(b"\x0a\x05\x01", 2)


BUFFERS = twins("buffer", TraceBuffer=__import__("traceo_sampler.buffer", fromlist=["x"]).TraceBufferPy)


def _mkbuf(cls):
    return cls(decision_wait=30.0, root_wait=2.0, idle_timeout=5.0, max_spans_per_trace=10_000,
               memory_limit=1 << 30, cache_sampled=1000, cache_not_sampled=1000)


@pytest.mark.parametrize("impl", BUFFERS)
@pytest.mark.parametrize("n", [2, 3])
def test_fused_ingest_keeps_its_shard_and_cuts_the_others_as_split_does(impl, n, reqs):
    """service.workers' one walk per request: the buffer of shard i takes the
    spans split() puts in part i, and hands back split()'s other parts."""
    bufs = [_mkbuf(impl.TraceBuffer) for _ in range(n)]
    for data in reqs:
        ref = shard.split_py(data, n, frozenset(), shard.KEY_RAW, True)
        for i, buf in enumerate(bufs):
            before = buf.nspans
            res = buf.ingest(data, frozenset(), 1.0, n, i)
            assert res.accepted == ref.counts[i] == buf.nspans - before
            assert res.parts[i] == b"" and res.counts[i] == 0
            assert [p for j, p in enumerate(res.parts) if j != i] == \
                   [p for j, p in enumerate(ref.parts) if j != i]
            assert [c for j, c in enumerate(res.counts) if j != i] == \
                   [c for j, c in enumerate(ref.counts) if j != i]
            assert res.span_bytes == sum(ln for *_, ln in
                                         [(sp[0], sp[9]) for sp in scan_py(data, frozenset()).spans
                                          if shard.shard_of_py(sp[0], n) == i])
    for i, buf in enumerate(bufs):
        assert all(shard.shard_of_py(t, n) == i for t in buf.traces)
    assert sum(b.nspans for b in bufs) == sum(len(scan_py(d, frozenset()).spans) for d in reqs)


@pytest.mark.parametrize("impl", BUFFERS)
def test_fused_ingest_reports_invalid_spans_of_the_whole_request(impl):
    from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
    req = ExportTraceServiceRequest()
    ss = req.resource_spans.add().scope_spans.add()
    tids = [bytes([k]) * 16 for k in range(1, 9)]
    for t in tids:
        ss.spans.add(trace_id=t, span_id=b"\x02" * 8, name="ok",
                     start_time_unix_nano=1, end_time_unix_nano=2)
    ss.spans.add(trace_id=b"\x01" * 15, span_id=b"\x02" * 8, name="bad")
    data = req.SerializeToString()
    buf = _mkbuf(impl.TraceBuffer)
    res = buf.ingest(data, frozenset(), 1.0, 2, 0)
    own = sum(1 for t in tids if shard.shard_of_py(t, 2) == 0)
    assert res.rejected == 1 and res.reasons == ["trace_id_length"]
    assert res.accepted == own and res.counts == [0, len(tids) - own]
    assert [s[0] for s in _spans(res.parts[1])] == [t for t in tids if shard.shard_of_py(t, 2) == 1]
    with pytest.raises(ValueError, match="shard out of range"):
        buf.ingest(data, frozenset(), 1.0, 2, 2)
    with pytest.raises(ValueError, match="runs past the end"):
        buf.ingest(b"\x0a\x05\x01", frozenset(), 1.0, 2, 0)
    assert buf.nspans == own
