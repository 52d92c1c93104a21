"""Consumer-group ingest on the real broker (issue 5, "What it must show"):

router → topic → sampler members in one group → a capturing OTLP sink.
Every trace is sent in two parts, in two requests one request apart, so its
spans span two Kafka messages; error traces carry the error in the first
part. A trace decided on partial data would show at the sink as an error
trace missing spans, or as spans of one trace with different decisions
(``record_policy`` and the tracestate threshold say which).
"""
from __future__ import annotations

import json
import os
import signal
import sys
import threading
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
PARTITIONS = 4
BATCH = 200           # traces per request


def _name(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:10]}"


def _trace(error: bool):
    tid = os.urandom(16)
    root = os.urandom(8)
    t0 = 1_700_000_000_000_000_000
    spans = [{"trace_id": tid, "span_id": root, "parent": b"", "name": "root",
              "start": t0, "end": t0 + 50_000_000}]
    for i in range(3):
        spans.append({"trace_id": tid, "span_id": os.urandom(8), "parent": root,
                      "name": f"child{i}", "start": t0 + 1_000_000, "end": t0 + 2_000_000,
                      "status": 2 if (error and i == 0) else 0})
    # part 1: the children (the error among them), part 2: the root
    return tid, spans[1:], spans[:1]


class Stream(threading.Thread):
    """Sends ``n`` traces through the router, each in two parts one request
    apart, retrying a request until the router acknowledges it."""

    def __init__(self, endpoint: str, n: int, error_every: int = 5, pace: float = 0.0):
        super().__init__(daemon=True)
        self.endpoint = endpoint
        self.n = n
        self.pace = pace
        self.errors: dict[bytes, set[bytes]] = {}
        self.sent = 0            # traces fully sent
        self.retries = 0
        self.failure: BaseException | None = None
        self.traces = [_trace(i % error_every == 0) for i in range(n)]
        for tid, p1, p2 in self.traces[::error_every]:
            self.errors[tid] = {s["span_id"] for s in p1 + p2}

    def run(self) -> None:
        try:
            with grpc.insecure_channel(self.endpoint) as ch:
                export = ch.unary_unary(METHOD)
                prev: list = []
                for i in range(0, self.n + BATCH, BATCH):
                    cur = self.traces[i:i + BATCH]
                    spans = [p1 for _, p1, _ in cur] + [p2 for _, _, p2 in prev]
                    if spans:
                        self._send(export, make_request(spans, service="checkout"))
                    self.sent += len(prev)
                    prev = cur
                    if self.pace:
                        time.sleep(self.pace)
        except BaseException as exc:  # noqa: BLE001
            self.failure = exc

    def _send(self, export, body: bytes) -> None:
        deadline = time.monotonic() + 120
        while True:
            try:
                export(body, timeout=30)
                return
            except grpc.RpcError:
                self.retries += 1
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.5)


def member_cfg(bootstrap: str, topic: str, group: str, sink: CaptureSink) -> dict:
    return {
        "receivers": {"kafka": {"brokers": [bootstrap], "topic": topic, "group_id": group,
                                "session_timeout": "6s", "commit_interval": "500ms",
                                "handoff_max_bytes": 1000000}},
        "sampler": {"root_wait": "500ms", "idle_timeout": "2s", "decision_wait": "10s",
                    "record_policy": True,
                    "policies": [
                        {"name": "errors", "type": "status_code",
                         "status_code": {"status_codes": ["ERROR"]}},
                        {"name": "rest", "type": "probabilistic",
                         "probabilistic": {"sampling_percentage": 10}}]},
        "exporters": {"otlp": {"endpoint": sink.endpoint, "compression": "none"}},
        # one group member per serve (service.workers: auto would run one
        # per CPU): the scenarios count members against partitions
        "service": {"shutdown_timeout": "10s", "workers": 1},
    }


