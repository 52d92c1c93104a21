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
