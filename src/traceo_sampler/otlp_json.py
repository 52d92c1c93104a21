"""OTLP JSON encoding (the OTLP/HTTP JSON and Collector file-exporter form):
trace and span IDs as hex strings, enums as integers, camelCase names."""
from __future__ import annotations

import base64
from typing import Any

from google.protobuf import json_format
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

_ID_KEYS = ("traceId", "spanId", "parentSpanId")


def _walk_spans(d: dict[str, Any]):
    for rs in d.get("resourceSpans", ()):
        for ss in rs.get("scopeSpans", ()):
            for sp in ss.get("spans", ()):
                yield sp
                for link in sp.get("links", ()):
                    yield link


def request_to_json(payload: bytes) -> dict[str, Any]:
    req = ExportTraceServiceRequest.FromString(payload)
    d = json_format.MessageToDict(req, use_integers_for_enums=True)
    for sp in _walk_spans(d):
        for k in _ID_KEYS:
            if k in sp:
                sp[k] = base64.b64decode(sp[k]).hex()
    return d


def json_to_request(d: dict[str, Any]) -> bytes:
    """Parse OTLP JSON (hex IDs) into an encoded ExportTraceServiceRequest.
    Raises ValueError on anything that is not valid OTLP JSON."""
    if not isinstance(d, dict):
        raise ValueError("OTLP JSON must be an object")
    for sp in _walk_spans(d):
        for k in _ID_KEYS:
            v = sp.get(k)
            if isinstance(v, str) and v:
                try:
                    sp[k] = base64.b64encode(bytes.fromhex(v)).decode()
                except ValueError:
                    raise ValueError(f"{k} {v!r} is not hex") from None
    try:
        return json_format.ParseDict(d, ExportTraceServiceRequest()).SerializeToString()
    except json_format.ParseError as exc:
        raise ValueError(str(exc)) from None


def response_to_json(payload: bytes) -> dict[str, Any]:
    from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
        ExportTraceServiceResponse,
    )
    return json_format.MessageToDict(ExportTraceServiceResponse.FromString(payload))


# ---------------------------------------------------------------- fast decode
# The OTLP/HTTP receiver's JSON path: msgspec decodes the body into the
# structs below (unknown fields ignored, as the OTLP specification requires;
# camelCase keys only, as it says original field names are not valid keys)
# and _enc writes the protobuf encoding directly. ~10x faster than
# json.loads + json_format.ParseDict, which held the event loop for seconds
# on a 15 MiB body (benchmarks/bench_json_intake.py).
import math  # noqa: E402
import struct  # noqa: E402

import msgspec  # noqa: E402

from .wire import field as _field, varint as _varint  # noqa: E402

_Int = int | str            # int64 / fixed64: a JSON number or a decimal string
_Float = float | int | str  # double: a number, or "NaN", "Infinity", "-Infinity"


class _S(msgspec.Struct, rename="camel", omit_defaults=True):
    pass


class _AnyValue(_S):
    string_value: str | None = None
    bool_value: bool | None = None
    int_value: _Int | None = None
    double_value: _Float | None = None
    array_value: "_Values | None" = None
    kvlist_value: "_KvList | None" = None
    bytes_value: str | None = None
    string_value_strindex: int | None = None


class _KeyValue(_S):
    key: str = ""
    value: _AnyValue | None = None
    key_strindex: int = 0


class _Values(_S):
    values: list[_AnyValue] = []


class _KvList(_S):
    values: list[_KeyValue] = []


class _EntityRef(_S):
    schema_url: str = ""
    type: str = ""
    id_keys: list[str] = []
    description_keys: list[str] = []


class _Resource(_S):
    attributes: list[_KeyValue] = []
    dropped_attributes_count: int = 0
    entity_refs: list[_EntityRef] = []


class _Scope(_S):
    name: str = ""
    version: str = ""
    attributes: list[_KeyValue] = []
    dropped_attributes_count: int = 0


class _Status(_S):
    message: str = ""
    code: int | str = 0


class _Event(_S):
    time_unix_nano: _Int = 0
    name: str = ""
    attributes: list[_KeyValue] = []
    dropped_attributes_count: int = 0


class _Link(_S):
    trace_id: str = ""
    span_id: str = ""
    trace_state: str = ""
    attributes: list[_KeyValue] = []
    dropped_attributes_count: int = 0
    flags: int = 0


class _Span(_S):
    trace_id: str = ""
    span_id: str = ""
    trace_state: str = ""
    parent_span_id: str = ""
    flags: int = 0
    name: str = ""
    kind: int | str = 0
    start_time_unix_nano: _Int = 0
    end_time_unix_nano: _Int = 0
    attributes: list[_KeyValue] = []
    dropped_attributes_count: int = 0
    events: list[_Event] = []
    dropped_events_count: int = 0
    links: list[_Link] = []
    dropped_links_count: int = 0
    status: _Status | None = None


class _ScopeSpans(_S):
    scope: _Scope | None = None
    spans: list[_Span] = []
    schema_url: str = ""


