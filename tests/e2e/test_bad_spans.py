"""One bad span never costs the good ones (issue 9, items 2 and 3), through
``serve`` as a subprocess: each request carries good traces and one class
of bad span a strict OTLP decoder would refuse (not UTF-8, malformed nested
messages, AnyValue nested too deep, link IDs of a wrong length, timestamps
of 0, bad resource or scope). The bad span is rejected in the OTLP partial
success with its reason and counted; the good spans of the same request
reach the backend, and what reaches the backend and the file exporter is
what protobuf's strict decoder accepts.

The clients are raw OTLP ones (gRPC and HTTP/protobuf): no SDK can be made
to send these bytes."""
from __future__ import annotations

import json
import os
import struct
import time
import urllib.request

import grpc
import pytest
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)

from support_otlp import CaptureSink
from support_serve import Serve

pytestmark = pytest.mark.e2e
METHOD = "/opentelemetry.proto.collector.trace.v1.TraceService/Export"
NOW = time.time_ns()


def uvarint(n: int) -> bytes:
    out = bytearray()
    while True:
        b = n & 0x7F
        n >>= 7
        if n:
            out.append(b | 0x80)
        else:
            out.append(b)
            return bytes(out)


def f_len(field: int, payload: bytes) -> bytes:
    return uvarint(field << 3 | 2) + uvarint(len(payload)) + payload


def f_fixed64(field: int, v: int) -> bytes:
    return uvarint(field << 3 | 1) + struct.pack("<Q", v)


def kv(key: bytes, value: bytes) -> bytes:
    return f_len(1, key) + f_len(2, value)


def nested(levels: int) -> bytes:
    v = f_len(1, b"x")
    for _ in range(levels - 1):
        v = f_len(6, f_len(1, kv(b"k", v)))
    return v


KEEP = f_len(9, kv(b"keep", f_len(1, b"yes")))


def span(tid: bytes, sid: bytes, extra: bytes = b"", start: int = NOW, end: int = NOW + 1000,
         parent: bytes = b"") -> bytes:
    body = f_len(1, tid) + f_len(2, sid)
    if parent:
        body += f_len(4, parent)
    if start is not None:
        body += f_fixed64(7, start)
    if end is not None:
        body += f_fixed64(8, end)
    return body + f_len(5, b"op") + extra


def resource_spans(spans: list[bytes], service: bytes = b"svc", scope: bytes = b"") -> bytes:
    res = f_len(1, f_len(1, kv(b"service.name", f_len(1, service))))
    ss = (f_len(1, scope) if scope else b"") + b"".join(f_len(2, s) for s in spans)
    return f_len(1, res + f_len(2, ss))


def good_trace() -> tuple[bytes, list[bytes]]:
    tid = os.urandom(15) + b"\x01"
    root = os.urandom(7) + b"\x01"
    spans = [span(tid, root, KEEP)] + [span(tid, os.urandom(7) + b"\x02", KEEP, parent=root)
                                         for _ in range(2)]
    return tid, spans


# (case, extra bytes of the bad span or a builder, reason, words of its message)
SPAN_CASES = [
    ("name-not-utf8", f_len(5, b"GET \xff"), "invalid_utf8", "invalid UTF-8 in span name"),
    ("attr-value-not-utf8", f_len(9, kv(b"user", f_len(1, b"\xc3\x28"))), "invalid_utf8",
     "invalid UTF-8 in attribute value"),
    ("attr-key-not-utf8", f_len(9, kv(b"\xed\xa0\x80", f_len(1, b"v"))), "invalid_utf8",
     "invalid UTF-8 in attribute key"),
    ("event-name-not-utf8", f_len(11, f_len(2, b"boom\xfe")), "invalid_utf8",
     "invalid UTF-8 in event name"),
    ("link-tracestate-not-utf8", f_len(13, f_len(3, b"a=\xff")), "invalid_utf8",
     "invalid UTF-8 in link trace_state"),
    ("status-message-not-utf8", f_len(15, f_len(2, b"\xf4\x90\x80\x80")), "invalid_utf8",
     "invalid UTF-8 in status message"),
    ("array-value-not-utf8", f_len(9, kv(b"tags", f_len(5, f_len(1, f_len(1, b"\xff"))))),
     "invalid_utf8", "invalid UTF-8 in attribute value"),
    ("event-truncated", f_len(11, b"\x12\x09abc"), "malformed", "runs past the end"),
    ("kvlist-truncated", f_len(9, kv(b"m", f_len(6, b"\x0a\x05\x0a"))), "malformed",
     "runs past the end"),
    ("link-attr-bad-wire-type", f_len(13, f_len(4, b"\x0b")), "malformed", "invalid wire type 3"),
    ("anyvalue-too-deep", f_len(9, kv(b"deep", nested(30))), "nesting_too_deep",
     "nested deeper than 20 levels"),
    ("link-trace-id-3-bytes", f_len(13, f_len(1, b"abc")), "link_id_length",
     "link trace_id at byte"),
]


def _export_grpc(endpoint: str, data: bytes) -> ExportTraceServiceResponse:
    with grpc.insecure_channel(endpoint) as ch:
        call = ch.unary_unary(METHOD, request_serializer=None, response_deserializer=None)
        return ExportTraceServiceResponse.FromString(call(data, timeout=10))


