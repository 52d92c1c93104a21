"""TraceBuffer: spans held per trace ID until their trace is decided.

Pure-Python twin of ext/_buffer.pyx; ``TraceBuffer`` at the bottom of this
module is whichever loaded (accel.py). Both keep the same state:

* per trace, one ``bytearray`` of span entries: a 40-byte header
  ``[group u32][len u32][span_id 8][parent_span_id 8, zeros if none]
  [start u64][end u64]`` (little-endian; what ``consistency`` needs) then the
  span's original encoding, nothing decoded — and a summary (span count, min
  start, max end, status codes seen, root seen, services, referenced
  attribute values, randomness) updated on insert, so no policy walks spans;
* an interned table of (resource header, scope header) pairs, refcounted,
  so a request's headers are stored once however many traces use them;
* the completion schedule of docs/design.md §2 as a heap of candidate deadlines,
  re-checked lazily when they come due (a deadline only moves later when a
  span arrives, except for a root, which pushes an earlier one). A live
  trace has two candidates: "main" (its first deadline, then each re-check)
  and "root" (pushed once when its root arrives, consumed when it comes
  due); heap entries whose seq is neither are stale and skipped. The
  compiled twin keeps exactly those two per trace in a C heap, so both visit
  traces in the same order. The waits are read at each check from the
  trace's ``Waits`` (its root service's, once the root arrived, else the
  default), so waits learned while a trace is buffered (``root_wait:
  auto``, completion.py) or reloaded apply to it from its next check;
* arrival lags (how long after its trace's first span, and after its root,
  a span arrived, for spans that came in a later request than those),
  counted per service in the buckets of ``LAG_BOUNDS`` until ``take_lags``
  hands them over;
* the decision cache: kept trace IDs with attribution and threshold in an
  insertion-ordered dict, dropped ones as 64-bit fingerprints in two
  generations of sets (the oldest generation is forgotten when the newest
  fills), so late spans follow the decision.

Memory is accounted in bytes (span entries plus a fixed per-trace overhead)
against ``memory_limit``; ``make_room`` picks the traces that free the most.

Two ways in: ``add(scan, data, now)`` buffers a scan result, and
``ingest(data, attr_keys, now)`` scans and buffers in one call (the compiled
twin fuses both into one walk; here it is ``scan_py`` then ``add``); both
return an ``AddResult``. ``ingest`` raises ValueError exactly where the scanner
does, and then leaves the buffer unchanged.

A decided trace (from ``due``, ``make_room``, ``drain`` or ``AddResult.full``)
is handed back to the caller, who may call ``consistency(t, tol)`` on it and
then must call ``finish`` once: ``consistency`` reads the span entries and
the group table, and ``finish`` releases the trace's group references.
"""
from __future__ import annotations

import collections
import heapq
import struct
from typing import Any, Iterable, Literal, Protocol, overload

from . import accel
from .scan import SPAN_LENGTH, SPAN_TRACE_ID, scan_py
from .wire import field as _field, field_len as _field_len
from .tracestate import merge_threshold, randomness

# Span entry header: group id, span length, span_id, parent_span_id (zeros
# when none), start and end (ns).
_HDR = struct.Struct("<II8s8sQQ")
ENTRY_HDR = _HDR.size   # 40
# bytes of one span record of the compiled ingest's hand-off (ext/_walk.pxi
# PreRec), which the twin skips
PRE_REC_SIZE = 48
_ZERO8 = bytes(8)
# Python objects, dict slot, heap entries, bytearray slack and summary of one
# trace beyond its span entries, measured with tracemalloc (loadgen traffic,
# 8 500 traces, 12 spans each on average, buffer memory minus the entries'
# bytes): compiled 740 B without attribute keys, 1 190 B with three keys
# (their value sets); pure twin 1 250 / 1 840 B. The figure covers the
# compiled buffer with referenced attributes.
TRACE_OVERHEAD = 1200
# Distinct values kept per referenced attribute key and trace.
MAX_ATTR_VALUES = 64

TRIGGERS = ("root", "idle", "max_wait", "max_spans", "memory", "shutdown")

# Upper bounds (seconds) of the arrival lag buckets; one more bucket (+Inf)
# follows. Chosen around the OpenTelemetry SDK's 5 s export delay, and few:
# a series per service and bucket is what /metrics costs.
LAG_BOUNDS = (0.1, 0.5, 1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 8.0, 10.0, 20.0, 30.0)
NLAG = len(LAG_BOUNDS) + 1
# Distinct services the lag counts keep apart; more share the last slot,
# reported as service "other" (the metric label is capped further anyway).
MAX_LAG_SERVICES = 4096


