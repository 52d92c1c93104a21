"""What docs/operations.md §6 says a `kill -9` loses on the direct path without
the write-ahead log (sampler.wal, off by default): every trace still buffered,
although its client already got an OTLP success. SIGTERM, by contrast, decides
and exports them. With the log: tests/integration/test_wal_crash.py."""
import signal
import time

import grpc
import pytest

from support_otlp import CaptureSink, make_request, trace
from support_serve import Serve

pytestmark = pytest.mark.e2e

METHOD = "/opentelemetry.proto.collector.trace.v1.TraceService/Export"
ALL = [{"name": "all", "type": "always_sample"}]


@pytest.mark.parametrize("sig,kept", [(signal.SIGKILL, 0), (signal.SIGTERM, 20)])
def test_buffered_traces_on_kill_9_and_on_sigterm(sig, kept):
    with CaptureSink() as sink:
        # timers far away: nothing is decided before the signal
        srv = Serve({"sampler": {"root_wait": "60s", "idle_timeout": "60s", "decision_wait": "60s",
                                 "policies": ALL},
                     "exporters": {"otlp": {"endpoint": sink.endpoint}}})
        with srv:
            with grpc.insecure_channel(srv.endpoint) as ch:
                ch.unary_unary(METHOD)(make_request([trace(3) for _ in range(20)]), timeout=10)
            deadline = time.monotonic() + 10
            while srv.metric("traceo_sampler_buffer_traces") < 20 and time.monotonic() < deadline:
                time.sleep(0.05)
            assert srv.metric("traceo_sampler_buffer_traces") == 20
            srv.stop(sig)
        time.sleep(0.5)
        assert len({t for t, *_ in sink.spans()}) == kept


def test_with_the_write_ahead_log_kill_9_loses_nothing_over_http(tmp_path):
    """The same 20 buffered traces, sent over OTLP/HTTP to a serve with
    sampler.wal (fsync: always): after kill -9 and a restart all 20 are
    decided and exported (tests/integration/test_wal_crash.py does it under
    load, over gRPC)."""
    import urllib.request
    with CaptureSink() as sink:
        srv = Serve({"sampler": {"root_wait": "2s", "idle_timeout": "60s", "decision_wait": "60s",
                                 "policies": ALL,
                                 "wal": {"dir": str(tmp_path / "wal"), "fsync": "always"}},
                     "service": {"workers": 1},
                     "exporters": {"otlp": {"endpoint": sink.endpoint}}}, http=True)
        with srv:
            req = urllib.request.Request(f"http://127.0.0.1:{srv.http_port}/v1/traces",
                                         data=make_request([trace(3) for _ in range(20)]),
                                         headers={"Content-Type": "application/x-protobuf"})
            with urllib.request.urlopen(req, timeout=10) as r:
                assert r.status == 200
            srv.stop(signal.SIGKILL)
        assert sink.spans() == []
        srv.returncode = None
        with srv:
            assert srv.metric("traceo_sampler_wal_replayed_traces_total") == 20
            deadline = time.monotonic() + 15
            while len({t for t, *_ in sink.spans()}) < 20 and time.monotonic() < deadline:
                time.sleep(0.1)
        assert len({t for t, *_ in sink.spans()}) == 20
        assert len(sink.spans()) == 60
