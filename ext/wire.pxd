# The protobuf wire format for the compiled twins: C declarations and inline
# helpers, cimported by every .pyx (as uvloop keeps its C declarations in
# includes/*.pxd). Only declarations and inline functions: nothing here is a
# module of its own, each extension compiles in what it uses. The pure-Python
# counterpart is src/traceo_sampler/wire.py; the two read and write the same
# bytes. The walk of a whole request (with its errors) is ext/_walk.pxi.

from cpython.bytes cimport PyBytes_FromStringAndSize
from libc.stdint cimport int32_t, uint32_t, uint64_t

cdef extern from *:
    """
    #include <string.h>
    #include <stdint.h>

    static inline uint64_t traceo_u64le(const unsigned char *p) {
        uint64_t v;
        memcpy(&v, p, 8);
    #if defined(__BYTE_ORDER__) && __BYTE_ORDER__ == __ORDER_BIG_ENDIAN__
        v = __builtin_bswap64(v);
    #endif
        return v;
    }

    static inline uint64_t traceo_u32le(const unsigned char *p) {
        uint32_t v;
        memcpy(&v, p, 4);
    #if defined(__BYTE_ORDER__) && __BYTE_ORDER__ == __ORDER_BIG_ENDIAN__
        v = __builtin_bswap32(v);
    #endif
        return (uint64_t)v;
    }

    static inline double traceo_double(uint64_t bits) {
        double d;
        memcpy(&d, &bits, 8);
        return d;
    }

    /* Varint at p (p < end or not): returns the byte after it, or NULL when it
       is truncated or longer than 10 bytes. */
    static inline const unsigned char *
    traceo_varint(const unsigned char *p, const unsigned char *end, uint64_t *out) {
        uint64_t r = 0;
        int shift = 0;
        while (p < end && shift < 70) {
            unsigned char b = *p++;
            r |= ((uint64_t)(b & 0x7F)) << shift;
            if (b < 0x80) { *out = r; return p; }
            shift += 7;
        }
        return NULL;
    }
    """
    # fixed64 / fixed32 values (little-endian on the wire)
    uint64_t traceo_u64le(const unsigned char* p) noexcept nogil
    uint64_t traceo_u32le(const unsigned char* p) noexcept nogil
    # a fixed64's bits as a double
    double traceo_double(uint64_t bits) noexcept nogil
    const unsigned char* traceo_varint(
        const unsigned char* p, const unsigned char* end, uint64_t* out) noexcept nogil


# Wire types (the low 3 bits of a tag)
cdef enum:
    WT_VARINT = 0
    WT_I64 = 1
    WT_LEN = 2
    WT_I32 = 5


cdef struct Field:
    uint64_t tag    # (field number << 3) | wire type
    uint64_t val    # varint / fixed value, or the length for wire type 2
    const unsigned char* body   # first byte after the tag (and length)


cdef inline int32_t int32(uint64_t v) noexcept nogil:
    """A varint read as int32 (enums: a negative one comes out negative)."""
    return <int32_t>(<uint32_t>(v & 0xFFFFFFFFu))


# -- encoding ---------------------------------------------------------------
cdef inline Py_ssize_t varint_len(Py_ssize_t n) noexcept nogil:
    """How many bytes the varint of n (>= 0) takes."""
    cdef Py_ssize_t k = 1
    while n > 0x7F:
        n >>= 7
        k += 1
    return k


cdef inline Py_ssize_t field_len(Py_ssize_t n) noexcept nogil:
    """Encoded size of a length-delimited field (one-byte tag) holding n bytes."""
    return 1 + varint_len(n) + n


cdef inline Py_ssize_t write_varint(unsigned char* w, Py_ssize_t n) noexcept nogil:
    """Write the varint of n (>= 0) at w; return how many bytes it took."""
    cdef Py_ssize_t i = 0
    while n > 0x7F:
        w[i] = (n & 0x7F) | 0x80
        n >>= 7
        i += 1
    w[i] = <unsigned char>n
    return i + 1


cdef inline Py_ssize_t write_head(unsigned char* w, unsigned char tag, Py_ssize_t n) noexcept nogil:
    """Write the tag and length of a length-delimited field holding n bytes
    at w; return how many bytes they took (the payload goes after them)."""
    w[0] = tag
    return 1 + write_varint(w + 1, n)


cdef inline bytes varint_bytes(Py_ssize_t n):
    cdef unsigned char buf[10]
    return PyBytes_FromStringAndSize(<char*>buf, write_varint(buf, n))


cdef inline bytes field_bytes(unsigned char tag, bytes payload):
    """A length-delimited field: its one-byte tag, the length, the payload."""
    cdef unsigned char buf[11]
    return PyBytes_FromStringAndSize(<char*>buf, write_head(buf, tag, len(payload))) + payload
