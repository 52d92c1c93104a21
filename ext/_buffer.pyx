# cython: language_level=3
"""Compiled twin of traceo_sampler.buffer.TraceBufferPy (read that module's
docstring for the model). Same state, same results; the differences are
only in representation: the trace summary lives in C fields, span entries
are appended with memcpy, the completion schedule is a C binary heap with one
item per live trace (keyed by the earlier of its two pending deadlines, see
``_hupdate``), group reference counts are a C array, and the dropped-trace
filter is two generations of open-addressing tables of 64-bit fingerprints
instead of Python sets.

``TraceBuffer.ingest`` is the fused hot path: the scanner's walk
(ext/_walk.pxi, shared with ext/_scan.pyx) collects every valid span as a C
record, and only when the whole request has been walked without error are
the records inserted (``_insert``, the per-span routine ``add`` uses too) --
no per-span tuple, no bytes for span or parent IDs, a span name decoded only
for root spans, a trace_state only when present.
"""

include "_walk.pxi"
include "_parts.pxi"

from wire cimport field_bytes, field_len, write_head

from cpython.bytearray cimport PyByteArray_AS_STRING, PyByteArray_GET_SIZE, PyByteArray_Resize
from cpython.dict cimport PyDict_GetItem, PyDict_Next
from cpython.set cimport PySet_Add, PySet_GET_SIZE
from cpython.mem cimport PyMem_Calloc, PyMem_Realloc
from libc.string cimport memset

from traceo_sampler.tracestate import merge_threshold, randomness as _py_randomness
from traceo_sampler.buffer import LAG_BOUNDS as _LAG_BOUNDS, MAX_LAG_SERVICES

cdef extern from *:
    """
    static inline uint64_t traceo_mix(uint64_t x) { return x * 0x9E3779B97F4A7C15ULL; }

    /* A trace's entries are walked header to header: each address depends on
       the length read before, so cold entries would be fetched one at a
       time. Asking for the whole (contiguous) range first overlaps them. */
    static inline void traceo_prefetch(const unsigned char *p, Py_ssize_t n) {
        Py_ssize_t i;
        if (n > 16384) n = 16384;
        for (i = 0; i < n; i += 64) __builtin_prefetch(p + i, 0, 3);
    }
    """
    uint64_t traceo_mix(uint64_t x) noexcept nogil
    void traceo_prefetch(const unsigned char* p, Py_ssize_t n) noexcept nogil

_U64_MAX = (1 << 64) - 1

cdef enum:
    ENTRY_HDR = 40
    TRACE_OVERHEAD = 1200   # = buffer.TRACE_OVERHEAD (measured there)
    MAX_ATTR_VALUES = 64
    NLAG = 13               # = buffer.NLAG: len(LAG_BOUNDS) + the +Inf bucket

assert len(_LAG_BOUNDS) + 1 == NLAG
assert sizeof(PreRec) == 48   # = buffer.PRE_REC_SIZE
cdef double _lag_bounds[NLAG - 1]
for _i, _b in enumerate(_LAG_BOUNDS):
    _lag_bounds[_i] = _b


cdef inline Py_ssize_t _lag_bucket(double lag) noexcept:
    # = buffer.lag_bucket
    cdef Py_ssize_t i
    if lag <= 0.0:
        return 0
    for i in range(NLAG - 1):
        if lag <= _lag_bounds[i]:
            return i
    return NLAG - 1


cdef class Waits:
    """= buffer.Waits: one root service's waits, read at each check."""
    cdef public double root_wait, idle_timeout

    def __init__(self, double root_wait, double idle_timeout):
        self.root_wait = root_wait
        self.idle_timeout = idle_timeout


cdef struct EntryHdr:
    # The header of one span entry in Trace.data; the pure twin packs the same
    # 40 bytes with struct "<II8s8sQQ".
    uint32_t gid
    uint32_t len
    uint64_t sid      # the 8 span_id bytes as they are
    uint64_t pid      # the 8 parent_span_id bytes, 0 when there is none
    uint64_t start
    uint64_t end


assert sizeof(EntryHdr) == ENTRY_HDR


cdef inline int _entry(const unsigned char* d, Py_ssize_t pos, Py_ssize_t n, EntryHdr* h,
                       Py_ssize_t ngroups) except -1:
    """Read the entry header at pos of a trace's data (n bytes), checked:
    Trace.data is a public bytearray, so it is never trusted blindly."""
    if n - pos < ENTRY_HDR:
        raise RuntimeError(f"corrupt span entries (header at {pos} of {n})")
    memcpy(h, d + pos, ENTRY_HDR)
    if h.len > <uint64_t>(n - pos - ENTRY_HDR) or h.gid >= <uint64_t>ngroups:
        raise RuntimeError(f"corrupt span entries (entry at {pos} of {n})")
    return 0


cdef inline bytes _suffix(str trace_state):
    """The appended Span.trace_state field (tag 3, length-delimited)."""
    cdef bytes val = trace_state.encode()
    return field_bytes(0x1A, val)


# Not tracked by the cyclic GC: a trace refers only to bytes, str, numbers
# and to sets/dicts of them (no path back to a Trace, so no cycle through
# it), and tens of thousands of buffered traces make every GC pass longer.
@cython.no_gc
cdef class Trace:
    cdef public bytes trace_id
    cdef public bytearray data
    cdef public Py_ssize_t span_count
    cdef public double first_arrival, last_arrival, root_arrival
    cdef public uint64_t min_start, max_end
    cdef public long status_mask
    cdef public bint root_seen, decided
    cdef public set services
    cdef public object attrs
    cdef public long long randomness
    cdef public str root_name, root_service
    cdef public object tracestates
    cdef public double max_gap      # longest time between two of its arrivals
    cdef public Waits waits
    # its OTLP size, set by the pipeline before deciding when a policy
    # charges bytes (otlp_size.py); None otherwise
    cdef public object encoded_size
    # schedule: the trace's two pending deadlines (docs/design.md §2, lazily
    # re-checked): "main" (first span, then each re-check) and "root"
    # (pushed once when the root arrives); hpos: index in the heap, -1 if out
    cdef double m_when, r_when
    cdef uint64_t m_seq, r_seq
    cdef bint r_slot
    cdef Py_ssize_t hpos
    cdef object last_service    # services.add is skipped while it repeats
    cdef object last_rattrs     # the resource attributes merged last
    cdef bint finished          # finish() ran: its groups are released

    def __init__(self, bytes trace_id, double now, Waits waits=None):
        _init_trace(self, trace_id, now)
        self.waits = waits if waits is not None else Waits(0.0, 0.0)

    @property
    def trace_state(self):
        """The first non-empty tracestate seen in the trace."""
        ts = self.tracestates
        return next(iter(ts.values())) if ts else ""

    @property
    def nbytes(self):
        return len(self.data) + TRACE_OVERHEAD

    def entries(self):
        """Yield (group, offset, length, trace_state) of every span entry."""
        cdef const unsigned char* d = <const unsigned char*>PyByteArray_AS_STRING(self.data)
        cdef Py_ssize_t n = PyByteArray_GET_SIZE(self.data)
        cdef Py_ssize_t pos = 0
        cdef EntryHdr h
        ts = self.tracestates
        out = []
        while pos < n:
            _entry(d, pos, n, &h, 1 << 32)
            out.append((h.gid, pos + ENTRY_HDR, h.len,
                        (ts.get(pos + ENTRY_HDR, "") if ts else "")))
            pos += ENTRY_HDR + h.len
        return out


