# One request per shard out of chosen spans of one encoded request: the
# shard splitter (ext/_shard.pyx, split) and the buffer's fused ingest of
# ``service.workers`` (ext/_buffer.pyx, ingest with nshards > 1, which keeps
# its own shard's spans and hands the others over) build them the same way.
# Included after _walk.pxi. Pure twin: shard.py ``parts_py``.

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

from cpython.mem cimport PyMem_Calloc, PyMem_Realloc

from wire cimport field_len, write_head


cdef struct Rec:
    # one span to place: data[off:off + length] of group ``group``
    Py_ssize_t off, length, group
    uint32_t shard


cdef inline int _push_rec(Rec** recs, Py_ssize_t* n, Py_ssize_t* cap, Py_ssize_t off,
                          Py_ssize_t length, Py_ssize_t group, uint32_t shard) except -1:
    cdef Rec* grown
    if n[0] == cap[0]:
        cap[0] = cap[0] * 2 if cap[0] else 256
        grown = <Rec*>PyMem_Realloc(recs[0], cap[0] * sizeof(Rec))
        if grown == NULL:
            raise MemoryError()
        recs[0] = grown
    cdef Rec* x = &recs[0][n[0]]
    x.off = off
    x.length = length
    x.group = group
    x.shard = shard
    n[0] += 1
    return 0


cdef list _build_parts(bytes owned, list groups, Rec* recs, Py_ssize_t nrec, Py_ssize_t n,
                       list counts, bint whole_ok):
    """The request of each of the n shards holding the records' spans (b""
    for a shard without any), each span under its group's resource and scope
    headers: one ResourceSpans holding one ScopeSpans per (shard, group) with
    spans, in the order of the records. ``counts`` gets each shard's spans.
    ``whole_ok``: the records are every span of ``owned`` and nothing was
    rejected, so a shard holding them all gets ``owned`` itself."""
    cdef const unsigned char* base = <const unsigned char*>PyBytes_AS_STRING(owned)
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
        for i in range(nrec):
            x = &recs[i]
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
        if used == 1 and whole_ok:
            # the whole request goes to one shard: as it came
            for sh in range(n):
                parts.append(owned if cnt[sh] else b"")
        else:
            for sh in range(n):
                out = PyBytes_FromStringAndSize(NULL, total[sh]) if total[sh] else b""
                parts.append(out)
                w[sh] = <unsigned char*>PyBytes_AS_STRING(out) if total[sh] else NULL
                cur[sh] = -1
            for i in range(nrec):
                x = &recs[i]
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
        for sh in range(n):
            counts.append(cnt[sh])
    finally:
        PyMem_Free(gb); PyMem_Free(cnt); PyMem_Free(total); PyMem_Free(w); PyMem_Free(cur)
    return parts
