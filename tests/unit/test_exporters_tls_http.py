"""OTLP exporters over TLS (gRPC and HTTP) and OTLP/HTTP's retry rules,
against servers in the test with a self-signed CA made by openssl."""
import asyncio
import shutil
import ssl
import subprocess
import threading
from concurrent import futures
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import grpc
import pytest

from support_otlp import SERVICE, make_request, trace
from traceo_sampler.config import OtlpExporter as OtlpCfg
from traceo_sampler.config import Retry, Tls, Duration
from traceo_sampler.exporters.base import Item
from traceo_sampler.exporters.otlp_grpc import OtlpGrpcExporter
from traceo_sampler.exporters.otlp_http import OtlpHttpExporter, parse_retry_after, traces_url
from traceo_sampler.telemetry import Metrics


@pytest.fixture(scope="module")
def certs(tmp_path_factory):
    assert shutil.which("openssl"), "openssl is needed to make test certificates"
    d = tmp_path_factory.mktemp("certs")
    run = lambda *a: subprocess.run(a, check=True, capture_output=True, cwd=d)  # noqa: E731
    run("openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2",
        "-keyout", "ca.key", "-out", "ca.pem", "-subj", "/CN=traceo-test-ca")
    run("openssl", "req", "-newkey", "rsa:2048", "-nodes", "-keyout", "srv.key",
        "-out", "srv.csr", "-subj", "/CN=localhost")
    (d / "ext.cnf").write_text("subjectAltName=DNS:localhost,IP:127.0.0.1\n")
    run("openssl", "x509", "-req", "-in", "srv.csr", "-CA", "ca.pem", "-CAkey", "ca.key",
        "-CAcreateserial", "-out", "srv.pem", "-days", "2", "-extfile", "ext.cnf")
    return d


def _item(raw, n):
    return Item(raw, n, {"svc": n}, [b"\x01" * 16], 0.0)


def test_grpc_exporter_over_tls_with_ca_file(certs):
    got = []
    server = grpc.server(futures.ThreadPoolExecutor(2))
    server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(SERVICE, {
        "Export": grpc.unary_unary_rpc_method_handler(
            lambda req, ctx: got.append(req) or b"", request_deserializer=None,
            response_serializer=None)}),))
    creds = grpc.ssl_server_credentials([((certs / "srv.key").read_bytes(), (certs / "srv.pem").read_bytes())])
    port = server.add_secure_port("127.0.0.1:0", creds)
    server.start()
    try:
        async def main():
            m = Metrics()
            exp = OtlpGrpcExporter(OtlpCfg(endpoint=f"https://localhost:{port}",
                                           tls=Tls(ca_file=str(certs / "ca.pem"))), m)
            exp.start()
            raw = make_request([trace(2)])
            exp.submit(_item(raw, 2))
            assert await exp.flush(10)
            await exp.close(2)
            assert got == [raw] and exp.sent_spans == 2
            # without our CA the server is not trusted: grpc reports UNAVAILABLE,
            # retried until max_elapsed, then counted as dropped
            bad = OtlpGrpcExporter(OtlpCfg(endpoint=f"https://localhost:{port}",
                                           retry=Retry(max_elapsed=Duration("300ms"))), m)
            bad.start()
            bad.submit(_item(raw, 2))
            assert await bad.flush(10)
            await bad.close(1)
            assert bad.dropped_spans == 2 and got == [raw]
        asyncio.run(main())
    finally:
        server.stop(0)


class _Handler(BaseHTTPRequestHandler):
    def do_POST(self):
        body = self.rfile.read(int(self.headers["Content-Length"]))
        srv = self.server
        srv.seen.append((self.path, dict(self.headers), body))
        if srv.answers:
            status, headers = srv.answers.pop(0)
        else:
            status, headers = 200, {}
        self.send_response(status)
        for k, v in headers.items():
            self.send_header(k, v)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, *a):
        pass


def _http_server(certs=None):
    srv = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    srv.seen, srv.answers = [], []
    if certs is not None:
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ctx.load_cert_chain(certs / "srv.pem", certs / "srv.key")
        srv.socket = ctx.wrap_socket(srv.socket, server_side=True)
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    return srv