def lag_bucket(lag: float) -> int:
    """Index of the first bucket whose upper bound is >= lag (le semantics)."""
    if lag <= 0.0:
        return 0
    i = 0
    for b in LAG_BOUNDS:
        if lag <= b:
            return i
        i += 1
    return i


class Waits:
    """The two learned-or-fixed waits of one root service (or the default):
    traces read them at each check, so changing them in place applies to
    every buffered trace that uses them."""

    __slots__ = ("root_wait", "idle_timeout")

    def __init__(self, root_wait: float, idle_timeout: float):
        self.root_wait = root_wait
        self.idle_timeout = idle_timeout


class Trace:
    """One buffered trace: its span entries and its summary."""

    __slots__ = (
        "trace_id", "data", "span_count", "first_arrival", "last_arrival",
        "root_arrival", "min_start", "max_end", "status_mask", "root_seen",
        "services", "attrs", "randomness", "root_name", "root_service",
        "tracestates", "decided", "finished", "max_gap", "waits",
        "m_seq", "r_seq", "r_slot", "encoded_size",
    )

    def __init__(self, trace_id: bytes, now: float, waits: Waits | None = None):
        self.trace_id = trace_id
        self.data = bytearray()
        self.span_count = 0
        self.first_arrival = now
        self.last_arrival = now
        self.root_arrival = -1.0
        self.min_start = 0
        self.max_end = 0
        self.status_mask = 0
        self.root_seen = False
        self.services: set[str] = set()
        self.attrs: dict[str, set[Any]] | None = None
        self.randomness = -1
        self.root_name = ""
        self.root_service = ""
        self.tracestates: dict[int, str] | None = None
        self.decided = False
        self.finished = False   # finish() ran: its groups are released
        self.max_gap = 0.0      # longest time between two of its arrivals
        self.waits = waits if waits is not None else Waits(0.0, 0.0)
        # its pending heap entries: main, and root while r_slot
        self.m_seq = 0
        self.r_seq = 0
        self.r_slot = False
        # its OTLP size, set by the pipeline before deciding when a policy
        # charges bytes (otlp_size.py); None otherwise
        self.encoded_size = None

    @property
    def trace_state(self) -> str:
        """The first non-empty tracestate seen in the trace (the
        ``trace_state`` policy reads it)."""
        ts = self.tracestates
        return next(iter(ts.values())) if ts else ""

    @property
    def nbytes(self) -> int:
        return len(self.data) + TRACE_OVERHEAD

    def entries(self):
        """Yield (group, offset, length, trace_state) of every span entry."""
        d = self.data
        pos = 0
        n = len(d)
        ts = self.tracestates
        while pos < n:
            g = int.from_bytes(d[pos:pos + 4], "little")
            ln = int.from_bytes(d[pos + 4:pos + 8], "little")
            off = pos + ENTRY_HDR
            yield g, off, ln, (ts.get(off, "") if ts else "")
            pos = off + ln


# Positions in AddResult.late_kept tuples (a late span of a kept trace) and
# in AddResult.late_dropped_spans tuples (a late span of a trace not
# sampled); both twins build them in this order. The span is the encoded
# Span message body.
(LATE_KEPT_TRACE_ID, LATE_KEPT_POLICY, LATE_KEPT_THRESHOLD, LATE_KEPT_RESOURCE, LATE_KEPT_SCOPE,
 LATE_KEPT_SPAN, LATE_KEPT_TRACE_STATE, LATE_KEPT_SERVICE) = range(8)
(LATE_DROPPED_TRACE_ID, LATE_DROPPED_SERVICE, LATE_DROPPED_STATUS, LATE_DROPPED_START,
 LATE_DROPPED_END, LATE_DROPPED_RESOURCE, LATE_DROPPED_SCOPE, LATE_DROPPED_SPAN,
 LATE_DROPPED_TRACE_STATE) = range(9)


