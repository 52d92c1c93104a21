"""Benchmark harness: prints ONE JSON document on stdout (progress goes to stderr).

    python benchmarks/run.py [--spans N] [--quick] [--concurrency C] [--out FILE]

Phases, all on the same pre-encoded synthetic load (traceo_sampler.loadgen):

(a) ceiling    — the load sent as fast as possible into benchmarks/sink.py in
                 ``discard`` mode: what this client, gRPC and this machine can
                 move at all (spans/s).
(b) full_path  — the same load sent as fast as possible into
                 ``traceo-sampler serve`` (short timers, policies errors / slow
                 / 10 % of the rest), which exports to the sink in ``parse``
                 mode: spans/s in, CPU seconds of serve per million spans, peak
                 RSS, what reached the sink (error and slow traces kept?
                 traces complete? share of the rest kept), decision triggers.
(c) memory     — serve with 5-minute timers (nothing gets decided): RSS after
                 the load minus RSS when idle, per buffered span, and its ratio
                 to the encoded size of a span; buffer_spans / buffer_bytes
                 from /metrics.
(d) decision latency percentiles from the serve histogram
                 ``traceo_sampler_decision_latency_seconds`` of phase (b).
(f) wal        — phase (b) with ``sampler.wal`` at each fsync setting
                 (always, interval, never) beside phase (b) without it, in one
                 run, alternating (off, always, interval, never, then the same
                 again, ``--wal-rounds``): spans/s in, CPU per million spans,
                 fsync count and latency, each mode's ratio to "off".
(e) exporters  — phase (b)'s load with the OTLP exporter alone, then with a
                 ``file`` exporter beside it: each exporter's spans/s and the
                 clients' request latency (the file exporter's encoding must
                 not hold back the OTLP exporter or the receivers).

(g) control    — with ``--workers`` holding 2: two independent one-process
                 serves, each sent one shard's whole traces at the same time
                 (no hand-off at all): what two busy processes cost per span
                 on this machine, the yardstick for the 2-worker ratio.

``--serve-src DIR`` runs serve from another build (e.g. the previous commit
built in its own tree), for a before/after in the same session.

Ratios: full_path spans/s over ceiling spans/s, and RSS per buffered span over
encoded bytes per span. Subprocesses are started in their own sessions and
killed on exit; a serve that does not come up is reported with its stderr tail.
"""
from __future__ import annotations

import argparse
import asyncio
import atexit
import contextlib
import datetime as _dt
import hashlib
import importlib.util
import itertools
import json
import os
import pickle
import platform
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
SRC = ROOT / "src"
if importlib.util.find_spec("traceo_sampler") is None and SRC.is_dir():
    sys.path.insert(0, str(SRC))
sys.path.insert(0, str(HERE))

import sink as sinkmod  # noqa: E402
from traceo_sampler import loadgen  # noqa: E402

try:
    import psutil
except ImportError:  # pragma: no cover - reported in the JSON
    psutil = None

POLICIES = [
    {"name": "errors", "type": "status_code", "status_code": {"status_codes": ["ERROR"]}},
    {"name": "slow", "type": "latency", "latency": {"threshold_ms": 1000}},
    {"name": "rest", "type": "probabilistic", "probabilistic": {"sampling_percentage": 10}},
]
# Phase (b) again with one typical ottl_condition policy added (it reads
# every span of every trace that reaches it, decoded at decision time): the
# cost of span-data policies, as the ratio to the run without it.
OTTL_POLICY = {"name": "checkout-5xx", "type": "ottl_condition", "ottl_condition": {
    "error_mode": "ignore",
    "span": ['resource.attributes["service.name"] == "checkout" and '
             'Int(attributes["http.status_code"]) >= 500',
             'IsMatch(attributes["http.route"], "^/admin/")']}}
REST_PERCENT = 10.0
SLOW_NS = 1_000_000_000

_children: list[subprocess.Popen] = []


def log(msg: str) -> None:
    print(f"[bench {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


# ---------------------------------------------------------------- processes

def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


SERVE_SRC = SRC   # --serve-src: run serve from another build (before/after in one session)


def _child_env() -> dict:
    env = dict(os.environ)
    if (SERVE_SRC / "traceo_sampler").is_dir():
        env["PYTHONPATH"] = str(SERVE_SRC) + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    env.setdefault("PYTHONUNBUFFERED", "1")
    return env


def _spawn(cmd: list[str], workdir: Path, name: str, stdout=None) -> subprocess.Popen:
    err = open(workdir / f"{name}.stderr", "wb")
    out = stdout if stdout is not None else open(workdir / f"{name}.stdout", "wb")
    proc = subprocess.Popen(cmd, stdout=out, stderr=err, stdin=subprocess.DEVNULL, cwd=str(workdir),
                            env=_child_env(), start_new_session=True)
    proc._bench_name = name  # type: ignore[attr-defined]
    proc._bench_workdir = workdir  # type: ignore[attr-defined]
    _children.append(proc)
    return proc


def stop_process(proc: subprocess.Popen, timeout: float = 30.0) -> dict:
    """SIGTERM, wait up to ``timeout``, then SIGKILL the process group. Returns how it went."""
    if proc.poll() is not None:
        return {"exit_code": proc.returncode, "stop_s": 0.0, "killed": False}
    t0 = time.monotonic()
    with contextlib.suppress(ProcessLookupError):
        proc.send_signal(signal.SIGTERM)
    killed = False
    try:
        proc.wait(timeout)
    except subprocess.TimeoutExpired:
        killed = True
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(proc.pid, signal.SIGKILL)
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(5)
    return {"exit_code": proc.returncode, "stop_s": round(time.monotonic() - t0, 3), "killed": killed}


@atexit.register
def _kill_children() -> None:
    for proc in _children:
        if proc.poll() is None:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(proc.pid, signal.SIGKILL)


def tail(path: Path, n: int = 40) -> str:
    try:
        lines = path.read_text(errors="replace").splitlines()
    except OSError:
        return ""
    return "\n".join(lines[-n:])


class SinkProc:
    """benchmarks/sink.py as a subprocess; counts read over its gRPC side channel."""

    def __init__(self, workdir: Path, mode: str):
        self.workdir = workdir
        out_path = workdir / f"sink-{mode}.stdout"
        self.out_path = out_path
        self.proc = _spawn([sys.executable, str(HERE / "sink.py"), "--port", "0", "--mode", mode],
                           workdir, f"sink-{mode}", stdout=open(out_path, "wb"))
        deadline = time.monotonic() + 30
        self.port = None
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"sink exited with {self.proc.returncode}:\n"
                                   f"{tail(workdir / f'sink-{mode}.stderr')}")
            text = out_path.read_text()
            if "\n" in text:
                self.port = json.loads(text.split("\n", 1)[0])["port"]
                break
            time.sleep(0.05)
        if self.port is None:
            raise RuntimeError("sink did not report ready within 30 s")
        self.endpoint = f"127.0.0.1:{self.port}"

    def call(self, method: str = "Stats", body: bytes = b"") -> dict:
        return sinkmod.query_sync(self.endpoint, method, body)

    def stop(self) -> dict:
        return stop_process(self.proc, 10)


