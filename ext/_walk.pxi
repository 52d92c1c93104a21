# Included by ext/_scan.pyx, ext/_buffer.pyx and ext/_shard.pyx (Cython
# `include`): the one walk over an encoded ExportTraceServiceRequest that they
# share. The wire format itself (varints, fixed values, the Field record) is
# cimported from ext/wire.pxd.
#
# ``_Walker`` walks the request (docs/scan-contract.md: same walks, same check
# order, same error messages as the pure twin traceo_sampler/scan.py), builds
# the group tuples, validates each span and hands every valid one, as a C
# ``SpanRec`` of pointers into the request plus its attribute dict, to the
# virtual ``on_span``. The scanner (_scan.pyx: ``_CScan``) turns it into the
# contract's tuple; the fused TraceBuffer.ingest (_buffer.pyx: ``_Ingest``)
# keeps the C record and inserts it into the buffer once the whole request
# has been walked without error.
#
# Every string the walk meets inside a span, its resource and its scope is
# checked to be UTF-8 and every nested message (events, links, AnyValue,
# KeyValueList, ArrayValue) to be well formed, because the kept span is
# exported byte for byte and a strict decoder downstream refuses the whole
# batch holding it. A span with bad content is rejected alone (its frame is
# sound, so the walk goes on); a resource or scope with bad content rejects
# the spans under it.
#
# Two shortcuts keep the walk's results the same: a resource or scope header
# identical to a good one met earlier in the same walk is taken from it (the
# same bytes give the same checks and the same extraction), and in a
# service.workers hand-off (``checked``) a span that comes with its
# ``PreRec`` (what the sending worker's walk extracted) is taken from it
# instead of walked.

cimport cython
from cpython.bytes cimport PyBytes_AS_STRING, PyBytes_FromStringAndSize, PyBytes_GET_SIZE
from cpython.buffer cimport PyBUF_SIMPLE, PyBuffer_Release, PyObject_GetBuffer
from cpython.exc cimport PyErr_Clear
from cpython.float cimport PyFloat_FromDouble
from cpython.long cimport PyLong_FromLongLong, PyLong_FromSsize_t, PyLong_FromUnsignedLongLong
from cpython.mem cimport PyMem_Free, PyMem_Malloc
from cpython.ref cimport PyObject, Py_DECREF, Py_INCREF, Py_XDECREF
from libc.stdint cimport int32_t, int64_t, uint16_t, uint32_t, uint64_t
from libc.string cimport memcmp, memcpy

from wire cimport Field, int32, traceo_double, traceo_u32le, traceo_u64le, traceo_varint

cdef extern from *:
    """
    #include <string.h>
    #include <stdint.h>

    static inline int traceo_all_zero(const unsigned char *p, Py_ssize_t n) {
        unsigned char acc = 0;
        Py_ssize_t i;
        for (i = 0; i < n; i++) acc |= p[i];
        return acc == 0;
    }

    /* Strict UTF-8, as Python's decoder and Go's utf8.Valid accept it: no
       overlong forms, no surrogates, nothing above U+10FFFF. */
    static __attribute__((noinline)) int traceo_utf8_valid(const unsigned char *s, Py_ssize_t n) {
        Py_ssize_t i = 0;
        uint64_t w;
        unsigned char c, c1;
        while (i < n) {
            if (i + 8 <= n) {
                memcpy(&w, s + i, 8);
                if ((w & 0x8080808080808080ULL) == 0) { i += 8; continue; }
            }
            c = s[i];
            if (c < 0x80) { i++; continue; }
            if (c < 0xC2) return 0;
            if (c < 0xE0) {
                if (i + 1 >= n || (s[i + 1] & 0xC0) != 0x80) return 0;
                i += 2; continue;
            }
            if (c < 0xF0) {
                if (i + 2 >= n) return 0;
                c1 = s[i + 1];
                if ((c1 & 0xC0) != 0x80 || (s[i + 2] & 0xC0) != 0x80) return 0;
                if (c == 0xE0 && c1 < 0xA0) return 0;
                if (c == 0xED && c1 >= 0xA0) return 0;
                i += 3; continue;
            }
            if (c < 0xF5) {
                if (i + 3 >= n) return 0;
                c1 = s[i + 1];
                if ((c1 & 0xC0) != 0x80 || (s[i + 2] & 0xC0) != 0x80
                        || (s[i + 3] & 0xC0) != 0x80) return 0;
                if (c == 0xF0 && c1 < 0x90) return 0;
                if (c == 0xF4 && c1 >= 0x90) return 0;
                i += 4; continue;
            }
            return 0;
        }
        return 1;
    }

    /* The same, with the common case (an ASCII string of up to 64 bytes:
       names, keys, values) decided inline. */
    static inline int traceo_utf8_ok(const unsigned char *p, Py_ssize_t n) {
        uint64_t a, acc = 0;
        unsigned char c = 0;
        Py_ssize_t i;
        if (n >= 8) {
            if (n <= 64) {
                for (i = 0; i + 8 <= n; i += 8) {
                    memcpy(&a, p + i, 8);
                    acc |= a;
                }
                memcpy(&a, p + n - 8, 8);  /* the tail, overlapping */
                acc |= a;
                if ((acc & 0x8080808080808080ULL) == 0) return 1;
            }
            return traceo_utf8_valid(p, n);
        }
        for (i = 0; i < n; i++) c |= p[i];
        return c < 0x80 || traceo_utf8_valid(p, n);
    }

    /* Slot in the per-call string cache (128 slots) for the n bytes at p. */
    static inline unsigned int traceo_slot(const unsigned char *p, Py_ssize_t n) {
        uint64_t a = 0, b = 0;
        if (n >= 8) {
            memcpy(&a, p, 8);
            memcpy(&b, p + n - 8, 8);
        } else {
            memcpy(&a, p, (size_t)n);
        }
        a = a * 0x9E3779B97F4A7C15ULL ^ b * 0xC2B2AE3D27D4EB4FULL ^ (uint64_t)n;
        return (unsigned int)(a >> 57);
    }
    """
    bint traceo_all_zero(const unsigned char* p, Py_ssize_t n) noexcept nogil
    bint traceo_utf8_ok(const unsigned char* p, Py_ssize_t n) noexcept nogil
    unsigned int traceo_slot(const unsigned char* p, Py_ssize_t n) noexcept nogil

