"""The encoding of generated spans into ``ExportTraceServiceRequest`` bytes
(the protobuf classes, with each distinct attribute serialized once), the
layout of a request (where its trace IDs and timestamps are, found by a walk
with the shared wire module), and :class:`EncodedRequests`, the replayable
pool of requests."""
from __future__ import annotations

import itertools
import random
import struct
import time
from array import array
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from ..wire import field as wire_field, fields, read_field

if TYPE_CHECKING:
    from .generator import SpanRec, TraceGenerator, TraceInfo


class Encoder:
    """Builds protobuf messages (opentelemetry-proto classes) and serializes them."""

    def __init__(self, gen: TraceGenerator):
        from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
        from opentelemetry.proto.common.v1.common_pb2 import InstrumentationScope
        from opentelemetry.proto.resource.v1.resource_pb2 import Resource

        self.Request = ExportTraceServiceRequest
        self.resources = [Resource(attributes=[_kv(k, v) for k, v in attrs]) for _, attrs in gen.resources]
        self.scopes = [InstrumentationScope(name=n, version=v) for n, v in gen.scopes]
        self._kv_cache: dict = {}

    def _kvs(self, attrs: list) -> list:
        return [_kv(k, v) for k, v in attrs]

    def _attr_bytes(self, attrs: list) -> bytes:
        """Serialized ``Span.attributes`` entries (field 9), one KeyValue message
        serialized by protobuf per distinct (key, value), cached."""
        cache = self._kv_cache
        out = []
        for item in attrs:
            b = cache.get(item)
            if b is None:
                kv = _kv(*item).SerializeToString()
                b = wire_field(0x4A, kv)
                if len(cache) < 500_000:
                    cache[item] = b
            out.append(b)
        return b"".join(out)

    def encode(self, spans: list[SpanRec]) -> tuple[bytes, "RequestLayout"]:
        """Serialize one request; also return where its trace IDs and timestamps are."""
        from opentelemetry.proto.trace.v1.trace_pb2 import Status
        StatusCode = Status.StatusCode.ValueType
        groups: dict[int, dict[int, list[SpanRec]]] = {}
        order: list[SpanRec] = []
        span_bytes = 0
        for sp in spans:
            groups.setdefault(sp.res, {}).setdefault(sp.scope, []).append(sp)
        req = self.Request()
        for res, scopes in groups.items():
            rs = req.resource_spans.add()
            rs.resource.CopyFrom(self.resources[res])
            rs.schema_url = "https://opentelemetry.io/schemas/1.24.0"
            for scope, sps in scopes.items():
                ss = rs.scope_spans.add()
                ss.scope.CopyFrom(self.scopes[scope])
                add = ss.spans.add
                for sp in sps:
                    s = add(trace_id=sp.trace_id, span_id=sp.span_id, parent_span_id=sp.parent_id,
                            flags=sp.flags, name=sp.name, kind=sp.kind,
                            start_time_unix_nano=sp.start, end_time_unix_nano=sp.end)
                    # merging serialized repeated-field entries appends them (2.5x faster than
                    # building KeyValue objects per span)
                    s.MergeFromString(self._attr_bytes(sp.attrs))
                    if sp.events:
                        for t, name, eattrs in sp.events:
                            s.events.add(time_unix_nano=t, name=name, attributes=self._kvs(eattrs))
                    if sp.status:
                        s.status.code = StatusCode(sp.status)
                        if sp.message:
                            s.status.message = sp.message
                    span_bytes += s.ByteSize()
                    order.append(sp)
        data = req.SerializeToString()
        return data, _locate(data, order, span_bytes)