def proc_tree(pid: int) -> list:
    p = psutil.Process(pid)
    try:
        return [p] + p.children(recursive=True)
    except psutil.Error:
        return [p]


def cpu_seconds(pid: int) -> float:
    total = 0.0
    for p in proc_tree(pid):
        with contextlib.suppress(psutil.Error):
            t = p.cpu_times()
            total += t.user + t.system
    return total


def cpu_by_process(pid: int) -> dict:
    """CPU seconds of each process of the tree, by role: the supervisor (or
    the one serve process) and each worker of service.workers."""
    out = {}
    for p in proc_tree(pid):
        with contextlib.suppress(psutil.Error):
            t = p.cpu_times()
            cmd = p.cmdline()
            role = (f"worker{cmd[cmd.index('traceo_sampler.workers') + 2]}"
                    if "traceo_sampler.workers" in cmd else "serve" if p.pid == pid else str(p.pid))
            out[role] = t.user + t.system
    return out


def rss_bytes(pid: int) -> int:
    total = 0
    for p in proc_tree(pid):
        with contextlib.suppress(psutil.Error):
            total += p.memory_info().rss
    return total


def vm_hwm(pid: int) -> int | None:
    """Peak RSS of the process (Linux VmHWM), bytes."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    except OSError:
        return None
    return None


class RssSampler(threading.Thread):
    """Samples the RSS of a process tree every ``interval`` seconds; keeps the max."""

    def __init__(self, pid: int, interval: float = 0.1):
        super().__init__(daemon=True)
        self.pid, self.interval = pid, interval
        self.peak = 0
        self._halt = threading.Event()

    def run(self) -> None:
        while not self._halt.is_set():
            with contextlib.suppress(Exception):
                self.peak = max(self.peak, rss_bytes(self.pid))
            self._halt.wait(self.interval)

    def stop(self) -> int:
        self._halt.set()
        self.join(2)
        return self.peak


# ---------------------------------------------------------------- serve

class Serve:
    """``traceo-sampler serve -c cfg.yaml`` as a subprocess."""

    def __init__(self, workdir: Path, name: str, sampler: dict, sink_endpoint: str, workers: int = 1,
                 policies: list | None = None, file_exporter: Path | None = None):
        self.workdir = workdir
        self.name = name
        self.grpc_port = free_port()
        self.admin_port = free_port()
        self.endpoint = f"127.0.0.1:{self.grpc_port}"
        self.admin = f"127.0.0.1:{self.admin_port}"
        cfg = {
            "receivers": {"otlp": {"grpc": {"endpoint": self.endpoint}}},
            "sampler": {**sampler, "policies": policies or POLICIES},
            "exporters": {"otlp": {"endpoint": sink_endpoint},
                          **({"file": {"path": str(file_exporter)}} if file_exporter else {})},
            "admin": {"endpoint": self.admin},
            "service": {"workers": workers},
        }
        self.cfg_path = workdir / f"{name}.yaml"
        self.cfg_path.write_text(_to_yaml(cfg))
        self.cmd = [sys.executable, "-m", "traceo_sampler", "serve", "-c", str(self.cfg_path)]
        self.proc = _spawn(self.cmd, workdir, name)
        self.stderr_path = workdir / f"{name}.stderr"

    def fail(self, why: str) -> RuntimeError:
        code = self.proc.poll()
        state = f"exited with code {code}" if code is not None else "still running"
        return RuntimeError(f"serve ({self.name}) {why}; process {state}; command: {' '.join(self.cmd)}\n"
                            f"config:\n{self.cfg_path.read_text()}\n--- stderr tail ---\n{tail(self.stderr_path)}")

    def wait_ready(self, timeout: float = 60.0) -> float:
        """Wait until /readyz answers 200 (or, without admin, the gRPC port accepts)."""
        t0 = time.monotonic()
        deadline = t0 + timeout
        admin_seen = False
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise self.fail("exited during startup")
            try:
                with urllib.request.urlopen(f"http://{self.admin}/readyz", timeout=1) as r:
                    admin_seen = True
                    if r.status == 200 and _port_open(self.grpc_port):
                        return time.monotonic() - t0
            except urllib.error.HTTPError:
                admin_seen = True
            except (urllib.error.URLError, OSError):
                if not admin_seen and time.monotonic() - t0 > 15 and _port_open(self.grpc_port):
                    return time.monotonic() - t0  # no admin endpoint, but the receiver listens
            time.sleep(0.1)
        raise self.fail(f"not ready within {timeout:.0f} s")

    def metrics(self) -> list | None:
        try:
            with urllib.request.urlopen(f"http://{self.admin}/metrics", timeout=5) as r:
                return parse_prometheus(r.read().decode(errors="replace"))
        except (urllib.error.URLError, OSError, ValueError):
            return None

    def stop(self, timeout: float = 60.0) -> dict:
        return stop_process(self.proc, timeout)


def _port_open(port: int) -> bool:
    with socket.socket() as s:
        s.settimeout(0.5)
        return s.connect_ex(("127.0.0.1", port)) == 0


def _to_yaml(cfg: dict) -> str:
    try:
        import yaml
        return yaml.safe_dump(cfg, sort_keys=False)
    except ImportError:  # JSON is YAML
        return json.dumps(cfg, indent=2)


# ---------------------------------------------------------------- metrics

def parse_prometheus(text: str) -> list[tuple[str, dict, float]]:
    """Prometheus text format → [(name, labels, value)] (comments skipped)."""
    out = []
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        if "{" in line:
            name, rest = line.split("{", 1)
            body, _, value = rest.rpartition("}")
            labels = {}
            for part in _split_labels(body):
                k, _, v = part.partition("=")
                labels[k.strip()] = v.strip().strip('"').replace('\\"', '"').replace("\\\\", "\\")
        else:
            name, value = line.split(None, 1)
            labels = {}
        value = value.split()[0]
        out.append((name.strip(), labels, float(value)))
    return out


def _split_labels(body: str) -> list[str]:
    parts, cur, in_q, esc = [], [], False, False
    for ch in body:
        if esc:
            cur.append(ch)
            esc = False
        elif ch == "\\":
            cur.append(ch)
            esc = True
        elif ch == '"':
            in_q = not in_q
            cur.append(ch)
        elif ch == "," and not in_q:
            parts.append("".join(cur))
            cur = []
        else:
            cur.append(ch)
    if "".join(cur).strip():
        parts.append("".join(cur))
    return parts


def metric_sum(samples: list | None, name: str, **match) -> float | None:
    if samples is None:
        return None
    vals = [v for n, l, v in samples if n == name and all(l.get(k) == want for k, want in match.items())]
    return sum(vals) if vals else None


def metric_by(samples: list | None, name: str, *keys: str) -> dict | None:
    if samples is None:
        return None
    out: dict = {}
    for n, labels, v in samples:
        if n == name:
            k = "/".join(labels.get(x, "") for x in keys)
            out[k] = out.get(k, 0.0) + v
    return out or None


def histogram_quantiles(samples: list | None, name: str, qs=(0.5, 0.9, 0.99)) -> dict | None:
    """Quantiles of a Prometheus histogram (summed over label sets), like histogram_quantile()."""
    if samples is None:
        return None
    buckets: dict[float, float] = {}
    for n, labels, v in samples:
        if n == name + "_bucket" and "le" in labels:
            le = float("inf") if labels["le"] in ("+Inf", "Inf") else float(labels["le"])
            buckets[le] = buckets.get(le, 0.0) + v
    if not buckets:
        return None
    bounds = sorted(buckets)
    total = buckets[bounds[-1]]
    out: dict = {"count": int(total), "sum_s": metric_sum(samples, name + "_sum")}
    if total <= 0:
        out.update({f"p{int(q * 100)}": None for q in qs})
        return out
    finite = [b for b in bounds if b != float("inf")]
    for q in qs:
        rank = q * total
        prev_b, prev_c = 0.0, 0.0
        val = None
        for b in bounds:
            c = buckets[b]
            if c >= rank:
                if b == float("inf"):
                    val = finite[-1] if finite else None
                else:
                    val = prev_b + (b - prev_b) * ((rank - prev_c) / (c - prev_c) if c > prev_c else 1.0)
                break
            prev_b, prev_c = b, c
        out[f"p{int(q * 100)}"] = round(val, 6) if val is not None else None
    out["mean_s"] = round(out["sum_s"] / total, 6) if out.get("sum_s") is not None else None
    return out


# ---------------------------------------------------------------- phases

CHANNELS = 4     # client connections (set from --channels)


def send(endpoint: str, reqs, concurrency: int, rate: float | None = None) -> dict:
    cpu0 = time.process_time()
    res = asyncio.run(loadgen.send(endpoint, reqs, rate, None, concurrency, channels=CHANNELS))
    res["client_cpu_s"] = round(time.process_time() - cpu0, 3)
    return res


def wait_stable(read, quiet_s: float, timeout_s: float, also_done=None) -> tuple[dict, float, bool]:
    """Poll ``read()`` until its 'spans'/'requests' stop changing for ``quiet_s`` (and
    ``also_done()`` is true, when given). Returns (last value, seconds waited, settled)."""
    t0 = time.monotonic()
    last = read()
    key = (last.get("requests"), last.get("spans"))
    changed = time.monotonic()
    while time.monotonic() - t0 < timeout_s:
        time.sleep(0.25)
        cur = read()
        k = (cur.get("requests"), cur.get("spans"))
        if k != key:
            key, changed = k, time.monotonic()
        last = cur
        if time.monotonic() - changed >= quiet_s and (also_done is None or also_done()):
            return last, time.monotonic() - t0, True
    return last, time.monotonic() - t0, False


def phase_ceiling(reqs, sink: SinkProc, concurrency: int, reps: int, min_seconds: float) -> dict:
    """Best of ``reps`` runs; each run sends the load as many times as it takes to
    last about ``min_seconds`` (the discarding sink does not mind repeats)."""
    sink.call("Mode", b"discard")
    pairs = list(zip(reqs, reqs.span_counts))
    probe = send(sink.endpoint, iter(pairs), concurrency)  # warm-up and calibration
    passes = max(1, int(min_seconds / max(probe["elapsed_s"], 1e-3) + 0.999))
    runs = []
    for i in range(reps):
        sink.call("Reset")
        r = send(sink.endpoint, itertools.chain.from_iterable(itertools.repeat(pairs, passes)), concurrency)
        got = sink.call("Stats")
        r["sink_requests"] = got["requests"]
        r["sink_bytes"] = got["bytes"]
        r["passes"] = passes
        runs.append(r)
        log(f"ceiling run {i + 1}/{reps}: {r['spans_per_s']:.0f} spans/s, {r['mib_per_s']} MiB/s, "
            f"errors {r['errors']}")
    best = max(runs, key=lambda r: r["spans_per_s"])
    return {
        "spans_per_s": best["spans_per_s"],
        "requests_per_s": best["requests_per_s"],
        "mib_per_s": best["mib_per_s"],
        "elapsed_s": best["elapsed_s"],
        "spans": best["spans"],
        "requests": best["requests"],
        "errors": best["errors"],
        "delivered_all": best["sink_requests"] == best["requests_ok"] == len(reqs) * best["passes"],
        "passes_over_load": best["passes"],
        "rpc_latency_ms": best["rpc_latency_ms"],
        "client_cpu_s": best["client_cpu_s"],
        "runs_spans_per_s": [r["spans_per_s"] for r in runs],
        "concurrency": concurrency,
    }


def _otel_keep(trace_id: bytes, percent: float) -> bool:
    """OTel consistent probability sampling: keep when R >= T, R = low 56 bits of the
    trace ID, T = (1 - p) * 2^56."""
    r = int.from_bytes(trace_id[9:], "big")
    t = int(round((1.0 - percent / 100.0) * (1 << 56)))
    return r >= t


def check_kept(reqs, sink_stats: dict) -> dict:
    """Compare what the sink got with what the policies should keep."""
    got = sink_stats.get("trace_spans") or {}
    infos = reqs.traces
    err = [t for t in infos if t.error]
    slow = [t for t in infos if not t.error and t.duration_ns > SLOW_NS]
    rest = [t for t in infos if not t.error and t.duration_ns <= SLOW_NS]
    known = {t.trace_id.hex(): t for t in infos}

    def kept(ts):
        return sum(1 for t in ts if t.trace_id.hex() in got)

    kept_rest = [t for t in rest if t.trace_id.hex() in got]
    rule = [_otel_keep(t.trace_id, REST_PERCENT) for t in rest]
    agree = sum(1 for t, k in zip(rest, rule) if (t.trace_id.hex() in got) == k)
    complete = sum(1 for h, n in got.items() if h in known and n == known[h].n_spans)
    partial = sum(1 for h, n in got.items() if h in known and n < known[h].n_spans)
    extra = sum(1 for h, n in got.items() if h in known and n > known[h].n_spans)
    expected_spans = (sum(t.n_spans for t in err) + sum(t.n_spans for t in slow)
                      + sum(t.n_spans for t, k in zip(rest, rule) if k))
    return {
        "traces_sent": len(infos),
        "traces_at_sink": len(got),
        "spans_at_sink": sink_stats.get("spans"),
        "error_traces_kept": f"{kept(err)}/{len(err)}",
        "slow_traces_kept": f"{kept(slow)}/{len(slow)}",
        "rest_kept_share": round(len(kept_rest) / len(rest), 4) if rest else None,
        "rest_expected_share": REST_PERCENT / 100.0,
        "rest_decisions_matching_otel_threshold_rule": round(agree / len(rest), 4) if rest else None,
        "spans_expected_by_otel_rule": expected_spans,
        "kept_traces_complete": complete,
        "kept_traces_partial": partial,
        "kept_traces_with_extra_spans": extra,
        "unknown_traces_at_sink": sum(1 for h in got if h not in known),
    }


def phase_full(reqs, sink: SinkProc, workdir: Path, concurrency: int, timers: dict,
               workers: int = 1, policies: list | None = None,
               tag: str = "", rate: float | None = None) -> tuple[dict, list | None]:
    sink.call("Mode", b"parse")
    sink.call("Reset")
    serve = Serve(workdir, f"serve-full-w{workers}{tag}", timers, sink.endpoint, workers,
                  policies)
    try:
        ready_s = serve.wait_ready()
        log(f"serve (full path) ready in {ready_s:.1f} s on {serve.endpoint}, admin {serve.admin}")
        pid = serve.proc.pid
        rss_idle = rss_bytes(pid)
        sampler = RssSampler(pid)
        sampler.start()
        cpu0 = cpu_seconds(pid)
        by0 = cpu_by_process(pid)
        r = send(serve.endpoint, reqs, concurrency, rate)
        cpu_ingest = cpu_seconds(pid) - cpu0
        log(f"full path: sent {r['spans']} spans at {r['spans_per_s']:.0f} spans/s, errors {r['errors']}; "
            f"waiting for decisions to reach the sink")

        def drained() -> bool:
            m = serve.metrics()
            bt = metric_sum(m, "traceo_sampler_buffer_traces")
            return bt is None or bt == 0

        final, waited, settled = wait_stable(lambda: sink.call("Stats"), 3.0, 180.0, drained)
        cpu_total = cpu_seconds(pid) - cpu0
        by1 = cpu_by_process(pid)
        peak_sampled = sampler.stop()
        hwm = vm_hwm(pid)
        rss_end = rss_bytes(pid)
        m = serve.metrics()
        full_stats = sink.call("Stats", b"traces")
        stop = serve.stop(60)
        after_stop = sink.call("Stats")
        if serve.proc.returncode not in (0, None):
            log(f"serve exited with {serve.proc.returncode}; stderr tail:\n{tail(serve.stderr_path, 20)}")
    except BaseException:
        serve.stop(10)
        raise
    spans = r["spans"] or 1
    out = {
        "spans_per_s_in": r["spans_per_s"],
        "mib_per_s_in": r["mib_per_s"],
        "elapsed_s": r["elapsed_s"],
        "spans_sent": r["spans"],
        "requests_failed": r["requests_failed"],
        "errors": r["errors"],
        "rpc_latency_ms": r["rpc_latency_ms"],
        "client_cpu_s": r["client_cpu_s"],
        "serve_startup_s": round(ready_s, 3),
        "serve_cpu_s_ingest": round(cpu_ingest, 3),
        "serve_cores_busy_ingest": round(cpu_ingest / r["elapsed_s"], 3) if r["elapsed_s"] else None,
        "serve_cpu_s_total": round(cpu_total, 3),
        "serve_cpu_s_per_million_spans": round(cpu_total / spans * 1e6, 3),
        "serve_cpu_s_per_million_spans_ingest_only": round(cpu_ingest / spans * 1e6, 3),
        # with service.workers: "serve" is the supervisor
        "serve_cpu_s_by_process": {k: round(v - by0.get(k, 0.0), 3) for k, v in by1.items()},
        "serve_rss_idle_mib": round(rss_idle / 2**20, 1),
        "serve_rss_end_mib": round(rss_end / 2**20, 1),
        "serve_peak_rss_mib": round(max(peak_sampled, hwm or 0) / 2**20, 1),
        "wait_for_sink_s": round(waited, 2),
        "sink_settled": settled,
        "sink_spans": final.get("spans"),
        "sink_requests": final.get("requests"),
        "sink_spans_after_shutdown": after_stop.get("spans"),
        "kept_span_share": round((final.get("spans") or 0) / spans, 4),
        "check": check_kept(reqs, full_stats),
        "serve_shutdown": stop,
        "serve_metrics": _serve_metric_summary(m),
        "workers": workers,
        "paced_spans_per_s": rate,
        "forwarded_spans_between_workers": metric_sum(m, "traceo_sampler_worker_forwarded_spans_total"),
    }
    return out, m


WAL_MODES = ("off", "always", "interval", "never")


def phase_wal(reqs, sink: SinkProc, workdir: Path, concurrency: int, timers: dict,
              rounds: int) -> dict:
    """Phase (b) without the log and with it at each fsync setting, the
    modes alternating within each round so that all see the same machine;
    per mode the median of its rounds."""
    runs: dict[str, list] = {m: [] for m in WAL_MODES}
    for r in range(rounds):
        for mode in WAL_MODES:
            sampler = dict(timers)
            if mode != "off":
                d = workdir / f"wal-{mode}-{r}"
                sampler["wal"] = {"dir": str(d), "fsync": mode}
            full, m = phase_full(reqs, sink, workdir, concurrency, sampler, 1, None,
                                 f"-wal-{mode}-{r}")
            full["wal_fsyncs"] = metric_sum(m, "traceo_sampler_wal_fsync_seconds_count")
            fs = metric_sum(m, "traceo_sampler_wal_fsync_seconds_sum")
            full["wal_fsync_mean_ms"] = (round(fs / full["wal_fsyncs"] * 1e3, 3)
                                         if fs is not None and full["wal_fsyncs"] else None)
            full["wal_appended_bytes"] = metric_sum(m, "traceo_sampler_wal_appended_bytes_total")
            runs[mode].append(full)
            log(f"wal {mode} round {r}: {full['spans_per_s_in']:.0f} spans/s, "
                f"{full['serve_cpu_s_per_million_spans']} CPU s per million spans, "
                f"{full['wal_fsyncs']} fsyncs")

    def med(xs):
        xs = sorted(x for x in xs if x is not None)
        return xs[len(xs) // 2] if xs else None
    out: dict = {"rounds": rounds, "modes": {}, "ratios": {}}
    for mode, rs in runs.items():
        out["modes"][mode] = {
            "spans_per_s_in": med([x["spans_per_s_in"] for x in rs]),
            "serve_cpu_s_per_million_spans": med([x["serve_cpu_s_per_million_spans"] for x in rs]),
            "serve_cpu_s_per_million_spans_ingest_only": med(
                [x["serve_cpu_s_per_million_spans_ingest_only"] for x in rs]),
            "rpc_latency_ms": rs[len(rs) // 2]["rpc_latency_ms"],
            "fsyncs": med([x["wal_fsyncs"] for x in rs]),
            "fsync_mean_ms": med([x["wal_fsync_mean_ms"] for x in rs]),
            "appended_bytes": med([x["wal_appended_bytes"] for x in rs]),
            "errors_kept_whole": [x["check"] for x in rs][0],
            "runs": [{k: x[k] for k in ("spans_per_s_in", "serve_cpu_s_per_million_spans",
                                        "serve_cpu_s_per_million_spans_ingest_only",
                                        "wal_fsyncs", "requests_failed")} for x in rs],
        }
    off = out["modes"]["off"]
    for mode in WAL_MODES[1:]:
        mm = out["modes"][mode]
        if off["spans_per_s_in"] and mm["spans_per_s_in"]:
            out["ratios"][f"wal_{mode}_over_off_spans_per_s"] = round(
                mm["spans_per_s_in"] / off["spans_per_s_in"], 3)
        if off["serve_cpu_s_per_million_spans"] and mm["serve_cpu_s_per_million_spans"]:
            out["ratios"][f"wal_{mode}_over_off_cpu_s_per_million_spans"] = round(
                mm["serve_cpu_s_per_million_spans"] / off["serve_cpu_s_per_million_spans"], 3)
    return out


def phase_control(reqs, sink: SinkProc, workdir: Path, concurrency: int, timers: dict,
                  rate: float | None = None) -> dict:
    """The control beside ``workers: 2``: two independent one-process serves,
    each sent, at the same time, the spans of the traces of one shard (split
    before the clock starts, whole traces, half the in-flight requests and
    connections each). No hand-off at all: what two busy processes cost per
    span on this machine, against which the group's ratio is read."""
    from traceo_sampler import shard
    sink.call("Mode", b"parse")
    sink.call("Reset")
    loads: list[list] = [[], []]
    for data in reqs:
        res = shard.split(data, 2)
        for j in range(2):
            if res.parts[j]:
                loads[j].append((res.parts[j], res.counts[j]))
    serves = [Serve(workdir, f"serve-control-{k}", timers, sink.endpoint, 1) for k in range(2)]
    try:
        for sv in serves:
            sv.wait_ready()
        cpu0 = [cpu_seconds(sv.proc.pid) for sv in serves]
        out: list = [None, None]

        def go(k: int) -> None:
            out[k] = send(serves[k].endpoint, iter(loads[k]), max(1, concurrency // 2),
                          rate / 2 if rate else None)
        threads = [threading.Thread(target=go, args=(k,)) for k in range(2)]
        t0 = time.monotonic()
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        elapsed = time.monotonic() - t0

        def drained() -> bool:
            return all((metric_sum(sv.metrics(), "traceo_sampler_buffer_traces") or 0) == 0
                       for sv in serves)
        _, waited, settled = wait_stable(lambda: sink.call("Stats"), 3.0, 180.0, drained)
        cpu = sum(cpu_seconds(sv.proc.pid) - c for sv, c in zip(serves, cpu0))
    finally:
        for sv in serves:
            sv.stop(30)
    spans = sum(r["spans"] for r in out if r) or 1
    return {
        "spans_per_s_in": round(spans / elapsed, 1),
        "spans_sent": spans,
        "errors": [r["errors"] for r in out if r],
        "client_cpu_s": round(sum(r["client_cpu_s"] for r in out if r), 3),
        "serve_cpu_s_total": round(cpu, 3),
        "serve_cpu_s_per_million_spans": round(cpu / spans * 1e6, 3),
        "wait_for_sink_s": round(waited, 2),
        "sink_settled": settled,
    }


def phase_exporters(reqs, sink: SinkProc, workdir: Path, concurrency: int, timers: dict,
                    with_file: bool) -> dict:
    """(e) The OTLP exporter with and without a ``file`` exporter beside it,
    under the full-path load, every trace kept: each exporter's spans/s (from the first
    request sent to the last span it exported) and the clients' request
    latency. The file exporter's JSON encoding must not hold back the OTLP
    exporter or the receivers."""
    sink.call("Mode", b"parse")
    sink.call("Reset")
    name = "serve-exporters-" + ("otlp+file" if with_file else "otlp")
    out_file = workdir / f"{name}.jsonl"
    # every trace kept: both exporters carry the whole load
    serve = Serve(workdir, name, timers, sink.endpoint, 1, [{"name": "all", "type": "always_sample"}],
                  out_file if with_file else None)
    progress: dict[str, list] = {}
    halt = threading.Event()

    def poll() -> None:
        # progress seen from outside (the sink, the file), not from serve's
        # /metrics, which a busy event loop may not answer
        while not halt.is_set():
            now = time.monotonic()
            seen = {"otlp": float(sink.call("Stats").get("spans") or 0)}
            if with_file and out_file.exists():
                seen["file"] = float(out_file.stat().st_size)   # bytes, counted in spans below
            for exp, n in seen.items():
                p = progress.setdefault(exp, [0.0, now])
                if n > p[0]:
                    progress[exp] = [n, now]
            halt.wait(0.25)

    try:
        serve.wait_ready()
        t0 = time.monotonic()
        poller = threading.Thread(target=poll, daemon=True)
        poller.start()
        r = send(serve.endpoint, reqs, concurrency)

        def drained() -> bool:
            m = serve.metrics()
            q = metric_sum(m, "traceo_sampler_exporter_queue_bytes")
            bt = metric_sum(m, "traceo_sampler_buffer_traces")
            return (bt is None or bt == 0) and (q is None or q == 0)

        wait_stable(lambda: sink.call("Stats"), 3.0, 300.0, drained)
        if with_file:   # and until the file stops growing
            wait_stable(lambda: {"spans": out_file.stat().st_size if out_file.exists() else 0},
                        3.0, 300.0)
        halt.set()
        poller.join(2)
        serve.stop(60)
    except BaseException:
        halt.set()
        serve.stop(10)
        raise
    exporters = {}
    if "file" in progress:   # what the file held when it last grew, in spans
        with open(out_file, "rb") as fh:
            progress["file"][0] = float(fh.read(int(progress["file"][0])).count(b'"spanId":'))
    for exp, (n, t_last) in sorted(progress.items()):
        secs = max(t_last - t0, 1e-9)
        exporters[exp] = {"spans": n, "seconds": round(secs, 2), "spans_per_s": round(n / secs, 1)}
    return {"spans_per_s_in": r["spans_per_s"], "rpc_latency_ms": r["rpc_latency_ms"],
            "errors": r["errors"], "exporters": exporters}


def otelcol_binary() -> str | None:
    """The Collector binary scripts/otelcol.sh builds, when it is there
    (TRACEO_OTELCOL_BIN, else the script's path); never built here."""
    given = os.environ.get("TRACEO_OTELCOL_BIN")
    if given:
        return given if os.path.isfile(given) else None
    try:
        out = subprocess.run([str(ROOT / "scripts" / "otelcol.sh"), "path"], check=True,
                             stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
                             timeout=30).stdout.strip().splitlines()
    except (OSError, subprocess.SubprocessError):
        return None
    return out[-1] if out and os.path.isfile(out[-1]) else None


def phase_collector(binary: str, reqs, sink: SinkProc, workdir: Path, concurrency: int,
                    decision_wait: str) -> dict:
    """The peer row: the OpenTelemetry Collector's tail_sampling on the same
    load and policies (errors, latency 1 s, 10 % of the rest), exporting to
    the same sink. It decides decision_wait after a trace's first span."""
    sink.call("Mode", b"parse")
    sink.call("Reset")
    port = free_port()
    cfg = {
        "receivers": {"otlp": {"protocols": {"grpc": {"endpoint": f"127.0.0.1:{port}",
                                                      "max_recv_msg_size_mib": 64}}}},
        "processors": {"tail_sampling": {"decision_wait": decision_wait, "num_traces": 200000,
                                         "policies": POLICIES}},
        "exporters": {"otlp": {"endpoint": sink.endpoint, "tls": {"insecure": True},
                               "compression": "none"}},
        "service": {"telemetry": {"metrics": {"level": "none"}},
                    "pipelines": {"traces": {"receivers": ["otlp"], "processors": ["tail_sampling"],
                                             "exporters": ["otlp"]}}},
    }
    path = workdir / "otelcol.yaml"
    path.write_text(_to_yaml(cfg))
    proc = _spawn([binary, "--config", str(path)], workdir, "otelcol")
    try:
        deadline = time.monotonic() + 60
        while not _port_open(port):
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"collector did not start:\n{tail(workdir / 'otelcol.stderr')}")
            time.sleep(0.1)
        pid = proc.pid
        sampler = RssSampler(pid)
        sampler.start()
        cpu0 = cpu_seconds(pid)
        r = send(f"127.0.0.1:{port}", reqs, concurrency)
        cpu_ingest = cpu_seconds(pid) - cpu0
        # nothing reaches the sink before decision_wait has passed
        time.sleep(Duration_s(decision_wait))
        final, waited, settled = wait_stable(lambda: sink.call("Stats"), 3.0, 120.0)
        cpu_total = cpu_seconds(pid) - cpu0
        peak = sampler.stop()
        stats = sink.call("Stats", b"traces")
    finally:
        stop_process(proc, 30)
    spans = r["spans"] or 1
    return {
        "binary": binary,
        "spans_per_s_in": r["spans_per_s"], "elapsed_s": r["elapsed_s"], "errors": r["errors"],
        "client_cpu_s": r["client_cpu_s"],
        "cpu_s_ingest": round(cpu_ingest, 3), "cpu_s_total": round(cpu_total, 3),
        "cpu_s_per_million_spans": round(cpu_total / spans * 1e6, 3),
        "cores_busy_ingest": round(cpu_ingest / r["elapsed_s"], 3) if r["elapsed_s"] else None,
        "peak_rss_mib": round(peak / 2**20, 1), "sink_settled": settled,
        "sink_spans": final.get("spans"), "check": check_kept(reqs, stats),
    }


