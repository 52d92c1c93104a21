# cython: language_level=3
"""Compiled twin of traceo_sampler.buffer.TraceBufferPy (read that module's
docstring for the model). Same state, same results; the differences are
only in representation: the trace summary lives in C fields, span entries
are appended with memcpy, and the dropped-trace filter is two generations of
open-addressing tables of 64-bit fingerprints instead of Python sets.
"""
from cpython.bytearray cimport PyByteArray_AS_STRING, PyByteArray_GET_SIZE, PyByteArray_Resize
from cpython.bytes cimport PyBytes_AS_STRING, PyBytes_GET_SIZE
from cpython.mem cimport PyMem_Calloc, PyMem_Free
from libc.stdint cimport int64_t, uint32_t, uint64_t
from libc.string cimport memcpy, memset

import heapq

from traceo_sampler.tracestate import merge_threshold, randomness as _py_randomness

cdef enum:
    ENTRY_HDR = 8
    TRACE_OVERHEAD = 1000
    MAX_ATTR_VALUES = 64


cdef inline bytes _varint(Py_ssize_t n):
    cdef unsigned char buf[10]
    cdef int i = 0
    while n > 0x7F:
        buf[i] = (n & 0x7F) | 0x80
        n >>= 7
        i += 1
    buf[i] = n
    return (<char*>buf)[:i + 1]


cdef inline Py_ssize_t _vlen(Py_ssize_t n):
    cdef Py_ssize_t k = 1
    while n > 0x7F:
        n >>= 7
        k += 1
    return k


cdef inline Py_ssize_t _wvarint(unsigned char* w, Py_ssize_t n):
    cdef Py_ssize_t i = 0
    while n > 0x7F:
        w[i] = (n & 0x7F) | 0x80
        n >>= 7
        i += 1
    w[i] = n
    return i + 1


cdef inline bytes _suffix(str trace_state):
    """The appended Span.trace_state field (tag 3, length-delimited)."""
    cdef bytes val = trace_state.encode()
    return b"\x1a" + _varint(len(val)) + val


cdef inline bytes _field(int tag, bytes payload):
    return bytes((tag,)) + _varint(len(payload)) + payload


cdef class Trace:
    cdef public bytes trace_id
    cdef public bytearray data
    cdef public Py_ssize_t span_count
    cdef public double first_arrival, last_arrival, root_arrival, deadline
    cdef public int64_t min_start, max_end
    cdef public long status_mask
    cdef public bint root_seen, decided
    cdef public set services
    cdef public object attrs
    cdef public long long randomness
    cdef public str root_name, root_service
    cdef public object tracestates

    def __init__(self, bytes trace_id, double now):
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
        self.services = set()
        self.attrs = None
        self.randomness = -1
        self.root_name = ""
        self.root_service = ""
        self.tracestates = None
        self.decided = False
        self.deadline = 0.0

    @property
    def nbytes(self):
        return len(self.data) + TRACE_OVERHEAD

    def entries(self):
        """Yield (group, offset, length, trace_state) of every span entry."""
        cdef const unsigned char* d = <const unsigned char*>PyByteArray_AS_STRING(self.data)
        cdef Py_ssize_t n = PyByteArray_GET_SIZE(self.data)
        cdef Py_ssize_t pos = 0
        cdef uint32_t g, ln
        ts = self.tracestates
        out = []
        while pos < n:
            memcpy(&g, d + pos, 4)
            memcpy(&ln, d + pos + 4, 4)
            out.append((g, pos + 8, ln, (ts.get(pos + 8, "") if ts else "")))
            pos += 8 + ln
        return out


cdef class AddResult:
    cdef public list late_kept
    cdef public Py_ssize_t late_dropped, new_traces, spans
    cdef public list full
    cdef public dict per_service
    cdef public list overflow

    def __init__(self):
        self.overflow = []
        self.late_kept = []
        self.late_dropped = 0
        self.full = []
        self.new_traces = 0
        self.spans = 0
        self.per_service = {}