def _export_http(port: int, data: bytes) -> ExportTraceServiceResponse:
    req = urllib.request.Request(f"http://127.0.0.1:{port}/v1/traces", data=data,
                                 headers={"Content-Type": "application/x-protobuf"})
    with urllib.request.urlopen(req, timeout=10) as r:
        assert r.status == 200
        return ExportTraceServiceResponse.FromString(r.read())


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    """Send every case to one sampler; give back what came out."""
    out_file = tmp_path_factory.mktemp("bad-spans") / "kept.jsonl"
    cases = []   # (name, response, reason, words, good tids, bad tids, n rejected)
    with CaptureSink() as sink:
        cfg = {
            "sampler": {"root_wait": "200ms", "idle_timeout": "1s", "decision_wait": "5s",
                        "policies": [
                            {"name": "marked", "type": "string_attribute",
                             "string_attribute": {"key": "keep", "values": ["yes"]}},
                            {"name": "slow", "type": "latency", "latency": {"threshold_ms": 1000}},
                        ]},
            "exporters": {"otlp": {"endpoint": sink.endpoint}, "file": {"path": str(out_file)}},
        }
        with Serve(cfg, http=True) as s:
            for i, (name, extra, reason, words) in enumerate(SPAN_CASES):
                g1, spans1 = good_trace()
                g2, spans2 = good_trace()
                bad_tid = os.urandom(15) + b"\x03"
                bad = span(bad_tid, os.urandom(7) + b"\x03", KEEP + extra)
                # the bad span sits between good spans of the same scope
                data = resource_spans(spans1 + [bad] + spans2)
                send = _export_http if i % 3 == 2 else None
                resp = (_export_http(s.http_port, data) if send
                        else _export_grpc(s.endpoint, data))
                cases.append((name, resp, reason, words, [g1, g2], [bad_tid], 1))
            # timestamps of 0: a child with start 0 must not make its trace
            # 57 years long (kept as slow); a span with end 0 is refused
            tid = os.urandom(15) + b"\x04"
            root = os.urandom(7) + b"\x04"
            zero = resource_spans([span(tid, root),
                                   span(tid, os.urandom(8), start=0, parent=root),
                                   span(tid, os.urandom(8), end=0, parent=root),
                                   span(tid, os.urandom(8), start=None, parent=root)])
            resp = _export_grpc(s.endpoint, zero)
            cases.append(("times-zero", resp, "start_time_zero", "start_time_unix_nano must not be 0",
                          [], [tid], 3))
            # a resource (service.name) or a scope that is not UTF-8: all its
            # spans go, the other resource's stay
            for what, bad_rs in (
                    ("resource", lambda sp: resource_spans(sp, service=b"pay\xffment")),
                    ("scope", lambda sp: resource_spans(sp, scope=f_len(1, b"lib\xff")))):
                g1, spans1 = good_trace()
                b1, spans_b = good_trace()
                data = resource_spans(spans1) + bad_rs(spans_b)
                resp = _export_grpc(s.endpoint, data)
                cases.append((what + "-not-utf8", resp, "invalid_utf8", what + ": invalid UTF-8",
                              [g1], [b1], 3))
            time.sleep(1.5)
            metrics = {r: s.metric("traceo_sampler_invalid_spans_total", reason=r)
                       for r in {c[2] for c in cases} | {"end_time_zero"}}
            assert s.stop() == 0
        lines = out_file.read_text().splitlines()
        return cases, sink.requests, lines, metrics


@pytest.mark.parametrize("name", [c[0] for c in SPAN_CASES]
                         + ["times-zero", "resource-not-utf8", "scope-not-utf8"])
def test_bad_span_rejected_good_ones_kept(run, name):
    cases, requests, lines, _metrics = run
    (_n, resp, reason, words, good, bad, n_rejected), = [c for c in cases if c[0] == name]
    ps = resp.partial_success
    assert ps.rejected_spans == n_rejected, ps.error_message
    assert words in ps.error_message
    exported = {}
    for raw in requests:
        req = ExportTraceServiceRequest.FromString(raw)   # strict: UTF-8, depth, framing
        for rs in req.resource_spans:
            for ss in rs.scope_spans:
                for sp in ss.spans:
                    exported.setdefault(sp.trace_id, []).append(sp)
    for tid in good:
        assert len(exported.get(tid, [])) == 3, f"good trace {tid.hex()} not exported whole"
    for tid in bad:
        assert tid not in exported
    in_file = set()
    for line in lines:
        for rs in json.loads(line)["resourceSpans"]:
            for ss in rs["scopeSpans"]:
                in_file.update(sp["traceId"] for sp in ss["spans"])
    for tid in good:
        assert tid.hex() in in_file
    for tid in bad:
        assert tid.hex() not in in_file


def test_rejections_counted_by_reason(run):
    cases, _requests, _lines, metrics = run
    want: dict[str, int] = {}
    for c in cases:
        if c[0] != "times-zero":
            want[c[2]] = want.get(c[2], 0) + c[6]
    want["start_time_zero"] = 2   # start 0, and start absent
    want["end_time_zero"] = 1
    assert metrics == {r: float(n) for r, n in want.items()}
