"""Router mode (exporters.kafka) on the real broker: every received request
is produced regrouped by trace: by default one otlp_proto message per
partition holding many traces, with ``partition_traces_by_id`` one per
trace, keyed by the trace ID in lowercase hex; either way on the murmur2
partition of that key; the
client is acknowledged only after the broker acked (docs/design.md §5)."""
from __future__ import annotations

import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import grpc
import pytest

ROOT = Path(__file__).resolve().parents[2]
for p in (str(ROOT), str(ROOT / "tests")):
    if p not in sys.path:
        sys.path.insert(0, p)

from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (  # noqa: E402
    ExportTraceServiceRequest,
)

from support_otlp import make_request, trace  # noqa: E402
from support_serve import Serve  # noqa: E402
from tests.support.fixtures import kafka_broker  # noqa: E402,F401
from tests.support.kafka import java_partition, read_records, topic_name  # noqa: E402

pytestmark = [pytest.mark.integration, pytest.mark.timeout(600)]
METHOD = "/opentelemetry.proto.collector.trace.v1.TraceService/Export"
PARTITIONS = 4


def test_router_batches_many_traces_per_partition_message(kafka_broker):
    """The default: one message per partition a request touches, each
    trace whole in the partition murmur2 of its hex trace ID chooses."""
    topic = topic_name("router-batch")
    kafka_broker.create_topic(topic, PARTITIONS)
    cfg = {"exporters": {"kafka": {"brokers": [kafka_broker.bootstrap], "topic": topic}},
           "service": {"workers": 1}}
    sent_spans: dict[bytes, bytes] = {}
    sent_traces: dict[bytes, int] = {}
    with Serve(cfg) as s:
        with grpc.insecure_channel(s.endpoint) as ch:
            export = ch.unary_unary(METHOD)
            for i in range(5):
                body = make_request([trace(3) for _ in range(40)], service=f"svc-{i}")
                for rs in ExportTraceServiceRequest.FromString(body).resource_spans:
                    for ss in rs.scope_spans:
                        for sp in ss.spans:
                            sent_spans[sp.span_id] = sp.SerializeToString()
                            sent_traces[sp.trace_id] = sent_traces.get(sp.trace_id, 0) + 1
                export(body, timeout=30)
        acked = s.metric("traceo_sampler_kafka_produced_messages_total", outcome="acked")
    assert acked == 5 * PARTITIONS      # 40 traces touch every partition
    recs = read_records(kafka_broker.bootstrap, topic, int(acked), settle=1.0, timeout=60.0)
    assert len(recs) == acked
    got: dict[bytes, int] = {}
    for rec in recs:
        req = ExportTraceServiceRequest.FromString(rec.value)
        tids = set()
        for rs in req.resource_spans:
            for ss in rs.scope_spans:
                for sp in ss.spans:
                    assert sp.SerializeToString() == sent_spans[sp.span_id]
                    got[sp.trace_id] = got.get(sp.trace_id, 0) + 1
                    tids.add(sp.trace_id)
        assert len(tids) > 1, "several traces per message"
        assert {java_partition(t.hex().encode(), PARTITIONS) for t in tids} == {rec.partition}
    assert got == sent_traces                # every trace whole, in one partition


