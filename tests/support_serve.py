"""Run ``traceo-sampler serve`` as a subprocess for end-to-end tests."""
from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request

import yaml

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Serve:
    """``with Serve(cfg) as s:`` starts the sampler with cfg (a dict; the
    receivers and admin endpoints are filled in with free ports) and waits
    until /readyz answers 200."""

    def __init__(self, cfg: dict, http: bool = False, grpc_opts: dict | None = None,
                 http_opts: dict | None = None, admin_opts: dict | None = None,
                 admin_ssl=None, admin_headers: dict | None = None, wait_ready: bool = True):
        """grpc_opts / http_opts / admin_opts: more fields of
        receivers.otlp.grpc / .http / admin (http_opts implies http);
        admin_ssl (an ssl.SSLContext) and admin_headers: how the admin
        endpoint is reached when it has TLS or a token; wait_ready=False:
        return once started, for a serve that is not meant to become ready."""
        self.cfg = dict(cfg)
        self.grpc_port = free_port()
        self.admin_port = free_port()
        rec = {"grpc": {"endpoint": f"127.0.0.1:{self.grpc_port}", **(grpc_opts or {})}}
        if http or http_opts is not None:
            self.http_port = free_port()
            rec["http"] = {"endpoint": f"127.0.0.1:{self.http_port}", **(http_opts or {})}
        self.cfg.setdefault("receivers", {"otlp": rec})
        self.cfg["admin"] = {**(cfg.get("admin") or {}), "endpoint": f"127.0.0.1:{self.admin_port}",
                             **(admin_opts or {})}
        self.admin_ssl = admin_ssl
        self.admin_headers = admin_headers or {}
        self.wait_ready = wait_ready
        self.admin_url = f"{'https' if admin_ssl else 'http'}://127.0.0.1:{self.admin_port}"
        self.dir = tempfile.mkdtemp(prefix="traceo-e2e-")
        self.path = os.path.join(self.dir, "config.yaml")
        with open(self.path, "w") as fh:
            yaml.safe_dump(self.cfg, fh)
        self.proc: subprocess.Popen | None = None
        self.stderr = ""
        self.returncode: int | None = None

    @property
    def endpoint(self) -> str:
        return f"127.0.0.1:{self.grpc_port}"

    def __enter__(self):
        env = dict(os.environ)
        env["PYTHONPATH"] = os.path.join(ROOT, "src") + os.pathsep + env.get("PYTHONPATH", "")
        self._err = open(os.path.join(self.dir, "stderr.log"), "w+")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "traceo_sampler", "serve", "-c", self.path],
            stdout=subprocess.DEVNULL, stderr=self._err, env=env, cwd=self.dir)
        if not self.wait_ready:
            return self
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"serve exited with {self.proc.returncode}:\n{self.read_stderr()}")
            try:
                with urllib.request.urlopen(f"{self.admin_url}/readyz", timeout=1,
                                            context=self.admin_ssl) as r:
                    if r.status == 200:
                        return self
            except OSError:
                pass
            time.sleep(0.1)
        self.stop(signal.SIGKILL)
        raise RuntimeError(f"serve not ready within 60 s:\n{self.read_stderr()}")

    def read_stderr(self) -> str:
        self._err.flush()
        with open(self._err.name) as fh:
            return fh.read()

    def stop(self, sig=signal.SIGTERM, timeout: float = 60) -> int:
        if self.proc is None or self.returncode is not None:
            return self.returncode
        self.proc.send_signal(sig)
        try:
            self.returncode = self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.returncode = self.proc.wait()
        self.stderr = self.read_stderr()
        return self.returncode

    def summary(self) -> dict:
        for line in reversed(self.stderr.splitlines()):
            if line.startswith('{"summary"'):
                return json.loads(line)["summary"]
        raise AssertionError(f"no summary in stderr:\n{self.stderr[-3000:]}")

    def __exit__(self, *exc):
        self.stop(signal.SIGKILL if exc[0] else signal.SIGTERM)

    def get(self, path: str) -> str:
        req = urllib.request.Request(f"{self.admin_url}{path}", headers=self.admin_headers)
        with urllib.request.urlopen(req, timeout=5, context=self.admin_ssl) as r:
            return r.read().decode()

    def get_raw(self, path: str, headers: dict | None = None) -> bytes:
        req = urllib.request.Request(f"{self.admin_url}{path}",
                                     headers={**self.admin_headers, **(headers or {})})
        with urllib.request.urlopen(req, timeout=10, context=self.admin_ssl) as r:
            return r.read()

    def metric(self, name: str, **labels) -> float:
        """Sum of the samples of ``name`` matching labels, from /metrics."""
        from prometheus_client.parser import text_string_to_metric_families
        total = 0.0
        for fam in text_string_to_metric_families(self.get("/metrics")):
            for s in fam.samples:
                if s.name == name and all(s.labels.get(k) == v for k, v in labels.items()):
                    total += s.value
        return total