def _locate(data: bytes, spans: list[SpanRec], span_bytes: int) -> "RequestLayout":
    """Offsets of trace IDs and timestamps in ``data``, found by searching each
    span's known values in serialization order (fields are written in field
    number order: trace_id 1, start 7, end 8, events 11). A 16-byte random ID
    or a tagged nanosecond timestamp does not occur by chance; the result is
    checked against the wire walk in the tests."""
    lay = RequestLayout(n_spans=len(spans), span_bytes=span_bytes)
    tids, times = lay.trace_id_offsets, lay.time_offsets
    find = data.find
    pack = struct.Struct("<Q").pack
    pos = 0
    for sp in spans:
        pos = find(sp.trace_id, pos)
        if pos < 0:
            raise AssertionError("trace_id not found in encoded request")
        tids.append(pos)
        pos += 16
        for tag, t in ((b"\x39", sp.start), (b"\x41", sp.end)):
            pos = find(tag + pack(t), pos)
            if pos < 0:
                raise AssertionError("timestamp not found in encoded request")
            times.append(pos + 1)
            pos += 9
        if sp.events:
            for t, _name, _attrs in sp.events:
                pos = find(b"\x09" + pack(t), pos)
                if pos < 0:
                    raise AssertionError("event timestamp not found in encoded request")
                times.append(pos + 1)
                pos += 9
    return lay


def _kv(key: str, value):
    from opentelemetry.proto.common.v1.common_pb2 import AnyValue, KeyValue
    if isinstance(value, bool):
        v = AnyValue(bool_value=value)
    elif isinstance(value, int):
        v = AnyValue(int_value=value)
    elif isinstance(value, float):
        v = AnyValue(double_value=value)
    elif isinstance(value, bytes):
        v = AnyValue(bytes_value=value)
    else:
        v = AnyValue(string_value=str(value))
    return KeyValue(key=key, value=v)


# --------------------------------------------------------------------------
# Wire-level walk of an encoded request (no message objects): span counts,
# span sizes, and where trace IDs and timestamps sit (for replays).
# --------------------------------------------------------------------------

@dataclass(slots=True)
class RequestLayout:
    n_spans: int = 0
    span_bytes: int = 0                                   # sum of Span message bodies
    trace_id_offsets: array = field(default_factory=lambda: array("I"))  # each 16-byte trace_id value
    time_offsets: array = field(default_factory=lambda: array("I"))      # each fixed64 timestamp


# Tags (field number << 3 | wire type) of what the walk looks at
_RESOURCE_SPANS = 0x0A     # ExportTraceServiceRequest.resource_spans (1, length-delimited)
_SCOPE_SPANS = 0x12        # ResourceSpans.scope_spans (2)
_SPANS = 0x12              # ScopeSpans.spans (2)
_TRACE_ID = 0x0A           # Span.trace_id (1)
_START, _END = 0x39, 0x41  # Span.start/end_time_unix_nano (7, 8: fixed64)
_EVENTS = 0x5A             # Span.events (11)
_EVENT_TIME = 0x09         # Event.time_unix_nano (1: fixed64)


def _spans(data: bytes) -> Iterator[tuple[int, int]]:
    """(start, end) of every Span message body in an encoded request."""
    for tag, _ln, body, nxt in fields(data, 0, len(data)):
        if tag != _RESOURCE_SPANS:
            continue
        for tag2, _ln2, body2, nxt2 in fields(data, body, nxt):
            if tag2 != _SCOPE_SPANS:
                continue
            for tag3, _ln3, body3, nxt3 in fields(data, body2, nxt2):
                if tag3 == _SPANS:
                    yield body3, nxt3


def scan_layout(data: bytes) -> RequestLayout:
    """Walk an encoded ExportTraceServiceRequest: spans, their bytes, ID and time offsets."""
    lay = RequestLayout()
    tids, times = lay.trace_id_offsets, lay.time_offsets
    for pos, end in _spans(data):
        lay.n_spans += 1
        lay.span_bytes += end - pos
        while pos < end:
            tag, v, body, pos = read_field(data, pos, end)
            if tag == _TRACE_ID and v == 16:
                tids.append(body)
            elif tag == _START or tag == _END:
                times.append(body)
            elif tag == _EVENTS:
                for etag, _ev, ebody, _enxt in fields(data, body, pos):
                    if etag == _EVENT_TIME:
                        times.append(ebody)
    return lay


def count_spans(data: bytes) -> int:
    """Number of spans in an encoded ExportTraceServiceRequest (wire walk, no parsing)."""
    return sum(1 for _ in _spans(data))


