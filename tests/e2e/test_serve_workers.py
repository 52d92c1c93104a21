"""service.workers: one serve over several processes. The same traces are
kept as with one worker, whole; /metrics of the group is the sum of its
workers; SIGTERM drains every worker; a killed worker is restarted and what
it held is counted lost; SIGHUP reloads every worker."""
import asyncio
import collections
import json
import os
import signal
import time
import urllib.request

import grpc
import pytest
import yaml

from support_otlp import CaptureSink, make_request, trace
from support_serve import Serve
from traceo_sampler import loadgen, workers
from traceo_sampler.shard import shard_of

pytestmark = pytest.mark.e2e

POLICIES = [
    {"name": "errors", "type": "status_code", "status_code": {"status_codes": ["ERROR"]}},
    {"name": "slow", "type": "latency", "latency": {"threshold_ms": 1000}},
    {"name": "rest", "type": "probabilistic", "probabilistic": {"sampling_percentage": 15}},
]
# for the reload test: short enough to see a decision within seconds
FAST = {"root_wait": "2s", "idle_timeout": "3s", "decision_wait": "20s"}
SLOW = {"root_wait": "5m", "idle_timeout": "5m", "decision_wait": "5m"}


def _wait(pred, timeout=30):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if pred():
            return True
        time.sleep(0.1)
    return False


def _send(endpoint, reqs, concurrency=4):
    res = asyncio.run(loadgen.send(endpoint, reqs, None, None, concurrency))
    assert res["requests_failed"] == 0, res
    return res


def _kept(sink):
    out = collections.Counter()
    for tid, *_ in sink.spans():
        out[tid] += 1
    return out


def _unix_get(sock, path):
    import http.client
    import socket

    class Conn(http.client.HTTPConnection):
        def connect(self):
            self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            self.sock.connect(sock)
    c = Conn("worker", timeout=5)
    c.request("GET", path)
    return c.getresponse().read().decode()


def _metric(text, name, **labels):
    from prometheus_client.parser import text_string_to_metric_families
    return sum(s.value for fam in text_string_to_metric_families(text) for s in fam.samples
               if s.name == name and all(s.labels.get(k) == v for k, v in labels.items()))


def _run(workers, reqs):
    """Every span buffered, then SIGTERM decides every trace (5-minute timers:
    a loaded machine cannot decide a trace before its last request came, as
    2-3 s timers did under the pure twins)."""
    with CaptureSink() as sink:
        cfg = {"sampler": {**SLOW, "policies": POLICIES},
               "exporters": {"otlp": {"endpoint": sink.endpoint}},
               "service": {"workers": workers}}
        with Serve(cfg) as srv:
            _send(srv.endpoint, reqs)
            n = reqs.n_spans
            assert _wait(lambda: srv.metric("traceo_sampler_buffer_spans") == n
                         and srv.metric("traceo_sampler_spans_received_total") == n)
            st = json.loads(srv.get("/api/status"))
            text = srv.get("/metrics")
            per_worker = [_unix_get(w["admin_socket"], "/metrics")
                          for w in st.get("workers", {}).get("alive", [])]
            assert srv.stop(signal.SIGTERM) == 0
        return _kept(sink), st, text, per_worker, srv.summary()


@pytest.fixture(scope="module")
def reqs():
    return loadgen.build_requests(n_spans=20000, spans_per_request_target=256, seed=11)


def test_two_workers_keep_the_same_whole_traces_as_one(reqs):
    one, st1, _, _, sum1 = _run(1, reqs)
    two, st2, text, per_worker, sum2 = _run(2, reqs)
    assert "workers" not in st1 or st1["workers"]["count"] == 1
    assert st2["workers"]["count"] == 2
    assert set(one) == set(two) and len(one) > 100
    sizes = {t.trace_id: t.n_spans for t in reqs.traces}
    assert all(two[t] == sizes[t] for t in two), "a kept trace arrived incomplete"
    # both shards were used, and spans crossed between workers
    assert {shard_of(t, 2) for t in two} == {0, 1}
    assert _metric(text, "traceo_sampler_worker_forwarded_spans_total", outcome="sent") > 0
    # the group's /metrics is the sum of its workers' (no per-worker series)
    assert len(per_worker) == 2
    for name in ("traceo_sampler_spans_received_total", "traceo_sampler_bytes_received_total",
                 "traceo_sampler_buffer_spans", "traceo_sampler_buffer_traces"):
        assert _metric(text, name) == sum(_metric(t, name) for t in per_worker) > 0, name
    assert all(_metric(t, "traceo_sampler_spans_received_total") > 0 for t in per_worker)
    assert _metric(text, "traceo_sampler_spans_received_total") == reqs.n_spans
    assert 'worker="' not in text
    assert st2["spans_received"] == reqs.n_spans
    for summary in (sum1, sum2):
        assert summary["traces_decided"] == len(reqs.traces)
        assert summary["traces_kept"] == len(one)