cdef inline void _init_trace(Trace t, bytes trace_id, double now):
    t.trace_id = trace_id
    t.data = bytearray()
    t.span_count = 0
    t.first_arrival = now
    t.last_arrival = now
    t.root_arrival = -1.0
    t.min_start = 0
    t.max_end = 0
    t.status_mask = 0
    t.root_seen = False
    t.services = set()
    t.attrs = None
    t.randomness = -1
    t.root_name = ""
    t.root_service = ""
    t.tracestates = None
    t.encoded_size = None
    t.decided = False
    t.r_slot = False
    t.hpos = -1
    t.last_service = None
    t.last_rattrs = None
    t.finished = False
    t.max_gap = 0.0


cdef class AddResult:
    cdef public list late_kept, late_dropped_spans
    cdef public Py_ssize_t late_dropped, new_traces, spans
    cdef public list full
    cdef public dict per_service
    cdef public list overflow
    cdef public list groups
    cdef public Py_ssize_t accepted, rejected, span_bytes
    cdef public list errors, reasons
    # ingest with nshards > 1: the request of each other shard (b"" for
    # this one and for a shard without spans) and its span count; else None
    cdef public list parts, counts
    # with parts: the span records of each part (see ``ingest``'s recs)
    cdef public list recs

    def __init__(self):
        self.parts = None
        self.counts = None
        self.recs = None
        self.overflow = []
        self.late_kept = []
        self.late_dropped_spans = []
        self.late_dropped = 0
        self.full = []
        self.new_traces = 0
        self.spans = 0
        self.per_service = {}
        self.groups = []
        self.accepted = 0
        self.rejected = 0
        self.span_bytes = 0
        self.errors = []
        self.reasons = []


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


cdef int _merge_attrs(Trace t, dict a) except -1:
    """Add a span's (or resource's) referenced attribute values to the
    trace's summary: up to MAX_ATTR_VALUES distinct values per key."""
    cdef Py_ssize_t pos = 0
    cdef PyObject* k
    cdef PyObject* v
    cdef PyObject* cur
    if not a:
        return 0
    if t.attrs is None:
        t.attrs = {}
    cdef dict ta = <dict>t.attrs
    while PyDict_Next(a, &pos, &k, &v):
        cur = PyDict_GetItem(ta, <object>k)
        if cur == NULL:
            ta[<object>k] = {<object>v}
        elif PySet_GET_SIZE(<object>cur) < MAX_ATTR_VALUES:
            PySet_Add(<object>cur, <object>v)
    return 0


cdef int _check_finish(bint decided, bint finished) except -1:
    if not decided:
        raise ValueError("finish: the trace is still buffered (not decided)")
    if finished:
        raise ValueError("finish: the trace is already finished")
    return 0


cdef str _utf8(const unsigned char* p, Py_ssize_t n):
    """Decode n bytes already checked to be valid UTF-8."""
    return PyBytes_FromStringAndSize(<const char*>p, n).decode("utf-8") if n else _EMPTY_STR


# ---------------------------------------------------------------- ingest
@cython.final
cdef class _Ingest(_Walker):
    """The fused path's walk: valid spans are kept as C records (a growing
    array) and inserted only after the whole request was walked."""

    cdef SpanRec* recs
    cdef Py_ssize_t n, cap
    cdef list attrs             # span attribute dicts, indexed by SpanRec.attrs
    # service.workers: spans of the other shards are set aside, not kept
    cdef uint32_t nshards, own
    cdef Rec* fwd
    cdef PreRec* fwd_pre        # fwd[i]'s span record, for its owner's walk
    cdef Py_ssize_t nfwd, fwd_cap, fwd_bytes

    def __dealloc__(self):
        PyMem_Free(self.recs)
        PyMem_Free(self.fwd)
        PyMem_Free(self.fwd_pre)

    cdef int on_span(self, SpanRec* r, dict attrs) except -1:
        cdef SpanRec* grown
        cdef PreRec* pgrown
        cdef Py_ssize_t cap
        cdef uint32_t sh
        if self.nshards > 1:
            sh = traceo_shard_of(r.tid, 0, self.nshards)
            if sh != self.own:
                cap = self.fwd_cap
                _push_rec(&self.fwd, &self.nfwd, &self.fwd_cap, r.off, r.length, r.group, sh)
                if self.fwd_cap != cap:
                    pgrown = <PreRec*>PyMem_Realloc(self.fwd_pre, self.fwd_cap * sizeof(PreRec))
                    if pgrown == NULL:
                        raise MemoryError()
                    self.fwd_pre = pgrown
                _pre_from(&self.fwd_pre[self.nfwd - 1], r, self.base + r.off, self.keys.fp,
                          attrs is not None)
                self.fwd_bytes += r.length
                return 0
        if self.n == self.cap:
            cap = 2 * self.cap if self.cap else 256
            grown = <SpanRec*>PyMem_Realloc(self.recs, cap * sizeof(SpanRec))
            if grown == NULL:
                raise MemoryError()
            self.recs = grown
            self.cap = cap
        if attrs is not None:
            r.attrs = len(self.attrs)
            self.attrs.append(attrs)
        self.recs[self.n] = r[0]
        self.n += 1
        return 0


cdef list _build_recs(Rec* fwd, PreRec* pre, Py_ssize_t nfwd, Py_ssize_t n, list counts):
    """Per shard, its forwarded spans' records in the order _build_parts
    wrote the spans (b"" for a shard without any), in one pass."""
    cdef list out = []
    cdef Py_ssize_t sh, i, k
    cdef bytes b
    cdef PreRec** dst = <PreRec**>PyMem_Calloc(n + 1, sizeof(PreRec*))
    if dst == NULL:
        raise MemoryError()
    try:
        for sh in range(n):
            k = counts[sh]
            b = PyBytes_FromStringAndSize(NULL, k * sizeof(PreRec)) if k else _EMPTY_BYTES
            out.append(b)
            dst[sh] = <PreRec*>PyBytes_AS_STRING(b)
        for i in range(nfwd):
            sh = fwd[i].shard
            dst[sh][0] = pre[i]
            dst[sh] += 1
    finally:
        PyMem_Free(dst)
    return out


cdef struct TidSlot:
    # One trace ID of an ingest call (open addressing on the 16 bytes).
    const unsigned char* tid    # NULL: empty slot
    PyObject* tid_obj           # owned: the trace ID as bytes, made on first use
    PyObject* trace             # borrowed: its buffered trace once known
    Py_ssize_t need             # entry bytes its spans add in this call
    Py_ssize_t cursor           # next entry offset in trace.data; -1: not reserved yet


import os as _os
from collections import OrderedDict
cdef uint64_t _SEED = int.from_bytes(_os.urandom(8), "little")


cdef inline Py_ssize_t _tid_hash(const unsigned char* p) noexcept:
    cdef uint64_t a, b
    memcpy(&a, p, 8)
    memcpy(&b, p + 8, 8)
    return <Py_ssize_t>(traceo_mix(a ^ traceo_mix(b ^ _SEED)) >> 33)