class EncodedRequests(list):
    """A ``list[bytes]`` of encoded requests that also knows its spans.

    ``span_counts[i]``: spans in request i; ``traces``: a :class:`TraceInfo`
    per trace (for checks: how many errors, how many slow).
    """

    def __init__(self, items: Iterable[bytes] = ()):
        super().__init__(items)
        self.span_counts: list[int] = [count_spans(b) for b in self]
        self.traces: list[TraceInfo] = []
        self._layouts: list[RequestLayout] | None = None

    def _append(self, data: bytes, layout: "RequestLayout") -> None:
        if self._layouts is None:
            self._layouts = []
        self.append(data)
        self.span_counts.append(layout.n_spans)
        self._layouts.append(layout)

    @property
    def n_spans(self) -> int:
        return sum(self.span_counts)

    @property
    def n_bytes(self) -> int:
        return sum(len(b) for b in self)

    def layouts(self) -> list[RequestLayout]:
        if self._layouts is None or len(self._layouts) != len(self):
            self._layouts = [scan_layout(b) for b in self]
        return self._layouts

    def mean_span_bytes(self) -> float:
        """Mean size of one encoded Span message (body only, without resource/scope headers)."""
        lays = self.layouts()
        n = sum(l.n_spans for l in lays)
        return sum(l.span_bytes for l in lays) / n if n else 0.0

    def stats(self) -> dict:
        tr = self.traces
        slow = sum(1 for t in tr if t.duration_ns > 1_000_000_000)
        return {
            "requests": len(self),
            "spans": self.n_spans,
            "bytes": self.n_bytes,
            "traces": len(tr),
            "error_traces": sum(1 for t in tr if t.error),
            "slow_traces_over_1s": slow,
            "spans_per_trace": round(self.n_spans / len(tr), 2) if tr else None,
        }

    def cycle(self, *, shift_time: bool = True, seed: int = 0) -> Iterator[tuple[bytes, int]]:
        """Replay forever as ``(bytes, n_spans)``. The first pass sends the
        requests as built; each later pass XORs every trace ID with a fresh
        random 16-byte mask (so traces are new, IDs still uniformly random,
        and all spans of one trace keep one ID) and, with ``shift_time``,
        moves timestamps forward so the pass ends at the current clock."""
        if not self:
            return
        yield from zip(self, self.span_counts)
        lays = self.layouts()
        base = self.newest_time()
        rng = random.Random(seed ^ 0x5EED)
        for _epoch in itertools.count(1):
            mask = rng.getrandbits(128) or 1
            delta = (time.time_ns() - base) if shift_time and base else 0
            for data, lay, n in zip(self, lays, self.span_counts):
                yield _patch(data, lay, mask, delta), n

    def newest_time(self) -> int:
        """The latest timestamp in the requests (0 when there is none)."""
        return max((struct.unpack_from("<Q", b, off)[0]
                    for b, l in zip(self, self.layouts()) for off in l.time_offsets), default=0)

    def retimed(self, now_ns: int | None = None) -> "EncodedRequests":
        """A copy with every timestamp moved so the newest is ``now_ns`` (default: now);
        for a load kept on disk and sent later."""
        lays = self.layouts()
        base = self.newest_time()
        delta = ((now_ns if now_ns is not None else time.time_ns()) - base) if base else 0
        out = EncodedRequests()
        for data, lay in zip(self, lays):
            out._append(_patch(data, lay, 0, delta), lay)
        out.traces = list(self.traces)
        return out


def _patch(data: bytes, lay: RequestLayout, mask: int, delta: int) -> bytes:
    """``data`` with each trace ID XORed with ``mask`` and each timestamp moved by ``delta`` ns."""
    if not mask and not delta:
        return data
    buf = bytearray(data)
    if mask:
        for off in lay.trace_id_offsets:
            v = int.from_bytes(buf[off:off + 16], "big") ^ mask
            buf[off:off + 16] = v.to_bytes(16, "big")
    if delta:
        pack_q, unpack_q = struct.pack_into, struct.unpack_from
        for off in lay.time_offsets:
            pack_q("<Q", buf, off, unpack_q("<Q", buf, off)[0] + delta)
    return bytes(buf)
