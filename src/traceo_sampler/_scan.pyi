"""Type stub for the compiled scanner (ext/_scan.pyx); see docs/scan-contract.md."""

from typing import Any, AbstractSet, final

from typing_extensions import Buffer

# (resource_header, scope_header, service, resource_attrs)
_Group = tuple[bytes, bytes, str, dict[str, Any] | None]
# (trace_id, span_id, parent_span_id, start_ns, end_ns, status_code, kind,
#  group, offset, length, trace_state, name, attrs)
_SpanEntry = tuple[
    bytes, bytes, bytes, int, int, int, int, int, int, int, str, str, dict[str, Any] | None
]

class ContentError(ValueError):
    """Bad content inside a well-framed message (rejects its spans, not the
    request); ``reason`` is the invalid_spans_total label."""
    reason: str
    def __init__(self, reason: str, message: str) -> None: ...

@final
class ScanResult:
    @property
    def groups(self) -> list[_Group]: ...
    @property
    def spans(self) -> list[_SpanEntry]: ...
    @property
    def rejected(self) -> int: ...
    @property
    def errors(self) -> list[str]: ...
    @property
    def reasons(self) -> list[str]: ...
    @property
    def span_bytes(self) -> int: ...

def scan(data: bytes | Buffer, attr_keys: AbstractSet[str]) -> ScanResult:
    """Walk one encoded ExportTraceServiceRequest. Raises ValueError on bad bytes."""
