"""A real Jaeger v2 (all-in-one: OTLP receivers + storage + query API) for tests.

The binary is built from our pinned tool module ``tools/jaeger/go.mod`` by
``scripts/jaeger.sh build`` into ``${XDG_CACHE_HOME:-~/.cache}/traceo-sampler/bin/``
on first use (Go 1.24+ needed; several minutes with empty Go caches, instant after).

    with Jaeger() as jaeger:                     # memory storage
        exporter = OTLPSpanExporter(endpoint=jaeger.otlp_grpc_endpoint, insecure=True)
        ...
        doc = jaeger.wait_for_trace(trace_id_hex, span_count=3)
        assert jaeger.span_ids(trace_id_hex) == {...}

    with Jaeger(storage="badger") as jaeger:     # persistent storage
        ...
        jaeger.stop()        # SIGTERM, then SIGKILL after a timeout
        jaeger.start()       # same ports, same data folder: stored traces still there

Storage and restarts:
    * ``storage="memory"`` (default): traces live in the process only. After
      ``stop()``/``kill()`` and ``start()`` the store is EMPTY: nothing survives a
      restart. Right for "Jaeger is down, what does the sampler do" tests that only
      look at what arrives after the restart.
    * ``storage="badger"``: Jaeger's embedded Badger key-value store in a data
      folder (``data_dir``; a fresh temp folder unless given). Traces written before
      ``stop()`` are found again after ``start()``. Writes are synced (``consistency:
      true``), so they also survive ``kill()`` (SIGKILL) once acknowledged.

Ports (OTLP gRPC, OTLP HTTP, query HTTP, query gRPC, health) are picked once, on
the first start, and kept across restarts, so clients configured with
``otlp_grpc_endpoint`` reach the restarted Jaeger at the same address.

The process gets PR_SET_PDEATHSIG=SIGKILL, so it dies with the test process even
on a hard kill. Linux ties that to the *thread* that started it: call ``start()``
from a thread that lives as long as Jaeger should (pytest's main thread does).
Jaeger v2.x's query service here serves the API only (no UI assets are built in).

Environment knobs:
    TRACEO_JAEGER_BIN        use this jaeger binary instead of building one
    TRACEO_JAEGER_KEEP_DATA  set to 1 to keep the work folder (config, log, badger data)
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import tempfile
import time
import urllib.error
import urllib.request
import weakref
from pathlib import Path
from typing import Any

from .procs import kill as _kill, terminate as _terminate, with_parent_death
from .procs import finalize as _finalize
from .procs import free_ports, port_open as _port_open
from .procs import tail as _tail

REPO_ROOT = Path(__file__).resolve().parents[2]
JAEGER_SH = REPO_ROOT / "scripts" / "jaeger.sh"

BUILD_TIMEOUT_S = 3600.0  # cold: ~1.3 GB of modules + compiling ~1500 packages on 2 cores
DEFAULT_STARTUP_TIMEOUT_S = 60.0  # warm start is ~1 s; generous for busy CI machines
STOP_TIMEOUT_S = 15.0
STORAGES = ("memory", "badger")


class JaegerError(RuntimeError):
    """The test Jaeger could not be built, started or queried."""


# ------------------------------------------------------------------ binary


def jaeger_binary(timeout: float = BUILD_TIMEOUT_S) -> Path:
    """Path of the Jaeger v2 binary; built with scripts/jaeger.sh if missing."""
    override = os.environ.get("TRACEO_JAEGER_BIN")
    if override:
        path = Path(override).expanduser()
        if not (path.is_file() and os.access(path, os.X_OK)):
            raise JaegerError(f"TRACEO_JAEGER_BIN={override}: not an executable file")
        return path
    if not JAEGER_SH.is_file():
        raise JaegerError(f"missing {JAEGER_SH}")
    try:
        proc = subprocess.run(
            ["bash", str(JAEGER_SH), "build"],
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            timeout=timeout,
        )
    except subprocess.TimeoutExpired as exc:
        raise JaegerError(f"`scripts/jaeger.sh build` took more than {timeout:.0f}s") from exc
    lines = proc.stdout.strip().splitlines()
    if proc.returncode != 0 or not lines:
        raise JaegerError(
            f"`scripts/jaeger.sh build` failed (exit {proc.returncode}):\n"
            f"{proc.stderr[-4000:]}"
        )
    path = Path(lines[-1])
    if not (path.is_file() and os.access(path, os.X_OK)):
        raise JaegerError(f"`scripts/jaeger.sh build` printed {path}, which is not executable")
    return path


# ----------------------------------------------------------------- helpers


# Loopback only: never route through an HTTP(S)_PROXY from the environment.
_OPENER = urllib.request.build_opener(urllib.request.ProxyHandler({}))


def _http_get(url: str, timeout: float) -> tuple[int, bytes]:
    """(status, body) of a GET; HTTP error statuses are returned, not raised."""
    req = urllib.request.Request(url, headers={"Accept": "application/json"})
    try:
        with _OPENER.open(req, timeout=timeout) as resp:
            return resp.status, resp.read()
    except urllib.error.HTTPError as exc:
        with exc:
            return exc.code, exc.read()


def normalize_trace_id(trace_id: str | int | bytes) -> str:
    """32 lowercase hex digits, from hex text, an int (as the OTel SDK has it) or 16 bytes."""
    if isinstance(trace_id, int):
        if not 0 <= trace_id < 1 << 128:
            raise ValueError(f"trace id out of range: {trace_id}")
        return f"{trace_id:032x}"
    if isinstance(trace_id, (bytes, bytearray)):
        if len(trace_id) != 16:
            raise ValueError(f"trace id must be 16 bytes, got {len(trace_id)}")
        return bytes(trace_id).hex()
    text = trace_id.strip().lower()
    if not 1 <= len(text) <= 32 or any(c not in "0123456789abcdef" for c in text):
        raise ValueError(f"not a hex trace id: {trace_id!r}")
    return text.rjust(32, "0")


def iter_spans(trace_doc: dict[str, Any] | None):
    """Every span (OTLP JSON dict) of a ``get_trace`` document."""
    if not trace_doc:
        return
    result = trace_doc.get("result", trace_doc)
    for rs in result.get("resourceSpans", []) or []:
        for ss in rs.get("scopeSpans", []) or []:
            yield from ss.get("spans", []) or []


# ------------------------------------------------------------------ Jaeger


class Jaeger:
    """One Jaeger v2 process on 127.0.0.1 with OTLP receivers and the query API.

    ``start()`` (or ``with``) picks free loopback ports (first time only), writes
    the config YAML into a work folder, runs ``jaeger --config <file>`` and returns
    once the health check reports ready, the query API answers and both OTLP ports
    accept connections. ``stop()``/``kill()`` end the process but keep ports, config
    and data; ``start()``/``restart()`` bring it back. ``close()`` (end of ``with``)
    stops it and removes the work folder.

    See the module docstring for what survives a restart (memory: nothing).
    """

    def __init__(
        self,
        *,
        storage: str = "memory",
        data_dir: str | os.PathLike | None = None,
        binary: str | os.PathLike | None = None,
        startup_timeout: float = DEFAULT_STARTUP_TIMEOUT_S,
        max_traces: int = 100_000,
        log_level: str = "info",
        keep_data: bool | None = None,
    ) -> None:
        if storage not in STORAGES:
            raise ValueError(f"storage must be one of {STORAGES}, got {storage!r}")
        self.host = "127.0.0.1"
        self.storage = storage
        self.binary = Path(binary) if binary else None
        self.startup_timeout = startup_timeout
        self.max_traces = max_traces
        self.log_level = log_level
        if keep_data is None:
            keep_data = os.environ.get("TRACEO_JAEGER_KEEP_DATA", "") not in ("", "0")
        self.keep_data = keep_data
        # A caller-given data folder is the caller's: close() never deletes it.
        self._user_data_dir = Path(data_dir) if data_dir else None

        self.work_dir: Path | None = None
        self.otlp_grpc_port: int | None = None
        self.otlp_http_port: int | None = None
        self.query_http_port: int | None = None
        self.query_grpc_port: int | None = None
        self.health_port: int | None = None
        self.started_count = 0
        self.last_startup_seconds: float | None = None
        self._log_file = None
        self._proc_holder: list[subprocess.Popen | None] = [None]
        self._finalizer = weakref.finalize(self, _finalize, self._proc_holder)

    # ------------------------------------------------------------ properties

    def _require_started(self, value: int | None) -> int:
        if value is None:
            raise JaegerError("Jaeger has not been started")
        return value

    @property
    def otlp_grpc_endpoint(self) -> str:
        """``127.0.0.1:<port>`` (no scheme), for OTLPSpanExporter(endpoint=..., insecure=True)."""
        return f"{self.host}:{self._require_started(self.otlp_grpc_port)}"

    @property
    def otlp_http_endpoint(self) -> str:
        """``http://127.0.0.1:<port>`` (base URL; OTLP/HTTP traces go to ``/v1/traces``)."""
        return f"http://{self.host}:{self._require_started(self.otlp_http_port)}"

    @property
    def otlp_http_traces_url(self) -> str:
        return f"{self.otlp_http_endpoint}/v1/traces"

    @property
    def query_url(self) -> str:
        """``http://127.0.0.1:<port>``: the query service (UI, /api/v3/..., /api/...)."""
        return f"http://{self.host}:{self._require_started(self.query_http_port)}"

    @property
    def query_grpc_endpoint(self) -> str:
        return f"{self.host}:{self._require_started(self.query_grpc_port)}"

    @property
    def health_url(self) -> str:
        return f"http://{self.host}:{self._require_started(self.health_port)}/status"

    @property
    def data_dir(self) -> Path | None:
        """Badger's folder (None for memory storage or before the first start)."""
        if self.storage != "badger":
            return None
        if self._user_data_dir is not None:
            return self._user_data_dir
        return self.work_dir / "badger" if self.work_dir else None

    @property
    def config_file(self) -> Path:
        if self.work_dir is None:
            raise JaegerError("Jaeger has not been started")
        return self.work_dir / "config.yaml"

    @property
    def log_path(self) -> Path:
        if self.work_dir is None:
            raise JaegerError("Jaeger has not been started")
        return self.work_dir / "jaeger.log"

    @property
    def proc(self) -> subprocess.Popen | None:
        return self._proc_holder[0]

    @property
    def pid(self) -> int | None:
        return self.proc.pid if self.proc else None

    @property
    def is_running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def log_tail(self, lines: int = 60) -> str:
        if self.work_dir is None:
            return "(no work folder yet)"
        return f"--- {self.log_path} (last {lines} lines) ---\n{_tail(self.log_path, lines)}"

    def __repr__(self) -> str:
        state = "running" if self.is_running else "stopped"
        where = self.otlp_grpc_endpoint if self.otlp_grpc_port else "-"
        return f"<Jaeger otlp={where} {self.storage} {state}>"

    # -------------------------------------------------------------- lifecycle

    def __enter__(self) -> "Jaeger":
        try:
            return self.start()
        except BaseException:
            self.close()
            raise

    def __exit__(self, *exc: object) -> None:
        self.close()

    def start(self, timeout: float | None = None) -> "Jaeger":
        """Start (first time: build if needed, pick ports, write config) and wait ready.

        Later calls reuse the ports, config and (badger) data. Memory storage starts
        empty every time.
        """
        if self.is_running:
            raise JaegerError(f"{self!r} is already running")
        if self.binary is None:
            self.binary = jaeger_binary()
        if self.work_dir is None:
            self.work_dir = Path(tempfile.mkdtemp(prefix="traceo-jaeger-"))
            # Ports are picked, then released, then bound by Jaeger: another process
            # can grab one in between. Only on the first start can we pick again.
            attempts = 3
            for attempt in range(1, attempts + 1):
                self._pick_ports()
                self._write_config()
                try:
                    self._launch_and_wait(timeout)
                    return self
                except JaegerError:
                    if attempt == attempts or "address already in use" not in self.log_tail(200):
                        raise
            return self  # not reached
        self._launch_and_wait(timeout)
        return self

    def restart(self, timeout: float | None = None) -> "Jaeger":
        """Stop if running, then start again on the same ports (badger: same data)."""
        if self.is_running:
            self.stop()
        return self.start(timeout)

    def ensure_running(self) -> "Jaeger":
        """Start Jaeger again if a test left it stopped or killed."""
        if not self.is_running:
            self.start()
        return self

    def stop(self, timeout: float = STOP_TIMEOUT_S) -> int | None:
        """SIGTERM (graceful shutdown), wait up to `timeout`, then SIGKILL. Returns the exit code."""
        proc = self.proc
        if proc is None or proc.poll() is not None:
            self._close_log()
            return proc.returncode if proc else None
        code = _terminate(proc, timeout)
        if code is None:
            return self.kill()
        self._close_log()
        return code

    def kill(self) -> int | None:
        """SIGKILL, as a crash would. Ports and (badger) data are kept for start()."""
        proc = self.proc
        if proc is None:
            return None
        code = _kill(proc, STOP_TIMEOUT_S, JaegerError, "jaeger")
        self._close_log()
        return code

    def close(self) -> None:
        """Stop Jaeger and remove its work folder (unless keep_data)."""
        try:
            self.stop()
        finally:
            if self.work_dir is not None and not self.keep_data:
                shutil.rmtree(self.work_dir, ignore_errors=True)
                self.work_dir = None

    # ---------------------------------------------------------------- queries

    def get_trace(
        self, trace_id: str | int | bytes, *, raw: bool = False, timeout: float = 10.0
    ) -> dict[str, Any] | None:
        """``GET /api/v3/traces/{id}``: the parsed JSON, or None if Jaeger has no such trace.

        The document is ``{"result": {"resourceSpans": [...]}}``: OTLP JSON, with
        ``traceId``/``spanId``/``parentSpanId`` as lowercase hex strings, ``kind`` and
        ``status.code`` as numbers, times as decimal strings of nanoseconds. Spans of one
        trace may be spread over several resourceSpans/scopeSpans. ``raw=True`` asks
        Jaeger to skip its adjusters (clock-skew fix, span-ID dedup, ...).
        """
        tid = normalize_trace_id(trace_id)
        url = f"{self.query_url}/api/v3/traces/{tid}"
        if raw:
            url += "?raw_traces=true"
        try:
            status, body = _http_get(url, timeout)
        except OSError as exc:
            raise JaegerError(f"GET {url} failed: {exc}") from exc
        if status == 404:
            return None
        if status != 200:
            raise JaegerError(f"GET {url}: HTTP {status}: {body[:500]!r}")
        doc = json.loads(body)
        if not any(True for _ in iter_spans(doc)):
            return None
        return doc

    def spans(self, trace_id: str | int | bytes) -> list[dict[str, Any]]:
        """The trace's spans (OTLP JSON dicts); empty if the trace is not there."""
        return list(iter_spans(self.get_trace(trace_id)))

    def span_ids(self, trace_id: str | int | bytes) -> set[str]:
        """Hex span IDs of the trace; empty set if Jaeger has no such trace."""
        return {s["spanId"] for s in iter_spans(self.get_trace(trace_id))}

    def wait_for_trace(
        self,
        trace_id: str | int | bytes,
        *,
        span_count: int = 1,
        timeout: float = 15.0,
        interval: float = 0.1,
    ) -> dict[str, Any]:
        """Poll ``get_trace`` until the trace has at least `span_count` spans; raise on timeout."""
        deadline = time.monotonic() + timeout
        last: dict[str, Any] | None = None
        while True:
            last = self.get_trace(trace_id)
            if last is not None and sum(1 for _ in iter_spans(last)) >= span_count:
                return last
            if time.monotonic() >= deadline:
                have = sum(1 for _ in iter_spans(last))
                raise JaegerError(
                    f"trace {normalize_trace_id(trace_id)}: {have} span(s) after {timeout:.0f}s, "
                    f"wanted {span_count}"
                )
            if not self.is_running:
                raise JaegerError(f"{self!r} exited while waiting for a trace\n{self.log_tail()}")
            time.sleep(interval)

    def services(self, timeout: float = 10.0) -> list[str]:
        """``GET /api/v3/services``."""
        status, body = _http_get(f"{self.query_url}/api/v3/services", timeout)
        if status != 200:
            raise JaegerError(f"GET /api/v3/services: HTTP {status}: {body[:500]!r}")
        return list(json.loads(body).get("services", []) or [])

    # ------------------------------------------------------------ internals

    def _pick_ports(self) -> None:
        (
            self.otlp_grpc_port,
            self.otlp_http_port,
            self.query_http_port,
            self.query_grpc_port,
            self.health_port,
        ) = free_ports(5, self.host)

    def _storage_yaml(self) -> str:
        if self.storage == "memory":
            return f"""        memory:
          max_traces: {int(self.max_traces)}
"""
        data = self.data_dir
        assert data is not None
        (data / "keys").mkdir(parents=True, exist_ok=True)
        (data / "values").mkdir(parents=True, exist_ok=True)
        return f"""        badger:
          ephemeral: false
          directories:
            keys: {json.dumps(str(data / "keys"))}
            values: {json.dumps(str(data / "values"))}
          consistency: true
          ttl:
            spans: 48h
"""

    def _write_config(self) -> None:
        h = self.host
        # JSON strings are valid YAML scalars: used for anything path- or address-like.
        config = f"""# Written by tests/support/jaeger.py
service:
  extensions: [jaeger_storage, jaeger_query, healthcheckv2]
  pipelines:
    traces:
      receivers: [otlp]
      processors: []
      exporters: [jaeger_storage_exporter]
  telemetry:
    resource:
      service.name: jaeger-test
    metrics:
      level: none
    logs:
      level: {self.log_level}

extensions:
  healthcheckv2:
    use_v2: true
    http:
      endpoint: "{h}:{self.health_port}"

  jaeger_query:
    enable_tracing: false
    storage:
      traces: test_store
    http:
      endpoint: "{h}:{self.query_http_port}"
    grpc:
      endpoint: "{h}:{self.query_grpc_port}"

  jaeger_storage:
    backends:
      test_store:
{self._storage_yaml()}
receivers:
  otlp:
    protocols:
      grpc:
        endpoint: "{h}:{self.otlp_grpc_port}"
      http:
        endpoint: "{h}:{self.otlp_http_port}"

exporters:
  jaeger_storage_exporter:
    trace_storage: test_store
"""
        self.config_file.write_text(config)

    def _close_log(self) -> None:
        if self._log_file is not None:
            self._log_file.close()
            self._log_file = None

    def _launch(self) -> None:
        assert self.binary is not None
        self._close_log()
        self._log_file = open(self.log_path, "ab", buffering=0)
        self._log_file.write(f"=== start #{self.started_count + 1} ===\n".encode())
        argv, extra = with_parent_death([str(self.binary), "--config", str(self.config_file)])
        self._proc_holder[0] = subprocess.Popen(
            argv,
            cwd=str(self.work_dir),
            stdin=subprocess.DEVNULL,
            stdout=self._log_file,
            stderr=subprocess.STDOUT,
            **extra,
        )
        self.started_count += 1

    def _launch_and_wait(self, timeout: float | None) -> None:
        t0 = time.monotonic()
        self._launch()
        try:
            self.wait_ready(timeout)
        except BaseException:
            self.kill()
            raise
        self.last_startup_seconds = time.monotonic() - t0

    def wait_ready(self, timeout: float | None = None) -> None:
        """Until health says OK, the query API answers and the OTLP ports accept connections."""
        timeout = self.startup_timeout if timeout is None else timeout
        deadline = time.monotonic() + timeout
        last = "nothing tried yet"
        while True:
            proc = self.proc
            if proc is None or proc.poll() is not None:
                code = proc.returncode if proc else None
                raise JaegerError(f"jaeger exited with {code} while starting\n{self.log_tail()}")
            last = self._probe()
            if last == "":
                return
            if time.monotonic() >= deadline:
                raise JaegerError(
                    f"jaeger not ready after {timeout:.0f}s ({last})\n{self.log_tail()}"
                )
            time.sleep(0.05)

    def _probe(self) -> str:
        """Empty string when ready, else what is not ready yet."""
        try:
            status, body = _http_get(self.health_url, 1.0)
        except OSError as exc:
            return f"health: {exc}"
        if status != 200:
            return f"health: HTTP {status} {body[:200]!r}"
        try:
            status, body = _http_get(f"{self.query_url}/api/v3/services", 2.0)
        except OSError as exc:
            return f"query: {exc}"
        if status != 200:
            return f"query: HTTP {status} {body[:200]!r}"
        for name, port in (("otlp grpc", self.otlp_grpc_port), ("otlp http", self.otlp_http_port)):
            assert port is not None
            if not _port_open(self.host, port):
                return f"{name} port {port} closed"
        return ""