class _ResourceSpans(_S):
    resource: _Resource | None = None
    scope_spans: list[_ScopeSpans] = []
    schema_url: str = ""


class _Request(_S):
    resource_spans: list[_ResourceSpans] = []


_DECODER = msgspec.json.Decoder(_Request)
_KINDS = {"SPAN_KIND_UNSPECIFIED": 0, "SPAN_KIND_INTERNAL": 1, "SPAN_KIND_SERVER": 2,
          "SPAN_KIND_CLIENT": 3, "SPAN_KIND_PRODUCER": 4, "SPAN_KIND_CONSUMER": 5}
_CODES = {"STATUS_CODE_UNSET": 0, "STATUS_CODE_OK": 1, "STATUS_CODE_ERROR": 2}
_U64 = 1 << 64
_pack_d = struct.Struct("<d").pack
_pack_q = struct.Struct("<Q").pack
_pack_i = struct.Struct("<I").pack


def _ld(out: bytearray, tag: int, payload: bytes) -> None:
    out.append(tag)
    out += _varint(len(payload))
    out += payload


def _str(out: bytearray, tag: int, s: str) -> None:
    if s:
        _ld(out, tag, s.encode())


def _uint(out: bytearray, tag: int, v: int, what: str, bits: int = 32) -> None:
    if v:
        if not 0 <= v < 1 << bits:
            raise ValueError(f"{what} {v} out of range")
        out.append(tag)
        out += _varint(v)


def _int(v: _Int, what: str, lo: int, hi: int) -> int:
    if isinstance(v, str):
        try:
            v = int(v)
        except ValueError:
            raise ValueError(f"{what} {v!r} is not an integer") from None
    if isinstance(v, bool) or not lo <= v < hi:
        raise ValueError(f"{what} {v} out of range")
    return v


def _enum(v: int | str, names: dict, what: str) -> int:
    if isinstance(v, str):
        if v not in names:
            raise ValueError(f"{what} {v!r} is not a known value")
        return names[v]
    return _int(v, what, -(1 << 31), 1 << 31)


def _hex(v: str, what: str) -> bytes:
    # the length is the scanner's to check: a wrong one rejects that span
    # alone (partial success), not the request
    try:
        return bytes.fromhex(v)
    except ValueError:
        raise ValueError(f"{what} {v[:40]!r} is not hex") from None


def _fixed32(out: bytearray, tag: bytes, v: int, what: str) -> None:
    if v:
        if not 0 <= v < 1 << 32:
            raise ValueError(f"{what} {v} out of range")
        out += tag
        out += _pack_i(v)


def _b64(v: str) -> bytes:
    import binascii
    try:
        return base64.b64decode(v + "=" * (-len(v) % 4), altchars=b"-_" if ("-" in v or "_" in v) else None,
                                validate=True)
    except (binascii.Error, ValueError):
        raise ValueError(f"bytesValue {v[:40]!r} is not base64") from None


def _double(v: _Float) -> float:
    if isinstance(v, str):
        if v not in ("NaN", "Infinity", "-Infinity"):
            try:
                return float(v)
            except ValueError:
                raise ValueError(f"doubleValue {v!r} is not a number") from None
        return {"NaN": math.nan, "Infinity": math.inf, "-Infinity": -math.inf}[v]
    return float(v)


def _any(v: _AnyValue) -> bytes:
    out = bytearray()
    if v.string_value is not None:
        out.append(0x0A)
        b = v.string_value.encode()
        out += _varint(len(b))
        out += b
    elif v.bool_value is not None:
        out += b"\x10\x01" if v.bool_value else b"\x10\x00"
    elif v.int_value is not None:
        out.append(0x18)
        out += _varint(_int(v.int_value, "intValue", -(1 << 63), 1 << 63) % _U64)
    elif v.double_value is not None:
        out.append(0x21)
        out += _pack_d(_double(v.double_value))
    elif v.array_value is not None:
        _ld(out, 0x2A, b"".join(_field(0x0A, e) for e in map(_any, v.array_value.values)))
    elif v.kvlist_value is not None:
        _ld(out, 0x32, b"".join(_field(0x0A, e) for e in map(_kv, v.kvlist_value.values)))
    elif v.bytes_value is not None:
        _ld(out, 0x3A, _b64(v.bytes_value))
    elif v.string_value_strindex is not None:
        out.append(0x40)
        out += _varint(v.string_value_strindex % _U64)
    return bytes(out)


def _kv(kv: _KeyValue) -> bytes:
    out = bytearray()
    _str(out, 0x0A, kv.key)
    if kv.value is not None:
        _ld(out, 0x12, _any(kv.value))
    if kv.key_strindex:
        out.append(0x18)
        out += _varint(kv.key_strindex % _U64)
    return bytes(out)


def _attrs(out: bytearray, tag: int, attrs: list[_KeyValue]) -> None:
    for kv in attrs:
        _ld(out, tag, _kv(kv))