def router_cfg(bootstrap: str, topic: str) -> dict:
    return {"exporters": {"kafka": {"brokers": [bootstrap], "topic": topic, "timeout": "5s"}}}


def at_sink(sink: CaptureSink) -> dict:
    """trace_id → {"spans": {span_id: times seen}, "decisions": {(tracestate, policy)}}."""
    out: dict = {}
    for tid, sp, _res, _scope in sink.spans():
        row = out.get(tid)
        if row is None:
            row = out[tid] = {"spans": {}, "decisions": set()}
        row["spans"][sp.span_id] = row["spans"].get(sp.span_id, 0) + 1
        pol = next((a.value.string_value for a in sp.attributes
                    if a.key == "traceo.sampling.policy"), "")
        row["decisions"].add((sp.trace_state, pol))
    return out


def verdict(stream: Stream, sink: CaptureSink) -> dict:
    got = at_sink(sink)
    lost = [tid for tid, sids in stream.errors.items()
            if not sids <= set(got.get(tid, {"spans": {}})["spans"])]
    split = [tid for tid, row in got.items() if len(row["decisions"]) > 1]
    dup_spans = sum(n - 1 for row in got.values() for n in row["spans"].values())
    return {"error_traces": len(stream.errors), "lost": len(lost), "split": len(split),
            "duplicate_spans": dup_spans, "kept_traces": len(got),
            "lost_ids": [t.hex() for t in lost[:5]],
            "split_detail": [(t.hex(), t in stream.errors, sorted(got[t]["decisions"]),
                              sorted(got[t]["spans"].values())) for t in split[:5]]}


def wait_whole(stream: Stream, sink: CaptureSink, timeout: float) -> dict:
    deadline = time.monotonic() + timeout
    while True:
        v = verdict(stream, sink)
        if v["lost"] == 0 or time.monotonic() > deadline:
            return v
        time.sleep(0.5)


def _run(kafka_broker, n: int, members: int, action=None, pace: float = 0.0,
         settle: float = 90.0) -> tuple[dict, list]:
    topic = _name("spans")
    group = _name("group")
    kafka_broker.create_topic(topic, PARTITIONS)
    summaries: list = []
    with CaptureSink() as sink:
        started = [Serve(member_cfg(kafka_broker.bootstrap, topic, group, sink))
                   for _ in range(members)]
        try:
            for m in started:
                m.__enter__()
            with Serve(router_cfg(kafka_broker.bootstrap, topic)) as router:
                stream = Stream(router.endpoint, n, pace=pace)
                t0 = time.monotonic()
                stream.start()
                if action is not None:
                    while stream.sent < n // 2 and stream.is_alive():
                        time.sleep(0.05)
                    action(started, topic, group, sink)
                stream.join(300)
                assert not stream.is_alive(), "the stream did not finish"
                assert stream.failure is None, stream.failure
                sent_s = time.monotonic() - t0
            v = wait_whole(stream, sink, settle)
            v["send_seconds"] = round(sent_s, 2)
            v["traces"] = n
            v["retries"] = stream.retries
        finally:
            for m in started:
                if m.proc is not None and m.returncode is None:
                    m.stop()
                    try:
                        summaries.append(m.summary())
                    except AssertionError:
                        pass
    print("kafka scenario:", v, "members received spans:",
          [s.get("spans_received") for s in summaries])
    return v, summaries


def test_two_members_every_error_trace_whole(kafka_broker):
    v, _ = _run(kafka_broker, 4000, members=2)
    assert v["lost"] == 0, v
    assert v["split"] == 0, v
    assert v["duplicate_spans"] == 0, v


def test_kill_9_of_a_member_loses_no_kept_trace(kafka_broker):
    def kill(members, topic, group, sink):
        members[0].stop(signal.SIGKILL)

    v, _ = _run(kafka_broker, 20000, members=2, action=kill)
    assert v["lost"] == 0, v
    # duplicates are allowed (at-least-once) and reported in the printed
    # verdict: re-read spans exported again. With the handoff fitting the
    # commit metadata (the broker's offset.metadata.max.bytes raised, as the
    # README asks), no re-read part of a decided trace is decided again
    assert v["split"] == 0, v