def test_four_workers_same_decisions(reqs):
    one, *_ = _run(1, reqs)
    four, st, _, _, summary = _run(4, reqs)
    assert st["workers"]["count"] == 4
    assert set(one) == set(four)
    assert summary["traces_decided"] == len(reqs.traces)


def test_sigterm_drains_every_worker(reqs):
    with CaptureSink() as sink:
        cfg = {"sampler": {**SLOW, "policies": POLICIES},
               "exporters": {"otlp": {"endpoint": sink.endpoint}},
               "service": {"workers": 2}}
        with Serve(cfg) as srv:
            _send(srv.endpoint, reqs)
            assert _wait(lambda: srv.metric("traceo_sampler_buffer_spans") == reqs.n_spans)
            assert not sink.spans()          # nothing decided yet: 5-minute timers
            assert srv.stop(signal.SIGTERM) == 0
        summary = srv.summary()
        kept = _kept(sink)
    assert summary["buffer"]["spans"] == 0
    assert summary["spans_received"] == reqs.n_spans
    assert summary["traces_decided"] == len(reqs.traces)
    assert summary["decisions_by_trigger"] == {"shutdown": len(reqs.traces)}
    assert {shard_of(t, 2) for t in kept} == {0, 1} and len(kept) == summary["traces_kept"]


def test_killed_worker_is_restarted_and_its_loss_counted(reqs):
    with CaptureSink() as sink:
        cfg = {"sampler": {**SLOW, "policies": POLICIES},
               "exporters": {"otlp": {"endpoint": sink.endpoint}},
               "service": {"workers": 2}}
        with Serve(cfg) as srv:
            _send(srv.endpoint, reqs)
            assert _wait(lambda: srv.metric("traceo_sampler_buffer_spans") == reqs.n_spans)
            st = json.loads(srv.get("/api/status"))
            victim = st["workers"]["alive"][1]
            held = _metric(_unix_get(victim["admin_socket"], "/metrics"), "traceo_sampler_buffer_spans")
            assert held > 0
            time.sleep(workers.SNAPSHOT_INTERVAL + 1)   # its counters' last snapshot
            os.kill(victim["pid"], signal.SIGKILL)
            assert _wait(lambda: srv.metric("traceo_sampler_worker_restarts_total") == 1)
            assert srv.metric("traceo_sampler_worker_lost_spans_total") == held
            assert _wait(lambda: json.loads(srv.get("/api/status"))["workers"]["alive"][1]["ready"])
            with urllib.request.urlopen(f"http://127.0.0.1:{srv.admin_port}/readyz", timeout=5) as r:
                assert r.status == 200
            # counters do not go back when a worker's process is replaced
            assert srv.metric("traceo_sampler_spans_received_total") == reqs.n_spans
            assert srv.metric("traceo_sampler_buffer_spans") == reqs.n_spans - held
            # the group serves again, on both shards
            more = loadgen.build_requests(n_spans=2000, spans_per_request_target=256, seed=12)
            _send(srv.endpoint, more)
            assert _wait(lambda: srv.metric("traceo_sampler_buffer_spans")
                         == reqs.n_spans - held + more.n_spans)
            assert srv.stop(signal.SIGTERM) == 0
        summary = srv.summary()
    assert summary["workers"]["restarts"] == 1 and summary["workers"]["lost_spans"] == held
    assert summary["traces_decided"] + summary["workers"]["lost_traces"] == len(reqs.traces) + len(more.traces)


