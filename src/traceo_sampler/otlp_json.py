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