cdef extern from "Python.h":
    # Raw variant: returns NULL with an exception set instead of raising, so
    # the caller can replace UnicodeDecodeError by the contract's ValueError.
    PyObject* _decode_utf8_raw "PyUnicode_DecodeUTF8"(
        const char* s, Py_ssize_t size, const char* errors)


# AnyValue oneof kinds (their field numbers); 0 = no value.
cdef enum:
    AV_STRING = 1
    AV_BOOL = 2
    AV_INT = 3
    AV_DOUBLE = 4
    AV_BYTES = 7

cdef enum:
    CACHE_SIZE = 128   # must match traceo_slot (7 bits)

cdef enum:
    # Levels of AnyValue nesting (an attribute's own value is level 1). The
    # protobuf decoders of C++, Java and Python stop at 100 nested messages;
    # a link attribute at level 20 is 64 deep, well inside it.
    MAX_ANY_DEPTH = 20


class ContentError(ValueError):
    """Bad content inside a well-framed message: rejects the spans it
    belongs to, not the request. ``reason`` is the invalid_spans_total label."""

    def __init__(self, reason, message):
        ValueError.__init__(self, message)
        self.reason = reason

cdef bytes _EMPTY_BYTES = b""
cdef str _EMPTY_STR = ""
cdef const unsigned char* _SERVICE_NAME = <const unsigned char*>b"service.name"


cdef class _Keys:
    """attr_keys prepared for byte comparison (UTF-8 encodings)."""

    cdef bint decode          # attr_keys not empty: decode every key met
    cdef Py_ssize_t n
    cdef const unsigned char** ptrs
    cdef Py_ssize_t* lens
    cdef tuple strs           # the str objects, used as dict keys
    cdef tuple encoded        # keeps the encodings alive
    cdef uint32_t fp          # fingerprint of the set (PreRec.keys)

    def __dealloc__(self):
        PyMem_Free(self.ptrs)
        PyMem_Free(self.lens)


cdef uint32_t _keys_fp(list encoded):
    # FNV-1a 32 over the sorted keys, each ended by a 0 byte (not UTF-8
    # inside a key): equal sets, equal fingerprints, whatever their order
    cdef uint32_t h = 0x811C9DC5u
    cdef const unsigned char* p
    cdef Py_ssize_t i
    for b in sorted(encoded):
        p = <const unsigned char*>PyBytes_AS_STRING(b)
        for i in range(PyBytes_GET_SIZE(b)):
            h = (h ^ p[i]) * 0x01000193u
        h = (h ^ 0) * 0x01000193u
    return h


cdef _Keys _make_keys(object attr_keys):
    cdef _Keys k = _Keys.__new__(_Keys)
    cdef list strs = []
    cdef list encoded = []
    cdef Py_ssize_t i
    k.decode = bool(attr_keys)
    if k.decode:
        for key in attr_keys:
            if not isinstance(key, str):
                continue  # can never equal a decoded key
            try:
                b = (<str>key).encode("utf-8")
            except UnicodeEncodeError:
                continue  # lone surrogates: never equal to valid UTF-8
            strs.append(key)
            encoded.append(b)
    k.strs = tuple(strs)
    k.encoded = tuple(encoded)
    k.n = len(strs)
    k.fp = _keys_fp(encoded)
    if k.n:
        k.ptrs = <const unsigned char**>PyMem_Malloc(k.n * sizeof(const unsigned char*))
        k.lens = <Py_ssize_t*>PyMem_Malloc(k.n * sizeof(Py_ssize_t))
        if k.ptrs == NULL or k.lens == NULL:
            raise MemoryError()
        for i in range(k.n):
            b = k.encoded[i]
            k.ptrs[i] = <const unsigned char*>PyBytes_AS_STRING(b)
            k.lens[i] = PyBytes_GET_SIZE(b)
    return k


cdef object _cached_set = None
cdef _Keys _cached_keys = None


cdef _Keys _get_keys(object attr_keys):
    global _cached_set, _cached_keys
    if attr_keys is _cached_set and _cached_keys is not None:
        return _cached_keys
    cdef _Keys k = _make_keys(attr_keys)
    if type(attr_keys) is frozenset:  # immutable: safe to reuse by identity
        _cached_set = attr_keys
        _cached_keys = k
    return k


cdef inline bint _is_service(const unsigned char* p, Py_ssize_t n) noexcept:
    return n == 12 and memcmp(p, _SERVICE_NAME, 12) == 0


cdef struct SpanRec:
    # One valid span, as pointers into the request.
    const unsigned char* tid     # 16 bytes
    const unsigned char* sid     # 8 bytes
    const unsigned char* pid     # pid_len bytes (0 or 8)
    const unsigned char* ts      # trace_state: ts_len bytes of UTF-8 (checked by on_span)
    const unsigned char* name    # name: name_len bytes of UTF-8 (checked by on_span)
    Py_ssize_t pid_len, ts_len, name_len
    uint64_t start, end
    int32_t kind, code
    Py_ssize_t group             # index in the walker's groups
    Py_ssize_t off, length       # the Span body: data[off:off + length]
    Py_ssize_t attrs             # left to on_span (the fused path: index of the attrs dict)
    Py_ssize_t slot              # left to on_span (the fused path: its trace's slot)


