"""Differential test against the real OpenTelemetry Collector v0.161.0
(issue 11): the same Collector config file, the same 10 000+ traces, fed to
the Collector's tail_sampling and to ``traceo-sampler serve -c`` at once;
both export to one capturing OTLP sink, which tells them apart by a header
the file sets from ``${env:SOURCE}``.

* deterministic and hashed policies (status_code, latency with and without
  an upper bound, string_attribute exact and regex, numeric_attribute,
  boolean_attribute, span_count, trace_state, probabilistic with a salt,
  and, not, drop, invert_match, and ottl_condition / trace_flags when this
  build has them): the kept trace IDs are identical;
* rate_limiting and bytes_limiting: the kept spans agree within 5 %.

Each trace arrives whole in one request (so neither side can decide on
part of it), spans of a trace share one tracestate (Traceo's trace_state
policy reads the first one it saw; README, mode table). About a minute in
all: three runs of a Collector and a Traceo process each.
"""
from __future__ import annotations

import os
import random
import subprocess
import sys
import tempfile
import threading
import time
from concurrent import futures
from pathlib import Path

import grpc
import pytest
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

from support.otelcol import Otelcol
from support.procs import free_ports, port_open
from traceo_sampler.policies import REGISTRY

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
EXPORT = "/opentelemetry.proto.collector.trace.v1.TraceService/Export"
N_TRACES = 10_000
SERVICES = ["checkout", "cart", "search", "frontend", "payments"]
ROUTES = ["/api/users", "/health", "/api/orders/17", "/metrics", "/v1/name/abc", "/api/cart"]
CODES = [200, 200, 200, 201, 404, 500, 503]
MS = 1_000_000


