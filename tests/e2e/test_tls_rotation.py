"""Certificates rotated in place (as cert-manager or a Kubernetes secret
does) are taken by new connections within about a second, on the gRPC and
HTTP receivers and the admin endpoint, without a restart; a rotation that
does not load keeps the previous certificate and is counted."""
from __future__ import annotations

import os
import ssl
import time
import urllib.request

import grpc
import pytest
import requests
import trustme

from support_otlp import CaptureSink, make_request, trace
from support_serve import Serve

pytestmark = pytest.mark.e2e
EXPORT = "/opentelemetry.proto.collector.trace.v1.TraceService/Export"


def _write(path, blob: bytes) -> None:
    tmp = path + ".tmp"
    with open(tmp, "wb") as fh:
        fh.write(blob)
    os.replace(tmp, path)


@pytest.fixture(scope="module")
def pki(tmp_path_factory):
    d = tmp_path_factory.mktemp("rotation")
    out = {"dir": d}
    # old: the server's certificate from CA "a", client certificates from CA "c1";
    # new: the server's from CA "b", client certificates from CA "c2"
    for name in ("a", "b", "c1", "c2"):
        out[name] = trustme.CA()
    out["server_a"] = out["a"].issue_cert("127.0.0.1")
    out["server_b"] = out["b"].issue_cert("127.0.0.1")
    for ca in ("c1", "c2"):
        leaf = out[ca].issue_cert("client.example")
        for suffix, blob in (("", leaf.cert_chain_pems[0].bytes()),
                             ("-key", leaf.private_key_pem.bytes())):
            p = str(d / f"client-{ca}{suffix}.pem")
            _write(p, blob)
            out[f"client-{ca}{suffix}"] = p
    for ca in ("a", "b"):
        p = str(d / f"ca-{ca}.pem")
        _write(p, out[ca].cert_pem.bytes())
        out[f"ca-{ca}"] = p
    for role in ("grpc", "http", "admin"):
        for kind in ("cert", "key", "client_ca"):
            out[f"{role}-{kind}"] = str(d / f"{role}-{kind}.pem")
        _install(out, role, "a", "c1")
    return out


def _install(pki, role, server_ca, client_ca) -> None:
    srv = pki[f"server_{server_ca}"]
    _write(pki[f"{role}-cert"], srv.cert_chain_pems[0].bytes())
    _write(pki[f"{role}-key"], srv.private_key_pem.bytes())
    _write(pki[f"{role}-client_ca"], pki[client_ca].cert_pem.bytes())


def _tls(pki, role, mtls=True):
    t = {"cert_file": pki[f"{role}-cert"], "key_file": pki[f"{role}-key"]}
    if mtls:
        t["client_ca_file"] = pki[f"{role}-client_ca"]
    return t


def _read(p):
    with open(p, "rb") as fh:
        return fh.read()


def _grpc_ok(srv, pki, server_ca, client_ca) -> bool:
    creds = grpc.ssl_channel_credentials(_read(pki[f"ca-{server_ca}"]),
                                         _read(pki[f"client-{client_ca}-key"]),
                                         _read(pki[f"client-{client_ca}"]))
    with grpc.secure_channel(srv.endpoint, creds) as ch:
        try:
            ch.unary_unary(EXPORT)(make_request([trace(1)]), timeout=5)
            return True
        except grpc.RpcError as e:
            assert e.code() == grpc.StatusCode.UNAVAILABLE, e
            return False


def _http_ok(srv, pki, server_ca, client_ca) -> bool:
    try:
        with requests.Session() as s:
            r = s.post(f"https://127.0.0.1:{srv.http_port}/v1/traces", data=make_request([trace(2)]),
                       headers={"Content-Type": "application/x-protobuf"},
                       verify=pki[f"ca-{server_ca}"],
                       cert=(pki[f"client-{client_ca}"], pki[f"client-{client_ca}-key"]), timeout=5)
        return r.status_code == 200
    except requests.exceptions.SSLError:
        return False
    except requests.exceptions.ConnectionError:
        return False


def _admin_ok(srv, pki, server_ca) -> bool:
    ctx = ssl.create_default_context(cafile=pki[f"ca-{server_ca}"])
    try:
        with urllib.request.urlopen(f"https://127.0.0.1:{srv.admin_port}/healthz", timeout=5,
                                    context=ctx) as r:
            return r.status == 200
    except (ssl.SSLError, OSError):
        return False


def _eventually(fn, timeout=8.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if fn():
            return True
        time.sleep(0.2)
    return False


def test_rotation_in_place(pki):
    cfg = {"sampler": {"root_wait": "100ms", "idle_timeout": "300ms",
                       "policies": [{"name": "all", "type": "always_sample"}]}}
    # the test's own admin context trusts both server CAs, to read metrics throughout
    both = ssl.create_default_context(cafile=pki["ca-a"])
    both.load_verify_locations(cafile=pki["ca-b"])
    with CaptureSink() as sink:
        cfg["exporters"] = {"otlp": {"endpoint": sink.endpoint}}
        with Serve(cfg, grpc_opts={"tls": _tls(pki, "grpc")}, http_opts={"tls": _tls(pki, "http")},
                   admin_opts={"tls": _tls(pki, "admin", mtls=False)}, admin_ssl=both) as srv:
            assert _grpc_ok(srv, pki, "a", "c1") and _http_ok(srv, pki, "a", "c1")
            assert _admin_ok(srv, pki, "a")
            assert not _grpc_ok(srv, pki, "b", "c2") and not _http_ok(srv, pki, "b", "c2")

            # a certificate file that does not load: the previous one is kept, and counted
            for role in ("grpc", "http", "admin"):
                _write(pki[f"{role}-cert"], b"-----BEGIN CERTIFICATE-----\nnot a certificate\n")
            for listener in ("otlp_grpc", "otlp_http", "admin"):
                assert _eventually(lambda: (_grpc_ok(srv, pki, "a", "c1") and _http_ok(srv, pki, "a", "c1")
                                            and _admin_ok(srv, pki, "a")
                                            and srv.metric("traceo_sampler_tls_reloads_total",
                                                           listener=listener, result="invalid") >= 1)), listener

            # the real rotation: a new server certificate and a new client CA
            for role in ("grpc", "http", "admin"):
                _install(pki, role, "b", "c2")
            assert _eventually(lambda: _grpc_ok(srv, pki, "b", "c2")), "gRPC did not take the new files"
            assert _eventually(lambda: _http_ok(srv, pki, "b", "c2")), "HTTP did not take the new files"
            assert _eventually(lambda: _admin_ok(srv, pki, "b")), "admin did not take the new certificate"
            # every new connection now gets the new certificate and the new client CA
            # (several tries: with service.workers each worker reloads on its own)
            assert _eventually(lambda: all(not _grpc_ok(srv, pki, "a", "c1") and not _grpc_ok(srv, pki, "b", "c1")
                                           and not _http_ok(srv, pki, "a", "c1") and not _http_ok(srv, pki, "b", "c1")
                                           and _grpc_ok(srv, pki, "b", "c2") and _http_ok(srv, pki, "b", "c2")
                                           for _ in range(4)))
            assert not _admin_ok(srv, pki, "a")
            for listener in ("otlp_grpc", "otlp_http", "admin"):
                assert srv.metric("traceo_sampler_tls_reloads_total", listener=listener, result="ok") >= 1
            assert "Traceback" not in srv.read_stderr()
