"""OTLP/HTTP Content-Encoding through ``serve``: the SDK's own HTTP exporter
with each of its compressions, then a table of bodies (valid in every
encoding, bodies that are not what their encoding says, zip bombs), then
many zip bombs at once with the server's memory watched."""
from __future__ import annotations

import gzip
import threading
import time
import urllib.error
import urllib.request
import zlib

import psutil
import pytest
from backports import zstd
from google.rpc import status_pb2
from opentelemetry.exporter.otlp.proto.http import Compression
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor

from support_otlp import CaptureSink, make_request, trace
from support_serve import Serve

pytestmark = pytest.mark.e2e

LIMIT_MIB = 4
KEEP_ALL = {"root_wait": "100ms", "idle_timeout": "300ms",
            "policies": [{"name": "all", "type": "always_sample"}]}


def _cfg(sink):
    return {"sampler": KEEP_ALL, "exporters": {"otlp": {"endpoint": sink.endpoint}}}


def _post(port: int, body: bytes, encoding: str | None, ctype="application/x-protobuf"):
    headers = {"Content-Type": ctype}
    if encoding is not None:
        headers["Content-Encoding"] = encoding
    req = urllib.request.Request(f"http://127.0.0.1:{port}/v1/traces", data=body, headers=headers)
    try:
        with urllib.request.urlopen(req, timeout=30) as r:
            return r.status, r.read()
    except urllib.error.HTTPError as e:
        return e.code, e.read()


def _service(resource) -> str:
    return next((a.value.string_value for a in resource.attributes if a.key == "service.name"), "")


def _wait_spans(sink, n, timeout=10.0):
    deadline = time.monotonic() + timeout
    while len(sink.spans()) < n and time.monotonic() < deadline:
        time.sleep(0.05)
    return sink.spans()


@pytest.fixture(scope="module")
def served():
    with CaptureSink() as sink, Serve(_cfg(sink), http_opts={"max_recv_msg_size_mib": LIMIT_MIB}) as srv:
        yield srv, sink


@pytest.mark.parametrize("compression", [Compression.NoCompression, Compression.Gzip,
                                         Compression.Deflate])
def test_sdk_http_exporter_every_compression(served, compression):
    srv, sink = served
    before = len(sink.spans())
    exporter = OTLPSpanExporter(endpoint=f"http://127.0.0.1:{srv.http_port}/v1/traces",
                                compression=compression, timeout=10)
    provider = TracerProvider(resource=Resource.create({"service.name": f"sdk-{compression.value}"}))
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    tracer = provider.get_tracer("encoding-test")
    sent = set()
    for i in range(5):
        with tracer.start_as_current_span(f"root-{i}") as root:
            sent.add(root.get_span_context().span_id.to_bytes(8, "big"))
            with tracer.start_as_current_span("child") as child:
                sent.add(child.get_span_context().span_id.to_bytes(8, "big"))
    provider.shutdown()
    got = {sp.span_id for _t, sp, res, _s in _wait_spans(sink, before + len(sent))
           if _service(res) == f"sdk-{compression.value}"}
    assert got == sent


def _zeros_gzip(n: int) -> bytes:
    c = zlib.compressobj(9, zlib.DEFLATED, 31)
    block = b"\0" * (1 << 20)
    return b"".join(c.compress(block) for _ in range(n >> 20)) + c.flush()


BOMB_GZIP = _zeros_gzip(256 << 20)            # 256 KiB that inflate to 256 MiB
BOMB_ZSTD = zstd.compress(b"\0" * (256 << 20))


def _req():
    return make_request([trace(2)])