def test_sighup_reloads_every_worker():
    with CaptureSink() as sink:
        cfg = {"sampler": {**FAST, "policies": [POLICIES[0]]},
               "exporters": {"otlp": {"endpoint": sink.endpoint}},
               "service": {"workers": 2}}
        with Serve(cfg) as srv:
            new = dict(srv.cfg, sampler={**FAST, "policies": [{"name": "all", "type": "always_sample"}]})
            with open(srv.path, "w") as fh:
                yaml.safe_dump(new, fh)
            srv.proc.send_signal(signal.SIGHUP)
            assert _wait(lambda: srv.metric("traceo_sampler_config_reloads_total", outcome="applied") == 1)
            st = json.loads(srv.get("/api/status"))
            for w in st["workers"]["alive"]:
                assert _metric(_unix_get(w["admin_socket"], "/metrics"),
                               "traceo_sampler_config_reloads_total", outcome="applied") == 1
            traces = [trace(3) for _ in range(40)]
            ch = grpc.insecure_channel(srv.endpoint)
            ch.unary_unary("/opentelemetry.proto.collector.trace.v1.TraceService/Export")(
                make_request(traces))
            assert _wait(lambda: srv.metric("traceo_sampler_traces_decided_total",
                                            decision="sampled", policy="all") == 40)
        kept = _kept(sink)
    assert len(kept) == 40 and {shard_of(t, 2) for t in kept} == {0, 1}


def test_a_taken_port_is_refused_not_shared():
    """Workers bind with SO_REUSEPORT; a second serve on the same port must
    not silently join the first one's listeners."""
    with Serve({"sampler": {"policies": [POLICIES[0]]}, "service": {"workers": 2}}) as first:
        import subprocess
        import sys
        other = Serve({"receivers": {"otlp": {"grpc": {"endpoint": first.endpoint}}},
                       "sampler": {"policies": [POLICIES[0]]}, "service": {"workers": 2}})
        env = dict(os.environ, PYTHONPATH=os.path.join(os.path.dirname(__file__), "..", "..", "src"))
        p = subprocess.run([sys.executable, "-m", "traceo_sampler", "serve", "-c", other.path],
                           capture_output=True, text=True, timeout=60, env=env)
        assert p.returncode == 1
        assert p.stderr.startswith("receivers.otlp.grpc.endpoint: cannot listen on")
        assert first.endpoint in p.stderr and "in use" in p.stderr


def test_backpressure_of_one_worker_reaches_clients_of_every_worker():
    """Only worker 0's traces are sent, to a backend that is down, until its
    exporter queue is full: then worker 1, whose own queue is empty, refuses
    too (RESOURCE_EXHAUSTED) -- the flag is shared."""
    from support_serve import free_port
    dead = f"127.0.0.1:{free_port()}"         # nothing listens there
    cfg = {"sampler": {"root_wait": "100ms", "idle_timeout": "200ms",
                       "policies": [{"name": "all", "type": "always_sample"}]},
           "exporters": {"otlp": {"endpoint": dead, "queue_max_bytes": 2 << 20,
                                  "retry": {"max_elapsed": "5m"}}},
           "service": {"workers": 2}}
    with Serve(cfg) as srv:
        opts = [("grpc.use_local_subchannel_pool", 1)]
        chans = [grpc.insecure_channel(srv.endpoint, options=opts) for _ in range(8)]
        calls = [c.unary_unary("/opentelemetry.proto.collector.trace.v1.TraceService/Export")
                 for c in chans]
        codes = collections.Counter()
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and codes[grpc.StatusCode.RESOURCE_EXHAUSTED] < 40:
            traces = []
            while len(traces) < 50:
                t = trace(20, name="x" * 200)
                if shard_of(t[0]["trace_id"], 2) == 0:
                    traces.append(t)
            body = make_request(traces)
            for call in calls:
                try:
                    call(body, timeout=10)
                    codes["ok"] += 1
                except grpc.RpcError as exc:
                    codes[exc.code()] += 1
            time.sleep(0.3)
        assert codes[grpc.StatusCode.RESOURCE_EXHAUSTED] >= 40, codes
        st = json.loads(srv.get("/api/status"))
        w1 = _unix_get(st["workers"]["alive"][1]["admin_socket"], "/metrics")
        # worker 1 holds none of these traces, yet it pushed back as well
        assert _metric(w1, "traceo_sampler_buffer_spans") == 0
        assert _metric(w1, "traceo_sampler_exporter_queue_bytes") == 0
        assert _metric(w1, "traceo_sampler_receiver_requests_total", outcome="backpressure") > 0
        for c in chans:
            c.close()