def test_http_exporter_tls_gzip_headers_and_retry_after(certs):
    import gzip
    srv = _http_server(certs)
    srv.answers = [(503, {"Retry-After": "1"}), (429, {}), (200, {})]
    try:
        async def main():
            m = Metrics()
            cfg = OtlpCfg(endpoint=f"https://localhost:{srv.server_address[1]}",
                          protocol="http/protobuf", compression="gzip",
                          headers={"Authorization": "Bearer t0ken"},
                          tls=Tls(ca_file=str(certs / "ca.pem")),
                          retry=Retry(initial_interval=Duration("10ms")))
            exp = OtlpHttpExporter(cfg, m)
            exp.start()
            raw = make_request([trace(3)])
            loop = asyncio.get_running_loop()
            t0 = loop.time()
            exp.submit(_item(raw, 3))
            assert await exp.flush(15)
            elapsed = loop.time() - t0
            await exp.close(2)
            assert exp.sent_spans == 3
            assert elapsed >= 0.9          # the server's Retry-After: 1 was honoured
            return m
        m = asyncio.run(main())
        assert len(srv.seen) == 3
        path, headers, body = srv.seen[-1]
        assert path == "/v1/traces"
        assert headers["Authorization"] == "Bearer t0ken"
        assert headers["Content-Type"] == "application/x-protobuf"
        from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
        req = ExportTraceServiceRequest.FromString(gzip.decompress(body))
        assert sum(len(ss.spans) for rs in req.resource_spans for ss in rs.scope_spans) == 3
        assert m.export_failures_total.labels("otlp_http")._value.get() == 2
    finally:
        srv.shutdown()


def test_http_exporter_permanent_error_is_not_retried():
    srv = _http_server()
    srv.answers = [(400, {})]
    try:
        async def main():
            m = Metrics()
            exp = OtlpHttpExporter(OtlpCfg(endpoint=f"http://127.0.0.1:{srv.server_address[1]}",
                                           protocol="http/protobuf"), m)
            exp.start()
            exp.submit(_item(make_request([trace(2)]), 2))
            assert await exp.flush(10)
            await exp.close(1)
            return exp
        exp = asyncio.run(main())
        assert len(srv.seen) == 1 and exp.dropped_spans == 2
    finally:
        srv.shutdown()


@pytest.mark.parametrize("value,expect", [("3", 3.0), ("0", 0.0), ("", None), (None, None), ("soon", None)])
def test_parse_retry_after(value, expect):
    assert parse_retry_after(value) == expect


@pytest.mark.parametrize("endpoint,url", [
    ("127.0.0.1:4318", "http://127.0.0.1:4318/v1/traces"),
    ("http://tempo:4318", "http://tempo:4318/v1/traces"),
    ("https://tempo.example.com", "https://tempo.example.com/v1/traces"),
    ("https://gw.example.com/otlp/v1/traces", "https://gw.example.com/otlp/v1/traces"),
])
def test_traces_url(endpoint, url):
    assert traces_url(endpoint) == url


@pytest.mark.parametrize("protocol", ["grpc", "http/protobuf"])
def test_server_name_override_checks_the_certificate_for_that_name(protocol, tmp_path):
    """The endpoint is an IP; the backend's certificate names only
    backend.example: trusted with server_name_override, refused without."""
    import trustme
    ca = trustme.CA()
    leaf = ca.issue_cert("backend.example")
    ca_file = tmp_path / "ca.pem"
    ca_file.write_bytes(ca.cert_pem.bytes())
    key, chain = leaf.private_key_pem.bytes(), leaf.cert_chain_pems[0].bytes()
    got = []
    if protocol == "grpc":
        server = grpc.server(futures.ThreadPoolExecutor(2))
        server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(SERVICE, {
            "Export": grpc.unary_unary_rpc_method_handler(
                lambda req, ctx: got.append(req) or b"", request_deserializer=None,
                response_serializer=None)}),))
        port = server.add_secure_port("127.0.0.1:0", grpc.ssl_server_credentials([(key, chain)]))
        server.start()
        stop = lambda: server.stop(0)  # noqa: E731
        cls = OtlpGrpcExporter
    else:
        srv = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
        srv.seen, srv.answers = got, []
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        (tmp_path / "leaf.pem").write_bytes(chain)
        (tmp_path / "leaf.key").write_bytes(key)
        ctx.load_cert_chain(tmp_path / "leaf.pem", tmp_path / "leaf.key")
        srv.socket = ctx.wrap_socket(srv.socket, server_side=True)
        threading.Thread(target=srv.serve_forever, daemon=True).start()
        port = srv.server_address[1]
        stop = srv.shutdown
        cls = OtlpHttpExporter
    try:
        async def main():
            m = Metrics()
            raw = make_request([trace(2)])
            out = {}
            for name in ("backend.example", ""):
                exp = cls(OtlpCfg(endpoint=f"https://127.0.0.1:{port}", protocol=protocol,
                                  tls=Tls(ca_file=str(ca_file), server_name_override=name),
                                  retry=Retry(max_elapsed=Duration("300ms"))), m)
                exp.start()
                exp.submit(_item(raw, 2))
                assert await exp.flush(10)
                await exp.close(1)
                out[name] = (exp.sent_spans, exp.dropped_spans)
            assert out == {"backend.example": (2, 0), "": (0, 2)}
            assert len(got) == 1
        asyncio.run(main())
    finally:
        stop()