cdef class _FpTable:
    """Open-addressing set of non-zero 64-bit fingerprints, fixed capacity."""
    cdef uint64_t* slots
    cdef Py_ssize_t mask, count

    def __cinit__(self, Py_ssize_t expected):
        cdef Py_ssize_t cap = 16
        while cap < 2 * expected:
            cap <<= 1
        self.slots = <uint64_t*>PyMem_Calloc(cap, sizeof(uint64_t))
        if self.slots == NULL:
            raise MemoryError()
        self.mask = cap - 1
        self.count = 0

    def __dealloc__(self):
        PyMem_Free(self.slots)

    cdef inline bint contains(self, uint64_t fp):
        cdef Py_ssize_t i = <Py_ssize_t>(fp & <uint64_t>self.mask)
        while True:
            if self.slots[i] == fp:
                return True
            if self.slots[i] == 0:
                return False
            i = (i + 1) & self.mask

    cdef inline void add(self, uint64_t fp):
        cdef Py_ssize_t i = <Py_ssize_t>(fp & <uint64_t>self.mask)
        while True:
            if self.slots[i] == fp:
                return
            if self.slots[i] == 0:
                self.slots[i] = fp
                self.count += 1
                return
            i = (i + 1) & self.mask

    cdef void clear(self):
        memset(self.slots, 0, (self.mask + 1) * sizeof(uint64_t))
        self.count = 0


cdef inline uint64_t _fp(bytes trace_id):
    cdef const unsigned char* p = <const unsigned char*>PyBytes_AS_STRING(trace_id)
    cdef uint64_t a, b
    memcpy(&a, p, 8)
    memcpy(&b, p + 8, 8)
    a ^= b
    return a if a != 0 else 1


cdef inline long long _low56(bytes trace_id):
    cdef const unsigned char* p = <const unsigned char*>PyBytes_AS_STRING(trace_id)
    cdef long long r = 0
    cdef int i
    for i in range(9, 16):
        r = (r << 8) | p[i]
    return r


