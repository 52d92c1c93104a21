"""Type stub for the compiled TraceBuffer (ext/_buffer.pyx); the model and the
exact semantics are those of its pure twin, ``traceo_sampler.buffer``."""
from collections.abc import Iterable
from typing import Any, AbstractSet, Protocol, final

from typing_extensions import Buffer

class _ScanLike(Protocol):
    @property
    def groups(self) -> list[tuple[bytes, bytes, str, dict[str, Any] | None]]: ...
    @property
    def spans(self) -> list[tuple]: ...

MAX_LAG_SERVICES: int

@final
class Waits:
    """The root_wait and idle_timeout of one root service (or the default),
    shared by the traces that use them."""
    root_wait: float
    idle_timeout: float
    def __init__(self, root_wait: float, idle_timeout: float) -> None: ...

class ContentError(ValueError):
    """Bad content inside a well-framed message (rejects its spans, not the
    request); ``reason`` is the invalid_spans_total label."""
    reason: str
    def __init__(self, reason: str, message: str) -> None: ...

@final
class Trace:
    trace_id: bytes
    # span entries: [gid u32][len u32][span_id 8][parent_span_id 8][start u64][end u64]
    # (40 bytes) then the span's encoding
    data: bytearray
    span_count: int
    first_arrival: float
    last_arrival: float
    root_arrival: float
    min_start: int
    max_end: int
    status_mask: int
    root_seen: bool
    decided: bool
    services: set[str]
    attrs: dict[str, set[Any]] | None
    randomness: int
    root_name: str
    root_service: str
    tracestates: dict[int, str] | None
    # its OTLP size when a policy charges bytes (otlp_size.py), else None
    encoded_size: int | None
    # longest time between two of its arrivals
    max_gap: float
    waits: Waits
    def __init__(self, trace_id: bytes, now: float, waits: Waits | None = None) -> None: ...
    @property
    def trace_state(self) -> str:
        """The first non-empty tracestate seen in the trace."""
    @property
    def nbytes(self) -> int: ...
    def entries(self) -> list[tuple[int, int, int, str]]:
        """(group, offset, length, trace_state) of every span entry."""

@final
class AddResult:
    # the scanner's figures
    accepted: int
    rejected: int
    errors: list[str]
    reasons: list[str]
    span_bytes: int
    groups: list[tuple[bytes, bytes, str, dict[str, Any] | None]]
    # what the insert did
    late_kept: list[tuple[bytes, str, int, bytes, bytes, bytes, str, str]]
    late_dropped: int
    # with late_detail: every late span of a not-sampled trace as (trace_id,
    # service, status code, start, end, resource_header, scope_header,
    # span_bytes, trace_state)
    late_dropped_spans: list[tuple[bytes, str, int, int, int, bytes, bytes, bytes, str]]
    full: list[Trace]
    overflow: list[tuple]
    new_traces: int
    spans: int
    per_service: dict[str, list[int]]
    # ingest with nshards > 1: each other shard's request and span count
    parts: list[bytes] | None
    counts: list[int] | None
    # with parts: each part's span records (b"" for none), for its owner's
    # ingest(..., checked=True, recs=len(records)) after the part's bytes
    recs: list[bytes] | None
    def __init__(self) -> None: ...

@final
class TraceBuffer:
    decision_wait: float
    root_wait: float
    idle_timeout: float
    max_spans: int
    memory_limit: int
    nbytes: int
    nspans: int
    traces: dict[bytes, Trace]
    cache_sampled: int
    cache_not_sampled: int
    default_waits: Waits
    late_detail: bool
    def __init__(self, *, decision_wait: float, root_wait: float, idle_timeout: float,
                 max_spans_per_trace: int, memory_limit: int,
                 cache_sampled: int, cache_not_sampled: int) -> None: ...
    def set_waits(self, service: str, root_wait: float, idle_timeout: float) -> Waits:
        """Traces whose root span is of ``service`` use these waits."""
    def waits(self, service: str) -> Waits: ...
    def take_lags(self) -> dict[str, tuple[list[int], list[int], float, float]]:
        """Per service, the arrival lags counted since the last call:
        (first_counts, root_counts, first_sum, root_sum)."""
    def group(self, gid: int) -> tuple[bytes, bytes, str]: ...
    @property
    def ngroups(self) -> int: ...
    @property
    def ntraces(self) -> int: ...
    def remember(self, trace_id: bytes, sampled: bool, policy: str, threshold: int) -> None: ...
    def cached(self, trace_id: bytes) -> tuple[str, int] | bool | None: ...
    def add(self, scan: _ScanLike, data: bytes, now: float) -> AddResult: ...
    def ingest(self, data: bytes | Buffer, attr_keys: AbstractSet[str], now: float,
               nshards: int = 1, shard: int = 0, checked: bool = False,
               recs: int = 0) -> AddResult:
        """Scan and buffer one request in one pass. Raises ValueError (the
        scanner's, before anything is buffered) on bad bytes."""
    def deadline(self, t: Trace) -> float: ...
    def trigger(self, t: Trace) -> str: ...
    def due(self, now: float, limit: int = ...) -> list[tuple[Trace, str]]: ...
    def next_deadline(self) -> float | None: ...
    def make_room(self, incoming: int) -> list[tuple[Trace, str]]: ...
    def drain(self) -> list[tuple[Trace, str]]: ...
    def discard(self, trace_id: bytes) -> int: ...
    def span_bytes_by_group(self, t: Trace) -> dict[int, int]:
        """group id -> bytes its spans take as ScopeSpans.spans fields."""
    def spans(self, t: Trace) -> list[tuple[bytes, bytes, bytes]]:
        """(resource_header, scope_header, span) of every span; before finish()."""
    def consistency(self, t: Trace, skew_tolerance_ns: int,
                    amounts: list[tuple[str, int]] | None = None
                    ) -> tuple[int, dict[str, int], dict[str, int], bool]:
        """(duplicates, orphans per service, skewed per service, no_root);
        with ``amounts``, each skewed span appends (service, nanoseconds
        outside its parent). Call it before finish()."""
    def finish(self, t: Trace, sampled: bool, policy: str, threshold: int, extra: bytes = b""
               ) -> tuple[bytes, dict[str, list[int]]] | None:
        """When kept: (blob, per service [spans, span bytes as received]);
        ``extra`` (encoded Span fields) is appended to every span."""
    @staticmethod
    def encode_groups(items: Iterable[tuple[bytes, bytes, list[bytes]]]) -> bytes: ...

def encode_groups(items: Iterable[tuple[bytes, bytes, list[bytes]]]) -> bytes: ...