class Sink:
    """One OTLP gRPC server; trace IDs and span/byte counts per ``x-source``."""

    def __init__(self):
        self.lock = threading.Lock()
        self.traces: dict[str, set[bytes]] = {}
        self.spans: dict[str, int] = {}
        self.last = time.monotonic()
        self.server = grpc.server(futures.ThreadPoolExecutor(max_workers=8),
                                  options=[("grpc.max_receive_message_length", 64 << 20)])
        handler = grpc.method_handlers_generic_handler(
            "opentelemetry.proto.collector.trace.v1.TraceService",
            {"Export": grpc.unary_unary_rpc_method_handler(self._export)})
        self.server.add_generic_rpc_handlers((handler,))
        self.port = self.server.add_insecure_port("127.0.0.1:0")
        self.server.start()

    def _export(self, raw, context):
        md = dict(context.invocation_metadata())
        src = md.get("x-source", "?")
        req = ExportTraceServiceRequest.FromString(raw)
        ids = set()
        n = 0
        for rs in req.resource_spans:
            for ss in rs.scope_spans:
                for sp in ss.spans:
                    ids.add(sp.trace_id)
                    n += 1
        with self.lock:
            self.traces.setdefault(src, set()).update(ids)
            self.spans[src] = self.spans.get(src, 0) + n
            self.last = time.monotonic()
        return b""

    def settle(self, quiet: float, timeout: float) -> None:
        """Wait until nothing arrived for ``quiet`` seconds."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with self.lock:
                idle = time.monotonic() - self.last
            if idle >= quiet:
                return
            time.sleep(0.2)

    def stop(self):
        self.server.stop(0)


def make_traces(seed: int, n: int) -> list[tuple[str, list[dict]]]:
    """[(service, spans)]: a latency tail, errors, attributes, tracestates,
    trace flags, span events; children inside their root's interval."""
    rnd = random.Random(seed)
    out = []
    base = 1_700_000_000_000_000_000
    for _ in range(n):
        tid = rnd.randbytes(16)
        svc = rnd.choice(SERVICES)
        nspans = rnd.choice([1, 2, 3, 3, 4, 5, 6, 8])
        dur = int(rnd.lognormvariate(4.0, 1.4) * MS)           # median ~55 ms, tail > 1 s
        start = base + rnd.randrange(10**9)
        route = rnd.choice(ROUTES)
        code = rnd.choice(CODES)
        state = rnd.choice(["", "", "vendor=gold", "vendor=silver", "vendor=gold,ot=th:8"])
        flags = 0x100 | (1 if rnd.random() < 0.5 else 0)
        tenant = rnd.choice(["a", "b", "c"])
        spans = []
        root_id = rnd.randbytes(8)
        for i in range(nspans):
            sid = root_id if i == 0 else rnd.randbytes(8)
            if i == 0:
                s, e = start, start + dur
            else:
                s = start + rnd.randrange(max(1, dur // 2))
                e = s + rnd.randrange(max(1, (start + dur - s)))
            attrs = {"tenant": tenant}
            if i == 0:
                attrs["http.route"] = route
                attrs["http.status_code"] = code if rnd.random() < 0.9 else float(code)
            if rnd.random() < 0.02:
                attrs["app.force_sample"] = True
            if rnd.random() < 0.1:
                attrs["db.system"] = "postgres"
            span = {"trace_id": tid, "span_id": sid, "parent": b"" if i == 0 else root_id,
                    "name": f"op{i}", "start": s, "end": e, "trace_state": state, "flags": flags,
                    "status": 2 if rnd.random() < 0.015 else 0, "attrs": attrs,
                    "events": ["exception"] if rnd.random() < 0.03 else []}
            spans.append(span)
        out.append((svc, spans))
    return out


def encode(batch: list[tuple[str, list[dict]]]) -> bytes:
    req = ExportTraceServiceRequest()
    by_svc: dict[str, list] = {}
    for svc, spans in batch:
        by_svc.setdefault(svc, []).append(spans)
    for svc, traces in by_svc.items():
        rs = req.resource_spans.add()
        rs.resource.attributes.add(key="service.name").value.string_value = svc
        ss = rs.scope_spans.add()
        ss.scope.name = "difftest"
        for spans in traces:
            for s in spans:
                sp = ss.spans.add(trace_id=s["trace_id"], span_id=s["span_id"],
                                  parent_span_id=s["parent"], name=s["name"],
                                  start_time_unix_nano=s["start"], end_time_unix_nano=s["end"],
                                  trace_state=s["trace_state"], flags=s["flags"])
                if s["status"]:
                    sp.status.code = s["status"]
                for k, v in s["attrs"].items():
                    a = sp.attributes.add(key=k)
                    if isinstance(v, bool):
                        a.value.bool_value = v
                    elif isinstance(v, int):
                        a.value.int_value = v
                    elif isinstance(v, float):
                        a.value.double_value = v
                    else:
                        a.value.string_value = v
                for name in s["events"]:
                    sp.events.add(name=name, time_unix_nano=s["start"])
    return req.SerializeToString()


DETERMINISTIC_POLICIES = """\
      - {name: errors, type: status_code, status_code: {status_codes: [ERROR]}}
      - {name: slow, type: latency, latency: {threshold_ms: 1000}}
      - {name: band, type: latency, latency: {threshold_ms: 300, upper_threshold_ms: 320}}
      - name: orders
        type: string_attribute
        string_attribute: {key: http.route, values: ["/api/orders/.+", "^/v1/name/"], enabled_regex_matching: true}
      - {name: server-errors, type: numeric_attribute, numeric_attribute: {key: http.status_code, min_value: 500, max_value: 599}}
      - {name: forced, type: boolean_attribute, boolean_attribute: {key: app.force_sample, value: true}}
      - {name: big, type: span_count, span_count: {min_spans: 8}}
      - {name: gold, type: trace_state, trace_state: {key: vendor, values: [gold]}}
      - {name: sample, type: probabilistic, probabilistic: {sampling_percentage: 7, hash_salt: "diff-salt"}}
      - {name: unsalted, type: probabilistic, probabilistic: {sampling_percentage: 3}}
      - name: tenant-a-but-not-fast
        type: and
        and:
          and_sub_policy:
            - {name: tenant-a, type: string_attribute, string_attribute: {key: tenant, values: [a]}}
            - {name: not-fast, type: not, not: {not_sub_policy: {name: fast, type: latency, latency: {threshold_ms: 150}}}}
      - name: not-users-some
        type: and
        and:
          and_sub_policy:
            - {name: no-users, type: string_attribute, string_attribute: {key: http.route, values: [/api/users], invert_match: true}}
            - {name: some, type: probabilistic, probabilistic: {sampling_percentage: 20}}
      - name: no-health
        type: drop
        drop:
          drop_sub_policy:
            - {name: health, type: string_attribute, string_attribute: {key: http.route, values: [/health, /metrics]}}
"""
OTTL_POLICY = """\
      - name: postgres-or-exception
        type: ottl_condition
        ottl_condition:
          error_mode: ignore
          span: ['attributes["db.system"] == "postgres" and attributes["tenant"] == "b"']
          spanevent: ['name == "exception"']
"""
FLAGS_POLICY = """\
      - name: flagged-c
        type: and
        and:
          and_sub_policy:
            - {name: tenant-c, type: string_attribute, string_attribute: {key: tenant, values: [c]}}
            - {name: flagged, type: trace_flags}
            - {name: some-c, type: probabilistic, probabilistic: {sampling_percentage: 30}}
"""


def collector_file(policies: str, decision_wait: str = "2s", num_shards: int = 1) -> str:
    """One Collector config, as a user has it; ports and the source name
    come from the environment of whichever program reads it."""
    return f"""\
receivers:
  otlp:
    protocols:
      grpc:
        endpoint: 127.0.0.1:${{env:RECV_PORT}}
        max_recv_msg_size_mib: 64
processors:
  tail_sampling:
    decision_wait: {decision_wait}
    num_traces: 100000
    num_shards: {num_shards}
    expected_new_traces_per_sec: 5000
    decision_cache: {{sampled_cache_size: 200000, non_sampled_cache_size: 200000}}
    policies:
{policies}  batch: {{}}
exporters:
  otlp:
    endpoint: 127.0.0.1:${{env:SINK_PORT}}
    tls: {{insecure: true}}
    headers: {{x-source: "${{env:SOURCE}}"}}
    sending_queue: {{queue_size: 5000}}
service:
  # no self-metrics server (it would need a port of its own); Traceo: not read
  telemetry: {{metrics: {{level: none}}}}
  pipelines:
    traces:
      receivers: [otlp]
      # batch: the Collector forwards each kept trace as its own request,
      # which would overflow its sending queue (Traceo: not needed, skipped)
      processors: [tail_sampling, batch]
      exporters: [otlp]
"""


class Traceo:
    def __init__(self, text: str, env: dict, port: int):
        self.dir = Path(tempfile.mkdtemp(prefix="traceo-diff-"))
        (self.dir / "otelcol.yaml").write_text(text)
        self.port = port
        self.env = {**os.environ, **env,
                    "PYTHONPATH": str(ROOT / "src") + os.pathsep + os.environ.get("PYTHONPATH", "")}

    def __enter__(self):
        self.err = open(self.dir / "stderr.log", "w+")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "traceo_sampler", "serve", "-c", str(self.dir / "otelcol.yaml")],
            stdout=subprocess.DEVNULL, stderr=self.err, env=self.env, cwd=self.dir)
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"traceo exited {self.proc.returncode}:\n{self.log()}")
            if port_open("127.0.0.1", self.port, 0.2):
                return self
            time.sleep(0.1)
        raise RuntimeError("traceo not listening:\n" + self.log())

    def log(self) -> str:
        self.err.flush()
        return (self.dir / "stderr.log").read_text()

    def __exit__(self, *exc):
        self.proc.terminate()
        try:
            self.proc.wait(30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(10)
        self.err.close()


def send(call, raw: bytes) -> None:
    """As an OTLP client: retry while the server pushes back."""
    for _ in range(100):
        try:
            call(raw, timeout=30)
            return
        except grpc.RpcError as exc:
            if exc.code() not in (grpc.StatusCode.RESOURCE_EXHAUSTED, grpc.StatusCode.UNAVAILABLE):
                raise
            time.sleep(0.05)
    raise AssertionError("pushed back for 5 s")


def run_both(text: str, traces, per_request: int, pace_s: float, decision_wait: float):
    """Feed the same requests to both; return the sink."""
    sink = Sink()
    col_port, tr_port = free_ports(2)
    try:
        col_env = {"RECV_PORT": str(col_port), "SINK_PORT": str(sink.port), "SOURCE": "otelcol"}
        tr_env = {"RECV_PORT": str(tr_port), "SINK_PORT": str(sink.port), "SOURCE": "traceo"}
        with Otelcol(text=text, env=col_env) as col, Traceo(text, tr_env, tr_port) as tr:
            chans = [grpc.insecure_channel(f"127.0.0.1:{p}",
                                           options=[("grpc.max_send_message_length", 64 << 20)])
                     for p in (col_port, tr_port)]
            calls = [c.unary_unary(EXPORT) for c in chans]
            # warm both up (connections, first-request paths) with a request
            # carrying no spans, so the first traces arrive on a warm path
            for call in calls:
                send(call, b"")
            time.sleep(1.0)
            t0 = time.monotonic()
            for i in range(0, len(traces), per_request):
                raw = encode(traces[i:i + per_request])
                for call in calls:
                    send(call, raw)
                if pace_s:
                    # a steady arrival rate: the limiters see the same traffic
                    due = t0 + (i // per_request + 1) * pace_s
                    delay = due - time.monotonic()
                    if delay > 0:
                        time.sleep(delay)
            time.sleep(decision_wait + 1.5)
            sink.settle(quiet=3.0, timeout=60)
            for c in chans:
                c.close()
            logs = (col.log(), tr.log())
    finally:
        sink.stop()
    return sink, logs


@pytest.mark.parametrize("num_shards", [1, 2])
def test_kept_trace_ids_identical_for_deterministic_and_hashed_policies(num_shards):
    """num_shards 2: two event loops in the Collector, two worker processes
    in Traceo (service.workers), each owning the traces hashed to it."""
    policies = DETERMINISTIC_POLICIES
    included = []
    if "ottl_condition" in REGISTRY:
        policies += OTTL_POLICY
        included.append("ottl_condition")
    if "trace_flags" in REGISTRY:
        policies += FLAGS_POLICY
        included.append("trace_flags")
    text = collector_file(policies, num_shards=num_shards)
    traces = make_traces(11, N_TRACES)
    sink, (col_log, tr_log) = run_both(text, traces, per_request=100, pace_s=0.0, decision_wait=2)
    col = sink.traces.get("otelcol", set())
    ours = sink.traces.get("traceo", set())
    sent = {s[0]["trace_id"] for _, s in traces}
    assert col <= sent and ours <= sent
    # a meaningful share is kept, and not everything
    assert 0.15 * N_TRACES < len(col) < 0.8 * N_TRACES, (len(col), col_log[-3000:])
    only_col = col - ours
    only_ours = ours - col
    assert not only_col and not only_ours, (
        f"{len(only_col)} kept only by the Collector, {len(only_ours)} only by Traceo "
        f"(of {len(col)}); included: {included}\n{tr_log[-3000:]}")


@pytest.mark.parametrize("policy", [
    "{name: rate, type: rate_limiting, rate_limiting: {spans_per_second: 300, burst_capacity: 6000}}",
    "{name: volume, type: bytes_limiting, bytes_limiting: {bytes_per_second: 37500, burst_capacity: 750000}}",
], ids=["rate_limiting", "bytes_limiting"])
def test_rate_limiters_keep_within_5_percent(policy):
    """10 000 traces paced over ~12 s (about 3 300 spans/s, ten times the
    limit); kept spans compared (for bytes_limiting kept spans track kept
    bytes, the traces being alike). Both decide on a 1 s tick, and whether
    the run spans n or n + 1 ticks depends on where it falls between two of
    the Collector's: one tick's refill at most, which the burst capacity
    keeps to about 3 % of what is kept (measured: within 1 %)."""
    text = collector_file(f"      - {policy}\n", decision_wait="1s")
    traces = make_traces(23, N_TRACES)
    sink, (col_log, tr_log) = run_both(text, traces, per_request=50, pace_s=0.06, decision_wait=1)
    col = sink.spans.get("otelcol", 0)
    ours = sink.spans.get("traceo", 0)
    total = sum(len(s) for _, s in traces)
    assert 0 < col < 0.5 * total, (col, total, col_log[-2000:])
    assert abs(ours - col) <= 0.05 * col, (ours, col, tr_log[-2000:])
