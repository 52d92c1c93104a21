"""The size the Collector charges a trace (``bytes_limiting``): its spans as
an OTLP ``TracesData``, the Collector's ``ptrace.ProtoMarshaler.TracesSize``
of the trace's received batches.

The Collector keeps per trace one ``ResourceSpans`` per incoming resource,
holding a copy of the ``resource`` and, per scope, a ``ScopeSpans`` with a
copy of the ``scope`` and the spans (processor.go
newResourceSpanFromSpanAndScopes: the schema URLs are not copied). This
computes the same from the buffer's span entries and group headers without
encoding anything. Spans of one resource that arrived in several requests
are counted as one ``ResourceSpans`` here, several there: a few bytes per
extra request apart.
"""
from __future__ import annotations

from typing import Callable

from .wire import field_len as _field_len, read_field


# header → its length without schema_url; the headers of a process are few
# (one per resource and scope), so this stays small; cleared if it is not
_SIZES: dict[bytes, int] = {}
_MAX_CACHED = 65536


def _without_schema_url(header: bytes) -> int:
    n = _SIZES.get(header)
    if n is None:
        if len(_SIZES) >= _MAX_CACHED:
            _SIZES.clear()
        n = _SIZES[header] = _strip_schema_url(header)
    return n


def _strip_schema_url(header: bytes) -> int:
    """Length of a resource/scope header without its field 3 (schema_url)."""
    n = len(header)
    pos = 0
    out = 0
    while pos < n:
        tag, _v, _body, nxt = read_field(header, pos, n)
        if tag >> 3 != 3:
            out += nxt - pos
        pos = nxt
    return out


def encoded_size(trace, buffer) -> int:
    """``trace``: a buffered trace; ``buffer``: its TraceBuffer (either twin:
    ``span_bytes_by_group(trace)`` and ``group(gid)`` → (resource_header,
    scope_header, service))."""
    return size_of_groups(buffer.span_bytes_by_group(trace), buffer.group)


def span_bytes_by_group(trace) -> dict[int, int]:
    """What ``TraceBuffer.span_bytes_by_group`` returns, from ``entries()``."""
    per_group: dict[int, int] = {}
    for gid, _off, ln, _ts in trace.entries():
        per_group[gid] = per_group.get(gid, 0) + _field_len(ln)
    return per_group


def size_of_groups(per_group: dict[int, int], group: Callable[[int], tuple]) -> int:
    by_res: dict[bytes, int] = {}
    for gid, spans in per_group.items():
        rh, sh, _svc = group(gid)
        ss = _without_schema_url(sh) + spans
        by_res[rh] = by_res.get(rh, 0) + _field_len(ss)
    total = 0
    for rh, scopes in by_res.items():
        rs = _without_schema_url(rh) + scopes
        total += _field_len(rs)
    return total