# (id, encoding header, body builder, status, text the message must hold)
CASES = [
    ("identity", None, lambda b: b, 200, ""),
    ("identity-explicit", "identity", lambda b: b, 200, ""),
    ("gzip", "gzip", gzip.compress, 200, ""),
    ("gzip-two-members", "gzip", lambda b: gzip.compress(b[:7]) + gzip.compress(b[7:]), 200, ""),
    ("deflate-zlib", "deflate", zlib.compress, 200, ""),
    ("deflate-raw", "deflate", lambda b: zlib.compress(b)[2:-4], 200, ""),
    ("zstd", "zstd", zstd.compress, 200, ""),
    ("zstd-two-frames", "zstd", lambda b: zstd.compress(b[:9]) + zstd.compress(b[9:]), 200, ""),
    ("gzip-header-plain-body", "gzip", lambda b: b, 400, "not valid gzip"),
    ("zstd-header-gzip-body", "zstd", gzip.compress, 400, "not valid zstd"),
    ("deflate-header-garbage", "deflate", lambda b: b"\x78\x9c" + b"\xff" * 20, 400, "not valid deflate"),
    ("gzip-truncated", "gzip", lambda b: gzip.compress(b)[:-6], 400, "truncated"),
    ("gzip-trailing-junk", "gzip", lambda b: gzip.compress(b) + b"junk", 400, "after the end"),
    ("zstd-truncated", "zstd", lambda b: zstd.compress(b)[:-3], 400, "truncated"),
    ("brotli-unsupported", "br", lambda b: b, 415, "unsupported Content-Encoding"),
    ("gzip-bomb", "gzip", lambda b: BOMB_GZIP, 413, "max_recv_msg_size_mib"),
    ("zstd-bomb", "zstd", lambda b: BOMB_ZSTD, 413, "max_recv_msg_size_mib"),
    ("identity-too-large", None, lambda b: b"\0" * ((LIMIT_MIB << 20) + 1), 413, "max_recv_msg_size_mib"),
]


@pytest.mark.parametrize("case", CASES, ids=[c[0] for c in CASES])
def test_content_encoding_table(served, case):
    srv, sink = served
    _id, enc, build, status, text = case
    raw = _req()
    before = len(sink.spans())
    code, body = _post(srv.http_port, build(raw), enc)
    assert code == status, body[:300]
    if status == 400:
        # the OTLP answer: a google.rpc.Status with a readable message
        assert text in status_pb2.Status.FromString(body).message
    elif status != 200:
        assert text in body.decode()
    else:
        assert len(_wait_spans(sink, before + 2)) == before + 2


def test_json_body_gzip(served):
    srv, sink = served
    import json
    before = len(sink.spans())
    tid, sid = "5b8efff798038103d269b633813fc60c", "eee19b7ec3c1b174"
    doc = {"resourceSpans": [{"scopeSpans": [{"spans": [
        {"traceId": tid, "spanId": sid, "name": "j", "startTimeUnixNano": "1000",
         "endTimeUnixNano": "2000"}]}]}]}
    code, _ = _post(srv.http_port, gzip.compress(json.dumps(doc).encode()), "gzip", "application/json")
    assert code == 200
    assert any(sp.span_id.hex() == sid for _t, sp, _r, _s in _wait_spans(sink, before + 1))


def test_many_zip_bombs_at_once_memory_stays_near_the_limit(served):
    srv, sink = served
    proc = psutil.Process(srv.proc.pid)

    def rss():
        # the whole group: with service.workers, every worker receives
        total = 0
        for p in [proc] + proc.children(recursive=True):
            try:
                total += p.memory_info().rss
            except psutil.NoSuchProcess:
                pass
        return total
    base = rss()
    peak = [base]
    stop = threading.Event()

    def watch():
        while not stop.is_set():
            peak[0] = max(peak[0], rss())
            time.sleep(0.005)
    codes: list[int] = []

    def bomb(i):
        for _ in range(3):
            codes.append(_post(srv.http_port, BOMB_GZIP if i % 2 else BOMB_ZSTD,
                               "gzip" if i % 2 else "zstd")[0])
    w = threading.Thread(target=watch)
    w.start()
    threads = [threading.Thread(target=bomb, args=(i,)) for i in range(24)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    stop.set()
    w.join()
    assert codes == [413] * 72
    grown = (peak[0] - base) >> 20
    # 72 bombs of 256 MiB each: what grows is the compressed bodies in
    # flight and one inflated body of at most the limit at a time
    assert grown < 6 * LIMIT_MIB + 24, f"RSS grew by {grown} MiB"
    # and the receiver still takes good data afterwards
    before = len(sink.spans())
    assert _post(srv.http_port, gzip.compress(_req()), "gzip")[0] == 200
    assert len(_wait_spans(sink, before + 2)) == before + 2
