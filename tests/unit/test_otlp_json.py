"""The OTLP/JSON decoder of the HTTP receiver (otlp_json.decode_request)
against protobuf's own JSON parser, and its refusals."""
from __future__ import annotations

import copy
import json

import pytest
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

from traceo_sampler.otlp_json import decode_request, json_to_request, request_to_json

TID, SID, PID = "5b8efff798038103d269b633813fc60c", "eee19b7ec3c1b174", "aaaaaaaaaaaaaaaa"


def _kv(k, v):
    return {"key": k, "value": v}


FULL = {"resourceSpans": [{
    "resource": {"attributes": [_kv("service.name", {"stringValue": "svc"}),
                                _kv("n", {"intValue": "-42"})],
                 "droppedAttributesCount": 1,
                 "entityRefs": [{"type": "service", "idKeys": ["service.name"],
                                 "descriptionKeys": ["d"], "schemaUrl": "s"}]},
    "schemaUrl": "https://opentelemetry.io/schemas/1.21.0",
    "scopeSpans": [{
        "scope": {"name": "lib", "version": "1.0", "attributes": [_kv("a", {"boolValue": False})],
                  "droppedAttributesCount": 2},
        "schemaUrl": "x",
        "spans": [{
            "traceId": TID, "spanId": SID, "parentSpanId": PID, "traceState": "ot=th:0",
            "flags": 257, "name": "GET /", "kind": 2,
            "startTimeUnixNano": "1700000000000000000", "endTimeUnixNano": 1700000000100000000,
            "attributes": [
                _kv("s", {"stringValue": ""}), _kv("b", {"boolValue": True}),
                _kv("i", {"intValue": 9223372036854775807}), _kv("i0", {"intValue": "0"}),
                _kv("d", {"doubleValue": 1.5}), _kv("nan", {"doubleValue": "NaN"}),
                _kv("inf", {"doubleValue": "-Infinity"}), _kv("dint", {"doubleValue": 3}),
                _kv("bytes", {"bytesValue": "AAEC/w=="}),
                _kv("arr", {"arrayValue": {"values": [{"stringValue": "x"}, {"intValue": "1"},
                                                      {"arrayValue": {"values": []}}]}}),
                _kv("kv", {"kvlistValue": {"values": [_kv("in", {"stringValue": "ü€"})]}}),
                _kv("empty", {}),
            ],
            "droppedAttributesCount": 3,
            "events": [{"timeUnixNano": "1700000000050000000", "name": "ev",
                        "attributes": [_kv("e", {"intValue": 1})], "droppedAttributesCount": 1}],
            "droppedEventsCount": 4,
            "links": [{"traceId": TID, "spanId": PID, "traceState": "k=v", "flags": 1,
                       "attributes": [_kv("l", {"stringValue": "y"})], "droppedAttributesCount": 5}],
            "droppedLinksCount": 6,
            "status": {"code": 2, "message": "boom"},
        }, {"traceId": TID, "spanId": PID, "name": "second", "kind": "SPAN_KIND_CLIENT",
            "status": {"code": "STATUS_CODE_OK"}}],
    }],
}]}


def _reference(doc) -> ExportTraceServiceRequest:
    """protobuf's own parser on the same document (it wants base64 IDs)."""
    d = copy.deepcopy(doc)
    return ExportTraceServiceRequest.FromString(json_to_request(d))


def _unknown(doc):
    d = copy.deepcopy(doc)
    d["futureTopLevel"] = {"x": [1, 2]}
    rs = d["resourceSpans"][0]
    rs["newThing"] = 1
    rs["resource"]["entityRefs"][0]["extra"] = "e"
    sp = rs["scopeSpans"][0]["spans"][0]
    sp["someNewField"] = {"nested": {"deep": [1, {"a": None}]}}
    sp["status"]["newStatusField"] = 7
    sp["attributes"][0]["value"]["futureValueKind"] = "z"
    sp["events"][0]["newEventField"] = True
    return d


VALID = [
    ("full", FULL, FULL),
    ("unknown-fields-ignored", _unknown(FULL), FULL),
    ("empty", {}, {}),
    ("no-spans", {"resourceSpans": [{"scopeSpans": [{}]}]}, {"resourceSpans": [{"scopeSpans": [{}]}]}),
    ("uppercase-hex", {"resourceSpans": [{"scopeSpans": [{"spans": [{"traceId": TID.upper(), "spanId": SID}]}]}]},
     {"resourceSpans": [{"scopeSpans": [{"spans": [{"traceId": TID, "spanId": SID}]}]}]}),
]


@pytest.mark.parametrize("case", VALID, ids=[c[0] for c in VALID])
def test_same_request_as_protobufs_parser(case):
    _id, doc, expect = case
    got = ExportTraceServiceRequest.FromString(decode_request(json.dumps(doc).encode()))
    ref = _reference(expect)
    assert got == ref, (got, ref)


def test_round_trip_with_the_file_exporters_form():
    raw = _reference(FULL).SerializeToString()
    again = decode_request(json.dumps(request_to_json(raw)).encode())
    assert ExportTraceServiceRequest.FromString(again) == ExportTraceServiceRequest.FromString(raw)


def _span(**fields):
    return json.dumps({"resourceSpans": [{"scopeSpans": [{"spans": [
        {"traceId": TID, "spanId": SID, **fields}]}]}]}).encode()


def _nested(depth):
    # written as text: json.dumps itself recurses
    v = '{"arrayValue":{"values":[' * depth + '{"stringValue":"leaf"}' + "]}}" * depth
    return _span(attributes=[_kv("deep", "@")]).replace(b'"@"', v.encode())


INVALID = [
    ("not-json", b"{nope", "not JSON"),
    ("not-an-object", b"[1, 2]", "Expected `object`"),
    ("id-not-hex", _span(parentSpanId="zz"), "not hex"),
    ("time-not-integer", _span(startTimeUnixNano="soon"), "not an integer"),
    ("time-negative", _span(endTimeUnixNano=-1), "out of range"),
    ("int-too-large", _span(attributes=[_kv("i", {"intValue": str(1 << 63)})]), "out of range"),
    ("kind-unknown", _span(kind="SPAN_KIND_BOGUS"), "not a known value"),
    ("bytes-not-base64", _span(attributes=[_kv("b", {"bytesValue": "***"})]), "not base64"),
    ("wrong-type", _span(name=5), "Expected `str`"),
    ("lone-surrogate", b'{"resourceSpans":[{"scopeSpans":[{"spans":[{"name":"\\ud800"}]}]}]}',
     "surrogate"),
    ("nested-values-10000", _nested(10000), "nested too deeply"),
    ("nested-values-500", _nested(500), "nested too deeply"),
    ("nested-in-unknown-field-100000", b'{"x":' + b"[" * 100000 + b"]" * 100000 + b"}", "nested too deeply"),
]


@pytest.mark.parametrize("case", INVALID, ids=[c[0] for c in INVALID])
def test_refused_with_a_reason(case):
    _id, body, text = case
    with pytest.raises(ValueError) as ei:
        decode_request(body)
    assert text in str(ei.value)


def test_moderate_nesting_is_accepted():
    # 20 levels: 40 messages deep, within protobuf's default decoding limit of 100
    got = ExportTraceServiceRequest.FromString(decode_request(_nested(20)))
    v = got.resource_spans[0].scope_spans[0].spans[0].attributes[0].value
    for _ in range(20):
        v = v.array_value.values[0]
    assert v.string_value == "leaf"
