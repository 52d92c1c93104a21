"""Span data for the policies that need more than the trace summary
(ottl_condition, trace_flags).

The hot path never decodes a span (docs/design.md §1); these policies read the
trace's buffered span bytes when it is decided, and only for traces that
reach them. The buffer hands out ``(resource_header, scope_header, span)``
byte triples (``TraceBuffer.spans``, both twins); ``WithSpans`` wraps the
trace summary for one decision and decodes them, once, on first use, with
the OTLP protobuf classes (upb). A header shared by many spans is decoded
once per decision.
"""
from __future__ import annotations

from collections.abc import Callable, Iterable

from opentelemetry.proto.trace.v1 import trace_pb2

_Span = trace_pb2.Span.FromString
_ResourceSpans = trace_pb2.ResourceSpans.FromString
_ScopeSpans = trace_pb2.ScopeSpans.FromString

# (resource, resource schema_url, scope, scope schema_url, span,
#  resource header, scope header, span bytes): the headers as the buffer
#  holds them, the identity of a resource and a scope across traces
Decoded = tuple
DECODED_SPAN = 4      # the position of the decoded Span (None with spans=False)

# decoded headers kept across decisions: a process sees few distinct ones
MAX_HEADERS = 4096


def decode(triples: Iterable[tuple[bytes, bytes, bytes]],
           headers: dict | None = None, spans: bool = True) -> list[Decoded]:
    """Decode span triples; ``headers`` (header bytes -> decoded message and
    schema_url) is a cache the caller keeps between calls. ``spans=False``
    leaves the span itself undecoded (None): for a reader that decodes only
    the spans it needs."""
    if headers is None:
        headers = {}
    elif len(headers) > MAX_HEADERS:
        headers.clear()
    out = []
    for rh, sh, raw in triples:
        r = headers.get(rh)
        if r is None:
            m = _ResourceSpans(rh)
            r = headers[rh] = (m.resource, m.schema_url)
        # a scope header is keyed apart: the same bytes may be a resource
        # header too (both empty, say)
        s = headers.get((sh,))
        if s is None:
            ms = _ScopeSpans(sh)
            s = headers[(sh,)] = (ms.scope, ms.schema_url)
        out.append((r[0], r[1], s[0], s[1], _Span(raw) if spans else None, rh, sh, raw))
    return out


class WithSpans:
    """A trace summary plus its decoded spans (``.spans``); every other
    attribute is the summary's."""

    __slots__ = ("_headers", "_raw", "_read", "_spans", "_trace")

    def __init__(self, trace, read: Callable[[object], list], headers: dict | None = None):
        self._trace = trace
        self._read = read
        self._spans: list[Decoded] | None = None
        self._headers = headers
        self._raw: list[Decoded] | None = None

    def __getattr__(self, name):
        return getattr(self._trace, name)

    @property
    def spans(self) -> list[Decoded]:
        s = self._spans
        if s is None:
            s = self._spans = decode(self._read(self._trace), self._headers)
        return s

    @property
    def span_headers(self) -> list[Decoded]:
        """As ``spans`` with the span element None: resource and scope
        decoded, each span left as its bytes (the last element)."""
        s = self._spans
        if s is not None:
            return s
        s = self._raw
        if s is None:
            s = self._raw = decode(self._read(self._trace), self._headers, spans=False)
        return s