def test_a_third_member_joining_splits_no_trace(kafka_broker):
    extra: list = []

    def join(members, topic, group, sink):
        m = Serve(member_cfg(kafka_broker.bootstrap, topic, group, sink))
        m.__enter__()
        members.append(m)
        extra.append(m)

    v, summaries = _run(kafka_broker, 12000, members=2, action=join, pace=0.15)
    assert v["split"] == 0, v
    assert v["lost"] == 0, v
    # the rebalance happened mid-stream: the third member got partitions and spans
    assert len(summaries) == 3 and summaries[2]["spans_received"] > 0, summaries


def test_broker_down_10s_loses_no_kept_trace(kafka_broker):
    def outage(members, topic, group, sink):
        kafka_broker.stop()
        time.sleep(10)
        kafka_broker.restart()

    try:
        v, _ = _run(kafka_broker, 8000, members=2, action=outage, pace=0.02, settle=120)
    finally:
        kafka_broker.ensure_running()
    assert v["lost"] == 0, v
    assert v["split"] == 0, v


def test_malformed_messages_are_counted_and_skipped_and_offsets_committed(kafka_broker):
    """Messages from any producer (no key, several traces per message, like
    the Collector's kafkaexporter without partition_traces_by_id), with
    garbage among them: the garbage is counted invalid and its offset is done,
    the traces are exported, and the group's offsets reach the end."""
    from aiokafka import AIOKafkaProducer
    from aiokafka.admin import AIOKafkaAdminClient

    from tests.support.kafka import run_async

    topic, group = _name("mixed"), _name("group")
    kafka_broker.create_topic(topic, 1)
    traces = [_trace(True) for _ in range(20)]
    good = [make_request([p1 + p2 for _, p1, p2 in traces[i:i + 5]]) for i in range(0, 20, 5)]
    bad = [b"\xff\xff\xff", b"\x0a\x05abc", b""]

    async def produce():
        p = AIOKafkaProducer(bootstrap_servers=kafka_broker.bootstrap, acks="all")
        await p.start()
        try:
            for body in [good[0], bad[0], good[1], bad[1], good[2], bad[2], good[3]]:
                await (await p.send(topic, value=body))
        finally:
            await p.stop()

    async def committed():
        a = AIOKafkaAdminClient(bootstrap_servers=kafka_broker.bootstrap)
        await a.start()
        try:
            offs = await a.list_consumer_group_offsets(group)
        finally:
            await a.close()
        return {tp.partition: om.offset for tp, om in offs.items()}

    run_async(produce, 60)
    with CaptureSink() as sink:
        with Serve(member_cfg(kafka_broker.bootstrap, topic, group, sink)) as m:
            deadline = time.monotonic() + 60
            while time.monotonic() < deadline:
                got = at_sink(sink)
                if all(len(got.get(t, {"spans": {}})["spans"]) == 4 for t, _, _ in traces):
                    break
                time.sleep(0.2)
            assert all(len(got.get(t, {"spans": {}})["spans"]) == 4 for t, _, _ in traces)
            assert m.metric("traceo_sampler_kafka_messages_total", outcome="invalid") == 3
            assert m.metric("traceo_sampler_kafka_messages_total", outcome="ok") == 4
            while time.monotonic() < deadline and run_async(committed, 30).get(0) != 7:
                time.sleep(0.3)
            assert run_async(committed, 30) == {0: 7}
            assert m.metric("traceo_sampler_kafka_consumer_lag", topic=topic, partition="0") == 0
            st = json.loads(m.get("/api/status"))["kafka_receiver"]
            assert st["invalid_messages"] == 3 and st["messages"] == 7
            assert st["partitions"][f"{topic}/0"]["committed"] == 7
