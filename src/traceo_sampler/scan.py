"""One-pass scanner of encoded OTLP ``ExportTraceServiceRequest`` bytes.

The exact contract (result layout, validation rules, error messages) is in
``docs/scan-contract.md``. This module holds:

* ``Scanner`` -- the protocol both implementations satisfy;
* ``scan_py`` / ``ScanResultPy`` -- the pure-Python twin, the reference the
  compiled scanner (``ext/_scan.pyx`` -> ``traceo_sampler._scan``) is tested
  against field by field;
* ``scan`` -- the implementation picked at import (``accel.compiled``), and
  ``IMPLEMENTATION`` (``"cython"`` or ``"python"``) saying which one it is.

Points the contract leaves open, decided the same way in both twins:

* Span numbers in ``errors`` count every span met in the request (valid or
  not), from 0.
* Validation order: first the span's content, in byte order (a framing
  error inside the span, a string that is not UTF-8, a link ID of the wrong
  length, AnyValue nested deeper than ``MAX_ANY_DEPTH``); then trace_id
  length, trace_id zero, span_id length, span_id zero, parent_span_id length,
  start time 0, end time 0, end before start. Only the first failure is
  reported. Bad content in a span's resource or scope (checked before any
  of their spans) rejects every span under it, ``"resource: "`` or
  ``"scope: "`` before the message.
* Attribute values of unsupported kinds (array, kvlist, string_value_strindex,
  no value) are ignored: they neither enter the dict nor remove an earlier
  occurrence of the same key. ``service`` is the value of the last
  ``service.name`` attribute holding a ``string_value``.
* Repeated occurrences of a singular message field (``Span.status``,
  ``KeyValue.value``, ``ResourceSpans.resource``) merge, as protobuf does.
* Every known message of the span, resource and scope is walked and
  checked (events, links, status, attributes, AnyValue, ArrayValue,
  KeyValueList, entity refs), so that every span accepted is one a strict
  OTLP decoder accepts; unknown fields are skipped by their length, as
  decoders do. A framing error outside the spans (in the request,
  ``ResourceSpans`` or ``ScopeSpans`` themselves) makes the whole request
  invalid (``ValueError``).
* Also invalid, like protobuf says: field number 0 or above 2^29 - 1, a
  varint longer than 10 bytes. Enum fields (``kind``, ``Status.code``) are read as int32, as
  protobuf does (a negative enum comes out negative).
* ``resource_attrs`` is one dict shared by all the groups of a ResourceSpans.
  ``data`` may be any bytes-like object; offsets index into it.
"""
from __future__ import annotations

from typing import Any, Callable, Final, Protocol

from .wire import double as _as_double, int32 as _int32, int64 as _int64, read_field as _field

__all__ = [
    "IMPLEMENTATION",
    "MAX_ANY_DEPTH",
    "ContentError",
    "Group",
    "ScanResultLike",
    "ScanResultPy",
    "Scanner",
    "SpanEntry",
    "SPAN_ATTRS",
    "SPAN_END",
    "SPAN_GROUP",
    "SPAN_KIND",
    "SPAN_LENGTH",
    "SPAN_NAME",
    "SPAN_OFFSET",
    "SPAN_PARENT_ID",
    "SPAN_SPAN_ID",
    "SPAN_START",
    "SPAN_STATUS",
    "SPAN_TRACE_ID",
    "SPAN_TRACE_STATE",
    "scan",
    "scan_py",
]

_SERVICE_NAME = b"service.name"
_ZERO16 = bytes(16)
_ZERO8 = bytes(8)

# AnyValue oneof kinds (the field numbers); 0 = no value set.
_AV_STRING, _AV_BOOL, _AV_INT, _AV_DOUBLE, _AV_BYTES = 1, 2, 3, 4, 7
# Levels of AnyValue nesting (an attribute's own value is level 1). The
# protobuf decoders of C++, Java and Python stop at 100 nested messages; a
# link attribute at level 20 is 64 deep, well inside it.
MAX_ANY_DEPTH = 20