def Duration_s(text: str) -> float:
    units = {"ms": 0.001, "s": 1.0, "m": 60.0}
    for u in ("ms", "s", "m"):
        if text.endswith(u):
            return float(text[: -len(u)]) * units[u]
    return float(text)


def _serve_metric_summary(m: list | None) -> dict | None:
    if m is None:
        return None
    p = "traceo_sampler_"
    return {
        "spans_received": metric_sum(m, p + "spans_received_total"),
        "spans_exported": metric_sum(m, p + "spans_exported_total"),
        "traces_decided": metric_by(m, p + "traces_decided_total", "decision", "policy", "trigger"),
        "late_spans": metric_by(m, p + "late_spans_total", "decision"),
        "invalid_spans": metric_by(m, p + "invalid_spans_total", "reason"),
        "orphan_spans": metric_sum(m, p + "orphan_spans_total"),
        "traces_without_root": metric_sum(m, p + "traces_without_root_total"),
        "clock_skew_spans": metric_sum(m, p + "clock_skew_spans_total"),
        "duplicate_spans": metric_sum(m, p + "duplicate_spans_total"),
        "export_failures": metric_sum(m, p + "export_failures_total"),
        "export_dropped_spans": metric_sum(m, p + "export_dropped_spans_total"),
        "receiver_requests": metric_by(m, p + "receiver_requests_total", "receiver", "outcome"),
        "buffer_spans": metric_sum(m, p + "buffer_spans"),
        "buffer_traces": metric_sum(m, p + "buffer_traces"),
    }


