"""A real OpenTelemetry Collector (v0.161.0, built by ``scripts/otelcol.sh``) for tests.

One binary carries every component the tests use (tools/otelcol/manifest.yaml):
the otlp and kafka receivers, the batch and tail_sampling processors, the otlp,
otlphttp, debug, file, loadbalancing and kafka exporters.

    ports = free_ports(2)
    cfg = {
        "receivers": {"otlp": {"protocols": {"grpc": {"endpoint": f"127.0.0.1:{ports[0]}"}}}},
        "processors": {"batch": {}},
        "exporters": {"otlp": {"endpoint": sampler.endpoint, "tls": {"insecure": True}}},
        "service": {"pipelines": {"traces": {"receivers": ["otlp"], "processors": ["batch"],
                                             "exporters": ["otlp"]}}},
    }
    with Otelcol(cfg) as col:          # waits until every receiver endpoint listens
        ...send to 127.0.0.1:{ports[0]}...
    # leaving the block: SIGTERM (the Collector flushes its batch), SIGKILL after a timeout

``Otelcol(text=...)`` takes a config file's text as it is (a user's own file);
``col.log()`` is the Collector's stderr. The Collector's own telemetry is turned
off unless the config sets ``service.telemetry``, so tests need no metrics port.
``TRACEO_OTELCOL_BIN`` uses that binary instead of building one.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import tempfile
import time
import weakref
from pathlib import Path
from typing import Any

import yaml

from .procs import with_parent_death
from .procs import finalize as _finalize
from .procs import port_open as _port_open
from .procs import send_signal as _send_signal
from .procs import tail as _tail

ROOT = Path(__file__).resolve().parents[2]


def otelcol_binary() -> str:
    """Path of the Collector binary; builds it on first use (minutes, cold)."""
    given = os.environ.get("TRACEO_OTELCOL_BIN")
    if given:
        return given
    out = subprocess.run([str(ROOT / "scripts" / "otelcol.sh"), "build"], check=True,
                         stdout=subprocess.PIPE, text=True).stdout
    return out.strip().splitlines()[-1]


def _listen_endpoints(cfg: dict) -> list[tuple[str, int]]:
    """host:port of every receiver endpoint in the config (what readiness waits for)."""
    found = []

    def walk(node: Any) -> None:
        if isinstance(node, dict):
            for k, v in node.items():
                if k == "endpoint" and isinstance(v, str):
                    m = re.fullmatch(r"(?:[a-z]+://)?([^:/]+):(\d+)", v)
                    if m:
                        found.append((m.group(1), int(m.group(2))))
                else:
                    walk(v)
        elif isinstance(node, list):
            for v in node:
                walk(v)

    walk(cfg.get("receivers") or {})
    return found


class Otelcol:
    def __init__(self, config: dict | None = None, *, text: str | None = None,
                 env: dict | None = None, ready_timeout: float = 60.0):
        if (config is None) == (text is None):
            raise ValueError("give config (a dict) or text (a file's content)")
        if text is None:
            config = dict(config)
            svc = dict(config.get("service") or {})
            # No self-metrics server: it would need a port of its own per instance.
            svc.setdefault("telemetry", {"metrics": {"level": "none"}})
            config["service"] = svc
            text = yaml.safe_dump(config, sort_keys=False)
        self.config = yaml.safe_load(text)
        self.dir = Path(tempfile.mkdtemp(prefix="traceo-otelcol-"))
        self.path = self.dir / "config.yaml"
        self.path.write_text(text)
        self.env = env or {}
        self.ready_timeout = ready_timeout
        self.proc: subprocess.Popen | None = None
        self._holder: list = [None]
        weakref.finalize(self, _finalize, self._holder)

    def __enter__(self) -> "Otelcol":
        self.start()
        return self

    def __exit__(self, *exc) -> None:
        self.stop()

    def start(self) -> None:
        binary = otelcol_binary()
        self._log = open(self.dir / "otelcol.log", "ab")
        argv, extra = with_parent_death([binary, "--config", str(self.path)])
        self.proc = subprocess.Popen(
            argv, stdout=self._log, stderr=subprocess.STDOUT,
            env={**os.environ, **self.env}, cwd=self.dir, **extra)
        self._holder[0] = self.proc
        want = _listen_endpoints(self.config)
        deadline = time.monotonic() + self.ready_timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"otelcol exited with {self.proc.returncode}:\n{self.log()}")
            if all(_port_open(h, p, 0.2) for h, p in want) and "Everything is ready" in self.log():
                return
            time.sleep(0.1)
        self.kill()
        raise RuntimeError(f"otelcol not ready within {self.ready_timeout} s:\n{self.log()}")

    def log(self, lines: int = 200) -> str:
        if getattr(self, "_log", None):
            self._log.flush()
        return _tail(self.dir / "otelcol.log", lines)

    def stop(self, timeout: float = 30.0) -> int | None:
        if self.proc is None:
            return None
        if self.proc.poll() is None:
            _send_signal(self.proc, signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.kill()
        rc = self.proc.returncode
        self._log.close()
        return rc

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            _send_signal(self.proc, signal.SIGKILL)
            self.proc.wait(10)