class AddResult:
    """What one ``add`` / ``ingest`` call did besides buffering."""

    __slots__ = ("late_kept", "late_dropped", "full", "new_traces", "spans", "per_service",
                 "overflow", "groups", "accepted", "rejected", "errors", "reasons",
                 "span_bytes", "late_dropped_spans", "parts", "counts", "recs")

    def __init__(self):
        # ingest with nshards > 1: the request of each other shard (b"" for
        # this one and for a shard without spans) and its span count
        self.parts: list[bytes] | None = None
        self.counts: list[int] | None = None
        # the compiled ingest's span records of each part; the twin builds none
        self.recs: list[bytes] | None = None
        # the scanner's figures: valid spans, invalid ones with a message and
        # a reason label each, bytes of the valid spans
        self.accepted = 0
        self.rejected = 0
        self.errors: list[str] = []
        self.reasons: list[str] = []
        self.span_bytes = 0
        # the scanner's groups, which ``overflow`` tuples index
        self.groups: list[tuple] = []
        # [(trace_id, policy, threshold, resource_header, scope_header,
        #   span_bytes, trace_state, service)]
        self.late_kept: list[tuple] = []
        # service → [spans, bytes] of every valid span, late ones included
        self.per_service: dict[str, list[int]] = {}
        self.late_dropped = 0
        # with ``late_detail``: every late span of a not-sampled trace as
        # (trace_id, service, status code, start, end, resource_header,
        #  scope_header, span_bytes, trace_state)
        self.late_dropped_spans: list[tuple] = []
        self.full: list[Trace] = []      # reached max_spans_per_trace
        # spans of a trace that became full earlier in the same request, as
        # scan tuples: to be added again (``add`` with ``groups``) once that
        # trace's decision is remembered
        self.overflow: list[tuple] = []
        self.new_traces = 0
        self.spans = 0