class ContentError(ValueError):
    """Bad content inside a well-framed message: rejects the spans it
    belongs to, not the request. ``reason`` is the invalid_spans_total label."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason


Group = tuple[bytes, bytes, str, dict[str, Any] | None]
"""(resource_header, scope_header, service, resource_attrs)"""
SpanEntry = tuple[
    bytes, bytes, bytes, int, int, int, int, int, int, int, str, str, dict[str, Any] | None
]
"""(trace_id, span_id, parent_span_id, start_ns, end_ns, status_code, kind,
group, offset, length, trace_state, name, attrs)"""
# Positions in a SpanEntry: its readers index it by these names (both twins
# build the tuple in this order).
SPAN_TRACE_ID: Final = 0
SPAN_SPAN_ID: Final = 1
SPAN_PARENT_ID: Final = 2
SPAN_START: Final = 3
SPAN_END: Final = 4
SPAN_STATUS: Final = 5
SPAN_KIND: Final = 6
SPAN_GROUP: Final = 7       # index into the result's groups
SPAN_OFFSET: Final = 8      # the Span message body is data[offset:offset + length]
SPAN_LENGTH: Final = 9
SPAN_TRACE_STATE: Final = 10
SPAN_NAME: Final = 11
SPAN_ATTRS: Final = 12


class ScanResultLike(Protocol):
    """What callers may rely on in a scan result (both twins provide it)."""

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


class Scanner(Protocol):
    """``scan(data, attr_keys) -> ScanResult``; see docs/scan-contract.md."""

    def __call__(self, data: bytes, attr_keys: frozenset[str], /) -> ScanResultLike: ...


class ScanResultPy:
    """Result of ``scan_py``; same attributes as ``_scan.ScanResult``."""

    __slots__ = ("groups", "spans", "rejected", "errors", "reasons", "span_bytes")
    groups: list[Group]
    spans: list[SpanEntry]
    rejected: int
    errors: list[str]
    reasons: list[str]
    span_bytes: int

    def __init__(
        self,
        groups: list[Group],
        spans: list[SpanEntry],
        rejected: int,
        errors: list[str],
        reasons: list[str],
        span_bytes: int,
    ) -> None:
        self.groups = groups
        self.spans = spans
        self.rejected = rejected
        self.errors = errors
        self.reasons = reasons
        self.span_bytes = span_bytes

    def __repr__(self) -> str:
        return (
            f"ScanResultPy(groups={len(self.groups)}, spans={len(self.spans)}, "
            f"rejected={self.rejected}, span_bytes={self.span_bytes})"
        )


def _decode(data: bytes, start: int, length: int, what: str) -> str:
    try:
        return data[start : start + length].decode("utf-8")
    except UnicodeDecodeError:
        raise ContentError("invalid_utf8", f"invalid UTF-8 in {what} at byte {start}") from None


def _utf8(data: bytes, start: int, length: int, what: str) -> None:
    if length and not data[start : start + length].isascii():
        _decode(data, start, length, what)


class _PyScan:
    __slots__ = (
        "data",
        "attr_keys",
        "groups",
        "spans",
        "errors",
        "reasons",
        "rejected",
        "span_bytes",
        "span_index",
        "service",
        "gbad",
        "checked",
    )

    def __init__(self, data: bytes, attr_keys: frozenset[str], checked: bool = False) -> None:
        self.data = data
        # built by another worker out of spans it checked (service.workers'
        # hand-off): extract only, as ext/_walk.pxi does; framing stays checked
        self.checked = checked
        self.attr_keys = attr_keys
        self.groups: list[tuple] = []
        self.spans: list[tuple] = []
        self.errors: list[str] = []
        self.reasons: list[str] = []
        self.rejected = 0
        self.span_bytes = 0
        self.span_index = 0
        self.service = ""
        self.gbad: tuple[str, ValueError] | None = None

    # -- messages ---------------------------------------------------------
    def request(self) -> None:
        data = self.data
        pos, end = 0, len(data)
        while pos < end:
            tag, ln, body, pos = _field(data, pos, end)
            if tag == 0x0A:  # field 1, wire type 2: resource_spans
                self.resource_spans(body, body + ln)

    def header(self, pos: int, end: int) -> bytes:
        """Raw bytes of every field in [pos, end) except field 2."""
        data = self.data
        pieces = []
        while pos < end:
            start = pos
            tag, _, _, pos = _field(data, pos, end)
            if tag != 0x12:  # field 2, wire type 2
                pieces.append(data[start:pos])
        return b"".join(pieces)

    def resource_spans(self, pos: int, end: int) -> None:
        data = self.data
        header = self.header(pos, end)
        self.service = ""
        rattrs = None
        bad = None
        p = pos
        while p < end:
            tag, ln, body, p = _field(data, p, end)
            if bad is not None:
                continue
            try:
                if tag == 0x0A:  # resource (repeated occurrences merge)
                    rattrs = self.resource(body, body + ln, rattrs)
                elif tag == 0x1A:
                    _utf8(data, body, ln, "schema_url")
            except ValueError as exc:
                bad = ("resource: ", exc)
        service = self.service
        if bad is not None:  # its spans are all rejected: nothing to extract
            rattrs = None
            service = ""
        p = pos
        while p < end:
            tag, ln, body, p = _field(data, p, end)
            if tag == 0x12:  # scope_spans
                self.scope_spans(body, body + ln, header, service, rattrs, bad)

    def resource(self, pos: int, end: int, rattrs: dict | None) -> dict | None:
        data = self.data
        while pos < end:
            tag, ln, body, pos = _field(data, pos, end)
            if tag == 0x0A:  # attributes
                rattrs = self.key_value(body, body + ln, rattrs, True)
            elif tag == 0x1A and not self.checked:  # entity_refs
                self.entity_ref(body, body + ln)
        return rattrs

    def entity_ref(self, pos: int, end: int) -> None:
        data = self.data
        while pos < end:
            tag, ln, body, pos = _field(data, pos, end)
            if tag in (0x0A, 0x12, 0x1A, 0x22):
                _utf8(data, body, ln, "entity_ref")

    def scope(self, pos: int, end: int) -> None:
        data = self.data
        while pos < end:
            tag, ln, body, pos = _field(data, pos, end)
            if tag == 0x0A:
                _utf8(data, body, ln, "scope name")
            elif tag == 0x12:
                _utf8(data, body, ln, "scope version")
            elif tag == 0x1A:  # attributes
                self.check_kv(body, body + ln, 1)

    def scope_spans(
        self, pos: int, end: int, resource_header: bytes, service: str, rattrs: dict | None,
        bad: tuple[str, ValueError] | None,
    ) -> None:
        data = self.data
        group = len(self.groups)
        self.groups.append((resource_header, self.header(pos, end), service, rattrs))
        # the scope may come after the spans: check it before any span is taken
        p = pos
        while bad is None and not self.checked and p < end:
            tag, ln, body, p = _field(data, p, end)
            try:
                if tag == 0x0A:  # scope
                    self.scope(body, body + ln)
                elif tag == 0x1A:
                    _utf8(data, body, ln, "schema_url")
            except ValueError as exc:
                bad = ("scope: ", exc)
        self.gbad = bad
        while pos < end:
            tag, ln, body, pos = _field(data, pos, end)
            if tag == 0x12:  # spans
                self.span(body, ln, group)

    # -- attributes (AnyValue and what nests in it) ------------------------
    def any_value(self, pos: int, end: int, depth: int) -> None:
        """Check an AnyValue body at nesting level ``depth``."""
        if depth > MAX_ANY_DEPTH:
            raise ContentError(
                "nesting_too_deep",
                f"attribute value at byte {pos} nested deeper than {MAX_ANY_DEPTH} levels")
        data = self.data
        while pos < end:
            tag, ln, body, pos = _field(data, pos, end)
            if tag == 0x0A:  # string_value
                _utf8(data, body, ln, "attribute value")
            elif tag == 0x2A:  # array_value
                self.values(body, body + ln, depth + 1, self.any_value)
            elif tag == 0x32:  # kvlist_value
                self.values(body, body + ln, depth + 1, self.check_kv)

    def values(self, pos: int, end: int, depth: int, check: Callable[[int, int, int], None]) -> None:
        """Check the ``values`` (field 1) of an ArrayValue (AnyValues) or a
        KeyValueList (KeyValues), each by ``check``."""
        data = self.data
        while pos < end:
            tag, ln, body, pos = _field(data, pos, end)
            if tag == 0x0A:  # values
                check(body, body + ln, depth)

    def check_kv(self, pos: int, end: int, depth: int) -> None:
        """Check a KeyValue whose value is at nesting level ``depth``."""
        data = self.data
        while pos < end:
            tag, ln, body, pos = _field(data, pos, end)
            if tag == 0x0A:  # key
                _utf8(data, body, ln, "attribute key")
            elif tag == 0x12:  # value
                self.any_value(body, body + ln, depth)

    def key_value(self, pos: int, end: int, d: dict | None, resource: bool) -> dict | None:
        """Check a span or resource attribute and extract it when wanted."""
        data = self.data
        key_pos = pos
        key_len = 0
        vkind = 0
        vval = 0
        vlen = 0
        check = not self.checked
        while pos < end:
            tag, ln, body, pos = _field(data, pos, end)
            if tag == 0x0A:  # key
                key_pos, key_len = body, ln
                if check:
                    _utf8(data, body, ln, "attribute key")
            elif tag == 0x12:  # value: AnyValue; occurrences merge
                p, vend = body, body + ln
                while p < vend:
                    vtag, v, vbody, p = _field(data, p, vend)
                    fn = vtag >> 3
                    wt = vtag & 7
                    if fn == 1 or fn == 7 or fn == 5 or fn == 6:
                        if wt == 2:
                            vkind, vval, vlen = fn, vbody, v
                            if not check:
                                pass
                            elif fn == 1:
                                _utf8(data, vbody, v, "attribute value")
                            elif fn == 5:
                                self.values(vbody, vbody + v, 2, self.any_value)
                            elif fn == 6:
                                self.values(vbody, vbody + v, 2, self.check_kv)
                    elif fn == 2 or fn == 3 or fn == 8:
                        if wt == 0:
                            vkind, vval = fn, v
                    elif fn == 4:
                        if wt == 1:
                            vkind, vval = fn, v
        attr_keys = self.attr_keys
        if attr_keys:
            key = data[key_pos : key_pos + key_len].decode("utf-8")
            matched = key in attr_keys
            is_service = resource and key == "service.name"
        else:
            key = None
            matched = False
            is_service = resource and data[key_pos : key_pos + key_len] == _SERVICE_NAME
        if not (matched or is_service):
            return d
        if vkind == _AV_STRING:
            value: Any = data[vval : vval + vlen].decode("utf-8")
            if is_service:
                self.service = value
        elif vkind == _AV_BOOL:
            value = vval != 0
        elif vkind == _AV_INT:
            value = _int64(vval)
        elif vkind == _AV_DOUBLE:
            value = _as_double(vval)
        elif vkind == _AV_BYTES:
            value = data[vval : vval + vlen]
        else:
            return d
        if matched:
            if d is None:
                d = {}
            d[key] = value
        return d

    # -- spans ------------------------------------------------------------
    def event(self, pos: int, end: int) -> None:
        data = self.data
        while pos < end:
            tag, ln, body, pos = _field(data, pos, end)
            if tag == 0x12:
                _utf8(data, body, ln, "event name")
            elif tag == 0x1A:  # attributes
                self.check_kv(body, body + ln, 1)

    def link(self, pos: int, end: int) -> None:
        data = self.data
        while pos < end:
            tag, ln, body, pos = _field(data, pos, end)
            if tag == 0x0A:
                if ln != 16 and ln != 0:
                    raise ContentError(
                        "link_id_length",
                        f"link trace_id at byte {body} must be 16 bytes or empty, got {ln}")
            elif tag == 0x12:
                if ln != 8 and ln != 0:
                    raise ContentError(
                        "link_id_length",
                        f"link span_id at byte {body} must be 8 bytes or empty, got {ln}")
            elif tag == 0x1A:
                _utf8(data, body, ln, "link trace_state")
            elif tag == 0x22:  # attributes
                self.check_kv(body, body + ln, 1)

    def _reject(self, index: int, where: str, exc: ValueError) -> None:
        self.rejected += 1
        self.errors.append(f"span {index}: {where}{exc}")
        self.reasons.append(getattr(exc, "reason", "malformed"))

    def span(self, pos: int, length: int, group: int) -> None:
        data = self.data
        end = pos + length
        index = self.span_index
        self.span_index = index + 1
        if self.gbad is not None:
            self._reject(index, *self.gbad)
            return
        tid_pos = sid_pos = pid_pos = ts_pos = name_pos = pos
        tid_len = sid_len = pid_len = ts_len = name_len = 0
        start_ns = end_ns = kind = code = 0
        attrs = None
        check = not self.checked
        p = pos
        try:
            while p < end:
                tag, v, body, p = _field(data, p, end)
                if tag == 0x0A:
                    tid_pos, tid_len = body, v
                elif tag == 0x12:
                    sid_pos, sid_len = body, v
                elif tag == 0x1A:
                    if check:
                        _utf8(data, body, v, "span trace_state")
                    ts_pos, ts_len = body, v
                elif tag == 0x22:
                    pid_pos, pid_len = body, v
                elif tag == 0x2A:
                    if check:
                        _utf8(data, body, v, "span name")
                    name_pos, name_len = body, v
                elif tag == 0x30:  # kind (enum: int32)
                    kind = _int32(v)
                elif tag == 0x39:  # start_time_unix_nano (fixed64)
                    start_ns = v
                elif tag == 0x41:  # end_time_unix_nano (fixed64)
                    end_ns = v
                elif tag == 0x4A:  # attributes
                    if check or self.attr_keys:
                        attrs = self.key_value(body, body + v, attrs, False)
                elif tag == 0x5A:  # events
                    if check:
                        self.event(body, body + v)
                elif tag == 0x6A:  # links
                    if check:
                        self.link(body, body + v)
                elif tag == 0x7A:  # status (occurrences merge)
                    q, qend = body, body + v
                    while q < qend:
                        stag, sv, sbody, q = _field(data, q, qend)
                        if stag == 0x18:  # code
                            code = _int32(sv)
                        elif stag == 0x12 and check:
                            _utf8(data, sbody, sv, "status message")
        except ValueError as exc:  # its frame is sound: the other spans go on
            self._reject(index, "", exc)
            return
        reason = None
        if tid_len != 16:
            reason, msg = "trace_id_length", f"trace_id must be 16 bytes, got {tid_len}"
        elif data[tid_pos : tid_pos + 16] == _ZERO16:
            reason, msg = "trace_id_zero", "trace_id must not be all zero"
        elif sid_len != 8:
            reason, msg = "span_id_length", f"span_id must be 8 bytes, got {sid_len}"
        elif data[sid_pos : sid_pos + 8] == _ZERO8:
            reason, msg = "span_id_zero", "span_id must not be all zero"
        elif pid_len != 8 and pid_len != 0:
            reason = "parent_span_id_length"
            msg = f"parent_span_id must be 8 bytes or empty, got {pid_len}"
        elif start_ns == 0:
            reason, msg = "start_time_zero", "start_time_unix_nano must not be 0"
        elif end_ns == 0:
            reason, msg = "end_time_zero", "end_time_unix_nano must not be 0"
        elif end_ns < start_ns:
            reason, msg = "end_before_start", "end_time_unix_nano before start_time_unix_nano"
        if reason is not None:
            self.rejected += 1
            self.errors.append(f"span {index}: {msg}")
            self.reasons.append(reason)
            return
        trace_state = data[ts_pos : ts_pos + ts_len].decode("utf-8")
        name = data[name_pos : name_pos + name_len].decode("utf-8")
        self.span_bytes += length
        self.spans.append(
            (
                data[tid_pos : tid_pos + 16],
                data[sid_pos : sid_pos + 8],
                data[pid_pos : pid_pos + pid_len],
                start_ns,
                end_ns,
                code,
                kind,
                group,
                pos,
                length,
                trace_state,
                name,
                attrs,
            )
        )


def scan_py(data: bytes, attr_keys: frozenset[str], checked: bool = False) -> ScanResultPy:
    """Pure-Python scanner; see docs/scan-contract.md. ``checked``: see
    ``TraceBuffer.ingest``."""
    if type(data) is not bytes:
        data = bytes(data)
    s = _PyScan(data, attr_keys, checked)
    s.request()
    return ScanResultPy(s.groups, s.spans, s.rejected, s.errors, s.reasons, s.span_bytes)


from traceo_sampler.accel import compiled as _compiled  # noqa: E402

_c = _compiled("scan")
scan: Scanner = _c.scan if _c is not None else scan_py
IMPLEMENTATION = "cython" if _c is not None else "python"
