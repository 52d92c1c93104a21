"""Split an encoded ExportTraceServiceRequest into one request per shard,
every trace whole in one shard: the hand-off between ``service.workers``
(workers.py) and the router's one message per Kafka partition
(exporters/kafka.py). Span bytes are copied as they came, under their
original resource and scope headers.

``split`` is the compiled one (ext/_shard.pyx) when it loaded, else
``split_py``; both return the same result for every input. The shard of a
trace is ``(murmur2(key) & 0x7fffffff) % n`` -- Kafka's default partitioner
-- with the key the raw 16 trace-ID bytes (``KEY_RAW``) or its lowercase hex
(``KEY_HEX``).
"""
from __future__ import annotations

from .accel import compiled as _compiled
from .scan import SPAN_GROUP, SPAN_LENGTH, SPAN_OFFSET, SPAN_TRACE_ID, scan_py
from .wire import field as _field

KEY_RAW = 0
KEY_HEX = 1


def murmur2_py(data: bytes) -> int:
    """Kafka's murmur2 (org.apache.kafka.common.utils.Utils.murmur2)."""
    m = 0x5BD1E995
    n = len(data)
    h = (0x9747B28C ^ n) & 0xFFFFFFFF
    for i in range(0, n - n % 4, 4):
        k = int.from_bytes(data[i:i + 4], "little")
        k = (k * m) & 0xFFFFFFFF
        k ^= k >> 24
        k = (k * m) & 0xFFFFFFFF
        h = ((h * m) & 0xFFFFFFFF) ^ k
    rest = n & 3
    base = n & ~3
    if rest >= 3:
        h ^= data[base + 2] << 16
    if rest >= 2:
        h ^= data[base + 1] << 8
    if rest >= 1:
        h ^= data[base]
        h = (h * m) & 0xFFFFFFFF
    h ^= h >> 13
    h = (h * m) & 0xFFFFFFFF
    h ^= h >> 15
    return h


def shard_of_py(trace_id: bytes, n: int, key: int = KEY_RAW) -> int:
    if len(trace_id) != 16:
        raise ValueError("trace_id must be 16 bytes")
    if n <= 1:
        return 0
    k = trace_id if key == KEY_RAW else trace_id.hex().encode()
    return (murmur2_py(k) & 0x7FFFFFFF) % n


class SplitResultPy:
    __slots__ = ("parts", "counts", "trace_ids", "accepted", "rejected", "errors", "reasons",
                 "span_bytes")
    parts: list[bytes]
    counts: list[int]
    trace_ids: list[set[bytes]] | None
    accepted: int
    rejected: int
    errors: list[str]
    reasons: list[str]
    span_bytes: int


def split_py(data: bytes, n: int, attr_keys=frozenset(), key: int = KEY_RAW,
             with_trace_ids: bool = False) -> SplitResultPy:
    if n < 1:
        raise ValueError("n must be >= 1")
    data = bytes(data)
    sc = scan_py(data, attr_keys)
    tids: list[set[bytes]] | None = [set() for _ in range(n)] if with_trace_ids else None
    shards = []
    for sp in sc.spans:
        tid = sp[SPAN_TRACE_ID]
        s = shard_of_py(tid, n, key)
        shards.append(s)
        if tids is not None:
            tids[s].add(tid)
    r = SplitResultPy()
    r.counts = []
    r.parts = parts_py(data, sc.groups, sc.spans, shards, n, r.counts, not sc.rejected)
    r.trace_ids = tids
    r.accepted = len(sc.spans)
    r.rejected = sc.rejected
    r.errors = list(sc.errors)
    r.reasons = list(sc.reasons)
    r.span_bytes = sc.span_bytes
    return r


def parts_py(data: bytes, groups: list, spans: list, shards: list[int], n: int,
             counts: list[int], whole_ok: bool) -> list[bytes]:
    """The request of each of the n shards holding these scan tuples' spans
    (``shards[k]``: the shard of ``spans[k]``), b"" for a shard without any;
    ``counts`` gets each shard's spans. ``whole_ok``: these are every span
    of ``data`` and nothing was rejected, so a shard holding them all gets
    ``data`` itself. Compiled twin: ext/_parts.pxi ``_build_parts``."""
    # per shard: [(group, [span fields])] in walk order
    per: list[list] = [[] for _ in range(n)]
    cnt = [0] * n
    for sp, s in zip(spans, shards):
        gi, off, ln = sp[SPAN_GROUP], sp[SPAN_OFFSET], sp[SPAN_LENGTH]
        cnt[s] += 1
        lst = per[s]
        if not lst or lst[-1][0] != gi:
            lst.append((gi, []))
        lst[-1][1].append(_field(0x12, data[off:off + ln]))
    counts.extend(cnt)
    if whole_ok and sum(1 for c in cnt if c) == 1:
        return [data if c else b"" for c in cnt]
    return [b"".join(_field(0x0A, groups[gi][0] + _field(0x12, groups[gi][1] + b"".join(fields)))
                     for gi, fields in lst) for lst in per]

_c = _compiled("shard")
split = _c.split if _c is not None else split_py
shard_of = _c.shard_of if _c is not None else shard_of_py
murmur2 = _c.murmur2 if _c is not None else murmur2_py
IMPLEMENTATION = "cython" if _c is not None else "python"
