"""Sidecar mode (sampler.shared_decisions) on the real broker: three sidecar
``serve`` processes, each fed only its own service's spans as pods would be,
traces crossing all three with errors and slow roots in different services.

With shared decisions every error and slow trace arrives whole at the sink
and nothing arrives partial; the same traffic through plain local sidecars
arrives partial (so the test proves the feature); with the broker down for
~10 s the sidecars keep serving, count the fallback, and share decisions
again once it is back. Prints the measured figures for the README."""
from __future__ import annotations

import os
import sys
import time
import uuid
from pathlib import Path

import grpc
import pytest

ROOT = Path(__file__).resolve().parents[2]
for p in (str(ROOT), str(ROOT / "tests")):
    if p not in sys.path:
        sys.path.insert(0, p)

from support_otlp import CaptureSink, make_request  # noqa: E402
from support_serve import Serve  # noqa: E402
from tests.support.fixtures import kafka_broker  # noqa: E402,F401

pytestmark = [pytest.mark.integration, pytest.mark.timeout(600)]
METHOD = "/opentelemetry.proto.collector.trace.v1.TraceService/Export"
SERVICES = ("frontend", "cart", "payment")     # root in frontend
SPANS_PER_SERVICE = 2
WHOLE = SPANS_PER_SERVICE * len(SERVICES)
MS = 1_000_000
HOLD_S = 3.0


def sidecar_cfg(sink: CaptureSink, bootstrap: str | None, topic: str) -> dict:
    sampler = {"root_wait": "500ms", "idle_timeout": "2s", "decision_wait": "10s",
               "policies": [
                   {"name": "errors", "type": "status_code",
                    "status_code": {"status_codes": ["ERROR"]}},
                   {"name": "slow", "type": "latency", "latency": {"threshold_ms": 1000}},
                   {"name": "rest", "type": "probabilistic",
                    "probabilistic": {"sampling_percentage": 20}}]}
    if bootstrap is not None:
        sampler["shared_decisions"] = {"brokers": [bootstrap], "topic": topic,
                                       "hold": f"{HOLD_S}s", "timeout": "1s",
                                       "heartbeat": "500ms"}
    return {"sampler": sampler,
            "exporters": {"otlp": {"endpoint": sink.endpoint, "compression": "none"}},
            "service": {"shutdown_timeout": "10s", "workers": 1}}


def make_traces(n: int) -> tuple[dict, dict]:
    """(kind by trace ID, service → request bytes): per trace a root and a
    child in frontend, two in cart, two in payment; kinds: error in payment,
    error in cart, slow root, plain."""
    kinds: dict[bytes, str] = {}
    per_service: dict[str, list] = {s: [] for s in SERVICES}
    base = time.time_ns()
    for i in range(n):
        tid = os.urandom(16)
        kind = ("error_payment", "error_cart", "slow", "plain", "plain")[i % 5]
        kinds[tid] = kind
        dur = 1500 * MS if kind == "slow" else 120 * MS
        root = os.urandom(8)
        parent = root
        for s_i, svc in enumerate(SERVICES):
            spans = []
            for k in range(SPANS_PER_SERVICE):
                sid = os.urandom(8)
                is_root = s_i == 0 and k == 0
                start = base + (0 if is_root else (s_i * 10 + k) * MS)
                end = base + dur if is_root else start + 20 * MS
                sp = {"trace_id": tid, "span_id": root if is_root else sid,
                      "parent": b"" if is_root else parent, "start": start, "end": end,
                      "name": f"{svc}-{k}"}
                if (kind == "error_payment" and svc == "payment" and k == 1) or \
                        (kind == "error_cart" and svc == "cart" and k == 0):
                    sp["status"] = 2
                spans.append(sp)
                if k == 0:
                    parent = sp["span_id"]
            per_service[svc].append(spans)
    reqs = {svc: make_request(traces, service=svc) for svc, traces in per_service.items()}
    return kinds, reqs


def send(sidecars: dict, reqs: dict) -> None:
    """Each service's spans to its own sidecar; the root's service last, as
    a root ends after its children."""
    for svc in reversed(SERVICES):
        with grpc.insecure_channel(sidecars[svc].endpoint) as ch:
            ch.unary_unary(METHOD)(reqs[svc], timeout=10)


def at_sink(sink: CaptureSink, kinds: dict) -> dict:
    spans: dict[bytes, set] = {}
    for tid, sp, _res, _scope in sink.spans():
        if tid in kinds:
            spans.setdefault(tid, set()).add(sp.span_id)
    return {tid: len(s) for tid, s in spans.items()}


def verdict(sink: CaptureSink, kinds: dict, settle: float) -> dict:
    """Waits for the important traces (bounded), then ``settle`` more
    seconds for the held and the stragglers."""
    important = [t for t, k in kinds.items() if k != "plain"]
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        got = at_sink(sink, kinds)
        if all(got.get(t) == WHOLE for t in important):
            break
        time.sleep(0.3)
    time.sleep(settle)
    got = at_sink(sink, kinds)
    plain = [t for t, k in kinds.items() if k == "plain"]
    return {
        "important_whole": sum(got.get(t) == WHOLE for t in important),
        "important": len(important),
        "partial": sum(0 < n < WHOLE for n in got.values()),
        "plain_kept": sum(got.get(t) == WHOLE for t in plain),
        "plain": len(plain),
    }