cdef enum:
    # Distinct resource (and scope) headers remembered per walk: a request
    # repeats a few of them across many groups, a hand-off frame (the parts
    # of several requests) across hundreds.
    HDR_CACHE = 32
    HDR_RUNS = 4        # a header in more pieces than this is not remembered

cdef enum:
    # PreRec.flags
    PRE_PARENT = 1      # the span has a parent (pid: 8 bytes at PreRec.pid)
    PRE_WALK = 2        # walk the span itself: it has attributes the policies read


cdef struct PreRec:
    # What the walk extracted of one span, for the walk of the same span
    # bytes in another worker (service.workers' hand-off): the owner takes
    # it instead of walking the span's fields again. Offsets are from the
    # start of the Span body, so they hold wherever the bytes are copied.
    # Written and read by this same build only (native layout, 48 bytes).
    uint64_t start, end
    uint32_t length
    int32_t kind, code
    uint32_t keys           # _Keys.fp of the attr_keys it was extracted with
    uint16_t tid, sid, pid, ts, ts_len, name, name_len, flags


cdef inline int _pre_from(PreRec* x, SpanRec* r, const unsigned char* p, uint32_t keys,
                          bint wanted) noexcept:
    """Fill x from r (a span at p); PRE_WALK when the span is too long for
    16-bit offsets or carried ``wanted`` attributes."""
    x.start = r.start
    x.end = r.end
    x.length = <uint32_t>r.length
    x.kind = r.kind
    x.code = r.code
    x.keys = keys
    x.flags = PRE_PARENT if r.pid_len else 0
    if wanted or r.length > 0xFFFF:
        x.flags |= PRE_WALK
        x.tid = x.sid = x.pid = x.ts = x.ts_len = x.name = x.name_len = 0
        return 0
    x.tid = <uint16_t>(r.tid - p)
    x.sid = <uint16_t>(r.sid - p)
    x.pid = <uint16_t>(r.pid - p)
    x.ts = <uint16_t>(r.ts - p)
    x.ts_len = <uint16_t>r.ts_len
    x.name = <uint16_t>(r.name - p)
    x.name_len = <uint16_t>r.name_len
    return 0


cdef inline Py_ssize_t _find_header(const char** ptrs, Py_ssize_t* lens, Py_ssize_t n,
                                    const unsigned char** run_p, Py_ssize_t* run_n, int runs,
                                    Py_ssize_t total) noexcept:
    """Index of the remembered header equal to these runs, or -1."""
    cdef Py_ssize_t i, off
    cdef int k
    for i in range(n):
        if lens[i] != total:
            continue
        off = 0
        for k in range(runs):
            if memcmp(ptrs[i] + off, run_p[k], run_n[k]) != 0:
                break
            off += run_n[k]
        else:
            return i
    return -1


cdef bytes _join_runs(const unsigned char** run_p, Py_ssize_t* run_n, int runs, Py_ssize_t total):
    if runs == 0:
        return _EMPTY_BYTES
    if runs == 1:
        return PyBytes_FromStringAndSize(<const char*>run_p[0], total)
    cdef bytes out = PyBytes_FromStringAndSize(NULL, total)
    cdef char* dst = PyBytes_AS_STRING(out)
    cdef int k
    for k in range(runs):
        memcpy(dst, run_p[k], run_n[k])
        dst += run_n[k]
    return out


