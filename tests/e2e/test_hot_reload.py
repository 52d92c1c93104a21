"""Hot reload: SIGHUP or a changed file rebuilds the policies without
losing buffered traces or the decision cache; an invalid file is rejected
and the running config stays."""
import os
import signal
import threading
import time

import grpc
import pytest
import yaml

from support_otlp import CaptureSink, make_request, trace
from support_serve import Serve

pytestmark = pytest.mark.e2e

ERRORS = [{"name": "errors", "type": "status_code", "status_code": {"status_codes": ["ERROR"]}}]
ALL = [{"name": "all", "type": "always_sample"}]


def _write(srv, policies=None, raw=None):
    if raw is None:
        cfg = dict(srv.cfg)
        cfg["sampler"] = dict(cfg["sampler"], policies=policies)
        raw = yaml.safe_dump(cfg)
    tmp = srv.path + ".tmp"
    with open(tmp, "w") as fh:
        fh.write(raw)
    os.replace(tmp, srv.path)


def _wait(pred, timeout=15):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if pred():
            return True
        time.sleep(0.05)
    return False


def test_reload_rebuilds_policies_and_keeps_buffered_traces():
    with CaptureSink() as sink:
        cfg = {"sampler": {"root_wait": "1s", "policies": ERRORS},
               "exporters": {"otlp": {"endpoint": sink.endpoint}}}
        with Serve(cfg) as srv:
            ch = grpc.insecure_channel(srv.endpoint)
            export = ch.unary_unary("/opentelemetry.proto.collector.trace.v1.TraceService/Export")
            before = [trace(2) for _ in range(10)]      # buffered across the reload
            export(make_request(before))
            _write(srv, ALL)                            # file change → reload
            assert _wait(lambda: srv.metric("traceo_sampler_config_reloads_total", outcome="applied") == 1)
            assert _wait(lambda: srv.metric("traceo_sampler_traces_decided_total") == 10)
            # decided by the new policies: all kept
            assert srv.metric("traceo_sampler_traces_decided_total", decision="sampled", policy="all") == 10
            # an invalid file is rejected and the running policies stay
            _write(srv, raw="sampler:\n  policies:\n    - {name: x, type: latency, latency: {threshold_ms: -1}}\n")
            assert _wait(lambda: srv.metric("traceo_sampler_config_reloads_total", outcome="rejected") == 1)
            export(make_request([trace(2) for _ in range(5)]))
            assert _wait(lambda: srv.metric("traceo_sampler_traces_decided_total", policy="all") == 15)
            # SIGHUP reloads too (back to errors only, a valid file again)
            _write(srv, ERRORS)
            assert _wait(lambda: srv.metric("traceo_sampler_config_reloads_total", outcome="applied") >= 2)
            srv.proc.send_signal(signal.SIGHUP)
            assert _wait(lambda: srv.metric("traceo_sampler_config_reloads_total", outcome="applied") >= 3)
            export(make_request([trace(2) for _ in range(5)]))
            assert _wait(lambda: srv.metric("traceo_sampler_traces_decided_total", decision="not_sampled") == 5)
            ch.close()
            stderr = srv.read_stderr()
        assert "sampler.policies[0].latency.threshold_ms: must be >= 0" in stderr
        assert len({t for t, *_ in sink.spans()}) == 15


def test_reload_under_load_drops_nothing():
    cfg = {"sampler": {"root_wait": "200ms", "idle_timeout": "1s", "policies": ERRORS}}
    with Serve(cfg) as srv:
        stop = threading.Event()
        sent_traces = []

        def load():
            ch = grpc.insecure_channel(srv.endpoint)
            export = ch.unary_unary("/opentelemetry.proto.collector.trace.v1.TraceService/Export")
            while not stop.is_set():
                batch = [trace(3) for _ in range(20)]
                export(make_request(batch))
                sent_traces.append(len(batch))
            ch.close()

        th = threading.Thread(target=load)
        th.start()
        try:
            for i in range(6):
                _write(srv, ALL if i % 2 == 0 else ERRORS)
                n = i + 1
                assert _wait(lambda: srv.metric("traceo_sampler_config_reloads_total", outcome="applied") >= n)
        finally:
            stop.set()
            th.join()
        assert srv.stop() == 0
        summary = srv.summary()
    total = sum(sent_traces)
    assert summary["spans_received"] == 3 * total
    assert summary["traces_decided"] == total
