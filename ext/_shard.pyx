# cython: language_level=3
"""Compiled splitter of an encoded ExportTraceServiceRequest into one request
per shard (a worker of ``service.workers``, or a Kafka partition of the
router), every trace whole in one shard. Built as ``traceo_sampler._shard``;
the pure twin is ``traceo_sampler.shard.split_py`` and the two return the
same result for every input.

The walk is the scanner's (ext/_walk.pxi): the same validation, the same
errors, so a sub-request the splitter produced never fails the scan of the
shard that ingests it. Spans are copied byte for byte under their original
resource and scope headers (no decode, no re-encode): one ResourceSpans
holding one ScopeSpans per (shard, group) that has spans.

The shard of a trace is Kafka's partition of a key, ``(murmur2(key) &
0x7fffffff) % n`` as the Java client and aiokafka compute it; the key is the
16 raw trace-ID bytes (``KEY_RAW``, workers) or its 32 lowercase hex digits
(``KEY_HEX``, the router, so producers keying by the hex trace ID as the
Collector's kafkaexporter does choose the same partition).
"""

include "_walk.pxi"

from wire cimport field_len, write_head

from cpython.mem cimport PyMem_Calloc, PyMem_Realloc

cdef extern from *:
    """
    static uint32_t traceo_murmur2(const unsigned char *d, Py_ssize_t len) {
        const uint32_t m = 0x5bd1e995u;
        uint32_t h = 0x9747b28cu ^ (uint32_t)len;
        Py_ssize_t i, n4 = len / 4;
        for (i = 0; i < n4; i++) {
            const unsigned char *p = d + 4 * i;
            uint32_t k = (uint32_t)p[0] | ((uint32_t)p[1] << 8) | ((uint32_t)p[2] << 16)
                         | ((uint32_t)p[3] << 24);
            k *= m; k ^= k >> 24; k *= m;
            h *= m; h ^= k;
        }
        switch (len & 3) {
            case 3: h ^= (uint32_t)d[(len & ~3) + 2] << 16; /* fall through */
            case 2: h ^= (uint32_t)d[(len & ~3) + 1] << 8;  /* fall through */
            case 1: h ^= (uint32_t)d[len & ~3]; h *= m;
        }
        h ^= h >> 13; h *= m; h ^= h >> 15;
        return h;
    }

    static inline uint32_t traceo_shard_of(const unsigned char *tid, int hex, uint32_t n) {
        static const char digits[] = "0123456789abcdef";
        unsigned char buf[32];
        int i;
        if (n <= 1) return 0;
        if (!hex) return (traceo_murmur2(tid, 16) & 0x7fffffffu) % n;
        for (i = 0; i < 16; i++) {
            buf[2 * i] = digits[tid[i] >> 4];
            buf[2 * i + 1] = digits[tid[i] & 15];
        }
        return (traceo_murmur2(buf, 32) & 0x7fffffffu) % n;
    }
    """
    uint32_t traceo_murmur2(const unsigned char* d, Py_ssize_t n) noexcept nogil
    uint32_t traceo_shard_of(const unsigned char* tid, int hexkey, uint32_t n) noexcept nogil

KEY_RAW = 0
KEY_HEX = 1


cdef struct Rec:
    Py_ssize_t off, length, group
    uint32_t shard


cdef class SplitResult:
    """``parts[i]``: the request of shard i (b"" when it has no span);
    ``counts[i]``: its spans; ``trace_ids[i]``: its distinct trace IDs (only
    when asked for); the rest as the scanner's result."""

    cdef readonly list parts
    cdef readonly list counts
    cdef readonly list trace_ids
    cdef readonly Py_ssize_t accepted
    cdef readonly Py_ssize_t rejected
    cdef readonly list errors
    cdef readonly list reasons
    cdef readonly Py_ssize_t span_bytes


@cython.final
cdef class _CSplit(_Walker):
    cdef Rec* recs
    cdef Py_ssize_t n, cap
    cdef uint32_t nshards
    cdef int hexkey
    cdef list tids        # per shard: set of trace IDs, or None

    def __dealloc__(self):
        PyMem_Free(self.recs)

    cdef int on_span(self, SpanRec* r, dict attrs) except -1:
        # (the walk checked the span's strings already)
        cdef Rec* grown
        if self.n == self.cap:
            self.cap = self.cap * 2 if self.cap else 256
            grown = <Rec*>PyMem_Realloc(self.recs, self.cap * sizeof(Rec))
            if grown == NULL:
                raise MemoryError()
            self.recs = grown
        cdef Rec* x = &self.recs[self.n]
        x.off = r.off
        x.length = r.length
        x.group = r.group
        x.shard = traceo_shard_of(r.tid, self.hexkey, self.nshards)
        self.n += 1
        if self.tids is not None:
            (<set>self.tids[x.shard]).add(PyBytes_FromStringAndSize(<const char*>r.tid, 16))
        return 0


def shard_of(bytes trace_id, Py_ssize_t n, int key=KEY_RAW):
    """The shard of one trace ID among n."""
    if len(trace_id) != 16:
        raise ValueError("trace_id must be 16 bytes")
    return traceo_shard_of(<const unsigned char*>PyBytes_AS_STRING(trace_id), key, n)


def murmur2(bytes data):
    return traceo_murmur2(<const unsigned char*>PyBytes_AS_STRING(data), len(data))