class TraceBufferPy:
    def __init__(self, *, decision_wait: float, root_wait: float, idle_timeout: float,
                 max_spans_per_trace: int, memory_limit: int,
                 cache_sampled: int, cache_not_sampled: int):
        self.decision_wait = decision_wait
        self.default_waits = Waits(root_wait, idle_timeout)
        self._svc_waits: dict[str, Waits] = {}
        self.max_spans = max_spans_per_trace
        self.memory_limit = memory_limit
        # late spans of not-sampled traces are listed in AddResult
        # (late_dropped_spans) only when asked: completion.py reads them
        self.late_detail = False
        # service -> [first-arrival lag counts, root lag counts, sums]
        self._lags: dict[str, list] = {}
        self.traces: dict[bytes, Trace] = {}
        self.nbytes = 0
        self.nspans = 0
        self._heap: list[tuple[float, int, bytes]] = []
        self._seq = 0
        # interned (resource_header, scope_header) → group id
        self._group_ids: dict[tuple[bytes, bytes], int] = {}
        # id → [rh, sh, service, refs, key]; None once released (ids are reused)
        self._groups: list[Any] = []
        self._free_groups: list[int] = []
        # decision cache
        self.cache_sampled = cache_sampled
        self.cache_not_sampled = cache_not_sampled
        # oldest forgotten first (an OrderedDict: popping a plain dict's
        # first entry again and again makes finding the next one linear)
        self._kept: collections.OrderedDict[bytes, tuple[str, int]] = collections.OrderedDict()
        self._dropped_new: set[int] = set()
        self._dropped_old: set[int] = set()

    # ------------------------------------------------------------ waits
    @property
    def root_wait(self) -> float:
        return self.default_waits.root_wait

    @root_wait.setter
    def root_wait(self, v: float) -> None:
        self.default_waits.root_wait = v

    @property
    def idle_timeout(self) -> float:
        return self.default_waits.idle_timeout

    @idle_timeout.setter
    def idle_timeout(self, v: float) -> None:
        self.default_waits.idle_timeout = v

    def set_waits(self, service: str, root_wait: float, idle_timeout: float) -> Waits:
        """Give traces whose root span is of ``service`` their own waits
        (from their next check on, for those already buffered)."""
        w = self._svc_waits.get(service)
        if w is None:
            w = self._svc_waits[service] = Waits(root_wait, idle_timeout)
        else:
            w.root_wait = root_wait
            w.idle_timeout = idle_timeout
        return w

    def waits(self, service: str) -> Waits:
        """The waits a trace with a root span of ``service`` uses."""
        return self._svc_waits.get(service, self.default_waits)

    # ------------------------------------------------------------ lags
    def _lag_row(self, svc: str) -> list:
        row = self._lags.get(svc)
        if row is None:
            if len(self._lags) >= MAX_LAG_SERVICES:
                svc = "other"
                row = self._lags.get(svc)
            if row is None:
                row = self._lags[svc] = [[0] * NLAG, [0] * NLAG, 0.0, 0.0]
        return row

    def take_lags(self) -> dict[str, tuple]:
        """Per service, the arrival lags counted since the last call:
        ``(first_counts, root_counts, first_sum, root_sum)``, counts per
        bucket of LAG_BOUNDS (+Inf last). First: since the trace's first
        span arrived, for spans buffered in a later call than it; root:
        since its root span arrived, for spans buffered in a later call
        than the root. (Spans that came with them are not late: no series
        for services that never are.)"""
        out = {}
        for svc, r in self._lags.items():
            if r[2] or r[3] or any(r[0]) or any(r[1]):
                out[svc] = (list(r[0]), list(r[1]), r[2], r[3])
                r[0][:] = [0] * NLAG
                r[1][:] = [0] * NLAG
                r[2] = r[3] = 0.0
        return out

    # ------------------------------------------------------------ groups
    def _group(self, rh: bytes, sh: bytes, service: str) -> int:
        key = (rh, sh)
        gid = self._group_ids.get(key)
        if gid is None:
            entry = [rh, sh, service, 0, key]
            if self._free_groups:
                gid = self._free_groups.pop()
                self._groups[gid] = entry
            else:
                gid = len(self._groups)
                self._groups.append(entry)
            self._group_ids[key] = gid
        return gid

    def group(self, gid: int) -> tuple[bytes, bytes, str]:
        g = self._groups[gid]
        return g[0], g[1], g[2]

    def span_bytes_by_group(self, t: Trace) -> dict[int, int]:
        """group id -> bytes its spans take as ``ScopeSpans.spans`` fields
        (twin of the compiled one; otlp_size.py adds the headers)."""
        out: dict[int, int] = {}
        for gid, _off, ln, _ts in t.entries():
            out[gid] = out.get(gid, 0) + _field_len(ln)
        return out

    def _release(self, gid: int, n: int) -> None:
        g = self._groups[gid]
        g[3] -= n
        if g[3] <= 0:
            del self._group_ids[g[4]]
            self._groups[gid] = None
            self._free_groups.append(gid)

    @property
    def ngroups(self) -> int:
        return len(self._group_ids)

    # ------------------------------------------------------------ cache
    @staticmethod
    def _fp(trace_id: bytes) -> int:
        return int.from_bytes(trace_id[:8], "little") ^ int.from_bytes(trace_id[8:], "little")

    def remember(self, trace_id: bytes, sampled: bool, policy: str, threshold: int) -> None:
        if sampled:
            if self.cache_sampled <= 0:
                return
            kept = self._kept
            kept[trace_id] = (policy, threshold)
            if len(kept) > self.cache_sampled:
                kept.popitem(last=False)
        else:
            if self.cache_not_sampled <= 0:
                return
            self._dropped_new.add(self._fp(trace_id))
            if len(self._dropped_new) >= (self.cache_not_sampled + 1) // 2:
                self._dropped_old = self._dropped_new
                self._dropped_new = set()

    def cached(self, trace_id: bytes):
        """(policy, threshold) if kept, False if dropped, None if unknown."""
        k = self._kept.get(trace_id)
        if k is not None:
            return k
        fp = self._fp(trace_id)
        if fp in self._dropped_new or fp in self._dropped_old:
            return False
        return None

    # ------------------------------------------------------------ insert
    def ingest(self, data: bytes, attr_keys: frozenset[str], now: float,
               nshards: int = 1, shard: int = 0, checked: bool = False,
               recs: int = 0) -> AddResult:
        """Scan and buffer one encoded ExportTraceServiceRequest: the same as
        ``add(scan_py(data, attr_keys), data, now)``. Raises ValueError (the
        scanner's) before anything is buffered.

        ``nshards > 1`` (service.workers): only the spans of traces in shard
        ``shard`` (``shard.shard_of``) are buffered; the others are returned
        in ``parts``, one request per shard, as ``shard.split`` builds them,
        and are left out of ``accepted`` and ``span_bytes``.

        ``checked``: ``data`` was built by another worker out of spans it had
        checked (service.workers' hand-off): the content checks (UTF-8,
        events, links, nested values, the scope) are skipped, what is
        buffered is the same; bad framing still raises.

        ``recs``: the last ``recs`` bytes of ``data`` are the compiled
        ingest's span records of the request before them (a hand-off from a
        compiled worker); the twin walks the spans and skips the records."""
        if type(data) is not bytes:
            data = bytes(data)
        if nshards < 1 or not 0 <= shard < nshards:
            raise ValueError("ingest: shard out of range")
        if recs:
            if not checked or recs < 0 or recs > len(data) or recs % PRE_REC_SIZE:
                raise ValueError(f"ingest: recs={recs} does not fit the request")
            data = data[:len(data) - recs]
        sc = scan_py(data, attr_keys, checked)
        if nshards == 1:
            return self.add(sc, data, now)
        from .shard import parts_py, shard_of_py
        own, other, where = [], [], []
        span_bytes = sc.span_bytes
        for sp in sc.spans:
            s = shard_of_py(sp[SPAN_TRACE_ID], nshards)
            if s == shard:
                own.append(sp)
            else:
                other.append(sp)
                where.append(s)
                span_bytes -= sp[SPAN_LENGTH]
        counts: list[int] = []
        parts = parts_py(data, sc.groups, other, where, nshards, counts,
                         not sc.rejected and not own)
        sc.spans = own
        sc.span_bytes = span_bytes
        res = self.add(sc, data, now)
        res.parts = parts
        res.counts = counts
        return res

    def add(self, scan, data: bytes, now: float) -> AddResult:
        """Buffer the spans of a scan result (or any object with scan-shaped
        ``groups`` and ``spans``) of ``data``."""
        res = AddResult()
        groups = res.groups = scan.groups
        res.accepted = len(scan.spans)
        res.rejected = getattr(scan, "rejected", 0)
        res.errors = getattr(scan, "errors", None) or []
        res.reasons = getattr(scan, "reasons", None) or []
        span_bytes = 0
        gids = [-1] * len(groups)
        traces = self.traces
        max_spans = self.max_spans
        per_service = res.per_service
        full_ids: set[bytes] = set()
        for sp in scan.spans:
            (tid, sid, parent, start, end, status, _kind, gi, off, ln,
             tstate, name, attrs) = sp
            span_bytes += ln
            if full_ids and tid in full_ids:
                res.overflow.append(sp)
                continue
            svc = groups[gi][2]
            ps = per_service.get(svc)
            if ps is None:
                per_service[svc] = [1, ln]
            else:
                ps[0] += 1
                ps[1] += ln
            t = traces.get(tid)
            if t is None:
                c = self.cached(tid)
                if c is not None:
                    rh, sh, svc, _rattrs = groups[gi]
                    if c is False:
                        res.late_dropped += 1
                        if self.late_detail:
                            res.late_dropped_spans.append(
                                (tid, svc, status, start, end, rh, sh,
                                 data[off:off + ln], tstate))
                    else:
                        res.late_kept.append((tid, c[0], c[1], rh, sh,
                                              data[off:off + ln], tstate, svc))
                    continue
                t = Trace(tid, now, self.default_waits)
                traces[tid] = t
                self.nbytes += TRACE_OVERHEAD
                res.new_traces += 1
                t.m_seq = self._schedule(t, now + min(self.idle_timeout, self.decision_wait))
            gid = gids[gi]
            if gid < 0:
                rh, sh, svc, _ = groups[gi]
                gid = gids[gi] = self._group(rh, sh, svc)
            g = self._groups[gid]
            g[3] += 1
            d = t.data
            if tstate:
                if t.tracestates is None:
                    t.tracestates = {}
                t.tracestates[len(d) + ENTRY_HDR] = tstate
            d += _HDR.pack(gid, ln, sid, parent, start, end)
            d += data[off:off + ln]
            self.nbytes += ln + ENTRY_HDR
            self.nspans += 1
            res.spans += 1
            if t.span_count == 0 or start < t.min_start:
                t.min_start = start
            if end > t.max_end:
                t.max_end = end
            t.span_count += 1
            if 0 <= status < 32:     # an unknown (even negative) enum value is kept, not matched
                t.status_mask |= 1 << status
            gap = now - t.last_arrival
            if gap > t.max_gap:
                t.max_gap = gap
            t.last_arrival = now
            t.services.add(svc)
            if t.randomness < 0 or (tstate and "rv:" in tstate):
                t.randomness = randomness(tid, tstate)
            if not parent and not t.root_seen:
                t.root_seen = True
                t.root_arrival = now
                t.root_name = name
                t.root_service = svc
                t.waits = self._svc_waits.get(svc, self.default_waits)
                t.r_seq = self._schedule(t, now + t.waits.root_wait)
                t.r_slot = True
            lag = now - t.first_arrival
            if lag > 0.0:
                lr = self._lag_row(svc)
                lr[0][lag_bucket(lag)] += 1
                lr[2] += lag
                if t.root_seen:
                    lag = now - t.root_arrival
                    if lag > 0.0:
                        lr[1][lag_bucket(lag)] += 1
                        lr[3] += lag
            rattrs = groups[gi][3]
            if attrs or rattrs:
                if t.attrs is None:
                    t.attrs = {}
                for a in (rattrs, attrs):
                    if a:
                        for k, v in a.items():
                            s = t.attrs.get(k)
                            if s is None:
                                t.attrs[k] = {v}
                            elif len(s) < MAX_ATTR_VALUES:
                                s.add(v)
            if t.span_count >= max_spans:
                res.full.append(t)
                full_ids.add(tid)
                self._remove(t)
        res.span_bytes = getattr(scan, "span_bytes", span_bytes)
        return res

    # ------------------------------------------------------------ completion
    def _schedule(self, t: Trace, when: float) -> int:
        self._seq += 1
        heapq.heappush(self._heap, (when, self._seq, t.trace_id))
        return self._seq

    def deadline(self, t: Trace) -> float:
        w = t.waits
        d = min(t.first_arrival + self.decision_wait, t.last_arrival + w.idle_timeout)
        if t.root_seen:
            d = min(d, t.root_arrival + w.root_wait)
        return d

    def trigger(self, t: Trace) -> str:
        """Which rule of docs/design.md §2 made the trace due (earliest wins)."""
        w = t.waits
        cands = [(t.first_arrival + self.decision_wait, "max_wait"),
                 (t.last_arrival + w.idle_timeout, "idle")]
        if t.root_seen:
            cands.append((t.root_arrival + w.root_wait, "root"))
        return min(cands)[1]

    def _live(self, seq: int, tid: bytes) -> Trace | None:
        t = self.traces.get(tid)
        if t is None or not (seq == t.m_seq or (t.r_slot and seq == t.r_seq)):
            return None     # stale: its trace was decided, or the entry replaced
        return t

    def due(self, now: float, limit: int = 1 << 30) -> list[tuple[Trace, str]]:
        """Remove and return up to ``limit`` traces whose deadline has passed."""
        out: list[tuple[Trace, str]] = []
        heap = self._heap
        while heap and heap[0][0] <= now and len(out) < limit:
            _, seq, tid = heapq.heappop(heap)
            t = self._live(seq, tid)
            if t is None:
                continue
            d = self.deadline(t)
            if d <= now:
                out.append((t, self.trigger(t)))
                self._remove(t)
            else:
                # not due after all (a span moved it, or its waits grew): the
                # popped candidate is used up, the main one moves to d
                if t.r_slot and seq == t.r_seq:
                    t.r_slot = False
                t.m_seq = self._schedule(t, d)
        return out

    def next_deadline(self) -> float | None:
        """The earliest pending deadline of a buffered trace, or None."""
        heap = self._heap
        while heap:
            when, seq, tid = heap[0]
            if self._live(seq, tid) is not None:
                return when
            heapq.heappop(heap)     # stale
        return None

    def make_room(self, incoming: int) -> list[tuple[Trace, str]]:
        """Decide early the traces that free the most memory, until
        ``incoming`` more bytes fit with 10 % headroom below the limit."""
        if self.nbytes + incoming <= self.memory_limit:
            return []
        target = max(0, int(self.memory_limit * 0.9) - incoming)
        out = []
        for t in sorted(self.traces.values(), key=lambda t: len(t.data), reverse=True):
            if self.nbytes <= target:
                break
            out.append((t, "memory"))
            self._remove(t)
        return out

    def drain(self) -> list[tuple[Trace, str]]:
        out = []
        for t in list(self.traces.values()):
            out.append((t, "shutdown"))
            self._remove(t)
        self._heap.clear()
        return out

    def discard(self, trace_id: bytes) -> int:
        """Forget a buffered trace without deciding it and without remembering
        a decision (its spans will be read again whole elsewhere, e.g. by the
        new owner of a revoked Kafka partition). Returns how many spans it
        held, 0 when it is not buffered."""
        t = self.traces.get(trace_id)
        if t is None:
            return 0
        self._remove(t)
        t.finished = True
        counts: dict[int, int] = {}
        for gid, _o, _l, _ts in t.entries():
            counts[gid] = counts.get(gid, 0) + 1
        for gid, n in counts.items():
            self._release(gid, n)
        return t.span_count

    def _remove(self, t: Trace) -> None:
        # The trace leaves the index and the accounting now; its group
        # references stay until finish() has encoded it.
        t.decided = True
        del self.traces[t.trace_id]
        self.nbytes -= len(t.data) + TRACE_OVERHEAD
        self.nspans -= t.span_count

    # ------------------------------------------------------------ consistency
    def consistency(self, t: Trace, skew_tolerance_ns: int, amounts: list | None = None):
        """What the span entries of a trace say about its consistency:
        ``(duplicates, orphans, skewed, no_root)``.

        * ``duplicates``: spans whose span_id already appeared in the trace;
        * ``orphans``: service → spans whose parent_span_id matches no span_id
          of the trace;
        * ``skewed``: service → child spans that start before their parent's
          start - tolerance or end after its end + tolerance (the parent is the
          first span with that span_id);
        * ``no_root``: no span without parent_span_id.

        With ``amounts`` (a list), each skewed span also appends ``(service,
        ns outside its parent)`` to it, for the skew histogram.

        A parent_span_id of 8 zero bytes counts as none here (never an
        orphan), though such a span is not a root. Call it before ``finish``,
        which releases the groups the services come from."""
        if skew_tolerance_ns < 0:
            raise ValueError("skew_tolerance_ns must be >= 0")
        if t.finished:
            raise ValueError("consistency: the trace is finished (call it before finish)")
        tol = skew_tolerance_ns
        d = t.data
        n = len(d)
        unpack = _HDR.unpack_from
        first: dict[bytes, tuple[int, int]] = {}
        heads = []
        dups = 0
        pos = 0
        while pos < n:
            gid, ln, sid, pid, start, end = h = unpack(d, pos)
            pos += ENTRY_HDR + ln
            if sid in first:
                dups += 1
            else:
                first[sid] = (start, end)
            heads.append(h)
        orphans: dict[str, int] = {}
        skewed: dict[str, int] = {}
        for gid, _ln, _sid, pid, start, end in heads:
            if pid == _ZERO8:
                continue
            p = first.get(pid)
            if p is None:
                target = orphans
            elif start < p[0] - tol or end > p[1] + tol:
                target = skewed
                if amounts is not None:
                    amounts.append((self._groups[gid][2], max(p[0] - start, end - p[1], 0)))
            else:
                continue
            svc = self._groups[gid][2]
            target[svc] = target.get(svc, 0) + 1
        return dups, orphans, skewed, not t.root_seen

    # ------------------------------------------------------------ span data
    def spans(self, t: Trace) -> list[tuple[bytes, bytes, bytes]]:
        """``(resource_header, scope_header, span)`` of every span of a
        decided trace, in arrival order, as received: for the policies that
        read span data at decision time (ottl_condition, trace_flags), which
        decode it themselves. Call it before ``finish``."""
        if t.finished:
            raise ValueError("spans: the trace is finished (call it before finish)")
        d = t.data
        groups = self._groups
        out = []
        for gid, off, ln, _ts in t.entries():
            g = groups[gid]
            out.append((g[0], g[1], bytes(d[off:off + ln])))
        return out

    # ------------------------------------------------------------ output
    def finish(self, t: Trace, sampled: bool, policy: str, threshold: int, extra: bytes = b""):
        """Remember the decision, release the trace's headers, and, when it is
        kept, return ``(blob, per_service)``: its spans encoded as
        ``ExportTraceServiceRequest.resource_spans`` fields (so batches are
        plain concatenations), each with its ``trace_state`` field and then
        ``extra`` (encoded Span fields, e.g. an attribute) appended, and per
        service ``[spans, span bytes as received]``."""
        if not t.decided:
            raise ValueError("finish: the trace is still buffered (not decided)")
        if t.finished:
            raise ValueError("finish: the trace is already finished")
        t.finished = True
        self.remember(t.trace_id, sampled, policy, threshold)
        counts: dict[int, int] = {}
        out: tuple[bytes, dict[str, list[int]]] | None = None
        if sampled:
            by_group: dict[int, list[bytes]] = {}
            nbytes_by_group: dict[int, int] = {}
            d = t.data
            merged: dict[str, bytes] = {}
            for gid, off, ln, ts in t.entries():
                suffix = merged.get(ts)
                if suffix is None:
                    val = merge_threshold(ts, threshold).encode()
                    suffix = merged[ts] = _field(0x1A, val) + extra
                span = bytes(d[off:off + ln]) + suffix
                nbytes_by_group[gid] = nbytes_by_group.get(gid, 0) + ln
                lst = by_group.get(gid)
                if lst is None:
                    by_group[gid] = lst = []
                lst.append(_field(0x12, span))
            blob = self.encode_groups(
                (self._groups[gid][0], self._groups[gid][1], spans)
                for gid, spans in by_group.items())
            per_service: dict[str, list[int]] = {}
            for gid, spans in by_group.items():
                counts[gid] = len(spans)
                svc = self._groups[gid][2]
                row = per_service.get(svc)
                if row is None:
                    per_service[svc] = [len(spans), nbytes_by_group[gid]]
                else:
                    row[0] += len(spans)
                    row[1] += nbytes_by_group[gid]
            out = (blob, per_service)
        else:
            for gid, _o, _l, _ts in t.entries():
                counts[gid] = counts.get(gid, 0) + 1
        for gid, n in counts.items():
            self._release(gid, n)
        return out

    @staticmethod
    def encode_groups(items) -> bytes:
        """[(resource_header, scope_header, [encoded span fields])] →
        ResourceSpans fields, one per distinct resource header."""
        by_res: dict[bytes, list[bytes]] = {}
        for rh, sh, spans in items:
            body = sh + b"".join(spans)
            lst = by_res.get(rh)
            if lst is None:
                by_res[rh] = lst = []
            lst.append(_field(0x12, body))
        return b"".join(_field(0x0A, rh + b"".join(scopes)) for rh, scopes in by_res.items())

    @property
    def ntraces(self) -> int:
        return len(self.traces)


