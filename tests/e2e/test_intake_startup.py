"""Every start-up failure is a config error naming the field, from both
``validate`` and ``serve`` (exit 1, ``field.path: message``, no traceback).
One table; each row is a config (or raw file bytes) and the line expected."""
from __future__ import annotations

import os
import socket
import subprocess
import sys

import pytest
import trustme
import yaml

from support_serve import free_port

pytestmark = pytest.mark.e2e
ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
KEEP = {"policies": [{"name": "all", "type": "always_sample"}]}


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    d = tmp_path_factory.mktemp("startup")
    ca = trustme.CA()
    cert = ca.issue_cert("127.0.0.1", "localhost")
    other = trustme.CA().issue_cert("localhost")
    paths = {"dir": str(d)}
    for name, blob in (("cert.pem", cert.cert_chain_pems[0].bytes()),
                       ("key.pem", cert.private_key_pem.bytes()),
                       ("other-key.pem", other.private_key_pem.bytes()),
                       ("ca.pem", ca.cert_pem.bytes()),
                       ("garbage.pem", b"this is not a certificate\n"),
                       ("broken.pem", b"-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n"),
                       ("tokens", b"s3cret\n"), ("empty-tokens", b"# nothing\n\n")):
        (d / name).write_bytes(blob)
        paths[name] = str(d / name)
    return paths


def _run(cmd: str, path: str, timeout=60):
    env = dict(os.environ, PYTHONPATH=os.path.join(ROOT, "src"))
    return subprocess.run([sys.executable, "-m", "traceo_sampler", cmd, "-c", path],
                          capture_output=True, text=True, timeout=timeout, env=env,
                          cwd=os.path.dirname(path))


def _grpc(**extra):
    return {"receivers": {"otlp": {"grpc": {"endpoint": f"127.0.0.1:{free_port()}", **extra}}},
            "sampler": KEEP, "exporters": {"file": {"path": "kept.jsonl"}}}


def _tls(f, **kw):
    t = {"cert_file": f["cert.pem"], "key_file": f["key.pem"]}
    t.update({k: (f[v] if v in f else v) for k, v in kw.items()})
    return t


# (id, config builder(files) -> dict or bytes, expected line start, message part)
STATIC = [
    ("grpc-cert-missing", lambda f: _grpc(tls=_tls(f, cert_file="/nonexistent/cert.pem")),
     "receivers.otlp.grpc.tls.cert_file:", "does not exist"),
    ("grpc-cert-not-pem", lambda f: _grpc(tls=_tls(f, cert_file="garbage.pem")),
     "receivers.otlp.grpc.tls.cert_file:", "is not a PEM certificate"),
    ("grpc-cert-broken-pem", lambda f: _grpc(tls=_tls(f, cert_file="broken.pem")),
     "receivers.otlp.grpc.tls.cert_file", "not a PEM certificate and its private key"),
    ("grpc-key-does-not-match", lambda f: _grpc(tls=_tls(f, key_file="other-key.pem")),
     "receivers.otlp.grpc.tls.cert_file", "private key"),
    ("grpc-client-ca-not-pem", lambda f: _grpc(tls=_tls(f, client_ca_file="garbage.pem")),
     "receivers.otlp.grpc.tls.client_ca_file:", "is not a PEM certificate"),
    ("http-key-missing", lambda f: {**_grpc(), "receivers": {"otlp": {"http": {
        "endpoint": f"127.0.0.1:{free_port()}", "tls": _tls(f, key_file="/nonexistent/key.pem")}}}},
     "receivers.otlp.http.tls.key_file:", "does not exist"),
    ("admin-cert-not-pem", lambda f: {**_grpc(), "admin": {"endpoint": f"127.0.0.1:{free_port()}",
                                                           "tls": _tls(f, cert_file="garbage.pem")}},
     "admin.tls.cert_file:", "is not a PEM certificate"),
    ("exporter-ca-missing", lambda f: {**_grpc(), "exporters": {"otlp": {
        "endpoint": "https://127.0.0.1:4317", "tls": {"ca_file": "/nonexistent/ca.pem"}}}},
     "exporters.otlp.tls.ca_file:", "does not exist"),
    ("exporter-ca-garbage", lambda f: {**_grpc(), "exporters": {"otlp": {
        "endpoint": "https://127.0.0.1:4317", "tls": {"ca_file": f["garbage.pem"]}}}},
     "exporters.otlp.tls.ca_file:", "no PEM CA certificate"),
    ("tokens-file-missing", lambda f: _grpc(auth={"bearer_tokens_file": "/nonexistent/tokens"}),
     "receivers.otlp.grpc.auth.bearer_tokens_file:", "cannot read"),
    ("tokens-file-empty", lambda f: _grpc(auth={"bearer_tokens_file": f["empty-tokens"]}),
     "receivers.otlp.grpc.auth.bearer_tokens_file:", "holds no token"),
    ("file-exporter-under-a-file", lambda f: {**_grpc(), "exporters": {"file": {
        "path": os.path.join(f["tokens"], "kept.jsonl")}}},
     "exporters.file.path:", "is not a directory"),
    ("file-exporter-is-a-directory", lambda f: {**_grpc(), "exporters": {"file": {"path": f["dir"]}}},
     "exporters.file.path:", "is a directory"),
    ("decision-cache-10^12", lambda f: {**_grpc(), "sampler": {
        **KEEP, "decision_cache": {"sampled": 10**12}}},
     "sampler.decision_cache.sampled:", "more than this machine's memory"),
    ("decision-cache-2^64", lambda f: {**_grpc(), "sampler": {
        **KEEP, "decision_cache": {"not_sampled": 2**64 - 1}}},
     "sampler.decision_cache.not_sampled:", "more than this machine's memory"),
    ("buffer-beyond-memory", lambda f: {**_grpc(), "sampler": {**KEEP, "memory_limit_mib": 2**40}},
     "sampler.memory_limit_mib:", "more than this machine's memory"),
    ("max-recv-beyond-grpc", lambda f: _grpc(max_recv_msg_size_mib=4096),
     "receivers.otlp.grpc.max_recv_msg_size_mib:", "must be <= 2047"),
    ("empty-policy-list", lambda f: {**_grpc(), "sampler": {"policies": []}},
     "sampler.policies:", "keeps no trace"),
    ("no-sampler-block", lambda f: {k: v for k, v in _grpc().items() if k != "sampler"},
     "sampler.policies:", "keeps no trace"),
    ("not-utf8", lambda f: b"sampler:\n  policies: []\n# caf\xe9\n",
     "", "not UTF-8 text: byte 0xe9 at offset"),
    ("yaml-nested-deep", lambda f: b"a: " + b"[" * 20000 + b"]" * 20000 + b"\n",
     "", "nested too deeply"),
    ("policies-nested-deep", lambda f: b"sampler:\n  policies: [" + _nested_not(3000) + b"]\n",
     "", "nested too deeply"),
]