def test_router_one_message_per_trace_keyed_by_trace_id(kafka_broker):
    topic = topic_name("router")
    kafka_broker.create_topic(topic, PARTITIONS)
    cfg = {"exporters": {"kafka": {"brokers": [kafka_broker.bootstrap], "topic": topic,
                                   "partition_traces_by_id": True}}}
    batches = []
    for i in range(10):
        # two services in one request; traces spread over both
        a = [trace(3) for _ in range(4)]
        b = [trace(2, tid=t[0]["trace_id"]) for t in a[:2]] + [trace(1, status=2)]
        batches.append((make_request(a, service=f"front-{i}"), make_request(b, service="back")))
    sent_spans: dict[bytes, bytes] = {}      # span_id → serialized span
    sent_traces: dict[bytes, int] = {}
    with Serve(cfg, http=True) as s:
        with grpc.insecure_channel(s.endpoint) as ch:
            export = ch.unary_unary(METHOD)
            for ra, rb in batches:
                # one request carrying both services' resource spans
                req = ExportTraceServiceRequest.FromString(ra + rb)
                for rs in req.resource_spans:
                    for ss in rs.scope_spans:
                        for sp in ss.spans:
                            sent_spans[sp.span_id] = sp.SerializeToString()
                            sent_traces[sp.trace_id] = sent_traces.get(sp.trace_id, 0) + 1
                export(ra + rb, timeout=30)
        # OTLP/HTTP goes the same way
        extra = [trace(2) for _ in range(3)]
        body = make_request(extra, service="http-svc")
        r = urllib.request.Request(f"http://127.0.0.1:{s.http_port}/v1/traces", data=body,
                                   headers={"Content-Type": "application/x-protobuf"})
        with urllib.request.urlopen(r, timeout=30) as resp:
            assert resp.status == 200
        for t in extra:
            for sp in t:
                sent_traces[sp["trace_id"]] = sent_traces.get(sp["trace_id"], 0) + 1
        acked = s.metric("traceo_sampler_kafka_produced_messages_total", outcome="acked")
    # the response came after the broker's ack: every message is there now
    assert acked == 10 * 5 + 3
    recs = read_records(kafka_broker.bootstrap, topic, 53, settle=1.0, timeout=60.0)
    assert len(recs) == 53
    got: dict[bytes, int] = {}
    for rec in recs:
        req = ExportTraceServiceRequest.FromString(rec.value)
        tids = {sp.trace_id for rs in req.resource_spans for ss in rs.scope_spans
                for sp in ss.spans}
        assert len(tids) == 1, "one trace per message"
        tid = tids.pop()
        assert rec.key == tid.hex().encode()
        assert rec.partition == java_partition(rec.key, PARTITIONS)
        for rs in req.resource_spans:
            svc = [a.value.string_value for a in rs.resource.attributes if a.key == "service.name"]
            assert svc and svc[0]
            for ss in rs.scope_spans:
                assert ss.scope.name == "lib"
                for sp in ss.spans:
                    if sp.span_id in sent_spans:     # spans byte-identical
                        assert sp.SerializeToString() == sent_spans[sp.span_id]
                    got[tid] = got.get(tid, 0) + 1
    assert got == sent_traces


def test_router_answers_unavailable_when_the_broker_does_not_ack(kafka_broker):
    topic = topic_name("router-down")
    kafka_broker.create_topic(topic, PARTITIONS)
    cfg = {"exporters": {"kafka": {"brokers": [kafka_broker.bootstrap], "topic": topic,
                                   "timeout": "3s"}}}
    try:
        with Serve(cfg, http=True) as s:
            with grpc.insecure_channel(s.endpoint) as ch:
                export = ch.unary_unary(METHOD)
                export(make_request([trace(2)]), timeout=30)
                kafka_broker.stop()
                with pytest.raises(grpc.RpcError) as err:
                    export(make_request([trace(2)]), timeout=30)
                assert err.value.code() == grpc.StatusCode.UNAVAILABLE
                r = urllib.request.Request(
                    f"http://127.0.0.1:{s.http_port}/v1/traces", data=make_request([trace(2)]),
                    headers={"Content-Type": "application/x-protobuf"})
                with pytest.raises(urllib.error.HTTPError) as herr:
                    urllib.request.urlopen(r, timeout=30)
                assert herr.value.code == 503
                assert s.metric("traceo_sampler_kafka_produced_messages_total",
                                outcome="failed") >= 1
                kafka_broker.restart()
                # the client's retry then succeeds
                deadline = time.monotonic() + 60
                while True:
                    try:
                        export(make_request([trace(2)]), timeout=30)
                        break
                    except grpc.RpcError:
                        if time.monotonic() > deadline:
                            raise
                        time.sleep(1)
    finally:
        kafka_broker.ensure_running()