def _ids(out: bytearray, trace_id: str, span_id: str, trace_state: str, where: str) -> None:
    """Fields 1 to 3 of a Span and of a Link: trace_id, span_id, trace_state."""
    if trace_id:
        _ld(out, 0x0A, _hex(trace_id, where + "traceId"))
    if span_id:
        _ld(out, 0x12, _hex(span_id, where + "spanId"))
    _str(out, 0x1A, trace_state)


def _span(sp: _Span) -> bytes:
    out = bytearray()
    _ids(out, sp.trace_id, sp.span_id, sp.trace_state, "")
    if sp.parent_span_id:
        _ld(out, 0x22, _hex(sp.parent_span_id, "parentSpanId"))
    _str(out, 0x2A, sp.name)
    kind = _enum(sp.kind, _KINDS, "kind")
    if kind:
        out.append(0x30)
        out += _varint(kind % _U64)
    start = _int(sp.start_time_unix_nano, "startTimeUnixNano", 0, _U64)
    if start:
        out.append(0x39)
        out += _pack_q(start)
    end = _int(sp.end_time_unix_nano, "endTimeUnixNano", 0, _U64)
    if end:
        out.append(0x41)
        out += _pack_q(end)
    _attrs(out, 0x4A, sp.attributes)
    _uint(out, 0x50, sp.dropped_attributes_count, "droppedAttributesCount")
    for ev in sp.events:
        e = bytearray()
        t = _int(ev.time_unix_nano, "timeUnixNano", 0, _U64)
        if t:
            e.append(0x09)
            e += _pack_q(t)
        _str(e, 0x12, ev.name)
        _attrs(e, 0x1A, ev.attributes)
        _uint(e, 0x20, ev.dropped_attributes_count, "droppedAttributesCount")
        _ld(out, 0x5A, bytes(e))
    _uint(out, 0x60, sp.dropped_events_count, "droppedEventsCount")
    for ln in sp.links:
        e = bytearray()
        _ids(e, ln.trace_id, ln.span_id, ln.trace_state, "links.")
        _attrs(e, 0x22, ln.attributes)
        _uint(e, 0x28, ln.dropped_attributes_count, "droppedAttributesCount")
        _fixed32(e, b"\x35", ln.flags, "links.flags")
        _ld(out, 0x6A, bytes(e))
    _uint(out, 0x70, sp.dropped_links_count, "droppedLinksCount")
    if sp.status is not None:
        st = bytearray()
        _str(st, 0x12, sp.status.message)
        code = _enum(sp.status.code, _CODES, "status.code")
        if code:
            st.append(0x18)
            st += _varint(code % _U64)
        # field 15, wire type 2: tag 0x7A
        _ld(out, 0x7A, bytes(st))
    _fixed32(out, b"\x85\x01", sp.flags, "flags")     # field 16
    return bytes(out)


def _request(req: _Request) -> bytes:
    out = bytearray()
    for rs in req.resource_spans:
        r = bytearray()
        if rs.resource is not None:
            res = bytearray()
            _attrs(res, 0x0A, rs.resource.attributes)
            _uint(res, 0x10, rs.resource.dropped_attributes_count, "droppedAttributesCount")
            for er in rs.resource.entity_refs:
                e = bytearray()
                _str(e, 0x0A, er.schema_url)
                _str(e, 0x12, er.type)
                for k in er.id_keys:
                    _ld(e, 0x1A, k.encode())
                for k in er.description_keys:
                    _ld(e, 0x22, k.encode())
                _ld(res, 0x1A, bytes(e))
            _ld(r, 0x0A, bytes(res))
        for ss in rs.scope_spans:
            s = bytearray()
            if ss.scope is not None:
                sc = bytearray()
                _str(sc, 0x0A, ss.scope.name)
                _str(sc, 0x12, ss.scope.version)
                _attrs(sc, 0x1A, ss.scope.attributes)
                _uint(sc, 0x20, ss.scope.dropped_attributes_count, "droppedAttributesCount")
                _ld(s, 0x0A, bytes(sc))
            for sp in ss.spans:
                _ld(s, 0x12, _span(sp))
            _str(s, 0x1A, ss.schema_url)
            _ld(r, 0x12, bytes(s))
        _str(r, 0x1A, rs.schema_url)
        _ld(out, 0x0A, bytes(r))
    return bytes(out)


def decode_request(body: bytes) -> bytes:
    """An OTLP/JSON ExportTraceServiceRequest body → its protobuf encoding.
    Raises ValueError with a readable reason on anything that is not OTLP
    JSON, including input nested too deeply to decode."""
    try:
        return _request(_DECODER.decode(body))
    except msgspec.ValidationError as exc:
        raise ValueError(str(exc)) from None
    except msgspec.DecodeError as exc:
        raise ValueError(f"not JSON: {exc}") from None
    except RecursionError:
        raise ValueError("nested too deeply") from None
    except UnicodeEncodeError:
        raise ValueError("a string is not valid Unicode (lone surrogate escape)") from None