def phase_memory(reqs, sink: SinkProc, workdir: Path, concurrency: int, span_body_bytes: float,
                 request_bytes_per_span: float, memory_limit_mib: int, workers: int = 1) -> dict:
    sink.call("Mode", b"discard")
    sink.call("Reset")
    timers = {"decision_wait": "5m", "root_wait": "5m", "idle_timeout": "5m",
              "memory_limit_mib": memory_limit_mib}
    serve = Serve(workdir, f"serve-memory-w{workers}", timers, sink.endpoint, workers)
    try:
        serve.wait_ready()
        pid = serve.proc.pid
        time.sleep(1.0)
        rss_idle = rss_bytes(pid)
        m0 = serve.metrics()
        r = send(serve.endpoint, reqs, concurrency)
        n = r["spans"]

        def buffered() -> float | None:
            return metric_sum(serve.metrics(), "traceo_sampler_buffer_spans")

        # wait until the buffer holds what was sent (or stops growing)
        t0 = time.monotonic()
        last, last_change = None, time.monotonic()
        while time.monotonic() - t0 < 60:
            b = buffered()
            if b is not None and b >= n:
                break
            if b != last:
                last, last_change = b, time.monotonic()
            elif time.monotonic() - last_change > 3:
                break
            time.sleep(0.25)
        time.sleep(0.5)
        rss_full = rss_bytes(pid)
        m = serve.metrics()
        sink_got = sink.call("Stats")
        stop = serve.stop(120)
        stop["sink_requests_after_drain"] = sink.call("Stats").get("requests")
    except BaseException:
        serve.stop(10)
        raise
    buf_spans = metric_sum(m, "traceo_sampler_buffer_spans")
    buf_bytes = metric_sum(m, "traceo_sampler_buffer_bytes")
    per_span = (rss_full - rss_idle) / n if n else None
    return {
        "spans_sent": n,
        "send_errors": r["errors"],
        "rss_idle_mib": round(rss_idle / 2**20, 1),
        "rss_loaded_mib": round(rss_full / 2**20, 1),
        "rss_per_buffered_span_bytes": round(per_span, 1) if per_span is not None else None,
        "encoded_span_bytes": round(span_body_bytes, 1),
        "encoded_request_bytes_per_span": round(request_bytes_per_span, 1),
        "rss_over_encoded_span_bytes": round(per_span / span_body_bytes, 3) if per_span else None,
        "metrics_buffer_spans": buf_spans,
        "metrics_buffer_bytes": buf_bytes,
        "metrics_buffer_traces": metric_sum(m, "traceo_sampler_buffer_traces"),
        "metrics_buffer_bytes_per_span": round(buf_bytes / buf_spans, 1) if buf_spans and buf_bytes else None,
        "metrics_buffer_spans_before": metric_sum(m0, "traceo_sampler_buffer_spans"),
        "sink_requests_before_shutdown": sink_got.get("requests"),
        "shutdown": stop,
        "workers": workers,
    }