def _nested_not(depth) -> bytes:
    # flow style, built as text (yaml.safe_dump itself recurses)
    p = "{name: leaf, type: always_sample}"
    for i in range(depth):
        p = "{name: n%d, type: not, not: {not_sub_policy: %s}}" % (i, p)
    return p.encode()


def _write(files, name, cfg):
    path = os.path.join(files["dir"], f"{name}.yaml")
    with open(path, "wb") as fh:
        fh.write(cfg if isinstance(cfg, bytes) else yaml.safe_dump(cfg).encode())
    return path


def _assert_config_error(res, prefix, text):
    assert res.returncode == 1, (res.returncode, res.stderr[-2000:])
    assert "Traceback" not in res.stderr, res.stderr[-3000:]
    lines = [ln for ln in res.stderr.splitlines() if text in ln]
    assert lines, res.stderr[-2000:]
    assert any(prefix in ln.split(": ", 1)[0] or ln.startswith(prefix) for ln in lines), lines


@pytest.mark.parametrize("cmd", ["validate", "serve"])
@pytest.mark.parametrize("case", STATIC, ids=[c[0] for c in STATIC])
def test_static_problems(files, case, cmd):
    name, build, prefix, text = case
    if name == "policies-nested-deep" and cmd == "serve":
        pytest.skip("the same loader as validate; one run is enough for a 3000-deep file")
    res = _run(cmd, _write(files, f"{name}-{cmd}", build(files)))
    _assert_config_error(res, prefix, text)


def _listening():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    s.listen()
    return s


SERVE_ONLY = [
    ("grpc-port-in-use", "grpc", "receivers.otlp.grpc.endpoint:", "address already in use"),
    ("http-port-in-use", "http", "receivers.otlp.http.endpoint:", "address already in use"),
    ("admin-port-in-use", "admin", "admin.endpoint:", "address already in use"),
    ("grpc-host-does-not-resolve", "grpc-host", "receivers.otlp.grpc.endpoint:", "does not resolve"),
    ("http-host-does-not-resolve", "http-host", "receivers.otlp.http.endpoint:", "does not resolve"),
    ("admin-host-not-local", "admin-host", "admin.endpoint:", "not available"),
]


@pytest.mark.parametrize("case", SERVE_ONLY, ids=[c[0] for c in SERVE_ONLY])
def test_listeners_serve_cannot_open(files, case):
    name, which, prefix, text = case
    busy = _listening()
    taken = f"127.0.0.1:{busy.getsockname()[1]}"
    ep = {"grpc": f"127.0.0.1:{free_port()}", "http": f"127.0.0.1:{free_port()}",
          "admin": f"127.0.0.1:{free_port()}"}
    if which in ("grpc", "http", "admin"):
        ep[which] = taken
    elif which.endswith("-host"):
        ep[which[:-5]] = ("192.0.2.1:9464" if which == "admin-host"
                          else "no-such-host.invalid:4317")
    cfg = {"receivers": {"otlp": {"grpc": {"endpoint": ep["grpc"]}, "http": {"endpoint": ep["http"]}}},
           "admin": {"endpoint": ep["admin"]}, "sampler": KEEP,
           "exporters": {"file": {"path": "kept.jsonl"}}}
    path = _write(files, name, cfg)
    try:
        assert _run("validate", path).returncode == 0
        _assert_config_error(_run("serve", path), prefix, text)
    finally:
        busy.close()