def split(data, Py_ssize_t n, attr_keys=frozenset(), int key=KEY_RAW, bint with_trace_ids=False):
    """Split one request into ``n`` requests by the shard of each span's
    trace; see the module docstring. Raises ValueError as the scanner does."""
    if n < 1:
        raise ValueError("n must be >= 1")
    cdef _CSplit s = _CSplit.__new__(_CSplit)
    cdef Py_buffer view
    cdef const unsigned char* base
    cdef bytes owned = None
    s.nshards = <uint32_t>n
    s.hexkey = key
    s.tids = [set() for _ in range(n)] if with_trace_ids else None
    if type(data) is bytes:
        owned = <bytes>data
        base = <const unsigned char*>PyBytes_AS_STRING(owned)
        s.walk(base, PyBytes_GET_SIZE(owned), attr_keys)
    else:
        owned = bytes(data)
        base = <const unsigned char*>PyBytes_AS_STRING(owned)
        s.walk(base, PyBytes_GET_SIZE(owned), attr_keys)
    cdef SplitResult res = SplitResult.__new__(SplitResult)
    groups, res.rejected, res.errors, res.reasons, res.span_bytes = s.figures()
    res.accepted = s.n
    res.trace_ids = s.tids
    cdef Py_ssize_t ng = len(groups)
    cdef Py_ssize_t i, g, sh
    # bytes of the span fields per (shard, group), then of each shard
    cdef Py_ssize_t* gb = <Py_ssize_t*>PyMem_Calloc(n * ng + 1, sizeof(Py_ssize_t))
    cdef Py_ssize_t* cnt = <Py_ssize_t*>PyMem_Calloc(n + 1, sizeof(Py_ssize_t))
    cdef Py_ssize_t* total = <Py_ssize_t*>PyMem_Calloc(n + 1, sizeof(Py_ssize_t))
    cdef unsigned char** w = <unsigned char**>PyMem_Calloc(n + 1, sizeof(unsigned char*))
    cdef Py_ssize_t* cur = <Py_ssize_t*>PyMem_Calloc(n + 1, sizeof(Py_ssize_t))
    if gb == NULL or cnt == NULL or total == NULL or w == NULL or cur == NULL:
        PyMem_Free(gb); PyMem_Free(cnt); PyMem_Free(total); PyMem_Free(w); PyMem_Free(cur)
        raise MemoryError()
    cdef Rec* x
    cdef Py_ssize_t used = 0, scope_in, rs_in
    cdef list hdr_r = [None] * ng
    cdef list hdr_s = [None] * ng
    cdef bytes rh, sh_b
    cdef list parts = []
    cdef bytes out
    try:
        for g in range(ng):
            hdr_r[g] = groups[g][0]
            hdr_s[g] = groups[g][1]
        for i in range(s.n):
            x = &s.recs[i]
            gb[x.shard * ng + x.group] += field_len(x.length)
            cnt[x.shard] += 1
        for sh in range(n):
            if cnt[sh]:
                used += 1
            for g in range(ng):
                if gb[sh * ng + g]:
                    scope_in = len(<bytes>hdr_s[g]) + gb[sh * ng + g]
                    rs_in = len(<bytes>hdr_r[g]) + field_len(scope_in)
                    total[sh] += field_len(rs_in)
        if used == 1 and res.rejected == 0:
            # the whole request goes to one shard: as it came
            for sh in range(n):
                parts.append(owned if cnt[sh] else b"")
        else:
            for sh in range(n):
                out = PyBytes_FromStringAndSize(NULL, total[sh]) if total[sh] else b""
                parts.append(out)
                w[sh] = <unsigned char*>PyBytes_AS_STRING(out) if total[sh] else NULL
                cur[sh] = -1
            for i in range(s.n):
                x = &s.recs[i]
                sh = x.shard
                g = x.group
                if cur[sh] != g:
                    # first span of this group in this shard: the headers
                    cur[sh] = g
                    rh = <bytes>hdr_r[g]
                    sh_b = <bytes>hdr_s[g]
                    scope_in = len(sh_b) + gb[sh * ng + g]
                    rs_in = len(rh) + field_len(scope_in)
                    w[sh] += write_head(w[sh], 0x0A, rs_in)
                    memcpy(w[sh], PyBytes_AS_STRING(rh), len(rh))
                    w[sh] += len(rh)
                    w[sh] += write_head(w[sh], 0x12, scope_in)
                    memcpy(w[sh], PyBytes_AS_STRING(sh_b), len(sh_b))
                    w[sh] += len(sh_b)
                w[sh] += write_head(w[sh], 0x12, x.length)
                memcpy(w[sh], base + x.off, x.length)
                w[sh] += x.length
            for sh in range(n):
                if total[sh] and w[sh] != <unsigned char*>PyBytes_AS_STRING(parts[sh]) + total[sh]:
                    raise RuntimeError("split: encoded size mismatch")
        res.parts = parts
        res.counts = [cnt[sh] for sh in range(n)]
    finally:
        PyMem_Free(gb); PyMem_Free(cnt); PyMem_Free(total); PyMem_Free(w); PyMem_Free(cur)
    return res


def fnv1a64(const unsigned char[:] data, uint64_t h=0xCBF29CE484222325ULL):
    """FNV-1a 64 of ``data``, continuing from ``h`` (the hash of what came
    before): the Collector's probabilistic policy hashes its salt then the
    trace ID. Pure twin: policies/probabilistic.py ``fnv1a64_py``."""
    cdef Py_ssize_t i
    for i in range(data.shape[0]):
        h = (h ^ data[i]) * 0x100000001B3ULL
    return h