# ---------------------------------------------------------------- main

def get_load(args, seed: int, n_spans: int):
    """The encoded load: from the cache when built before with the same parameters and
    the same loadgen package sources (timestamps moved to now), else built (and cached)."""
    key = json.dumps([seed, n_spans, args.spans_per_request, args.services, args.error_rate])
    sources = b"".join(p.read_bytes() for p in sorted(Path(loadgen.__file__).parent.glob("*.py")))
    digest = hashlib.sha1(key.encode() + sources).hexdigest()[:20]
    path = Path(args.cache) / f"load-{digest}.pickle" if not args.no_cache else None
    if path is not None and path.is_file():
        try:
            with open(path, "rb") as f:
                reqs = pickle.load(f)
            log(f"load of {reqs.n_spans} spans (seed {seed}) from cache {path}")
            return reqs.retimed(), True
        except Exception as exc:  # noqa: BLE001 - a bad cache entry is rebuilt
            log(f"cache entry {path} unusable ({exc}); rebuilding")
    log(f"building {n_spans} spans of load (seed {seed})")
    gen = loadgen.TraceGenerator(seed, services=args.services, error_rate=args.error_rate)
    reqs = gen.build_requests(n_spans=n_spans, spans_per_request_target=args.spans_per_request)
    if path is not None:
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            tmp = path.with_suffix(".tmp")
            with open(tmp, "wb") as f:
                pickle.dump(reqs, f, protocol=pickle.HIGHEST_PROTOCOL)
            tmp.replace(path)
        except OSError as exc:
            log(f"cannot cache the load in {path}: {exc}")
    return reqs, False


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--spans", type=int, default=None, help="spans in the load (default 300000, --quick 50000)")
    ap.add_argument("--quick", action="store_true", help="small load, one ceiling run")
    ap.add_argument("--concurrency", type=int, default=8, help="requests in flight (default %(default)s)")
    ap.add_argument("--spans-per-request", type=int, default=512)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--services", type=int, default=8)
    ap.add_argument("--error-rate", type=float, default=0.05)
    ap.add_argument("--memory-spans", type=int, default=None, help="spans buffered in phase (c) (default: --spans)")
    ap.add_argument("--decision-wait", default="30s", help="phase (b) sampler.decision_wait (default %(default)s)")
    ap.add_argument("--root-wait", default="2s", help="phase (b) sampler.root_wait (default %(default)s)")
    ap.add_argument("--idle-timeout", default="5s", help="phase (b) sampler.idle_timeout (default %(default)s)")
    ap.add_argument("--cache", default=str(Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache"))
                                         / "traceo-sampler-bench"),
                    help="directory keeping built loads between runs (default %(default)s)")
    ap.add_argument("--no-cache", action="store_true", help="always build the load")
    ap.add_argument("--memory-limit-mib", type=int, default=4096, help="serve's memory limit in phase (c)")
    ap.add_argument("--skip", action="append", default=[],
                    choices=("ceiling", "full", "memory", "collector", "ottl", "exporters", "wal", "control"),
                    help="skip a phase (repeatable)")
    ap.add_argument("--wal-rounds", type=int, default=2,
                    help="phase (f): rounds of off/always/interval/never (default %(default)s)")
    ap.add_argument("--workdir", default=None, help="keep configs and logs here (default: a temp dir, removed)")
    ap.add_argument("--out", default=None, help="also write the JSON to this file")
    ap.add_argument("--workers", default="1,2",
                    help="service.workers values of phases (b) and (c), comma-separated (default %(default)s)")
    ap.add_argument("--rate", type=float, default=None,
                    help="phase (b): pace the load at this many spans/s (default: as fast as it goes); "
                         "CPU per span of 1 vs N workers without the machine saturated")
    ap.add_argument("--channels", type=int, default=4,
                    help="client TCP connections the load is spread over (default %(default)s)")
    ap.add_argument("--serve-src", default=None,
                    help="run serve from this src/ (another build), e.g. the previous commit's")
    args = ap.parse_args(argv)
    global CHANNELS, SERVE_SRC
    CHANNELS = args.channels
    if args.serve_src:
        SERVE_SRC = Path(args.serve_src).resolve()
    worker_counts = [int(w) for w in args.workers.split(",") if w.strip()]

    n_spans = args.spans or (50_000 if args.quick else 300_000)
    mem_spans = args.memory_spans or n_spans
    reps = 2 if args.quick else 3
    tmp = None
    if args.workdir:
        workdir = Path(args.workdir).resolve()
        workdir.mkdir(parents=True, exist_ok=True)
    else:
        tmp = tempfile.TemporaryDirectory(prefix="traceo-bench-")
        workdir = Path(tmp.name)

    result: dict = {
        "benchmark": "traceo-sampler",
        "when": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version(),
                    "platform": platform.platform(),
                    "load_avg_at_start": [round(x, 2) for x in os.getloadavg()]},
        "params": {"spans": n_spans, "memory_spans": mem_spans, "quick": args.quick,
                   "concurrency": args.concurrency, "spans_per_request": args.spans_per_request,
                   "seed": args.seed, "services": args.services, "error_rate": args.error_rate,
                   "policies": POLICIES, "workers": worker_counts, "channels": args.channels,
                   "rate_spans_per_s": args.rate},
        "serve_src": str(SERVE_SRC),
        "load": None, "ceiling": None, "full_path": None, "memory": None, "exporters": None,
        "full_path_by_workers": {}, "memory_by_workers": {}, "collector": None, "full_path_ottl": None,
        "control_two_processes": None,
        "wal": None,
        "decision_latency_s": None, "ratios": {}, "errors": [],
    }
    if psutil is None:
        result["errors"].append("psutil is not installed: CPU and RSS figures are unavailable")

    sinks: list[SinkProc] = []
    try:
        t0 = time.perf_counter()
        reqs, cached = get_load(args, args.seed, n_spans)
        build_s = time.perf_counter() - t0
        span_body = reqs.mean_span_bytes()
        req_per_span = reqs.n_bytes / reqs.n_spans
        result["load"] = {**reqs.stats(), "build_s": round(build_s, 2), "from_cache": cached,
                          "encoded_span_bytes_mean": round(span_body, 1),
                          "encoded_request_bytes_per_span": round(req_per_span, 1)}
        if mem_spans == n_spans:
            mem_reqs = reqs
        else:
            mem_reqs, _ = get_load(args, args.seed + 1, mem_spans)
        log(f"load: {reqs.stats()} in {build_s:.1f} s")

        sink = SinkProc(workdir, "discard")
        sinks.append(sink)

        if "ceiling" not in args.skip:
            try:
                result["ceiling"] = phase_ceiling(reqs, sink, args.concurrency, reps,
                                                  1.5 if args.quick else 3.0)
            except Exception as exc:  # noqa: BLE001
                result["errors"].append(f"ceiling: {exc}")
                log(f"ceiling failed: {exc}")

        if psutil is not None and "full" not in args.skip:
            try:
                timers = {"decision_wait": args.decision_wait, "root_wait": args.root_wait,
                          "idle_timeout": args.idle_timeout}
                for w in worker_counts:
                    full, m = phase_full(reqs, sink, workdir, args.concurrency, timers, w,
                                         rate=args.rate)
                    full["decision_latency_s"] = histogram_quantiles(
                        m, "traceo_sampler_decision_latency_seconds")
                    result["full_path_by_workers"][str(w)] = full
                    if result["full_path"] is None:
                        result["full_path"] = full
                        result["decision_latency_s"] = full["decision_latency_s"]
                    log(f"full path, {w} worker(s): {full['spans_per_s_in']:.0f} spans/s, "
                        f"{full['serve_cpu_s_per_million_spans']} CPU s per million spans")
                    if w == worker_counts[0] and "ottl" not in args.skip:
                        # right after its baseline, so both see the same machine
                        ot, _ = phase_full(reqs, sink, workdir, args.concurrency, timers, w,
                                           POLICIES + [OTTL_POLICY], "-ottl")
                        ot["extra_policy"] = OTTL_POLICY
                        result["full_path_ottl"] = ot
                        result["ratios"]["full_path_ottl_over_full_path_spans_per_s"] = round(
                            ot["spans_per_s_in"] / full["spans_per_s_in"], 3)
                        result["ratios"]["full_path_ottl_over_full_path_cpu_s_per_million_spans"] = \
                            round(ot["serve_cpu_s_per_million_spans"]
                                  / full["serve_cpu_s_per_million_spans"], 3)
                        log(f"full path + ottl_condition, {w} worker(s): "
                            f"{ot['spans_per_s_in']:.0f} spans/s, "
                            f"{ot['serve_cpu_s_per_million_spans']} CPU s per million spans")
            except Exception as exc:  # noqa: BLE001
                result["errors"].append(f"full_path: {exc}")
                log(f"full path failed: {exc}")

        if psutil is not None and "control" not in args.skip and 2 in worker_counts:
            try:
                timers = {"decision_wait": args.decision_wait, "root_wait": args.root_wait,
                          "idle_timeout": args.idle_timeout}
                result["control_two_processes"] = ctl = phase_control(
                    reqs, sink, workdir, args.concurrency, timers, args.rate)
                log(f"control, two independent serves: {ctl['spans_per_s_in']:.0f} spans/s, "
                    f"{ctl['serve_cpu_s_per_million_spans']} CPU s per million spans")
            except Exception as exc:  # noqa: BLE001
                result["errors"].append(f"control: {exc}")
                log(f"control phase failed: {exc}")

        if psutil is not None and "wal" not in args.skip:
            try:
                timers = {"decision_wait": args.decision_wait, "root_wait": args.root_wait,
                          "idle_timeout": args.idle_timeout}
                result["wal"] = phase_wal(reqs, sink, workdir, args.concurrency, timers,
                                          args.wal_rounds)
                result["ratios"].update(result["wal"]["ratios"])
            except Exception as exc:  # noqa: BLE001
                result["errors"].append(f"wal: {exc}")
                log(f"wal phase failed: {exc}")

        if "exporters" not in args.skip:
            try:
                timers = {"decision_wait": args.decision_wait, "root_wait": args.root_wait,
                          "idle_timeout": args.idle_timeout}
                ex = {k: phase_exporters(reqs, sink, workdir, args.concurrency, timers, f)
                      for k, f in (("otlp_alone", False), ("otlp_and_file", True))}
                alone = ex["otlp_alone"]["exporters"].get("otlp", {}).get("spans_per_s")
                beside = ex["otlp_and_file"]["exporters"].get("otlp", {}).get("spans_per_s")
                ex["otlp_rate_beside_file_over_alone"] = (
                    round(beside / alone, 3) if alone and beside else None)
                result["exporters"] = ex
                log(f"exporters: {json.dumps(ex)}")
            except Exception as exc:  # noqa: BLE001
                result["errors"].append(f"exporters: {exc}")
                log(f"exporters phase failed: {exc}")

        binary = otelcol_binary() if "collector" not in args.skip else None
        if psutil is not None and binary is not None:
            try:
                result["collector"] = phase_collector(binary, reqs, sink, workdir, args.concurrency,
                                                      args.decision_wait)
                log(f"collector: {result['collector']['spans_per_s_in']:.0f} spans/s, "
                    f"{result['collector']['cpu_s_per_million_spans']} CPU s per million spans")
            except Exception as exc:  # noqa: BLE001
                result["errors"].append(f"collector: {exc}")
                log(f"collector failed: {exc}")

        if psutil is not None and "memory" not in args.skip:
            try:
                mb = mem_reqs.mean_span_bytes()
                for w in worker_counts:
                    mem = phase_memory(mem_reqs, sink, workdir, args.concurrency, mb,
                                       mem_reqs.n_bytes / mem_reqs.n_spans, args.memory_limit_mib, w)
                    result["memory_by_workers"][str(w)] = mem
                    if result["memory"] is None:
                        result["memory"] = mem
            except Exception as exc:  # noqa: BLE001
                result["errors"].append(f"memory: {exc}")
                log(f"memory phase failed: {exc}")
    except Exception as exc:  # noqa: BLE001
        result["errors"].append(f"harness: {exc!r}")
        log(f"harness failed: {exc!r}")
    finally:
        for s in sinks:
            with contextlib.suppress(Exception):
                s.stop()
        _kill_children()

    c, f, mem = result["ceiling"], result["full_path"], result["memory"]
    if c and f and c.get("spans_per_s"):
        result["ratios"]["full_path_over_ceiling_spans_per_s"] = round(f["spans_per_s_in"] / c["spans_per_s"], 4)
    if mem and mem.get("rss_over_encoded_span_bytes") is not None:
        result["ratios"]["rss_per_buffered_span_over_encoded_span_bytes"] = mem["rss_over_encoded_span_bytes"]
        result["ratios"]["rss_per_buffered_span_over_request_bytes_per_span"] = round(
            mem["rss_per_buffered_span_bytes"] / mem["encoded_request_bytes_per_span"], 3)
    fw = result["full_path_by_workers"]
    if c and c.get("spans_per_s"):
        for w, f in fw.items():
            result["ratios"][f"full_path_workers_{w}_over_ceiling_spans_per_s"] = round(
                f["spans_per_s_in"] / c["spans_per_s"], 4)
    base = fw.get(str(worker_counts[0])) if worker_counts else None
    for w, f in fw.items():
        if base is None or f is base:
            continue
        b0 = worker_counts[0]
        result["ratios"][f"workers_{w}_over_{b0}_spans_per_s"] = round(
            f["spans_per_s_in"] / base["spans_per_s_in"], 3)
        result["ratios"][f"workers_{w}_over_{b0}_cpu_s_per_million_spans"] = round(
            f["serve_cpu_s_per_million_spans"] / base["serve_cpu_s_per_million_spans"], 3)
        fwd = f.get("forwarded_spans_between_workers")
        if fwd:
            # the CPU the group spends beyond one worker's, per span handed over
            extra = f["serve_cpu_s_total"] - base["serve_cpu_s_per_million_spans"] * f["spans_sent"] / 1e6
            result["ratios"][f"workers_{w}_extra_cpu_us_per_forwarded_span"] = round(extra / fwd * 1e6, 3)
    ctl = result.get("control_two_processes")
    if ctl and base is not None:
        # two busy processes without any hand-off, over one: the machine's
        # share of the group's ratio
        result["ratios"]["control_two_processes_over_1_cpu_s_per_million_spans"] = round(
            ctl["serve_cpu_s_per_million_spans"] / base["serve_cpu_s_per_million_spans"], 3)
        if fw.get("2"):
            result["ratios"]["workers_2_over_control_cpu_s_per_million_spans"] = round(
                fw["2"]["serve_cpu_s_per_million_spans"] / ctl["serve_cpu_s_per_million_spans"], 3)
    col = result.get("collector")
    if col:
        for w, f in fw.items():
            result["ratios"][f"workers_{w}_over_collector_spans_per_s"] = round(
                f["spans_per_s_in"] / col["spans_per_s_in"], 3)
            result["ratios"][f"workers_{w}_over_collector_cpu_s_per_million_spans"] = round(
                f["serve_cpu_s_per_million_spans"] / col["cpu_s_per_million_spans"], 3)
    for w, mem in result["memory_by_workers"].items():
        if mem.get("rss_per_buffered_span_bytes") is not None:
            result["ratios"][f"workers_{w}_rss_per_buffered_span_bytes"] = mem["rss_per_buffered_span_bytes"]
    result["machine"]["load_avg_at_end"] = [round(x, 2) for x in os.getloadavg()]

    text = json.dumps(result, indent=2)
    print(text, flush=True)
    if args.out:
        Path(args.out).write_text(text + "\n")
    if tmp is not None:
        with contextlib.suppress(Exception):
            tmp.cleanup()
    return 1 if result["errors"] else 0


if __name__ == "__main__":
    sys.exit(main())
