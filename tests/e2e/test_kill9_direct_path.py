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
