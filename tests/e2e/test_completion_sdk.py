"""Issue 16: five services, each its own OpenTelemetry SDK TracerProvider
with the SDK's default BatchSpanProcessor (a batch every 5 s), their
timers in independent phases, one trace crossing all five with errors in
downstream services. On the embedded default (root_wait / idle_timeout:
auto) every error trace reaches the backend whole; the same senders at the
same time into a second sampler with the old fixed root_wait 2s make its
``late_spans_would_change_total`` rise.

Both samplers are fed at once (each provider has one default
BatchSpanProcessor per sampler), so the test takes one generation run:
~5 s of phase offsets, ~27 s of traffic, ~16 s for the last batches and
decisions."""
from __future__ import annotations

import json
import random
import time

import pytest

from support_otlp import CaptureSink
from support_sdk import (DEFAULT_POLICIES, N_TRACES, SERVICES, Services, run_traffic, sent_spans,
                         wait_decided, whole_traces)
from support_serve import Serve

pytestmark = pytest.mark.e2e


def test_default_sdk_batching_every_error_trace_whole():
    rng = random.Random(16)
    with CaptureSink() as sink_auto, CaptureSink() as sink_fixed, \
            Serve({"sampler": {"policies": DEFAULT_POLICIES},
                   "exporters": {"otlp": {"endpoint": sink_auto.endpoint}}}) as auto, \
            Serve({"sampler": {"root_wait": "2s", "idle_timeout": "5s", "policies": DEFAULT_POLICIES},
                   "exporters": {"otlp": {"endpoint": sink_fixed.endpoint}}}) as fixed:
        svcs = Services([auto.endpoint, fixed.endpoint], rng)
        errors = run_traffic(svcs, rng)
        # the SDK's own timers send the last batches (no forced flush)
        time.sleep(5.5)
        svcs.close()
        wait_decided(auto, 20)
        wait_decided(fixed, 20)
        status = json.loads(auto.get("/api/status"))
        would_auto = auto.metric("traceo_sampler_late_spans_would_change_total")
        would_fixed = fixed.metric("traceo_sampler_late_spans_would_change_total")
        late_fixed = fixed.metric("traceo_sampler_late_spans_total")
        assert auto.stop() == 0 and fixed.stop() == 0

    sent = sent_spans(svcs)
    assert len(sent) == N_TRACES and all(len(v) == 9 for v in sent.values())
    assert len(errors) >= 30
    whole = whole_traces(sink_auto, sent, errors)
    lag = status["completion"]["arrival_lag"]
    print("\nphases (s):", {k: round(v, 2) for k, v in svcs.phases.items()})
    print("auto:", json.dumps({k: status["completion"][k] for k in ("root_wait", "idle_timeout")}),
          "error traces whole", len(whole), "/", len(errors))
    for svc in SERVICES:
        print(f"  {svc:10s} since first {lag[svc]['first']}  since root {lag[svc].get('root')}")
    assert len(whole) == len(errors), "error traces lost with the default waits"
    assert would_auto == 0
    assert status["completion"]["root_wait"] == {"mode": "auto", "seconds": 6.0}
    # the SDK's 5 s batches show up as lags of several seconds downstream
    assert any((lag[svc]["root"]["p99_le_s"] or 0) >= 2.0 for svc in SERVICES[1:])

    whole_fixed = whole_traces(sink_fixed, sent, errors)
    print(f"fixed root_wait 2s: error traces whole {len(whole_fixed)}/{len(errors)}, "
          f"late spans {late_fixed:.0f}, would have changed a decision {would_fixed:.0f}")
    assert would_fixed > 0 and len(whole_fixed) < len(errors)
