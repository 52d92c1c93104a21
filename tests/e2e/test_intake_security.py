"""TLS, mTLS and bearer tokens on the OTLP receivers and the admin endpoint,
through ``serve`` with the OpenTelemetry SDK's own gRPC and HTTP exporters.
A table of clients (right credentials, no token, wrong token, no client
certificate, plaintext) per listener; then a token rotated in its file."""
from __future__ import annotations

import os
import ssl
import time
import urllib.error
import urllib.request

import grpc
import pytest
import requests
import trustme
from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter as GrpcExporter
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter as HttpExporter
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor, SpanExportResult

from support_otlp import CaptureSink, make_request, trace
from support_serve import Serve

pytestmark = pytest.mark.e2e
TOKEN, OTHER, ROTATED = "tok-3f9a8c1e", "tok-wrong-77", "tok-rotated-42"
EXPORT = "/opentelemetry.proto.collector.trace.v1.TraceService/Export"


@pytest.fixture(scope="module")
def pki(tmp_path_factory):
    d = tmp_path_factory.mktemp("pki")
    ca = trustme.CA()
    server = ca.issue_cert("127.0.0.1", "localhost")
    client = ca.issue_cert("client.example")
    stranger = trustme.CA().issue_cert("stranger.example")   # signed by another CA
    out = {"dir": d}
    for name, blob in (("ca.pem", ca.cert_pem.bytes()),
                       ("server.pem", server.cert_chain_pems[0].bytes()),
                       ("server-key.pem", server.private_key_pem.bytes()),
                       ("client.pem", client.cert_chain_pems[0].bytes()),
                       ("client-key.pem", client.private_key_pem.bytes()),
                       ("stranger.pem", stranger.cert_chain_pems[0].bytes()),
                       ("stranger-key.pem", stranger.private_key_pem.bytes()),
                       ("tokens", f"# receivers\n{TOKEN}\n\n".encode())):
        (d / name).write_bytes(blob)
        out[name] = str(d / name)
    return out


def _server_tls(pki, mtls=True):
    t = {"cert_file": pki["server.pem"], "key_file": pki["server-key.pem"]}
    if mtls:
        t["client_ca_file"] = pki["ca.pem"]
    return t


def _admin_ssl(pki):
    return ssl.create_default_context(cafile=pki["ca.pem"])


@pytest.fixture(scope="module")
def served(pki):
    auth = {"bearer_tokens_file": pki["tokens"]}
    cfg = {"sampler": {"root_wait": "100ms", "idle_timeout": "300ms",
                       "policies": [{"name": "all", "type": "always_sample"}]}}
    with CaptureSink() as sink:
        cfg["exporters"] = {"otlp": {"endpoint": sink.endpoint}}
        with Serve(cfg, grpc_opts={"tls": _server_tls(pki), "auth": auth},
                   http_opts={"tls": _server_tls(pki), "auth": auth},
                   admin_opts={"tls": _server_tls(pki, mtls=False), "auth": auth},
                   admin_ssl=_admin_ssl(pki),
                   admin_headers={"Authorization": f"Bearer {TOKEN}"}) as srv:
            yield srv, sink


def _read(p):
    with open(p, "rb") as fh:
        return fh.read()


def _grpc_creds(pki, client="client"):
    if client is None:
        return grpc.ssl_channel_credentials(_read(pki["ca.pem"]))
    return grpc.ssl_channel_credentials(_read(pki["ca.pem"]), _read(pki[f"{client}-key.pem"]),
                                        _read(pki[f"{client}.pem"]))


def _sdk_send(exporter, service: str) -> tuple[SpanExportResult, set]:
    """Export 3 spans through the SDK exporter; (result, span IDs)."""
    results = []

    class Recording(SimpleSpanProcessor):
        def on_end(self, span):
            results.append(self.span_exporter.export((span,)))
    provider = TracerProvider(resource=Resource.create({"service.name": service}))
    provider.add_span_processor(Recording(exporter))
    tracer = provider.get_tracer("security-test")
    ids = set()
    for _ in range(3):
        with tracer.start_as_current_span("op") as sp:
            ids.add(sp.get_span_context().span_id.to_bytes(8, "big"))
    provider.shutdown()
    ok = all(r == SpanExportResult.SUCCESS for r in results)
    return (SpanExportResult.SUCCESS if ok else SpanExportResult.FAILURE), ids