@cython.final
cdef class _Req:
    """State of one add/ingest call while its spans are inserted."""

    cdef AddResult res
    cdef list groups            # the scan-shaped groups of the request
    cdef bytes data
    cdef const unsigned char* src
    cdef double now, first_deadline
    cdef Py_ssize_t* gids       # request group -> buffer group id (-1: not yet)
    cdef Py_ssize_t* gspans     # request group -> spans counted in per_service
    cdef Py_ssize_t* gbytes
    cdef Py_ssize_t* gorder     # request groups in order of their first span
    cdef Py_ssize_t norder
    cdef set full_ids           # traces that filled up during this call
    # ingest only: its trace IDs (SpanRec.slot indexes them), so that a
    # trace is looked up once per call and its entries grow once per call
    cdef TidSlot* slots
    cdef Py_ssize_t nslots

    def __dealloc__(self):
        cdef Py_ssize_t i
        PyMem_Free(self.gids)
        if self.slots != NULL:
            for i in range(self.nslots):
                Py_XDECREF(self.slots[i].tid_obj)
            PyMem_Free(self.slots)

    cdef int index_traces(self, SpanRec* recs, Py_ssize_t n) except -1:
        cdef Py_ssize_t cap = 16, mask, i, j
        cdef SpanRec* r
        cdef TidSlot* sl
        while cap < 2 * n:
            cap <<= 1
        self.slots = <TidSlot*>PyMem_Calloc(cap, sizeof(TidSlot))
        if self.slots == NULL:
            raise MemoryError()
        self.nslots = cap
        mask = cap - 1
        for i in range(n):
            r = &recs[i]
            j = _tid_hash(r.tid) & mask
            while True:
                sl = &self.slots[j]
                if sl.tid == NULL:
                    sl.tid = r.tid
                    sl.cursor = -1
                    break
                if memcmp(sl.tid, r.tid, 16) == 0:
                    break
                j = (j + 1) & mask
            sl.need += ENTRY_HDR + r.length
            r.slot = j
        return 0

    cdef int setup(self, AddResult res, list groups, bytes data, double now,
                   double first_deadline) except -1:
        cdef Py_ssize_t ng = len(groups), i
        self.res = res
        self.groups = groups
        self.data = data
        self.src = <const unsigned char*>PyBytes_AS_STRING(data)
        self.now = now
        self.first_deadline = first_deadline
        self.gids = <Py_ssize_t*>PyMem_Malloc((4 * ng + 1) * sizeof(Py_ssize_t))
        if self.gids == NULL:
            raise MemoryError()
        self.gspans = self.gids + ng
        self.gbytes = self.gspans + ng
        self.gorder = self.gbytes + ng
        for i in range(ng):
            self.gids[i] = -1
            self.gspans[i] = 0
            self.gbytes[i] = 0
        self.norder = 0
        return 0

    cdef int fold(self) except -1:
        """per_service from the per-group counts, services in the order of
        their first span (as the pure twin's per-span dict updates)."""
        cdef dict per_service = self.res.per_service
        cdef Py_ssize_t k, gi
        for k in range(self.norder):
            gi = self.gorder[k]
            svc = (<tuple>self.groups[gi])[2]
            ps = per_service.get(svc)
            if ps is None:
                per_service[svc] = [self.gspans[gi], self.gbytes[gi]]
            else:
                ps[0] += self.gspans[gi]
                ps[1] += self.gbytes[gi]
        return 0


cdef tuple _span_tuple(SpanRec* r, bytes tid, object ts, object name, object attrs):
    """The scanner's tuple of a C record (overflow spans of ingest)."""
    return (tid,
            PyBytes_FromStringAndSize(<const char*>r.sid, 8),
            PyBytes_FromStringAndSize(<const char*>r.pid, 8) if r.pid_len else _EMPTY_BYTES,
            r.start, r.end, r.code, r.kind, r.group, r.off, r.length,
            ts if ts is not None else _EMPTY_STR,
            name if name is not None else _utf8(r.name, r.name_len),
            attrs)


# ---------------------------------------------------------------- schedule
cdef struct HeapItem:
    double when
    uint64_t seq
    Py_ssize_t* hpos    # &trace.hpos
    PyObject* t         # borrowed: a trace is in the heap only while in traces


cdef inline bint _hless(HeapItem* a, HeapItem* b) noexcept:
    return a.when < b.when or (a.when == b.when and a.seq < b.seq)