cdef class _Walker:
    """The shared walk; subclasses implement ``on_span``. Every other method
    is final (a direct C call); ``on_span`` is the one virtual step."""

    cdef const unsigned char* base
    cdef list groups
    cdef list errors
    cdef list reasons
    cdef Py_ssize_t rejected
    cdef Py_ssize_t span_bytes
    cdef Py_ssize_t span_index
    cdef _Keys keys
    cdef object service
    cdef Py_ssize_t group        # index of the ScopeSpans being walked
    cdef object group_obj        # the same as a Python int
    cdef object gbad             # (prefix, ContentError) rejecting the group's spans, or None
    # The request was built by another worker out of spans it checked
    # (service.workers' hand-off): only what the buffer needs is extracted;
    # the content checks (UTF-8, events, links, nested values, the scope)
    # are not done again. Framing stays checked: bad bytes still raise.
    cdef bint checked
    # With ``checked``: the PreRec of every span, in order (ingest's ``recs``)
    cdef const PreRec* pre
    cdef Py_ssize_t pre_n, pre_i
    # The good resource headers of this walk, as (header, service, rattrs),
    # and the good scope headers: an identical header is neither walked nor
    # checked again, and its one bytes object (hash computed once) is reused
    cdef list rcache, scache
    cdef const char* rc_ptr[HDR_CACHE]      # their bytes, compared in C
    cdef Py_ssize_t rc_len[HDR_CACHE]
    cdef const char* sc_ptr[HDR_CACHE]
    cdef Py_ssize_t sc_len[HDR_CACHE]
    # Per-call cache of decoded strings (span names, attribute values repeat
    # a lot within a request): slot -> bytes in the buffer and owned str.
    cdef const unsigned char* c_ptr[CACHE_SIZE]
    cdef Py_ssize_t c_len[CACHE_SIZE]
    cdef PyObject* c_obj[CACHE_SIZE]

    def __dealloc__(self):
        cdef int i
        for i in range(CACHE_SIZE):
            Py_XDECREF(self.c_obj[i])

    @cython.final
    cdef int walk(self, const unsigned char* buf, Py_ssize_t n, object attr_keys) except -1:
        """Walk the n bytes at buf (alive for the walker's lifetime)."""
        self.keys = _get_keys(attr_keys)
        self.groups = []
        self.errors = []
        self.reasons = []
        self.service = _EMPTY_STR
        self.rcache = []
        self.scache = []
        self.base = buf
        self.request(buf, buf + n)
        if self.pre != NULL and self.pre_i != self.pre_n:
            raise ValueError(f"hand-off: {self.pre_n} span records for {self.pre_i} spans")
        return 0

    cdef int on_span(self, SpanRec* r, dict attrs) except -1:
        raise NotImplementedError

    @cython.final
    cdef tuple figures(self):
        """(groups, rejected, errors, reasons, span_bytes) of the walk."""
        return self.groups, self.rejected, self.errors, self.reasons, self.span_bytes

    # -- errors (cold) ----------------------------------------------------
    @cython.final
    cdef int _err_varint(self, const unsigned char* p, const unsigned char* end) except -1:
        cdef Py_ssize_t avail = end - p
        cdef Py_ssize_t pos = p - self.base
        if avail <= 10:
            raise ValueError(f"truncated varint at byte {pos}")
        raise ValueError(f"varint longer than 10 bytes at byte {pos}")

    @cython.final
    cdef int _err_field(self, const unsigned char* tagp, const unsigned char* p,
                        const unsigned char* end, uint64_t tag, uint64_t ln) except -1:
        cdef Py_ssize_t tag_pos = tagp - self.base
        cdef Py_ssize_t end_pos = end - self.base
        cdef uint64_t fn = tag >> 3
        cdef int wt = tag & 7
        if tag < 8:
            raise ValueError(f"invalid field number 0 at byte {tag_pos}")
        if wt == 2:
            raise ValueError(
                f"field {fn} at byte {tag_pos}: length {ln} runs past the end "
                f"of its enclosing message (byte {end_pos})"
            )
        if wt == 1:
            raise ValueError(
                f"field {fn} at byte {tag_pos}: truncated fixed64 "
                f"(enclosing message ends at byte {end_pos})"
            )
        if wt == 5:
            raise ValueError(
                f"field {fn} at byte {tag_pos}: truncated fixed32 "
                f"(enclosing message ends at byte {end_pos})"
            )
        raise ValueError(f"field {fn} at byte {tag_pos}: invalid wire type {wt}")

    @cython.final
    cdef str _decode(self, const unsigned char* p, Py_ssize_t n, str what):
        if n == 0:
            return _EMPTY_STR
        cdef PyObject* r = _decode_utf8_raw(<const char*>p, n, NULL)
        if r == NULL:  # cold: redo it in Python to tell bad UTF-8 from e.g. MemoryError
            PyErr_Clear()
            try:
                return PyBytes_FromStringAndSize(<const char*>p, n).decode("utf-8")
            except UnicodeDecodeError:
                raise ValueError(f"invalid UTF-8 in {what} at byte {p - self.base}") from None
        cdef str s = <str>r
        Py_DECREF(s)  # <str>r took a second reference
        return s

    @cython.final
    cdef str _str(self, const unsigned char* p, Py_ssize_t n, str what):
        """Decode n bytes at p as UTF-8, reusing an equal string met before."""
        if n == 0:
            return _EMPTY_STR
        cdef unsigned int h = traceo_slot(p, n)
        if (self.c_len[h] == n and self.c_obj[h] != NULL
                and memcmp(self.c_ptr[h], p, n) == 0):
            return <str>self.c_obj[h]
        cdef str s = self._decode(p, n, what)
        Py_INCREF(s)
        Py_XDECREF(self.c_obj[h])
        self.c_obj[h] = <PyObject*>s
        self.c_ptr[h] = p
        self.c_len[h] = n
        return s

    @cython.final
    cdef inline int _utf8(self, const unsigned char* p, uint64_t n, str what) except -1:
        if not self.checked and not traceo_utf8_ok(p, <Py_ssize_t>n):
            self._bad_utf8(p, what)
        return 0

    @cython.final
    cdef int _bad_utf8(self, const unsigned char* p, str what) except -1:
        raise ContentError("invalid_utf8", f"invalid UTF-8 in {what} at byte {p - self.base}")

    # -- fields -----------------------------------------------------------
    @cython.final
    cdef inline const unsigned char* _next(self, const unsigned char* p,
                                           const unsigned char* end,
                                           Field* f) except NULL:
        """Read the field at p (p < end); return the byte after it.

        The common shapes (one-byte tag, then a one-byte length or varint,
        or a fixed value) take this short path, small enough to be inlined
        at every call site; everything else goes to ``_next_full``."""
        cdef uint64_t tag = p[0]
        cdef Py_ssize_t avail = end - p, ln
        cdef int wt = tag & 7
        if tag >= 8 and tag < 0x80 and avail >= 2:
            if wt == 2:
                if p[1] < 0x80:
                    if <Py_ssize_t>p[1] <= avail - 2:
                        f.tag = tag
                        f.val = p[1]
                        f.body = p + 2
                        return p + 2 + p[1]
                elif avail >= 3 and p[2] < 0x80 and p[2] != 0:  # a span, typically
                    ln = (p[1] & 0x7F) | (<Py_ssize_t>p[2] << 7)
                    if ln <= avail - 3:
                        f.tag = tag
                        f.val = <uint64_t>ln
                        f.body = p + 3
                        return p + 3 + ln
            elif wt == 0:
                if p[1] < 0x80:
                    f.tag = tag
                    f.val = p[1]
                    f.body = p + 2
                    return p + 2
            elif wt == 1:
                if avail >= 9:
                    f.tag = tag
                    f.val = traceo_u64le(p + 1)
                    f.body = p + 1
                    return p + 9
            elif wt == 5:
                if avail >= 5:
                    f.tag = tag
                    f.val = traceo_u32le(p + 1)
                    f.body = p + 1
                    return p + 5
        return self._next_full(p, end, f)

    @cython.final
    cdef const unsigned char* _next_full(self, const unsigned char* p,
                                         const unsigned char* end,
                                         Field* f) except NULL:
        cdef const unsigned char* tagp = p
        cdef const unsigned char* q
        cdef uint64_t tag = 0, v = 0
        if p[0] < 0x80:
            tag = p[0]
            p += 1
        else:
            q = traceo_varint(p, end, &tag)
            if q == NULL:
                self._err_varint(p, end)
            p = q
            if tag > 0xFFFFFFFFu:  # protobuf's field numbers end at 2^29 - 1
                raise ValueError(f"field number {tag >> 3} out of range at byte {tagp - self.base}")
        if tag < 8:
            self._err_field(tagp, p, end, tag, 0)
        f.tag = tag
        cdef int wt = tag & 7
        if wt == 2:
            if p < end and p[0] < 0x80:
                v = p[0]
                p += 1
            else:
                q = traceo_varint(p, end, &v)
                if q == NULL:
                    self._err_varint(p, end)
                p = q
            if v > <uint64_t>(end - p):
                self._err_field(tagp, p, end, tag, v)
            f.val = v
            f.body = p
            return p + v
        if wt == 0:
            q = traceo_varint(p, end, &v)
            if q == NULL:
                self._err_varint(p, end)
            f.val = v
            f.body = q
            return q
        if wt == 1:
            if end - p < 8:
                self._err_field(tagp, p, end, tag, 0)
            f.val = traceo_u64le(p)
            f.body = p
            return p + 8
        if wt == 5:
            if end - p < 4:
                self._err_field(tagp, p, end, tag, 0)
            f.val = traceo_u32le(p)
            f.body = p
            return p + 4
        self._err_field(tagp, p, end, tag, 0)
        return NULL

    # -- messages ---------------------------------------------------------
    @cython.final
    cdef int request(self, const unsigned char* p, const unsigned char* end) except -1:
        cdef Field f
        while p < end:
            p = self._next(p, end, &f)
            if f.tag == 0x0A:  # resource_spans
                self.resource_spans(f.body, f.body + f.val)
        return 0

    @cython.final
    cdef bytes header(self, const unsigned char* p, const unsigned char* end):
        """Raw bytes of every field in [p, end) except field 2."""
        cdef Field f
        cdef const unsigned char* q = p
        cdef const unsigned char* start
        cdef const unsigned char* first = NULL
        cdef const unsigned char* last_end = NULL
        cdef Py_ssize_t total = 0
        cdef int runs = 0
        while q < end:
            start = q
            q = self._next(q, end, &f)
            if f.tag != 0x12:
                total += q - start
                if start != last_end:
                    runs += 1
                    if runs == 1:
                        first = start
                last_end = q
        if runs == 0:
            return _EMPTY_BYTES
        if runs == 1:
            return PyBytes_FromStringAndSize(<const char*>first, total)
        cdef bytes out = PyBytes_FromStringAndSize(NULL, total)
        cdef char* dst = PyBytes_AS_STRING(out)
        q = p
        while q < end:
            start = q
            q = self._next(q, end, &f)
            if f.tag != 0x12:
                memcpy(dst, start, q - start)
                dst += q - start
        return out

    @cython.final
    cdef int _runs(self, const unsigned char* p, const unsigned char* end,
                   const unsigned char** run_p, Py_ssize_t* run_n, Py_ssize_t* total) except -1:
        """The header of [p, end) (every field but field 2) as its runs of
        contiguous bytes: their count, or HDR_RUNS + 1 when there are more."""
        cdef Field f
        cdef const unsigned char* q = p
        cdef const unsigned char* start
        cdef const unsigned char* last_end = NULL
        cdef int runs = 0
        total[0] = 0
        while q < end:
            start = q
            q = self._next(q, end, &f)
            if f.tag != 0x12:
                if start != last_end:
                    if runs == HDR_RUNS:
                        return runs + 1     # (header() walks it all, framing included)
                    run_p[runs] = start
                    run_n[runs] = 0
                    runs += 1
                run_n[runs - 1] += q - start
                total[0] += q - start
                last_end = q
        return runs

    @cython.final
    cdef int resource_spans(self, const unsigned char* p, const unsigned char* end) except -1:
        cdef Field f
        cdef const unsigned char* q
        cdef bytes header
        cdef dict rattrs = None
        cdef object bad = None
        cdef const unsigned char* run_p[HDR_RUNS]
        cdef Py_ssize_t run_n[HDR_RUNS]
        cdef Py_ssize_t total, hit = -1, nc = len(self.rcache)
        cdef int runs = self._runs(p, end, run_p, run_n, &total)
        if runs <= HDR_RUNS:
            hit = _find_header(self.rc_ptr, self.rc_len, nc, run_p, run_n, runs, total)
        if hit >= 0:
            header, service, rattrs = <tuple>self.rcache[hit]
            self.service = service
        else:
            header = (_join_runs(run_p, run_n, runs, total) if runs <= HDR_RUNS
                      else self.header(p, end))
            self.service = _EMPTY_STR
            q = p
            while q < end:
                q = self._next(q, end, &f)
                if bad is not None:
                    continue
                try:
                    if f.tag == 0x0A:  # resource (repeated occurrences merge)
                        rattrs = self.resource(f.body, f.body + f.val, rattrs)
                    elif f.tag == 0x1A:
                        self._utf8(f.body, f.val, "schema_url")
                except ValueError as exc:
                    bad = ("resource: ", exc)
            service = self.service
            if bad is not None:  # its spans are all rejected: nothing to extract
                rattrs = None
                service = _EMPTY_STR
            elif nc < HDR_CACHE:
                self.rcache.append((header, service, rattrs))
                self.rc_ptr[nc] = PyBytes_AS_STRING(header)
                self.rc_len[nc] = PyBytes_GET_SIZE(header)
        q = p
        while q < end:
            q = self._next(q, end, &f)
            if f.tag == 0x12:  # scope_spans
                self.scope_spans(f.body, f.body + f.val, header, service, rattrs, bad)
        return 0

    @cython.final
    cdef dict resource(self, const unsigned char* p, const unsigned char* end, dict rattrs):
        cdef Field f
        while p < end:
            p = self._next(p, end, &f)
            if f.tag == 0x0A:  # attributes
                rattrs = self.key_value(f.body, f.body + f.val, rattrs, True)
            elif f.tag == 0x1A and not self.checked:  # entity_refs
                self.entity_ref(f.body, f.body + f.val)
        return rattrs

    @cython.final
    cdef int entity_ref(self, const unsigned char* p, const unsigned char* end) except -1:
        cdef Field f
        while p < end:
            p = self._next(p, end, &f)
            if f.tag == 0x0A or f.tag == 0x12 or f.tag == 0x1A or f.tag == 0x22:
                self._utf8(f.body, f.val, "entity_ref")
        return 0

    @cython.final
    cdef int scope(self, const unsigned char* p, const unsigned char* end) except -1:
        cdef Field f
        while p < end:
            p = self._next(p, end, &f)
            if f.tag == 0x0A:
                self._utf8(f.body, f.val, "scope name")
            elif f.tag == 0x12:
                self._utf8(f.body, f.val, "scope version")
            elif f.tag == 0x1A:  # attributes
                self.check_kv(f.body, f.body + f.val, 1)
        return 0

    @cython.final
    cdef int scope_spans(self, const unsigned char* p, const unsigned char* end,
                         bytes resource_header, object service, dict rattrs,
                         object bad) except -1:
        cdef Field f
        cdef bytes sh
        cdef const unsigned char* base = self.base
        cdef const unsigned char* run_p[HDR_RUNS]
        cdef Py_ssize_t run_n[HDR_RUNS]
        cdef Py_ssize_t total, hit = -1, nc = len(self.scache)
        cdef int runs = self._runs(p, end, run_p, run_n, &total)
        if runs <= HDR_RUNS and bad is None:
            hit = _find_header(self.sc_ptr, self.sc_len, nc, run_p, run_n, runs, total)
        if hit >= 0:
            sh = <bytes>self.scache[hit]
        elif runs <= HDR_RUNS:
            sh = _join_runs(run_p, run_n, runs, total)
        else:
            sh = self.header(p, end)
        self.group = len(self.groups)
        self.group_obj = PyLong_FromSsize_t(self.group)
        self.groups.append((resource_header, sh, service, rattrs))
        # The scope may come after the spans: check it before any span is
        # taken. The header holds every field but the spans, so it is walked
        # instead of the whole ScopeSpans; only when it is bad is the check
        # done again on the request itself, for the byte offsets.
        if bad is None and PyBytes_GET_SIZE(sh) and not self.checked and hit < 0:
            self.base = <const unsigned char*>PyBytes_AS_STRING(sh)
            try:
                self.scope_header(self.base, self.base + PyBytes_GET_SIZE(sh))
            except ValueError:
                self.base = base
                try:
                    self.scope_header(p, end)
                except ValueError as exc:
                    bad = ("scope: ", exc)
            self.base = base
        if bad is None and hit < 0 and nc < HDR_CACHE:
            self.scache.append(sh)
            self.sc_ptr[nc] = PyBytes_AS_STRING(sh)
            self.sc_len[nc] = PyBytes_GET_SIZE(sh)
        self.gbad = bad
        while p < end:
            p = self._next(p, end, &f)
            if f.tag == 0x12:  # spans
                self.span(f.body, <Py_ssize_t>f.val)
        return 0

    @cython.final
    cdef int scope_header(self, const unsigned char* p, const unsigned char* end) except -1:
        """Check the fields of a ScopeSpans other than its spans."""
        cdef Field f
        while p < end:
            p = self._next(p, end, &f)
            if f.tag == 0x0A:  # scope
                self.scope(f.body, f.body + f.val)
            elif f.tag == 0x1A:
                self._utf8(f.body, f.val, "schema_url")
        return 0

    # -- attributes (AnyValue and what nests in it) ------------------------
    @cython.final
    cdef int any_value(self, const unsigned char* p, const unsigned char* end,
                       int depth) except -1:
        """Check an AnyValue body at nesting level ``depth``."""
        cdef Field f
        if depth > MAX_ANY_DEPTH:
            raise ContentError(
                "nesting_too_deep",
                f"attribute value at byte {p - self.base} nested deeper than "
                f"{MAX_ANY_DEPTH} levels")
        while p < end:
            p = self._next(p, end, &f)
            if f.tag == 0x0A:  # string_value
                self._utf8(f.body, f.val, "attribute value")
            elif f.tag == 0x2A:  # array_value
                self.array_value(f.body, f.body + f.val, depth + 1)
            elif f.tag == 0x32:  # kvlist_value
                self.kvlist_value(f.body, f.body + f.val, depth + 1)
        return 0

    @cython.final
    cdef int array_value(self, const unsigned char* p, const unsigned char* end,
                         int depth) except -1:
        cdef Field f
        while p < end:
            p = self._next(p, end, &f)
            if f.tag == 0x0A:  # values
                self.any_value(f.body, f.body + f.val, depth)
        return 0

    @cython.final
    cdef int kvlist_value(self, const unsigned char* p, const unsigned char* end,
                          int depth) except -1:
        cdef Field f
        while p < end:
            p = self._next(p, end, &f)
            if f.tag == 0x0A:  # values
                self.check_kv(f.body, f.body + f.val, depth)
        return 0

    @cython.final
    cdef int check_kv(self, const unsigned char* p, const unsigned char* end,
                      int depth) except -1:
        """Check a KeyValue whose value is at nesting level ``depth``."""
        cdef Field f
        while p < end:
            p = self._next(p, end, &f)
            if f.tag == 0x0A:  # key
                self._utf8(f.body, f.val, "attribute key")
            elif f.tag == 0x12:  # value
                self.any_value(f.body, f.body + f.val, depth)
        return 0

    @cython.final
    cdef dict key_value(self, const unsigned char* p, const unsigned char* end,
                        dict d, bint resource):
        """Check a span or resource attribute and extract it when wanted."""
        cdef Field f
        cdef Field g
        cdef const unsigned char* key_p = p
        cdef Py_ssize_t key_len = 0
        cdef int vkind = 0
        cdef uint64_t vval = 0
        cdef const unsigned char* vbody = NULL
        cdef const unsigned char* q
        cdef const unsigned char* vend
        cdef uint64_t fn
        cdef int wt
        cdef _Keys keys = self.keys
        cdef Py_ssize_t i, match = -1
        cdef bint is_service
        while p < end:
            p = self._next(p, end, &f)
            if f.tag == 0x0A:  # key
                key_p = f.body
                key_len = <Py_ssize_t>f.val
                self._utf8(key_p, f.val, "attribute key")
            elif f.tag == 0x12:  # value: AnyValue; occurrences merge
                q = f.body
                vend = q + f.val
                while q < vend:
                    q = self._next(q, vend, &g)
                    fn = g.tag >> 3
                    wt = g.tag & 7
                    if fn == 1 or fn == 7 or fn == 5 or fn == 6:
                        if wt == 2:
                            vkind = <int>fn
                            vbody = g.body
                            vval = g.val
                            if self.checked:
                                pass
                            elif fn == 1:
                                self._utf8(g.body, g.val, "attribute value")
                            elif fn == 5:
                                self.array_value(g.body, g.body + g.val, 2)
                            elif fn == 6:
                                self.kvlist_value(g.body, g.body + g.val, 2)
                    elif fn == 2 or fn == 3 or fn == 8:
                        if wt == 0:
                            vkind = <int>fn
                            vval = g.val
                    elif fn == 4:
                        if wt == 1:
                            vkind = 4
                            vval = g.val
        if keys.decode:
            for i in range(keys.n):
                if keys.lens[i] == key_len and memcmp(keys.ptrs[i], key_p, key_len) == 0:
                    match = i
                    break
        is_service = resource and _is_service(key_p, key_len)
        if match < 0 and not is_service:
            return d
        if vkind == AV_STRING:
            value = self._str(vbody, <Py_ssize_t>vval, "attribute value")
            if is_service:
                self.service = value
        elif vkind == AV_BOOL:
            value = vval != 0
        elif vkind == AV_INT:
            value = PyLong_FromLongLong(<int64_t>vval)
        elif vkind == AV_DOUBLE:
            value = PyFloat_FromDouble(traceo_double(vval))
        elif vkind == AV_BYTES:
            value = PyBytes_FromStringAndSize(<const char*>vbody, <Py_ssize_t>vval)
        else:
            return d
        if match >= 0:
            if d is None:
                d = {}
            d[keys.strs[match]] = value
        return d

    # -- spans ------------------------------------------------------------
    @cython.final
    cdef int event(self, const unsigned char* p, const unsigned char* end) except -1:
        cdef Field f
        while p < end:
            p = self._next(p, end, &f)
            if f.tag == 0x12:
                self._utf8(f.body, f.val, "event name")
            elif f.tag == 0x1A:  # attributes
                self.check_kv(f.body, f.body + f.val, 1)
        return 0

    @cython.final
    cdef int link(self, const unsigned char* p, const unsigned char* end) except -1:
        cdef Field f
        while p < end:
            p = self._next(p, end, &f)
            if f.tag == 0x0A:
                if f.val != 16 and f.val != 0:
                    raise ContentError(
                        "link_id_length", f"link trace_id at byte {f.body - self.base} "
                        f"must be 16 bytes or empty, got {f.val}")
            elif f.tag == 0x12:
                if f.val != 8 and f.val != 0:
                    raise ContentError(
                        "link_id_length", f"link span_id at byte {f.body - self.base} "
                        f"must be 8 bytes or empty, got {f.val}")
            elif f.tag == 0x1A:
                self._utf8(f.body, f.val, "link trace_state")
            elif f.tag == 0x22:  # attributes
                self.check_kv(f.body, f.body + f.val, 1)
        return 0

    @cython.final
    cdef dict span_fields(self, const unsigned char* p, const unsigned char* end,
                          SpanRec* r, Py_ssize_t* id_lens):
        """Walk (and check) a span's fields into ``r``; return its attrs."""
        cdef Field f
        cdef Field g
        cdef const unsigned char* s
        cdef const unsigned char* send
        cdef dict attrs = None
        while p < end:
            p = self._next(p, end, &f)
            if f.tag == 0x0A:
                r.tid = f.body
                id_lens[0] = <Py_ssize_t>f.val
            elif f.tag == 0x12:
                r.sid = f.body
                id_lens[1] = <Py_ssize_t>f.val
            elif f.tag == 0x1A:
                self._utf8(f.body, f.val, "span trace_state")
                r.ts = f.body
                r.ts_len = <Py_ssize_t>f.val
            elif f.tag == 0x22:
                r.pid = f.body
                r.pid_len = <Py_ssize_t>f.val
            elif f.tag == 0x2A:
                self._utf8(f.body, f.val, "span name")
                r.name = f.body
                r.name_len = <Py_ssize_t>f.val
            elif f.tag == 0x30:  # kind (enum: int32)
                r.kind = int32(f.val)
            elif f.tag == 0x39:  # start_time_unix_nano (fixed64)
                r.start = f.val
            elif f.tag == 0x41:  # end_time_unix_nano (fixed64)
                r.end = f.val
            elif f.tag == 0x4A:  # attributes
                if not self.checked or self.keys.decode:
                    attrs = self.key_value(f.body, f.body + f.val, attrs, False)
            elif f.tag == 0x5A:  # events
                if not self.checked:
                    self.event(f.body, f.body + f.val)
            elif f.tag == 0x6A:  # links
                if not self.checked:
                    self.link(f.body, f.body + f.val)
            elif f.tag == 0x7A:  # status (occurrences merge)
                s = f.body
                send = s + f.val
                while s < send:
                    s = self._next(s, send, &g)
                    if g.tag == 0x18:  # code
                        r.code = int32(g.val)
                    elif g.tag == 0x12:
                        self._utf8(g.body, g.val, "status message")
        return attrs

    @cython.final
    cdef int span(self, const unsigned char* p, Py_ssize_t length) except -1:
        cdef SpanRec r
        cdef Py_ssize_t id_lens[2]
        cdef dict attrs
        cdef Py_ssize_t index = self.span_index
        self.span_index = index + 1
        if self.gbad is not None:
            return self._reject_content(index, self.gbad[0], self.gbad[1])
        if self.pre != NULL and self._pre_span(p, length, &r):
            self.on_span(&r, None)
            self.span_bytes += length
            return 0
        id_lens[0] = id_lens[1] = 0
        r.tid = r.sid = r.pid = r.ts = r.name = p
        r.pid_len = r.ts_len = r.name_len = 0
        r.start = r.end = 0
        r.kind = r.code = 0
        try:
            attrs = self.span_fields(p, p + length, &r, id_lens)
        except ValueError as exc:  # its frame is sound: the other spans go on
            return self._reject_content(index, "", exc)
        if (id_lens[0] != 16 or traceo_all_zero(r.tid, 16)
                or id_lens[1] != 8 or traceo_all_zero(r.sid, 8)
                or (r.pid_len != 8 and r.pid_len != 0)
                or r.start == 0 or r.end == 0 or r.end < r.start):
            return self._reject(index, &r, id_lens[0], id_lens[1])
        r.group = self.group
        r.off = p - self.base
        r.length = length
        r.attrs = -1
        self.on_span(&r, attrs)
        self.span_bytes += length
        return 0

    @cython.final
    cdef bint _pre_span(self, const unsigned char* p, Py_ssize_t length, SpanRec* r) except -1:
        """Take the span at p from its PreRec instead of walking it: True
        when r is filled, False when the span must be walked (PRE_WALK, or
        extracted with other attr_keys, as in a reload)."""
        if self.pre_i >= self.pre_n:
            raise ValueError(f"hand-off: more spans than the {self.pre_n} span records")
        cdef PreRec x
        memcpy(&x, &self.pre[self.pre_i], sizeof(PreRec))
        self.pre_i += 1
        if x.length != <uint64_t>length:
            raise ValueError(f"hand-off: span record {self.pre_i - 1} is not of its span "
                             f"({x.length} bytes, the span {length})")
        if x.flags & PRE_WALK or x.keys != self.keys.fp:
            return False
        if (x.tid + 16 > length or x.sid + 8 > length
                or (x.flags & PRE_PARENT and x.pid + 8 > length)
                or x.ts + x.ts_len > length or x.name + x.name_len > length):
            raise ValueError(f"hand-off: span record {self.pre_i - 1} points outside its span")
        r.tid = p + x.tid
        r.sid = p + x.sid
        r.pid = p + x.pid
        r.pid_len = 8 if x.flags & PRE_PARENT else 0
        r.ts = p + x.ts
        r.ts_len = x.ts_len
        r.name = p + x.name
        r.name_len = x.name_len
        r.start = x.start
        r.end = x.end
        r.kind = x.kind
        r.code = x.code
        r.group = self.group
        r.off = p - self.base
        r.length = length
        r.attrs = -1
        return True

    @cython.final
    cdef int _reject_content(self, Py_ssize_t index, str where, object exc) except -1:
        self.rejected += 1
        self.errors.append(f"span {index}: {where}{exc}")
        self.reasons.append(getattr(exc, "reason", "malformed"))
        return 0

    @cython.final
    cdef int _reject(self, Py_ssize_t index, SpanRec* r, Py_ssize_t tid_len,
                     Py_ssize_t sid_len) except -1:
        # Called only when one check failed; the order is the contract's.
        if tid_len != 16:
            reason = "trace_id_length"
            msg = f"trace_id must be 16 bytes, got {tid_len}"
        elif traceo_all_zero(r.tid, 16):
            reason = "trace_id_zero"
            msg = "trace_id must not be all zero"
        elif sid_len != 8:
            reason = "span_id_length"
            msg = f"span_id must be 8 bytes, got {sid_len}"
        elif traceo_all_zero(r.sid, 8):
            reason = "span_id_zero"
            msg = "span_id must not be all zero"
        elif r.pid_len != 8 and r.pid_len != 0:
            reason = "parent_span_id_length"
            msg = f"parent_span_id must be 8 bytes or empty, got {r.pid_len}"
        elif r.start == 0:
            reason = "start_time_zero"
            msg = "start_time_unix_nano must not be 0"
        elif r.end == 0:
            reason = "end_time_zero"
            msg = "end_time_unix_nano must not be 0"
        else:
            reason = "end_before_start"
            msg = "end_time_unix_nano before start_time_unix_nano"
        self.rejected += 1
        self.errors.append(f"span {index}: {msg}")
        self.reasons.append(reason)
        return 0
