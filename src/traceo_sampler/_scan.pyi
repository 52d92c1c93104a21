"""Type stub for the compiled scanner (ext/_scan.pyx); see docs/scan-contract.md."""
from collections.abc import Buffer
from typing import Any, AbstractSet, final

# (resource_header, scope_header, service, resource_attrs)
Group = tuple[bytes, bytes, str, dict[str, Any] | None]
# (trace_id, span_id, parent_span_id, start_ns, end_ns, status_code, kind,
#  group, offset, length, trace_state, name, attrs)
SpanEntry = tuple[
    bytes, bytes, bytes, int, int, int, int, int, int, int, str, str, dict[str, Any] | None
]

@final
class ScanResult:
    @property
    def groups(self) -> list[Group]: ...
    @property
    def spans(self) -> list[SpanEntry]: ...
    @property
    def rejected(self) -> int: ...
    @property
    def errors(self) -> list[str]: ...
    @property
    def reasons(self) -> list[str]: ...
    @property
    def span_bytes(self) -> int: ...

def scan(data: bytes | Buffer, attr_keys: AbstractSet[str], /) -> ScanResult:
    """Walk one encoded ExportTraceServiceRequest. Raises ValueError on bad bytes."""
