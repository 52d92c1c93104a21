# cython: language_level=3
"""Compiled scanner of encoded OTLP ExportTraceServiceRequest bytes.

Built as ``traceo_sampler._scan``. Exact contract: docs/scan-contract.md; the
pure-Python twin is ``traceo_sampler.scan.scan_py`` and the two must return
identical results (same values, same error messages) for every input. The
points the contract leaves open are listed in the docstring of
``traceo_sampler/scan.py``; this file follows the same structure (same walks,
same check order) so that the first error met is the same in both.

Hot path: one walk over the bytes with ``const unsigned char*`` pointers,
varints decoded by inline C functions, no Python object created per field
except those that end up in the result tuples.
"""

include "_walk.pxi"


cdef class ScanResult:
    """Result of ``scan``; see docs/scan-contract.md."""

    cdef readonly list groups
    cdef readonly list spans
    cdef readonly Py_ssize_t rejected
    cdef readonly list errors
    cdef readonly list reasons
    cdef readonly Py_ssize_t span_bytes

    def __repr__(self):
        return (
            f"ScanResult(groups={len(self.groups)}, spans={len(self.spans)}, "
            f"rejected={self.rejected}, span_bytes={self.span_bytes})"
        )


@cython.final
cdef class _CScan(_Walker):
    """The scanner: every valid span becomes the contract's tuple."""

    cdef list spans

    cdef int on_span(self, SpanRec* r, dict attrs) except -1:
        trace_state = self._str(r.ts, r.ts_len, "span trace_state")
        name = self._str(r.name, r.name_len, "span name")
        self.spans.append((
            PyBytes_FromStringAndSize(<const char*>r.tid, 16),
            PyBytes_FromStringAndSize(<const char*>r.sid, 8),
            PyBytes_FromStringAndSize(<const char*>r.pid, 8) if r.pid_len else _EMPTY_BYTES,
            PyLong_FromUnsignedLongLong(r.start),
            PyLong_FromUnsignedLongLong(r.end),
            r.code,
            r.kind,
            self.group_obj,
            PyLong_FromSsize_t(r.off),
            PyLong_FromSsize_t(r.length),
            trace_state,
            name,
            attrs,
        ))
        return 0


def scan(data, attr_keys):
    """Walk one encoded ExportTraceServiceRequest; see docs/scan-contract.md.

    ``data``: bytes (or any contiguous buffer); ``attr_keys``: frozenset of
    attribute keys to extract. Returns a ScanResult.
    Raises ValueError when ``data`` is not a valid encoding.
    """
    cdef _CScan s = _CScan.__new__(_CScan)
    cdef Py_buffer view
    s.spans = []
    if type(data) is bytes:
        s.walk(<const unsigned char*>PyBytes_AS_STRING(data), PyBytes_GET_SIZE(data), attr_keys)
    else:
        PyObject_GetBuffer(data, &view, PyBUF_SIMPLE)
        try:
            s.walk(<const unsigned char*>view.buf, view.len, attr_keys)
        finally:
            PyBuffer_Release(&view)
    cdef ScanResult r = ScanResult.__new__(ScanResult)
    r.spans = s.spans
    r.groups, r.rejected, r.errors, r.reasons, r.span_bytes = s.figures()
    return r