POLICY_ATTRIBUTE = "traceo.sampling.policy"


def policy_attribute(policy: str) -> bytes:
    """Span field 9 (attributes), one KeyValue ``traceo.sampling.policy`` =
    policy, encoded to be appended to a kept span (a repeated field gains an
    element)."""
    key = POLICY_ATTRIBUTE.encode()
    val = policy.encode()
    any_value = _field(0x0A, val)                      # AnyValue.string_value
    kv = _field(0x0A, key) + _field(0x12, any_value)   # KeyValue.key, .value
    return _field(0x4A, kv)


def encode_late(items, record_policy: bool = False) -> bytes:
    """Encode late spans of kept traces: items are the ``late_kept`` tuples
    of AddResult (trace_id, policy, threshold, rh, sh, span, trace_state,
    service); with ``record_policy`` each also gets the policy attribute."""
    groups: dict[tuple[bytes, bytes], list[bytes]] = {}
    for _tid, pol, th, rh, sh, span, ts, _svc in items:
        val = merge_threshold(ts, th).encode()
        span = bytes(span) + _field(0x1A, val)
        if record_policy:
            span += policy_attribute(pol)
        groups.setdefault((rh, sh), []).append(_field(0x12, span))
    return TraceBufferPy.encode_groups((rh, sh, s) for (rh, sh), s in groups.items())