def start_sidecars(cfg: dict) -> dict:
    started = {}
    try:
        for svc in SERVICES:
            started[svc] = Serve(cfg).__enter__()
    except BaseException:
        for s in started.values():
            s.stop()
        raise
    return started


def total(sidecars: dict, name: str, **labels) -> float:
    return sum(s.metric(name, **labels) for s in sidecars.values())


def wait_metric(sidecars: dict, name: str, pred, timeout: float, **labels) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if all(pred(s.metric(name, **labels)) for s in sidecars.values()):
            return True
        time.sleep(0.25)
    return False


def test_local_sidecars_split_traces_shared_decisions_keep_them_whole(kafka_broker):  # noqa: F811
    topic = f"decisions-{uuid.uuid4().hex[:8]}"
    kafka_broker.create_topic(topic, partitions=1)

    # plain local sidecars: each decides on its part alone
    with CaptureSink() as sink:
        local = start_sidecars(sidecar_cfg(sink, None, topic))
        try:
            kinds, reqs = make_traces(150)
            send(local, reqs)
            base = verdict(sink, kinds, settle=3.0)
        finally:
            for s in local.values():
                s.stop()
    print("local sidecars:", base)
    assert base["partial"] > 0, base
    assert base["important_whole"] < base["important"], base

    with CaptureSink() as sink:
        cars = start_sidecars(sidecar_cfg(sink, kafka_broker.bootstrap, topic))
        try:
            assert wait_metric(cars, "traceo_sampler_shared_decisions_broker_up",
                               lambda v: v == 1, 30)
            kinds, reqs = make_traces(150)
            t0 = time.monotonic()
            send(cars, reqs)
            res = verdict(sink, kinds, settle=HOLD_S + 1.5)
            print("shared decisions:", res, f"in {time.monotonic() - t0:.1f}s")
            assert res["important_whole"] == res["important"], res
            assert res["partial"] == 0, res
            # the consistent probability: ~20 % of the plain ones, whole
            assert 0.05 * res["plain"] <= res["plain_kept"] <= 0.45 * res["plain"], res

            published = total(cars, "traceo_sampler_shared_decisions_kept_total", source="published")
            msgs = total(cars, "traceo_sampler_shared_decisions_messages_total",
                         direction="out", kind="decisions")
            nbytes = total(cars, "traceo_sampler_shared_decisions_bytes_total",
                           direction="out", kind="decisions")
            delay_n = total(cars, "traceo_sampler_shared_decisions_delay_seconds_count")
            delay_s = total(cars, "traceo_sampler_shared_decisions_delay_seconds_sum")
            kept_remote = total(cars, "traceo_sampler_shared_decisions_kept_total", source="remote")
            too_late = total(cars, "traceo_sampler_shared_decisions_received_total",
                             outcome="too_late")
            print(f"figures: kept traces published {published:.0f}, decision messages {msgs:.0f} "
                  f"({msgs / max(published, 1):.3f} per published keep), "
                  f"{nbytes / max(published, 1):.1f} bytes per published keep, "
                  f"parts kept on a remote decision {kept_remote:.0f}, too late {too_late:.0f}, "
                  f"mean publish-to-read delay {1000 * delay_s / max(delay_n, 1):.1f} ms "
                  f"over {delay_n:.0f} messages")
            assert published >= res["important"]      # errors, slow: one publish each at least
            assert too_late == 0
            assert total(cars, "traceo_sampler_shared_decisions_fallback_traces_total") == 0

            # broker down ~10 s: the sidecars keep answering and fall back
            kafka_broker.kill()
            try:
                down_at = time.monotonic()
                assert wait_metric(cars, "traceo_sampler_shared_decisions_broker_up",
                                   lambda v: v == 0, 15)
                while time.monotonic() - down_at < 10:
                    k2, r2 = make_traces(20)
                    send(cars, r2)       # raises if a sidecar stopped answering
                    time.sleep(1.0)
                assert wait_metric(cars, "traceo_sampler_shared_decisions_fallback_traces_total",
                                   lambda v: v > 0, 15)
                fallback = total(cars, "traceo_sampler_shared_decisions_fallback_traces_total")
                outages = total(cars, "traceo_sampler_shared_decisions_outages_total")
                print(f"outage: fallback traces {fallback:.0f}, outages {outages:.0f}")
                assert outages >= 3
                for s in cars.values():
                    assert s.get("/readyz")     # still serving
            finally:
                kafka_broker.restart()
            assert wait_metric(cars, "traceo_sampler_shared_decisions_broker_up",
                               lambda v: v == 1, 60)
            recovered_at = time.monotonic()
            kinds3, reqs3 = make_traces(100)
            send(cars, reqs3)
            res3 = verdict(sink, kinds3, settle=HOLD_S + 1.5)
            print("after recovery:", res3,
                  f"(shared again {recovered_at - down_at:.1f}s after the broker went down)")
            assert res3["important_whole"] == res3["important"], res3
            assert res3["partial"] == 0, res3
        finally:
            for s in cars.values():
                s.stop()