cdef class TraceBuffer:
    cdef public double decision_wait, root_wait, idle_timeout
    cdef public Py_ssize_t max_spans, memory_limit, nbytes, nspans
    cdef public dict traces
    cdef list _heap
    cdef Py_ssize_t _seq
    cdef dict _group_ids
    cdef list _groups
    cdef list _free_groups
    cdef public Py_ssize_t cache_sampled, cache_not_sampled
    cdef dict _kept
    cdef _FpTable _dropped_new, _dropped_old
    cdef Py_ssize_t _gen_size

    def __init__(self, *, double decision_wait, double root_wait, double idle_timeout,
                 Py_ssize_t max_spans_per_trace, Py_ssize_t memory_limit,
                 Py_ssize_t cache_sampled, Py_ssize_t cache_not_sampled):
        self.decision_wait = decision_wait
        self.root_wait = root_wait
        self.idle_timeout = idle_timeout
        self.max_spans = max_spans_per_trace
        self.memory_limit = memory_limit
        self.traces = {}
        self.nbytes = 0
        self.nspans = 0
        self._heap = []
        self._seq = 0
        self._group_ids = {}
        self._groups = []
        self._free_groups = []
        self.cache_sampled = cache_sampled
        self.cache_not_sampled = cache_not_sampled
        self._kept = {}
        self._gen_size = (cache_not_sampled + 1) // 2
        self._dropped_new = _FpTable(self._gen_size)
        self._dropped_old = _FpTable(self._gen_size)

    # ------------------------------------------------------------ groups
    cdef Py_ssize_t _group(self, bytes rh, bytes sh, str service):
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

    def group(self, Py_ssize_t gid):
        g = self._groups[gid]
        return g[0], g[1], g[2]

    cdef void _release(self, Py_ssize_t gid, Py_ssize_t n):
        g = self._groups[gid]
        g[3] -= n
        if g[3] <= 0:
            del self._group_ids[g[4]]
            self._groups[gid] = None
            self._free_groups.append(gid)

    @property
    def ngroups(self):
        return len(self._group_ids)

    # ------------------------------------------------------------ cache
    def remember(self, bytes trace_id, bint sampled, str policy, threshold):
        if sampled:
            if self.cache_sampled <= 0:
                return
            kept = self._kept
            kept[trace_id] = (policy, threshold)
            if len(kept) > self.cache_sampled:
                del kept[next(iter(kept))]
        else:
            if self.cache_not_sampled <= 0:
                return
            self._dropped_new.add(_fp(trace_id))
            if self._dropped_new.count >= self._gen_size:
                old = self._dropped_old
                old.clear()
                self._dropped_old = self._dropped_new
                self._dropped_new = old

    def cached(self, bytes trace_id):
        """(policy, threshold) if kept, False if dropped, None if unknown."""
        k = self._kept.get(trace_id)
        if k is not None:
            return k
        if self.cache_not_sampled > 0:
            fp = _fp(trace_id)
            if self._dropped_new.contains(fp) or self._dropped_old.contains(fp):
                return False
        return None

    # ------------------------------------------------------------ insert
    def add(self, scan, bytes data, double now):
        cdef AddResult res = AddResult()
        cdef list groups = scan.groups
        cdef Py_ssize_t ngroups = len(groups)
        cdef list gids = [-1] * ngroups
        cdef dict traces = self.traces
        cdef dict per_service = res.per_service
        cdef Trace t
        cdef Py_ssize_t off, ln, gi, gid, old, first_idle
        cdef int64_t start, end
        cdef int status
        cdef uint32_t hdr[2]
        cdef const char* src = PyBytes_AS_STRING(data)
        cdef char* dst
        cdef tuple sp
        cdef list g
        cdef double first_deadline = now + min(self.idle_timeout, self.decision_wait)
        cdef set full_ids = None
        for sp in scan.spans:
            tid = <bytes>sp[0]
            if full_ids is not None and tid in full_ids:
                res.overflow.append(sp)
                continue
            gi = sp[7]
            off = sp[8]
            ln = sp[9]
            svc = (<tuple>groups[gi])[2]
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
                    if c is False:
                        res.late_dropped += 1
                    else:
                        grp = groups[gi]
                        res.late_kept.append((tid, c[0], c[1], grp[0], grp[1],
                                              data[off:off + ln], sp[10], grp[2]))
                    continue
                t = Trace(tid, now)
                traces[tid] = t
                self.nbytes += TRACE_OVERHEAD
                res.new_traces += 1
                self._seq += 1
                heapq.heappush(self._heap, (first_deadline, self._seq, tid))
            gid = gids[gi]
            if gid < 0:
                grp = groups[gi]
                gid = self._group(grp[0], grp[1], grp[2])
                gids[gi] = gid
            g = <list>self._groups[gid]
            g[3] += 1
            tstate = <str>sp[10]
            old = PyByteArray_GET_SIZE(t.data)
            if tstate:
                if t.tracestates is None:
                    t.tracestates = {}
                t.tracestates[old + ENTRY_HDR] = tstate
            PyByteArray_Resize(t.data, old + ENTRY_HDR + ln)
            dst = PyByteArray_AS_STRING(t.data) + old
            hdr[0] = <uint32_t>gid
            hdr[1] = <uint32_t>ln
            memcpy(dst, hdr, ENTRY_HDR)
            memcpy(dst + ENTRY_HDR, src + off, ln)
            self.nbytes += ln + ENTRY_HDR
            self.nspans += 1
            res.spans += 1
            start = sp[3]
            end = sp[4]
            if t.span_count == 0 or start < t.min_start:
                t.min_start = start
            if end > t.max_end:
                t.max_end = end
            t.span_count += 1
            status = sp[5]
            if 0 <= status < 32:     # an unknown (even negative) enum value is kept, not matched
                t.status_mask |= 1 << status
            t.last_arrival = now
            t.services.add(svc)
            if tstate and "rv:" in tstate:
                t.randomness = _py_randomness(tid, tstate)
            elif t.randomness < 0:
                t.randomness = _low56(tid)
            if not sp[2] and not t.root_seen:
                t.root_seen = True
                t.root_arrival = now
                t.root_name = sp[11]
                t.root_service = svc
                self._seq += 1
                heapq.heappush(self._heap, (now + self.root_wait, self._seq, tid))
            attrs = sp[12]
            rattrs = (<tuple>groups[gi])[3]
            if attrs is not None or rattrs is not None:
                if t.attrs is None:
                    t.attrs = {}
                for a in (rattrs, attrs):
                    if a:
                        for k, v in (<dict>a).items():
                            s = t.attrs.get(k)
                            if s is None:
                                t.attrs[k] = {v}
                            elif len(s) < MAX_ATTR_VALUES:
                                s.add(v)
            if t.span_count >= self.max_spans:
                t.decided = True
                res.full.append(t)
                if full_ids is None:
                    full_ids = set()
                full_ids.add(tid)
                self._remove(t)
        return res

    # ------------------------------------------------------------ completion
    cpdef double deadline(self, Trace t):
        cdef double d = min(t.first_arrival + self.decision_wait, t.last_arrival + self.idle_timeout)
        if t.root_seen:
            d = min(d, t.root_arrival + self.root_wait)
        return d

    cpdef str trigger(self, Trace t):
        # the earliest rule wins; ties go to idle, then max_wait, then root,
        # as the pure twin's min() over (time, name) pairs
        cdef double mw = t.first_arrival + self.decision_wait
        cdef double idle = t.last_arrival + self.idle_timeout
        cdef double best = idle
        cdef str name = "idle"
        if mw < best:
            best = mw
            name = "max_wait"
        if t.root_seen:
            mw = t.root_arrival + self.root_wait
            if mw < best:
                best = mw
                name = "root"
        return name

    def due(self, double now, Py_ssize_t limit=1 << 30):
        cdef list out = []
        cdef list heap = self._heap
        cdef dict traces = self.traces
        cdef Trace t
        cdef double d
        while heap and (<tuple>heap[0])[0] <= now and len(out) < limit:
            item = heapq.heappop(heap)
            t = traces.get(item[2])
            if t is None or t.decided:
                continue
            d = self.deadline(t)
            if d <= now:
                t.decided = True
                out.append((t, self.trigger(t)))
                self._remove(t)
            else:
                self._seq += 1
                heapq.heappush(heap, (d, self._seq, t.trace_id))
        return out

    def next_deadline(self):
        return self._heap[0][0] if self._heap else None

    def make_room(self, Py_ssize_t incoming):
        if self.nbytes + incoming <= self.memory_limit:
            return []
        cdef Py_ssize_t target = max(0, <Py_ssize_t>(self.memory_limit * 0.9) - incoming)
        cdef Trace t
        out = []
        for t in sorted(self.traces.values(), key=_size_key, reverse=True):
            if self.nbytes <= target:
                break
            t.decided = True
            out.append((t, "memory"))
            self._remove(t)
        return out

    def drain(self):
        cdef Trace t
        out = []
        for t in list(self.traces.values()):
            t.decided = True
            out.append((t, "shutdown"))
            self._remove(t)
        self._heap.clear()
        return out

    cdef void _remove(self, Trace t):
        del self.traces[t.trace_id]
        self.nbytes -= PyByteArray_GET_SIZE(t.data) + TRACE_OVERHEAD
        self.nspans -= t.span_count

    # ------------------------------------------------------------ output
    def finish(self, Trace t, bint sampled, str policy, threshold):
        """Remember the decision, release the trace's headers, and, when it
        is kept, return (blob, spans_per_service) — see the pure twin."""
        self.remember(t.trace_id, sampled, policy, threshold)
        cdef const unsigned char* d = <const unsigned char*>PyByteArray_AS_STRING(t.data)
        cdef Py_ssize_t n = PyByteArray_GET_SIZE(t.data)
        cdef Py_ssize_t pos = 0
        cdef uint32_t gid, ln
        cdef dict counts = {}
        if not sampled:
            while pos < n:
                memcpy(&gid, d + pos, 4)
                memcpy(&ln, d + pos + 4, 4)
                counts[gid] = counts.get(gid, 0) + 1
                pos += 8 + ln
            for g, c in counts.items():
                self._release(g, c)
            return None
        out = self._encode(t, threshold, counts)
        per_service = {}
        for g, c in counts.items():
            svc = self._groups[g][2]
            per_service[svc] = per_service.get(svc, 0) + c
            self._release(g, c)
        return (out, per_service)

    cdef bytes _encode(self, Trace t, threshold, dict counts):
        # Two passes over the entries: sizes first, then one output buffer
        # written with memcpy. Spans are grouped by (resource, scope) in
        # order of first appearance, scopes under their resource header.
        cdef const unsigned char* d = <const unsigned char*>PyByteArray_AS_STRING(t.data)
        cdef Py_ssize_t n = PyByteArray_GET_SIZE(t.data)
        cdef Py_ssize_t pos = 0, total = 0, body, sbody, k, i, o = 0, p, l
        cdef unsigned char* w
        cdef uint32_t gid, ln
        cdef bytes suffix, rh, sh
        cdef dict merged = {}
        ts_map = t.tracestates
        plain = _suffix(merge_threshold("", threshold))
        # per group: [list of (pos, ln, suffix)]
        cdef dict by_group = {}
        cdef list order = []
        while pos < n:
            memcpy(&gid, d + pos, 4)
            memcpy(&ln, d + pos + 4, 4)
            if ts_map:
                ts = ts_map.get(pos + 8)
                if ts:
                    suffix = merged.get(ts)
                    if suffix is None:
                        suffix = _suffix(merge_threshold(ts, threshold))
                        merged[ts] = suffix
                else:
                    suffix = plain
            else:
                suffix = plain
            lst = by_group.get(gid)
            if lst is None:
                lst = []
                by_group[gid] = lst
                order.append(gid)
            lst.append((pos + 8, ln, suffix))
            pos += 8 + ln
        # resource header → [gids]
        cdef dict by_res = {}
        cdef list res_order = []
        for g in order:
            rh = self._groups[g][0]
            gl = by_res.get(rh)
            if gl is None:
                gl = []
                by_res[rh] = gl
                res_order.append(rh)
            gl.append(g)
            counts[g] = len(by_group[g])
        # sizes
        cdef dict scope_body = {}
        cdef dict res_body = {}
        for rh in res_order:
            body = len(rh)
            for g in by_res[rh]:
                sh = self._groups[g][1]
                sbody = len(sh)
                for (_p, ll, suf) in by_group[g]:
                    k = <Py_ssize_t>ll + len(<bytes>suf)
                    sbody += 1 + _vlen(k) + k
                scope_body[g] = sbody
                body += 1 + _vlen(sbody) + sbody
            res_body[rh] = body
            total += 1 + _vlen(body) + body
        out = bytearray(total)
        w = <unsigned char*>PyByteArray_AS_STRING(out)
        for rh in res_order:
            w[o] = 0x0A
            o += 1
            o += _wvarint(w + o, res_body[rh])
            memcpy(w + o, PyBytes_AS_STRING(rh), len(rh))
            o += len(rh)
            for g in by_res[rh]:
                sh = self._groups[g][1]
                w[o] = 0x12
                o += 1
                o += _wvarint(w + o, scope_body[g])
                memcpy(w + o, PyBytes_AS_STRING(sh), len(sh))
                o += len(sh)
                for (pp, ll, suf) in by_group[g]:
                    p = pp
                    l = ll
                    k = l + len(<bytes>suf)
                    w[o] = 0x12
                    o += 1
                    o += _wvarint(w + o, k)
                    memcpy(w + o, d + p, l)
                    o += l
                    memcpy(w + o, PyBytes_AS_STRING(suf), len(<bytes>suf))
                    o += len(<bytes>suf)
        return bytes(out)

    @staticmethod
    def encode_groups(items):
        return encode_groups(items)

    @property
    def ntraces(self):
        return len(self.traces)


def _size_key(Trace t):
    return PyByteArray_GET_SIZE(t.data)


def encode_groups(items):
    """[(resource_header, scope_header, [encoded span fields])] →
    ResourceSpans fields, one per distinct resource header."""
    cdef dict by_res = {}
    for rh, sh, spans in items:
        body = sh + b"".join(spans)
        lst = by_res.get(rh)
        if lst is None:
            lst = []
            by_res[rh] = lst
        lst.append(_field(0x12, body))
    return b"".join([_field(0x0A, rh + b"".join(scopes)) for rh, scopes in by_res.items()])
