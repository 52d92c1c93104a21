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
include "_parts.pxi"

KEY_RAW = 0
KEY_HEX = 1


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
        cdef uint32_t sh = traceo_shard_of(r.tid, self.hexkey, self.nshards)
        _push_rec(&self.recs, &self.n, &self.cap, r.off, r.length, r.group, sh)
        if self.tids is not None:
            (<set>self.tids[sh]).add(PyBytes_FromStringAndSize(<const char*>r.tid, 16))
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
    res.counts = []
    res.parts = _build_parts(owned, groups, s.recs, s.n, n, res.counts, res.rejected == 0)
    return res


def fnv1a64(const unsigned char[:] data, uint64_t h=0xCBF29CE484222325ULL):
    """FNV-1a 64 of ``data``, continuing from ``h`` (the hash of what came
    before): the Collector's probabilistic policy hashes its salt then the
    trace ID. Pure twin: policies/probabilistic.py ``fnv1a64_py``."""
    cdef Py_ssize_t i
    for i in range(data.shape[0]):
        h = (h ^ data[i]) * 0x100000001B3ULL
    return h