def _arrived(sink, ids, timeout=10.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        got = {sp.span_id for _t, sp, _r, _s in sink.spans()}
        if ids <= got:
            return True
        time.sleep(0.05)
    return False


# --------------------------------------------------------------- gRPC
GRPC_CASES = [
    # (id, client cert, token, expected status code or None for success)
    ("mtls-and-token", "client", TOKEN, None),
    ("no-token", "client", None, grpc.StatusCode.UNAUTHENTICATED),
    ("wrong-token", "client", OTHER, grpc.StatusCode.UNAUTHENTICATED),
    ("wrong-scheme", "client", f"Basic {TOKEN}", grpc.StatusCode.UNAUTHENTICATED),
    ("no-client-cert", None, TOKEN, grpc.StatusCode.UNAVAILABLE),
    ("client-cert-of-another-ca", "stranger", TOKEN, grpc.StatusCode.UNAVAILABLE),
    ("plaintext", "plaintext", TOKEN, grpc.StatusCode.UNAVAILABLE),
]


@pytest.mark.parametrize("case", GRPC_CASES, ids=[c[0] for c in GRPC_CASES])
def test_grpc_receiver_table(served, pki, case):
    srv, sink = served
    _id, client, token, code = case
    if client == "plaintext":
        ch = grpc.insecure_channel(srv.endpoint)
    else:
        ch = grpc.secure_channel(srv.endpoint, _grpc_creds(pki, client))
    md = ()
    if token is not None:
        md = (("authorization", token if " " in token else f"Bearer {token}"),)
    req_trace = trace(2)
    try:
        export = ch.unary_unary(EXPORT)
        if code is None:
            export(make_request([req_trace]), metadata=md, timeout=10)
            assert _arrived(sink, {s["span_id"] for s in req_trace})
        else:
            with pytest.raises(grpc.RpcError) as ei:
                export(make_request([req_trace]), metadata=md, timeout=10)
            assert ei.value.code() == code, ei.value.details()
    finally:
        ch.close()


def test_grpc_sdk_exporter_with_mtls_and_token(served, pki):
    srv, sink = served
    exp = GrpcExporter(endpoint=f"https://{srv.endpoint}", credentials=_grpc_creds(pki),
                       headers=(("authorization", f"Bearer {TOKEN}"),), timeout=10)
    res, ids = _sdk_send(exp, "sdk-grpc-tls")
    assert res == SpanExportResult.SUCCESS
    assert _arrived(sink, ids)


# --------------------------------------------------------------- HTTP
HTTP_CASES = [
    ("mtls-and-token", "client", TOKEN, 200),
    ("no-token", "client", None, 401),
    ("wrong-token", "client", OTHER, 401),
    ("no-client-cert", None, TOKEN, "ssl"),
    ("client-cert-of-another-ca", "stranger", TOKEN, "ssl"),
    ("plaintext", "plaintext", TOKEN, "connection"),
]


@pytest.mark.parametrize("case", HTTP_CASES, ids=[c[0] for c in HTTP_CASES])
def test_http_receiver_table(served, pki, case):
    srv, sink = served
    _id, client, token, expect = case
    scheme = "http" if client == "plaintext" else "https"
    url = f"{scheme}://127.0.0.1:{srv.http_port}/v1/traces"
    headers = {"Content-Type": "application/x-protobuf"}
    if token:
        headers["Authorization"] = f"Bearer {token}"
    cert = (pki[f"{client}.pem"], pki[f"{client}-key.pem"]) if client in ("client", "stranger") else None
    req_trace = trace(2)
    kw = dict(data=make_request([req_trace]), headers=headers, verify=pki["ca.pem"], cert=cert, timeout=10)
    if expect == "ssl":
        with pytest.raises((requests.exceptions.SSLError, requests.exceptions.ConnectionError)):
            requests.post(url, **kw)
    elif expect == "connection":
        with pytest.raises(requests.exceptions.ConnectionError):
            requests.post(url, **kw)
    else:
        r = requests.post(url, **kw)
        assert r.status_code == expect, r.text
        if expect == 401:
            assert r.headers["WWW-Authenticate"] == "Bearer"
        else:
            assert _arrived(sink, {s["span_id"] for s in req_trace})


@pytest.mark.parametrize("gzip", [False, True])
def test_http_sdk_exporter_with_mtls_and_token(served, pki, gzip, monkeypatch):
    from opentelemetry.exporter.otlp.proto.http import Compression
    srv, sink = served
    # requests lets these override the exporter's certificate_file
    monkeypatch.delenv("REQUESTS_CA_BUNDLE", raising=False)
    monkeypatch.delenv("CURL_CA_BUNDLE", raising=False)
    exp = HttpExporter(endpoint=f"https://127.0.0.1:{srv.http_port}/v1/traces",
                       certificate_file=pki["ca.pem"], client_certificate_file=pki["client.pem"],
                       client_key_file=pki["client-key.pem"],
                       headers={"authorization": f"Bearer {TOKEN}"},
                       compression=Compression.Gzip if gzip else Compression.NoCompression, timeout=10)
    res, ids = _sdk_send(exp, f"sdk-http-tls-{gzip}")
    assert res == SpanExportResult.SUCCESS
    assert _arrived(sink, ids)


# --------------------------------------------------------------- admin
ADMIN_CASES = [
    ("metrics-with-token", "/metrics", TOKEN, 200),
    ("metrics-no-token", "/metrics", None, 401),
    ("status-wrong-token", "/api/status", OTHER, 401),
    ("healthz-open-to-probes", "/healthz", None, 200),
    ("readyz-open-to-probes", "/readyz", None, 200),
]


@pytest.mark.parametrize("case", ADMIN_CASES, ids=[c[0] for c in ADMIN_CASES])
def test_admin_table(served, pki, case):
    srv, _sink = served
    _id, path, token, status = case
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    req = urllib.request.Request(f"https://127.0.0.1:{srv.admin_port}{path}", headers=headers)
    try:
        with urllib.request.urlopen(req, timeout=5, context=_admin_ssl(pki)) as r:
            code = r.status
    except urllib.error.HTTPError as e:
        code = e.code
    assert code == status


def test_admin_refuses_plaintext(served):
    srv, _ = served
    with pytest.raises(OSError):
        urllib.request.urlopen(f"http://127.0.0.1:{srv.admin_port}/healthz", timeout=5).read()


# --------------------------------------------------------------- counted, not logged
def test_refusals_counted_and_tokens_never_logged(served, pki):
    srv, _ = served
    missing = srv.metric("traceo_sampler_unauthenticated_requests_total", receiver="otlp_grpc",
                         reason="missing")
    invalid = srv.metric("traceo_sampler_unauthenticated_requests_total", receiver="otlp_http",
                         reason="invalid")
    assert missing >= 1 and invalid >= 1
    assert srv.metric("traceo_sampler_unauthenticated_requests_total", receiver="admin") >= 2
    log = srv.read_stderr()
    for secret in (TOKEN, OTHER, ROTATED):
        assert secret not in log


def test_token_rotation_in_the_file(served, pki):
    """Runs last: replaces the token. The file is re-read within ~1 s."""
    srv, sink = served
    ch = grpc.secure_channel(srv.endpoint, _grpc_creds(pki))
    export = ch.unary_unary(EXPORT)
    old, new = (("authorization", f"Bearer {TOKEN}"),), (("authorization", f"Bearer {ROTATED}"),)
    export(make_request([trace(1)]), metadata=old, timeout=10)
    tmp = pki["tokens"] + ".tmp"
    with open(tmp, "w") as fh:
        fh.write(f"{ROTATED}\n")
    os.replace(tmp, pki["tokens"])
    deadline = time.monotonic() + 5
    while True:
        try:
            export(make_request([trace(1)]), metadata=new, timeout=10)
            break
        except grpc.RpcError as e:
            assert e.code() == grpc.StatusCode.UNAUTHENTICATED
            assert time.monotonic() < deadline, "rotated token not accepted within 5 s"
            time.sleep(0.2)
    with pytest.raises(grpc.RpcError) as ei:
        export(make_request([trace(1)]), metadata=old, timeout=10)
    assert ei.value.code() == grpc.StatusCode.UNAUTHENTICATED
    ch.close()
    # restore for any test that runs after
    with open(tmp, "w") as fh:
        fh.write(f"{TOKEN}\n")
    os.replace(tmp, pki["tokens"])
