"""Idempotent producing across broker restarts, on the real broker.

aiokafka 0.14's idempotent producer, under concurrent load, stops for good
after a broker restart: a batch numbered for a partition that had no
leader for longer than the timeout is failed unsent, the broker sees a gap
and answers OUT_OF_ORDER_SEQUENCE_NUMBER to every later batch of it
(exporters/kafka.py Producer). Reproduced with aiokafka alone: 0 acks in
the 20 s after a restart. The router replaces such a producer;
librdkafka (confluent-kafka, the default client) bumps its epoch itself.
This test drives the router, with each client, with 8 concurrent clients
through two broker restarts (about 65 s per client: the restarts are what
is tested) and checks that it acks again within seconds each time and
that every request it acked is in the topic.
"""
from __future__ import annotations

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

from support_otlp import make_request, trace  # noqa: E402
from support_serve import Serve  # noqa: E402
from tests.support.fixtures import kafka_broker  # noqa: E402,F401
from test_kafka_sampled import spans_of  # noqa: E402
from tests.support.kafka import read_records  # noqa: E402

pytestmark = [pytest.mark.integration, pytest.mark.timeout(600)]
METHOD = "/opentelemetry.proto.collector.trace.v1.TraceService/Export"


class Client(threading.Thread):
    def __init__(self, endpoint: str):
        super().__init__(daemon=True)
        self.endpoint = endpoint
        self.acked: dict[bytes, int] = {}      # trace id → spans, of acked requests
        self.ack_times: list[float] = []
        self.stop = False

    def run(self) -> None:
        with grpc.insecure_channel(self.endpoint) as ch:
            export = ch.unary_unary(METHOD)
            while not self.stop:
                ts = [trace(3) for _ in range(40)]
                try:
                    export(make_request(ts, service="idem"), timeout=10)
                except grpc.RpcError:
                    time.sleep(0.3)
                    continue
                self.ack_times.append(time.monotonic())
                for t in ts:
                    self.acked[t[0]["trace_id"]] = len(t)


@pytest.mark.parametrize("client", ["confluent-kafka", "aiokafka"])
def test_the_router_acks_again_after_broker_restarts(kafka_broker, client):
    """aiokafka: its producer is replaced when it desynchronises;
    confluent-kafka (librdkafka) bumps its epoch itself."""
    topic = f"idem-{uuid.uuid4().hex[:10]}"
    kafka_broker.create_topic(topic, 4)
    cfg = {"exporters": {"kafka": {"brokers": [kafka_broker.bootstrap], "topic": topic,
                                   "timeout": "3s", "client": client}},
           "service": {"workers": 1}}
    recovered = []
    try:
        with Serve(cfg) as s:
            clients = [Client(s.endpoint) for _ in range(8)]
            for c in clients:
                c.start()
            for _ in range(2):
                time.sleep(3)
                kafka_broker.stop()
                time.sleep(10)
                kafka_broker.restart()
                back = time.monotonic()
                deadline = back + 30
                while not any(t > back + 1 for c in clients for t in c.ack_times[-5:]):
                    assert time.monotonic() < deadline, "the router did not ack again"
                    time.sleep(0.2)
                recovered.append(round(min(t for c in clients for t in c.ack_times
                                           if t > back) - back, 2))
            for c in clients:
                c.stop = True
            for c in clients:
                c.join(30)
            replaced = s.metric("traceo_sampler_kafka_producer_replaced_total", mode="router")
            assert "idempotent" in s.read_stderr()
    finally:
        kafka_broker.ensure_running()
    acked: dict[bytes, int] = {}
    for c in clients:
        acked.update(c.acked)
    got = spans_of(read_records(kafka_broker.bootstrap, topic, settle=3.0))
    lost = [t for t, n in acked.items() if len(set(got.get(t, ()))) != n]
    dup = sum(len(v) - len(set(v)) for v in got.values())
    print(f"{client}: recovered after {recovered} s; producers replaced {replaced}; "
          f"{len(acked)} traces acked, {dup} duplicate spans in the topic")
    assert not lost, f"{len(lost)} acked traces missing or partial"