class TraceBufferLike(Protocol):
    """What both twins provide (``TraceBufferPy`` here, ``_buffer.TraceBuffer``
    compiled; the stub ``_buffer.pyi`` is checked against the compiled one),
    as aiokafka types its twins against ``_protocols.py``. The pipeline, the
    decider and the workers hold a buffer as this. Traces are each twin's own
    ``Trace`` class, hence ``Any``."""

    def __init__(self, *, decision_wait: float, root_wait: float, idle_timeout: float,
                 max_spans_per_trace: int, memory_limit: int,
                 cache_sampled: int, cache_not_sampled: int) -> None: ...

    decision_wait: float
    root_wait: float
    idle_timeout: float
    max_spans: int
    memory_limit: int
    nbytes: int
    nspans: int
    late_detail: bool
    traces: dict[bytes, Any]

    @property
    def ntraces(self) -> int: ...
    @property
    def ngroups(self) -> int: ...
    def set_waits(self, service: str, root_wait: float, idle_timeout: float) -> Any: ...
    def waits(self, service: str) -> Any: ...
    def take_lags(self) -> dict[str, tuple]: ...
    def group(self, gid: int) -> tuple[bytes, bytes, str]: ...
    def remember(self, trace_id: bytes, sampled: bool, policy: str, threshold: int) -> None: ...
    def cached(self, trace_id: bytes) -> tuple[str, int] | bool | None: ...
    def ingest(self, data: bytes, attr_keys: frozenset[str], now: float,
               nshards: int = ..., shard: int = ..., checked: bool = ...,
               recs: int = ...) -> Any: ...
    def add(self, scan: Any, data: bytes, now: float) -> Any: ...
    def deadline(self, t: Any) -> float: ...
    def trigger(self, t: Any) -> str: ...
    def due(self, now: float, limit: int = ...) -> list[tuple[Any, str]]: ...
    def next_deadline(self) -> float | None: ...
    def make_room(self, incoming: int) -> list[tuple[Any, str]]: ...
    def drain(self) -> list[tuple[Any, str]]: ...
    def discard(self, trace_id: bytes) -> int: ...
    def span_bytes_by_group(self, t: Any) -> dict[int, int]: ...
    def spans(self, t: Any) -> list[tuple[bytes, bytes, bytes]]: ...
    def consistency(self, t: Any, skew_tolerance_ns: int, amounts: list | None = None
                    ) -> tuple[int, dict[str, int], dict[str, int], bool]: ...
    @overload
    def finish(self, t: Any, sampled: Literal[True], policy: str, threshold: int,
               extra: bytes = b"") -> tuple[bytes, dict[str, list[int]]]: ...
    @overload
    def finish(self, t: Any, sampled: bool, policy: str, threshold: int, extra: bytes = b""
               ) -> tuple[bytes, dict[str, list[int]]] | None: ...
    @staticmethod
    def encode_groups(items: Iterable[tuple[bytes, bytes, list[bytes]]]) -> bytes: ...


_c = accel.compiled("buffer")
# the class to instantiate: the compiled twin when it loaded, else the pure one
TraceBuffer: type[TraceBufferLike] = _c.TraceBuffer if _c is not None else TraceBufferPy
IMPLEMENTATION = "cython" if _c is not None else "python"