@cython.final
cdef class TraceBuffer:
    cdef public double decision_wait
    cdef public Waits default_waits
    cdef dict _svc_waits
    cdef public bint late_detail
    # arrival lags per service id: NLAG first-arrival counts, NLAG root
    # counts (_lagc), and the two sums (_lags); _glag: gid -> service id
    cdef uint64_t* _lagc
    cdef double* _lags
    cdef Py_ssize_t* _glag
    cdef Py_ssize_t _lag_cap
    cdef dict _lag_ids
    cdef list _lag_names
    cdef public Py_ssize_t max_spans, memory_limit, nbytes, nspans
    cdef public dict traces
    cdef HeapItem* _heap
    cdef Py_ssize_t _hn, _hcap
    cdef uint64_t _seq
    cdef dict _group_ids
    cdef list _groups           # gid -> (rh, sh, service, key) or None when free
    cdef list _free_groups
    cdef Py_ssize_t* _grefs     # gid -> span entries referencing it
    cdef Py_ssize_t* _gscratch  # gid -> count, zero between uses (finish)
    cdef Py_ssize_t _gcap
    cdef public Py_ssize_t cache_sampled, cache_not_sampled
    cdef object _kept
    cdef dict _plain_sfx        # threshold -> its plain trace_state suffix
    cdef _FpTable _dropped_new, _dropped_old
    cdef Py_ssize_t _gen_size

    def __init__(self, *, double decision_wait, double root_wait, double idle_timeout,
                 Py_ssize_t max_spans_per_trace, Py_ssize_t memory_limit,
                 Py_ssize_t cache_sampled, Py_ssize_t cache_not_sampled):
        self.decision_wait = decision_wait
        self.default_waits = Waits(root_wait, idle_timeout)
        self._svc_waits = {}
        self.late_detail = False
        self._lag_ids = {}
        self._lag_names = []
        self.max_spans = max_spans_per_trace
        self.memory_limit = memory_limit
        self.traces = {}
        self.nbytes = 0
        self.nspans = 0
        self._seq = 0
        self._group_ids = {}
        self._groups = []
        self._free_groups = []
        self.cache_sampled = cache_sampled
        self.cache_not_sampled = cache_not_sampled
        # insertion-ordered, oldest forgotten first: an OrderedDict, as
        # popping a plain dict's first entry again and again makes finding
        # the next one linear (~0.4 ms per kept trace at 100 000 entries)
        self._kept = OrderedDict()
        self._plain_sfx = {}
        self._gen_size = (cache_not_sampled + 1) // 2
        self._dropped_new = _FpTable(self._gen_size)
        self._dropped_old = _FpTable(self._gen_size)

    def __dealloc__(self):
        PyMem_Free(self._heap)
        PyMem_Free(self._grefs)
        PyMem_Free(self._gscratch)
        PyMem_Free(self._glag)
        PyMem_Free(self._lagc)
        PyMem_Free(self._lags)

    # ------------------------------------------------------------ waits
    @property
    def root_wait(self):
        return self.default_waits.root_wait

    @root_wait.setter
    def root_wait(self, double v):
        self.default_waits.root_wait = v

    @property
    def idle_timeout(self):
        return self.default_waits.idle_timeout

    @idle_timeout.setter
    def idle_timeout(self, double v):
        self.default_waits.idle_timeout = v

    def set_waits(self, str service, double root_wait, double idle_timeout):
        """See the pure twin."""
        w = self._svc_waits.get(service)
        if w is None:
            w = Waits(root_wait, idle_timeout)
            self._svc_waits[service] = w
        else:
            (<Waits>w).root_wait = root_wait
            (<Waits>w).idle_timeout = idle_timeout
        return w

    def waits(self, str service):
        return self._svc_waits.get(service, self.default_waits)

    # ------------------------------------------------------------ lags
    cdef Py_ssize_t _lag_id(self, str svc) except -1:
        cdef Py_ssize_t i, cap
        cdef void* grown
        o = self._lag_ids.get(svc)
        if o is not None:
            return o
        if len(self._lag_names) >= MAX_LAG_SERVICES:
            svc = "other"
            o = self._lag_ids.get(svc)
            if o is not None:
                return o
        i = len(self._lag_names)
        if i >= self._lag_cap:
            cap = 2 * self._lag_cap if self._lag_cap else 16
            grown = PyMem_Realloc(self._lagc, cap * 2 * NLAG * sizeof(uint64_t))
            if grown == NULL:
                raise MemoryError()
            self._lagc = <uint64_t*>grown
            grown = PyMem_Realloc(self._lags, cap * 2 * sizeof(double))
            if grown == NULL:
                raise MemoryError()
            self._lags = <double*>grown
            memset(self._lagc + self._lag_cap * 2 * NLAG, 0,
                   (cap - self._lag_cap) * 2 * NLAG * sizeof(uint64_t))
            memset(self._lags + self._lag_cap * 2, 0, (cap - self._lag_cap) * 2 * sizeof(double))
            self._lag_cap = cap
        self._lag_names.append(svc)
        self._lag_ids[svc] = i
        return i

    def take_lags(self):
        """See the pure twin."""
        cdef Py_ssize_t i, k
        cdef uint64_t* c
        cdef uint64_t tot
        out = {}
        for i in range(len(self._lag_names)):
            c = self._lagc + i * 2 * NLAG
            tot = 0
            for k in range(2 * NLAG):
                tot += c[k]
            if tot == 0:
                continue
            out[self._lag_names[i]] = ([c[k] for k in range(NLAG)],
                                       [c[NLAG + k] for k in range(NLAG)],
                                       self._lags[2 * i], self._lags[2 * i + 1])
            memset(c, 0, 2 * NLAG * sizeof(uint64_t))
            self._lags[2 * i] = 0.0
            self._lags[2 * i + 1] = 0.0
        return out

    # ------------------------------------------------------------ groups
    cdef Py_ssize_t _group(self, bytes rh, bytes sh, str service) except -1:
        cdef Py_ssize_t cap, gid
        cdef Py_ssize_t* grown
        key = (rh, sh)
        o = self._group_ids.get(key)
        if o is not None:
            return o
        entry = (rh, sh, service, key)
        if self._free_groups:
            gid = self._free_groups.pop()
            self._groups[gid] = entry
        else:
            gid = len(self._groups)
            if gid >= self._gcap:
                cap = 2 * self._gcap if self._gcap else 64
                grown = <Py_ssize_t*>PyMem_Realloc(self._grefs, cap * sizeof(Py_ssize_t))
                if grown == NULL:
                    raise MemoryError()
                self._grefs = grown
                grown = <Py_ssize_t*>PyMem_Realloc(self._gscratch, cap * sizeof(Py_ssize_t))
                if grown == NULL:
                    raise MemoryError()
                self._gscratch = grown
                grown = <Py_ssize_t*>PyMem_Realloc(self._glag, cap * sizeof(Py_ssize_t))
                if grown == NULL:
                    raise MemoryError()
                self._glag = grown
                memset(self._gscratch + self._gcap, 0, (cap - self._gcap) * sizeof(Py_ssize_t))
                self._gcap = cap
            self._groups.append(entry)
        self._grefs[gid] = 0
        self._glag[gid] = self._lag_id(service)
        self._group_ids[key] = gid
        return gid

    cdef tuple _gentry(self, Py_ssize_t gid):
        """The group a (checked) entry refers to; it must still be held."""
        g = self._groups[gid]
        if g is None:
            raise RuntimeError(f"span entry of a released group {gid}")
        return <tuple>g

    def group(self, Py_ssize_t gid):
        g = self._groups[gid]
        return g[0], g[1], g[2]

    def span_bytes_by_group(self, Trace t):
        """group id -> bytes its spans take as ``ScopeSpans.spans`` fields
        (tag, length, span): what otlp_size.py adds the headers to. The pure
        twin computes the same from ``entries()``."""
        cdef const unsigned char* d = <const unsigned char*>PyByteArray_AS_STRING(t.data)
        cdef Py_ssize_t n = PyByteArray_GET_SIZE(t.data)
        cdef Py_ssize_t ng = len(self._groups)
        cdef Py_ssize_t pos = 0, ln
        cdef EntryHdr h
        cdef dict out = {}
        while pos < n:
            _entry(d, pos, n, &h, ng)
            ln = h.len
            key = <long>h.gid
            cur = out.get(key)
            out[key] = (cur if cur is not None else 0) + field_len(ln)
            pos += ENTRY_HDR + ln
        return out

    cdef void _release(self, Py_ssize_t gid, Py_ssize_t n):
        self._grefs[gid] -= n
        if self._grefs[gid] <= 0:
            del self._group_ids[(<tuple>self._groups[gid])[3]]
            self._groups[gid] = None
            self._free_groups.append(gid)

    @property
    def ngroups(self):
        return len(self._group_ids)

    # ------------------------------------------------------------ cache
    def remember(self, bytes trace_id, bint sampled, str policy, threshold):
        self._remember(trace_id, sampled, policy, threshold)

    cdef int _remember(self, bytes trace_id, bint sampled, str policy, threshold) except -1:
        if sampled:
            if self.cache_sampled <= 0:
                return 0
            kept = self._kept
            kept[trace_id] = (policy, threshold)
            if len(kept) > self.cache_sampled:
                kept.popitem(last=False)
        else:
            if self.cache_not_sampled <= 0:
                return 0
            self._dropped_new.add(_fp(trace_id))
            if self._dropped_new.count >= self._gen_size:
                old = self._dropped_old
                old.clear()
                self._dropped_old = self._dropped_new
                self._dropped_new = old
        return 0

    cdef object _cached(self, bytes trace_id):
        k = self._kept.get(trace_id)
        if k is not None:
            return k
        cdef uint64_t fp
        if self.cache_not_sampled > 0:
            fp = _fp(trace_id)
            if self._dropped_new.contains(fp) or self._dropped_old.contains(fp):
                return False
        return None

    def cached(self, bytes trace_id):
        """(policy, threshold) if kept, False if dropped, None if unknown."""
        return self._cached(trace_id)

    # ------------------------------------------------------------ insert
    cdef _Req _request(self, AddResult res, list groups, bytes data, double now):
        cdef _Req q = _Req.__new__(_Req)
        q.setup(res, groups, data, now, now + min(self.idle_timeout, self.decision_wait))
        return q

    def add(self, scan, bytes data, double now):
        """Buffer the spans of a scan result (or any object with scan-shaped
        ``groups`` and ``spans``) of ``data``."""
        cdef AddResult res = AddResult()
        cdef list spans = scan.spans
        cdef SpanRec r
        cdef tuple sp
        cdef bytes tid, sid, pid
        cdef Py_ssize_t total = 0, size = len(data)
        cdef Py_ssize_t ngroups = len(scan.groups)
        res.groups = scan.groups
        res.accepted = len(spans)
        res.rejected = getattr(scan, "rejected", 0)
        res.errors = getattr(scan, "errors", None) or []
        res.reasons = getattr(scan, "reasons", None) or []
        cdef _Req q = self._request(res, res.groups, data, now)
        r.ts = r.name = NULL
        r.ts_len = r.name_len = 0
        r.attrs = -1
        for sp in spans:
            tid = <bytes?>sp[0]
            sid = <bytes?>sp[1]
            pid = <bytes?>sp[2]
            if len(tid) != 16 or len(sid) != 8 or (len(pid) != 8 and len(pid) != 0):
                raise ValueError("add: not a span tuple of the scanner")
            r.tid = <const unsigned char*>PyBytes_AS_STRING(tid)
            r.sid = <const unsigned char*>PyBytes_AS_STRING(sid)
            r.pid = <const unsigned char*>PyBytes_AS_STRING(pid)
            r.pid_len = len(pid)
            r.start = sp[3]
            r.end = sp[4]
            r.code = sp[5]
            r.kind = sp[6]
            r.group = sp[7]
            r.off = sp[8]
            r.length = sp[9]
            if not (0 <= r.group < ngroups and 0 <= r.off and 0 <= r.length <= size - r.off):
                raise ValueError("add: span tuple out of range of its request")
            total += r.length
            ts = sp[10]
            self._insert(q, &r, tid, ts if ts else None, sp[11], sp[12], sp, NULL)
        res.span_bytes = getattr(scan, "span_bytes", total)
        q.fold()
        return res

    def ingest(self, data, attr_keys, double now, Py_ssize_t nshards=1, Py_ssize_t shard=0,
               bint checked=False, Py_ssize_t recs=0):
        """Scan and buffer one encoded ExportTraceServiceRequest in one pass;
        the same result as ``add(scan(data, attr_keys), data, now)``.

        ``nshards > 1`` (service.workers): only the spans of traces in shard
        ``shard`` (``shard.shard_of``) are buffered; the others are returned
        in ``parts``, one request per shard, as ``shard.split`` builds them,
        and are left out of ``accepted`` and ``span_bytes``.

        ``checked``: ``data`` was built by another worker out of spans it had
        checked (service.workers' hand-off): the content checks (UTF-8,
        events, links, nested values, the scope) are skipped, what is
        buffered is the same; bad framing still raises.

        With nshards > 1, ``recs`` of the result holds for each part the
        span records (one per span, in order) of what this walk extracted;
        the owner's checked ingest is given them back: then ``recs`` is the
        number of bytes at the end of ``data`` that are the records of the
        request before them, and a span is taken from its record instead of
        walked again (the buffer ends up the same). The pure twin builds no
        records and skips them.

        Raises ValueError exactly where ``scan`` does, and then the buffer
        is left unchanged (the spans are inserted after the whole walk)."""
        if type(data) is not bytes:
            data = bytes(data)
        if nshards < 1 or not 0 <= shard < nshards:
            raise ValueError("ingest: shard out of range")
        cdef Py_ssize_t size = PyBytes_GET_SIZE(data)
        if recs:
            if not checked or recs < 0 or recs > size or recs % sizeof(PreRec):
                raise ValueError(f"ingest: recs={recs} does not fit the request")
            size -= recs
        cdef _Ingest w = _Ingest.__new__(_Ingest)
        w.attrs = []
        w.nshards = <uint32_t>nshards
        w.own = <uint32_t>shard
        w.checked = checked
        if recs:
            w.pre = <const PreRec*>(PyBytes_AS_STRING(data) + size)
            w.pre_n = recs // <Py_ssize_t>sizeof(PreRec)
        w.walk(<const unsigned char*>PyBytes_AS_STRING(data), size, attr_keys)
        cdef AddResult res = AddResult()
        res.accepted = w.n
        res.groups, res.rejected, res.errors, res.reasons, res.span_bytes = w.figures()
        if nshards > 1:
            res.span_bytes -= w.fwd_bytes
            res.counts = []
            res.parts = _build_parts(<bytes>data, res.groups, w.fwd, w.nfwd, nshards, res.counts,
                                     res.rejected == 0 and w.n == 0)
            res.recs = _build_recs(w.fwd, w.fwd_pre, w.nfwd, nshards, res.counts)
        cdef _Req q = self._request(res, w.groups, data, now)
        cdef Py_ssize_t i
        cdef SpanRec* r
        cdef TidSlot* sl
        cdef list attrs = w.attrs
        q.index_traces(w.recs, w.n)
        for i in range(w.n):
            r = &w.recs[i]
            sl = &q.slots[r.slot]
            if sl.tid_obj == NULL:
                tid = PyBytes_FromStringAndSize(<const char*>r.tid, 16)
                Py_INCREF(tid)
                sl.tid_obj = <PyObject*>tid
            self._insert(
                q, r, <bytes>sl.tid_obj,
                w._str(r.ts, r.ts_len, "span trace_state") if r.ts_len else None,
                w._str(r.name, r.name_len, "span name") if r.pid_len == 0 else None,
                attrs[r.attrs] if r.attrs >= 0 else None,
                None, sl)
        q.fold()
        return res

    cdef int _insert(self, _Req q, SpanRec* r, bytes tid, object ts, object name,
                     object attrs, object tup, TidSlot* sl) except -1:
        """Insert one valid span: the one per-span routine of add and ingest.
        ``ts``: its trace_state, None when empty; ``name``: needed for root
        spans only; ``tup``: its scan tuple when there is one (overflow);
        ``sl``: its trace's slot (ingest) or NULL (add)."""
        cdef AddResult res = q.res
        cdef Trace t
        cdef PyObject* pt
        cdef Py_ssize_t gi = r.group, gid, old, ln = r.length
        cdef EntryHdr h
        cdef char* dst
        if q.full_ids is not None and tid in q.full_ids:
            res.overflow.append(tup if tup is not None else _span_tuple(r, tid, ts, name, attrs))
            return 0
        if q.gspans[gi] == 0:
            q.gorder[q.norder] = gi
            q.norder += 1
        q.gspans[gi] += 1
        q.gbytes[gi] += ln
        grp = <tuple>q.groups[gi]
        pt = sl.trace if sl != NULL and sl.trace != NULL else PyDict_GetItem(self.traces, tid)
        if pt == NULL:
            c = self._cached(tid)
            if c is not None:
                if c is False:
                    res.late_dropped += 1
                    if self.late_detail:
                        res.late_dropped_spans.append((
                            tid, grp[2], r.code, r.start, r.end, grp[0], grp[1],
                            PyBytes_FromStringAndSize(<const char*>q.src + r.off, ln),
                            ts if ts is not None else _EMPTY_STR))
                else:
                    res.late_kept.append((
                        tid, c[0], c[1], grp[0], grp[1],
                        PyBytes_FromStringAndSize(<const char*>q.src + r.off, ln),
                        ts if ts is not None else _EMPTY_STR, grp[2]))
                return 0
            t = self._new_trace(tid, q.now, q.first_deadline)
            res.new_traces += 1
        else:
            t = <Trace>pt
        if sl != NULL:
            sl.trace = <PyObject*>t
        gid = q.gids[gi]
        if gid < 0:
            gid = self._group(grp[0], grp[1], grp[2])
            q.gids[gi] = gid
        self._grefs[gid] += 1
        if sl != NULL:
            # the trace's entries of this call were counted beforehand: the
            # bytearray grows once, then is filled (a full trace is cut back)
            if sl.cursor < 0:
                sl.cursor = PyByteArray_GET_SIZE(t.data)
                PyByteArray_Resize(t.data, sl.cursor + sl.need)
            old = sl.cursor
            sl.cursor = old + ENTRY_HDR + ln
        else:
            old = PyByteArray_GET_SIZE(t.data)
            PyByteArray_Resize(t.data, old + ENTRY_HDR + ln)
        if ts is not None:
            if t.tracestates is None:
                t.tracestates = {}
            t.tracestates[old + ENTRY_HDR] = ts
        dst = PyByteArray_AS_STRING(t.data) + old
        h.gid = <uint32_t>gid
        h.len = <uint32_t>ln
        memcpy(&h.sid, r.sid, 8)
        if r.pid_len:
            memcpy(&h.pid, r.pid, 8)
        else:
            h.pid = 0
        h.start = r.start
        h.end = r.end
        memcpy(dst, &h, ENTRY_HDR)
        memcpy(dst + ENTRY_HDR, q.src + r.off, ln)
        self.nbytes += ln + ENTRY_HDR
        self.nspans += 1
        res.spans += 1
        if t.span_count == 0 or r.start < t.min_start:
            t.min_start = r.start
        if r.end > t.max_end:
            t.max_end = r.end
        t.span_count += 1
        if 0 <= r.code < 32:     # an unknown (even negative) enum value is kept, not matched
            t.status_mask |= 1 << r.code
        if q.now - t.last_arrival > t.max_gap:
            t.max_gap = q.now - t.last_arrival
        t.last_arrival = q.now
        svc = grp[2]
        if t.last_service is not svc:
            t.services.add(svc)
            t.last_service = svc
        if ts is not None and "rv:" in <str>ts:
            t.randomness = _py_randomness(tid, ts)
        elif t.randomness < 0:
            t.randomness = _low56(tid)
        if r.pid_len == 0 and not t.root_seen:
            t.root_seen = True
            t.root_arrival = q.now
            t.root_name = name
            t.root_service = svc
            w = self._svc_waits.get(svc)
            if w is not None:
                t.waits = <Waits>w
            self._seq += 1
            t.r_when = q.now + t.waits.root_wait
            t.r_seq = self._seq
            t.r_slot = True
            self._hupdate(t)
        cdef uint64_t* lc
        cdef double* ls
        cdef double lag = q.now - t.first_arrival
        if lag > 0.0:       # came in a later call than its trace's first span
            lc = self._lagc + self._glag[gid] * 2 * NLAG
            ls = self._lags + self._glag[gid] * 2
            lc[_lag_bucket(lag)] += 1
            ls[0] += lag
            if t.root_seen:
                lag = q.now - t.root_arrival
                if lag > 0.0:
                    lc[NLAG + _lag_bucket(lag)] += 1
                    ls[1] += lag
        rattrs = grp[3]
        if rattrs is not None and rattrs is not t.last_rattrs:
            # merging the same dict again would change nothing
            _merge_attrs(t, <dict>rattrs)
            t.last_rattrs = rattrs
        if attrs is not None:
            _merge_attrs(t, <dict>attrs)
        if t.span_count >= self.max_spans:
            if sl != NULL:
                PyByteArray_Resize(t.data, sl.cursor)
            res.full.append(t)
            if q.full_ids is None:
                q.full_ids = set()
            q.full_ids.add(tid)
            self._remove(t)
        return 0

    cdef Trace _new_trace(self, bytes tid, double now, double first_deadline):
        cdef Trace t = Trace.__new__(Trace)
        _init_trace(t, tid, now)
        t.waits = self.default_waits
        self.traces[tid] = t
        self.nbytes += TRACE_OVERHEAD
        self._seq += 1
        t.m_when = first_deadline
        t.m_seq = self._seq
        self._hpush(t)
        return t

    # ------------------------------------------------------------ schedule
    # One heap item per live trace, keyed by the earlier (by (when, seq)) of
    # its two pending deadlines. The pure twin pushes a heap entry for each
    # and skips stale ones; a live trace there has at most these two pending
    # (the one re-pushed on a re-check replaces the one popped), so both
    # visit the live traces in the same order.
    cdef int _hpush(self, Trace t) except -1:
        cdef Py_ssize_t cap
        cdef HeapItem* grown
        if self._hn == self._hcap:
            cap = 2 * self._hcap if self._hcap else 1024
            grown = <HeapItem*>PyMem_Realloc(self._heap, cap * sizeof(HeapItem))
            if grown == NULL:
                raise MemoryError()
            self._heap = grown
            self._hcap = cap
        cdef HeapItem* it = &self._heap[self._hn]
        it.t = <PyObject*>t
        it.hpos = &t.hpos
        it.when = t.m_when
        it.seq = t.m_seq
        t.hpos = self._hn
        self._hn += 1
        self._sift_up(t.hpos)
        return 0

    cdef void _sift_up(self, Py_ssize_t i) noexcept:
        cdef HeapItem* h = self._heap
        cdef HeapItem item = h[i]
        cdef Py_ssize_t parent
        while i > 0:
            parent = (i - 1) >> 1
            if not _hless(&item, &h[parent]):
                break
            h[i] = h[parent]
            h[i].hpos[0] = i
            i = parent
        h[i] = item
        item.hpos[0] = i

    cdef void _sift_down(self, Py_ssize_t i) noexcept:
        cdef HeapItem* h = self._heap
        cdef Py_ssize_t n = self._hn
        cdef HeapItem item = h[i]
        cdef Py_ssize_t c
        while True:
            c = 2 * i + 1
            if c >= n:
                break
            if c + 1 < n and _hless(&h[c + 1], &h[c]):
                c += 1
            if not _hless(&h[c], &item):
                break
            h[i] = h[c]
            h[i].hpos[0] = i
            i = c
        h[i] = item
        item.hpos[0] = i

    cdef void _hupdate(self, Trace t) noexcept:
        """Re-key the trace's item after one of its deadlines changed."""
        cdef Py_ssize_t i = t.hpos
        cdef HeapItem* it = &self._heap[i]
        it.when = t.m_when
        it.seq = t.m_seq
        if t.r_slot and (t.r_when < it.when or (t.r_when == it.when and t.r_seq < it.seq)):
            it.when = t.r_when
            it.seq = t.r_seq
        self._sift_up(i)
        self._sift_down(t.hpos)

    cdef void _hremove(self, Trace t) noexcept:
        cdef Py_ssize_t i = t.hpos
        cdef Py_ssize_t* moved
        t.hpos = -1
        self._hn -= 1
        if i == self._hn:
            return
        self._heap[i] = self._heap[self._hn]
        moved = self._heap[i].hpos
        moved[0] = i
        self._sift_up(i)
        self._sift_down(moved[0])

    # ------------------------------------------------------------ completion
    cdef inline double _deadline(self, Trace t) noexcept:
        cdef Waits w = t.waits
        cdef double d = min(t.first_arrival + self.decision_wait, t.last_arrival + w.idle_timeout)
        if t.root_seen:
            d = min(d, t.root_arrival + w.root_wait)
        return d

    cdef str _trigger(self, Trace t):
        # the earliest rule wins; ties go to idle, then max_wait, then root,
        # as the pure twin's min() over (time, name) pairs
        cdef Waits w = t.waits
        cdef double mw = t.first_arrival + self.decision_wait
        cdef double idle = t.last_arrival + w.idle_timeout
        cdef double best = idle
        cdef str name = "idle"
        if mw < best:
            best = mw
            name = "max_wait"
        if t.root_seen:
            mw = t.root_arrival + w.root_wait
            if mw < best:
                best = mw
                name = "root"
        return name

    def deadline(self, Trace t):
        return self._deadline(t)

    def trigger(self, Trace t):
        return self._trigger(t)

    def due(self, double now, Py_ssize_t limit=1 << 30):
        """Remove and return up to ``limit`` traces whose deadline has passed."""
        cdef list out = []
        cdef Trace t
        cdef double d
        while self._hn > 0 and self._heap[0].when <= now and len(out) < limit:
            t = <Trace>self._heap[0].t
            d = self._deadline(t)
            if d <= now:
                out.append((t, self._trigger(t)))
                self._remove(t)
            else:
                # not due after all (a span moved it, or its waits grew): the
                # popped candidate is used up, the main one moves to d
                if t.r_slot and self._heap[0].seq == t.r_seq:
                    t.r_slot = False
                self._seq += 1
                t.m_when = d
                t.m_seq = self._seq
                self._hupdate(t)
        return out

    def next_deadline(self):
        return self._heap[0].when if self._hn else None

    def make_room(self, Py_ssize_t incoming):
        if self.nbytes + incoming <= self.memory_limit:
            return []
        cdef Py_ssize_t target = max(0, <Py_ssize_t>(self.memory_limit * 0.9) - incoming)
        cdef Trace t
        out = []
        for t in sorted(self.traces.values(), key=_size_key, reverse=True):
            if self.nbytes <= target:
                break
            out.append((t, "memory"))
            self._remove(t)
        return out

    def drain(self):
        cdef Trace t
        out = []
        for t in list(self.traces.values()):
            out.append((t, "shutdown"))
            self._remove(t)
        return out

    def discard(self, bytes trace_id):
        """Forget a buffered trace without deciding or remembering it;
        returns its span count, 0 when not buffered — see the pure twin."""
        o = self.traces.get(trace_id)
        if o is None:
            return 0
        cdef Trace t = <Trace>o
        self._remove(t)
        t.finished = True
        counts = {}
        for gid, _o, _l, _ts in t.entries():
            counts[gid] = counts.get(gid, 0) + 1
        for gid, n in counts.items():
            self._release(gid, n)
        return t.span_count

    cdef int _remove(self, Trace t) except -1:
        # The trace leaves the index, the schedule and the accounting now;
        # its group references stay until finish() has encoded it.
        if t.hpos >= 0:
            self._hremove(t)
        del self.traces[t.trace_id]
        t.decided = True
        self.nbytes -= PyByteArray_GET_SIZE(t.data) + TRACE_OVERHEAD
        self.nspans -= t.span_count
        return 0

    # ------------------------------------------------------------ consistency
    def spans(self, Trace t):
        """(resource_header, scope_header, span) of every span of a decided
        trace, in arrival order; see the pure twin."""
        if t.finished:
            raise ValueError("spans: the trace is finished (call it before finish)")
        cdef const unsigned char* d = <const unsigned char*>PyByteArray_AS_STRING(t.data)
        cdef Py_ssize_t n = PyByteArray_GET_SIZE(t.data)
        cdef Py_ssize_t pos = 0
        cdef EntryHdr h
        cdef Py_ssize_t ng = len(self._groups)
        out = []
        while pos < n:
            _entry(d, pos, n, &h, ng)
            g = <tuple>self._groups[h.gid]
            out.append((g[0], g[1], (<bytes>d[pos + ENTRY_HDR:pos + ENTRY_HDR + h.len])))
            pos += ENTRY_HDR + h.len
        return out

    def consistency(self, Trace t, skew_tolerance_ns, list amounts=None):
        """(duplicates, orphans, skewed, no_root) of a trace, from its span
        entries; see the pure twin. Call it before finish()."""
        if skew_tolerance_ns < 0:
            raise ValueError("skew_tolerance_ns must be >= 0")
        if t.finished:
            raise ValueError("consistency: the trace is finished (call it before finish)")
        cdef uint64_t tol = min(int(skew_tolerance_ns), _U64_MAX)
        cdef const unsigned char* d = <const unsigned char*>PyByteArray_AS_STRING(t.data)
        cdef Py_ssize_t n = PyByteArray_GET_SIZE(t.data)
        cdef Py_ssize_t pos, cap = 16, mask, i
        cdef Py_ssize_t dups = 0
        cdef EntryHdr h
        cdef uint64_t* tab
        cdef uint64_t ps, pe
        cdef dict orphans = {}
        cdef dict skewed = {}
        cdef dict target
        while cap < 2 * t.span_count:
            cap <<= 1
        mask = cap - 1
        # slot: span_id, start, end of its first entry (span_id 0: empty)
        traceo_prefetch(d, n)
        tab = <uint64_t*>PyMem_Calloc(3 * cap, sizeof(uint64_t))
        if tab == NULL:
            raise MemoryError()
        try:
            pos = 0
            while pos < n:
                _entry(d, pos, n, &h, self._gcap)
                pos += ENTRY_HDR + h.len
                i = <Py_ssize_t>(traceo_mix(h.sid) >> 40) & mask
                while tab[3 * i] != 0 and tab[3 * i] != h.sid:
                    i = (i + 1) & mask
                if tab[3 * i] == h.sid:
                    dups += 1
                else:
                    tab[3 * i] = h.sid
                    tab[3 * i + 1] = h.start
                    tab[3 * i + 2] = h.end
            pos = 0
            while pos < n:
                _entry(d, pos, n, &h, self._gcap)
                pos += ENTRY_HDR + h.len
                if h.pid == 0:
                    continue
                i = <Py_ssize_t>(traceo_mix(h.pid) >> 40) & mask
                while tab[3 * i] != 0 and tab[3 * i] != h.pid:
                    i = (i + 1) & mask
                if tab[3 * i] == 0:
                    target = orphans
                else:
                    ps = tab[3 * i + 1]
                    pe = tab[3 * i + 2]
                    if ((h.start < ps and ps - h.start > tol)
                            or (h.end > pe and h.end - pe > tol)):
                        target = skewed
                        if amounts is not None:
                            early = ps - h.start if h.start < ps else 0
                            late = h.end - pe if h.end > pe else 0
                            amounts.append((self._gentry(h.gid)[2], max(early, late)))
                    else:
                        continue
                svc = self._gentry(h.gid)[2]
                target[svc] = target.get(svc, 0) + 1
        finally:
            PyMem_Free(tab)
        return dups, orphans, skewed, not t.root_seen

    # ------------------------------------------------------------ output
    def finish(self, Trace t, bint sampled, str policy, threshold, bytes extra=b""):
        """Remember the decision, release the trace's headers, and, when it
        is kept, return (blob, per_service) — see the pure twin."""
        _check_finish(t.decided, t.finished)
        self._remember(t.trace_id, sampled, policy, threshold)
        cdef const unsigned char* d = <const unsigned char*>PyByteArray_AS_STRING(t.data)
        cdef Py_ssize_t n = PyByteArray_GET_SIZE(t.data)
        cdef Py_ssize_t ne = t.span_count, nd = 0, k, i = 0, pos = 0
        cdef EntryHdr h
        cdef Py_ssize_t* cnt = self._gscratch
        # per distinct group (first appearance order): gid, spans; per entry:
        # offset of its span bytes, length, index of its group
        cdef Py_ssize_t* block = <Py_ssize_t*>PyMem_Malloc((3 * ne + 3 * ne + 1) * sizeof(Py_ssize_t))
        if block == NULL:
            raise MemoryError()
        cdef Py_ssize_t* eoff = block
        cdef Py_ssize_t* elen = block + ne
        cdef Py_ssize_t* eidx = block + 2 * ne
        cdef Py_ssize_t* gord = block + 3 * ne
        cdef Py_ssize_t* gnum = block + 4 * ne
        cdef Py_ssize_t* gbyt = block + 5 * ne
        out = None
        traceo_prefetch(d, n)
        try:
            while pos < n and i < ne:
                _entry(d, pos, n, &h, self._gcap)
                k = cnt[h.gid]          # 1 + its index once seen
                if k == 0:
                    gord[nd] = h.gid
                    gnum[nd] = 0
                    gbyt[nd] = 0
                    nd += 1
                    k = nd
                    cnt[h.gid] = k
                gnum[k - 1] += 1
                gbyt[k - 1] += h.len
                eoff[i] = pos + ENTRY_HDR
                elen[i] = h.len
                eidx[i] = k - 1
                i += 1
                pos += ENTRY_HDR + h.len
            t.finished = True
            if pos != n or i != ne:
                raise RuntimeError("trace entries do not match its span count")
            if sampled:
                out = (self._encode(t, threshold, d, ne, eoff, elen, eidx, gord, nd, extra), {})
                per_service = <dict>out[1]
                for k in range(nd):
                    svc = self._gentry(gord[k])[2]
                    row = per_service.get(svc)
                    if row is None:
                        per_service[svc] = [gnum[k], gbyt[k]]
                    else:
                        row[0] += gnum[k]
                        row[1] += gbyt[k]
            for k in range(nd):
                self._release(gord[k], gnum[k])
        finally:
            for k in range(nd):     # the scratch counts are zero between uses
                cnt[gord[k]] = 0
            PyMem_Free(block)
        return out

    cdef bytes _plain_suffix(self, threshold):
        """The trace_state field appended to spans that had none."""
        s = self._plain_sfx.get(threshold)
        if s is None:
            if len(self._plain_sfx) >= 64:
                self._plain_sfx.clear()
            s = _suffix(merge_threshold("", threshold))
            self._plain_sfx[threshold] = s
        return s

    cdef bytes _encode(self, Trace t, threshold, const unsigned char* d, Py_ssize_t ne,
                       Py_ssize_t* eoff, Py_ssize_t* elen, Py_ssize_t* eidx,
                       Py_ssize_t* gord, Py_ssize_t nd, bytes extra):
        # Spans are grouped by (resource, scope) in order of first
        # appearance, scopes under their resource header (the distinct
        # resource headers, by value, in order of first appearance): sizes
        # first, then one output written with memcpy.
        cdef Py_ssize_t i, k, r, nr = 0, body, total = 0, o = 0, ln
        cdef bytes plain = self._plain_suffix(threshold)
        cdef bytes suffix, rh, sh
        if extra:
            plain = plain + extra
        cdef dict merged = {}
        cdef dict res_index = {}
        cdef list res_heads = []
        cdef list scope_heads = []
        cdef char* w
        ts_map = t.tracestates
        # per entry: its suffix (kept alive by plain / merged) and the next
        # entry of its group; per group: first/last entry, body size, resource
        cdef Py_ssize_t* block = <Py_ssize_t*>PyMem_Malloc((3 * ne + 5 * nd + 1) * sizeof(Py_ssize_t))
        if block == NULL:
            raise MemoryError()
        cdef const char** sptr = <const char**>PyMem_Malloc((ne + 1) * sizeof(char*))
        if sptr == NULL:
            PyMem_Free(block)
            raise MemoryError()
        cdef Py_ssize_t* slen = block
        cdef Py_ssize_t* nxt = block + ne
        cdef Py_ssize_t* head = block + 2 * ne
        cdef Py_ssize_t* tail = head + nd
        cdef Py_ssize_t* sbody = tail + nd
        cdef Py_ssize_t* ridx = sbody + nd
        cdef Py_ssize_t* rbody = ridx + nd      # per resource (nr <= nd)
        try:
            for k in range(nd):
                head[k] = -1
                g = self._gentry(gord[k])
                rh = <bytes>g[0]
                sh = <bytes>g[1]
                scope_heads.append(sh)
                sbody[k] = len(sh)
                ro = res_index.get(rh)
                if ro is None:
                    res_index[rh] = nr
                    res_heads.append(rh)
                    rbody[nr] = len(rh)
                    ridx[k] = nr
                    nr += 1
                else:
                    ridx[k] = ro
            for i in range(ne):
                suffix = plain
                if ts_map:
                    ts = ts_map.get(eoff[i])
                    if ts:
                        suffix = merged.get(ts)
                        if suffix is None:
                            suffix = _suffix(merge_threshold(ts, threshold)) + extra
                            merged[ts] = suffix
                sptr[i] = PyBytes_AS_STRING(suffix)
                slen[i] = PyBytes_GET_SIZE(suffix)
                k = eidx[i]
                nxt[i] = -1
                if head[k] < 0:
                    head[k] = i
                else:
                    nxt[tail[k]] = i
                tail[k] = i
                ln = elen[i] + slen[i]
                sbody[k] += field_len(ln)
            for k in range(nd):
                rbody[ridx[k]] += field_len(sbody[k])
            for r in range(nr):
                total += field_len(rbody[r])
            out = PyBytes_FromStringAndSize(NULL, total)
            w = PyBytes_AS_STRING(out)
            for r in range(nr):
                rh = <bytes>res_heads[r]
                o += write_head(<unsigned char*>w + o, 0x0A, rbody[r])
                memcpy(w + o, PyBytes_AS_STRING(rh), PyBytes_GET_SIZE(rh))
                o += PyBytes_GET_SIZE(rh)
                for k in range(nd):
                    if ridx[k] != r:
                        continue
                    sh = <bytes>scope_heads[k]
                    o += write_head(<unsigned char*>w + o, 0x12, sbody[k])
                    memcpy(w + o, PyBytes_AS_STRING(sh), PyBytes_GET_SIZE(sh))
                    o += PyBytes_GET_SIZE(sh)
                    i = head[k]
                    while i >= 0:
                        ln = elen[i] + slen[i]
                        o += write_head(<unsigned char*>w + o, 0x12, ln)
                        memcpy(w + o, d + eoff[i], elen[i])
                        o += elen[i]
                        memcpy(w + o, sptr[i], slen[i])
                        o += slen[i]
                        i = nxt[i]
            if o != total:
                raise RuntimeError("encoded size mismatch")
            return out
        finally:
            PyMem_Free(block)
            PyMem_Free(sptr)

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
        lst.append(field_bytes(0x12, body))
    return b"".join([field_bytes(0x0A, rh + b"".join(scopes)) for rh, scopes in by_res.items()])

