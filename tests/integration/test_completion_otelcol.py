"""Issue 16 through a Collector tier: the five SDK services of
tests/e2e/test_completion_sdk.py (default BatchSpanProcessor, phases spread
over its 5 s period) send to a real OpenTelemetry Collector (otlp receiver,
the batch processor at its defaults, otlp exporters), which forwards to two
samplers: the embedded default keeps every error trace whole; a fixed
root_wait 2s counts the late spans that would have kept a dropped trace."""
from __future__ import annotations

import json
import random
import time

import pytest

from support.otelcol import Otelcol
from support.procs import free_ports
from support_otlp import CaptureSink
from support_sdk import (DEFAULT_POLICIES, N_TRACES, Services, run_traffic, sent_spans,
                         wait_decided, whole_traces)
from support_serve import Serve

pytestmark = [pytest.mark.integration, pytest.mark.timeout(900)]


def test_collector_tier_default_batch_every_error_trace_whole():
    rng = random.Random(1616)
    (port,) = free_ports(1)
    with CaptureSink() as sink_auto, CaptureSink() as sink_fixed, \
            Serve({"sampler": {"policies": DEFAULT_POLICIES},
                   "exporters": {"otlp": {"endpoint": sink_auto.endpoint}}}) as auto, \
            Serve({"sampler": {"root_wait": "2s", "idle_timeout": "5s", "policies": DEFAULT_POLICIES},
                   "exporters": {"otlp": {"endpoint": sink_fixed.endpoint}}}) as fixed:
        cfg = {
            "receivers": {"otlp": {"protocols": {"grpc": {"endpoint": f"127.0.0.1:{port}"}}}},
            "processors": {"batch": {}},          # the Collector's defaults (200ms, 8192 spans)
            "exporters": {
                "otlp/auto": {"endpoint": auto.endpoint, "tls": {"insecure": True}},
                "otlp/fixed": {"endpoint": fixed.endpoint, "tls": {"insecure": True}}},
            "service": {"pipelines": {"traces": {
                "receivers": ["otlp"], "processors": ["batch"],
                "exporters": ["otlp/auto", "otlp/fixed"]}}},
        }
        with Otelcol(cfg):
            svcs = Services([f"127.0.0.1:{port}"], rng)
            errors = run_traffic(svcs, rng)
            time.sleep(5.5)          # the SDK's own timers send the last batches
            svcs.close()
            wait_decided(auto, 25)
            wait_decided(fixed, 25)
        status = json.loads(auto.get("/api/status"))
        would_auto = auto.metric("traceo_sampler_late_spans_would_change_total")
        would_fixed = fixed.metric("traceo_sampler_late_spans_would_change_total")
        assert auto.stop() == 0 and fixed.stop() == 0

    sent = sent_spans(svcs)
    assert len(sent) == N_TRACES and len(errors) >= 30
    whole = whole_traces(sink_auto, sent, errors)
    whole_fixed = whole_traces(sink_fixed, sent, errors)
    lag = status["completion"]["arrival_lag"]
    print("\nphases (s):", {k: round(v, 2) for k, v in svcs.phases.items()})
    print(f"through the Collector: auto {len(whole)}/{len(errors)} error traces whole, "
          f"fixed 2s {len(whole_fixed)}/{len(errors)}, would have changed {would_fixed:.0f}")
    for svc, v in lag.items():
        print(f"  {svc:10s} since root {v.get('root')}")
    assert len(whole) == len(errors) and would_auto == 0
    assert would_fixed > 0 and len(whole_fixed) < len(errors)
