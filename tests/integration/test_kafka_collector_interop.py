"""Interop with the OpenTelemetry Collector's Kafka components (v0.161.0, the
binary scripts/otelcol.sh builds), on the real broker:

- the Collector's ``kafkaexporter`` (otlp_proto, partition_traces_by_id true
  and false) → topic → a Traceo consumer group (``receivers.kafka``) → kept
  traces whole at a sink;
- Traceo's router (``exporters.kafka``, both partition_traces_by_id settings)
  → topic → the Collector's ``kafkareceiver`` → its otlp exporter → a sink:
  every span arrives, byte for byte;
- a Collector file kafka → tail_sampling → kafka run by ``serve -c``, its
  kept traces (exporters.kafka, mode sampled) read by the kafkareceiver;
- a trace's partition: the Collector keyed by trace ID with
  ``record_partitioner.sticky_key.hasher: murmur2`` picks the partition
  Traceo's router picks; its default hasher (sarama_compat, FNV-1a) does not.
"""
from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
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
from opentelemetry.proto.trace.v1.trace_pb2 import Span  # noqa: E402

from support_otlp import CaptureSink, make_request  # noqa: E402
from support_serve import Serve  # noqa: E402
from tests.support.fixtures import kafka_broker  # noqa: E402,F401
from tests.support.kafka import java_partition, read_records, topic_name  # noqa: E402
from tests.support.otelcol import Otelcol, otelcol_binary  # noqa: E402
from tests.support.procs import free_ports  # noqa: E402
import yaml  # noqa: E402

pytestmark = [pytest.mark.integration, pytest.mark.timeout(300)]
METHOD = "/opentelemetry.proto.collector.trace.v1.TraceService/Export"
PARTITIONS = 4


@pytest.fixture(scope="module", autouse=True)
def _collector_binary():
    try:
        otelcol_binary()
    except Exception as exc:  # noqa: BLE001 - any build failure is a skip reason
        pytest.skip(f"the Collector binary (scripts/otelcol.sh build) cannot be built: {exc}")


@contextmanager
def _started(col: Otelcol, serve: Serve):
    """Start the Collector and serve at once (each takes seconds on two
    busy cores). The Collector starts from this thread: it dies with the
    thread that forked it (PR_SET_PDEATHSIG), so not from a pool's."""
    with ThreadPoolExecutor(1) as pool:
        fut = pool.submit(serve.__enter__)
        try:
            col.__enter__()
        except BaseException:
            fut.result()
            serve.__exit__(None, None, None)
            raise
    try:
        fut.result()
    except BaseException:
        col.__exit__(None, None, None)
        raise
    try:
        yield col, serve
    finally:
        serve.__exit__(None, None, None)
        col.__exit__(None, None, None)


def _traces(n: int, error_every: int = 3):
    """n traces of 4 spans: part 1 the three children (an error among them
    in every ``error_every``-th trace), part 2 the root, to be sent in a
    later request, so each trace spans two Kafka messages."""
    out = []
    t0 = 1_700_000_000_000_000_000
    for i in range(n):
        tid, root = os.urandom(16), os.urandom(8)
        kids = [{"trace_id": tid, "span_id": os.urandom(8), "parent": root, "name": f"child{k}",
                 "start": t0 + 1_000_000, "end": t0 + 2_000_000,
                 "status": 2 if (i % error_every == 0 and k == 0) else 0,
                 "attrs": {"k": k}} for k in range(3)]
        top = [{"trace_id": tid, "span_id": root, "parent": b"", "name": "root",
                "start": t0, "end": t0 + 50_000_000}]
        out.append((tid, kids, top))
    return out


def _span_bytes(body: bytes) -> dict[bytes, bytes]:
    req = ExportTraceServiceRequest.FromString(body)
    return {sp.span_id: sp.SerializeToString()
            for rs in req.resource_spans for ss in rs.scope_spans for sp in ss.spans}


def _as_sent(sp: Span, sent: bytes) -> bool:
    """The span is the one sent, byte for byte, but for the empty status
    the Collector's pdata encoder writes into every span it re-encodes."""
    got = Span()
    got.CopyFrom(sp)
    if got.HasField("status") and got.status.ByteSize() == 0 \
            and not Span.FromString(sent).HasField("status"):
        got.ClearField("status")
    return got.SerializeToString() == sent


def _export(endpoint: str, body: bytes) -> None:
    with grpc.insecure_channel(endpoint) as ch:
        ch.unary_unary(METHOD)(body, timeout=30)


def _wait(pred, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not pred():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.1)


def _sarama_partition(key: bytes, n: int) -> int:
    """franz-go's SaramaCompatHasher over FNV-1a, the Collector's default."""
    h = 0x811C9DC5
    for b in key:
        h = ((h ^ b) * 0x01000193) & 0xFFFFFFFF
    signed = h - (1 << 32) if h & 0x80000000 else h
    p = abs(signed) % n            # Go's % truncates toward zero, then the sign is dropped
    return p


def _kafka_exporter(bootstrap: str, topic: str, by_id: bool, hasher: str | None = "murmur2",
                    compression: str = "none") -> dict:
    e: dict = {"brokers": [bootstrap], "traces": {"topic": topic, "encoding": "otlp_proto"},
               "partition_traces_by_id": by_id,
               # synchronous: the client's request returns once the broker acked
               "sending_queue": {"enabled": False},
               "producer": {"compression": compression}}
    if hasher:
        e["record_partitioner"] = {"sticky_key": {"hasher": hasher}}
    return e


def _collector_to_kafka(port: int, exporters: dict) -> dict:
    return {
        "receivers": {"otlp": {"protocols": {"grpc": {"endpoint": f"127.0.0.1:{port}"}}}},
        "exporters": exporters,
        "service": {"pipelines": {"traces": {"receivers": ["otlp"],
                                             "exporters": list(exporters)}}},
    }


@pytest.mark.parametrize("by_id,compression", [(True, "none"), (False, "zstd"), (True, "lz4")],
                         ids=["partition_traces_by_id", "batched-zstd", "partition_traces_by_id-lz4"])
def test_collector_kafkaexporter_feeds_a_traceo_group(kafka_broker, by_id, compression):
    """Kept traces reach the sink whole although each was produced in two
    messages (the root one request after its children)."""
    topic, group = topic_name("col-exp"), topic_name("traceo")
    kafka_broker.create_topic(topic, PARTITIONS)
    traces = _traces(30)
    errors = {tid for i, (tid, _, _) in enumerate(traces) if i % 3 == 0}
    part1 = make_request([kids for _, kids, _ in traces], service="checkout")
    part2 = make_request([top for _, _, top in traces], service="checkout")
    sent = {**_span_bytes(part1), **_span_bytes(part2)}
    (port,) = free_ports(1)
    col_cfg = _collector_to_kafka(port, {"kafka": _kafka_exporter(
        kafka_broker.bootstrap, topic, by_id, compression=compression)})
    with CaptureSink() as sink:
        member = {
            "receivers": {"kafka": {"brokers": [kafka_broker.bootstrap], "topic": topic,
                                    "group_id": group, "commit_interval": "500ms"}},
            "sampler": {"root_wait": "300ms", "idle_timeout": "2s", "decision_wait": "10s",
                        "policies": [{"name": "errors", "type": "status_code",
                                      "status_code": {"status_codes": ["ERROR"]}}]},
            "exporters": {"otlp": {"endpoint": sink.endpoint, "compression": "none"}},
            "service": {"workers": 1},
        }
        with _started(Otelcol(col_cfg), Serve(member)) as (_, s):
            _export(f"127.0.0.1:{port}", part1)
            _export(f"127.0.0.1:{port}", part2)
            try:
                _wait(lambda: len(sink.spans()) >= 4 * len(errors), 30, "the kept traces")
            except AssertionError:
                raise AssertionError(s.read_stderr()[-3000:])
            time.sleep(0.5)     # a wrongly kept or split trace would show by now
            got = sink.spans()
    by_trace: dict[bytes, set[bytes]] = {}
    for tid, sp, res, _ in got:
        by_trace.setdefault(tid, set()).add(sp.span_id)
        # the span as the client sent it, plus the kept probability Traceo
        # appends to every kept span's tracestate (README "How it works")
        assert sp.trace_state.startswith("ot=th:")
        sp.ClearField("trace_state")
        assert _as_sent(sp, sent[sp.span_id])
        assert res.attributes[0].value.string_value == "checkout"
    assert set(by_trace) == errors
    for tid, kids, top in traces:
        if tid in errors:
            assert by_trace[tid] == {s["span_id"] for s in kids + top}, "trace whole"
    assert len(got) == 4 * len(errors), "no span twice"
    if not by_id:
        # what the Collector produced: one message per request, no key (so
        # the two parts of a trace may be in two partitions: README)
        recs = read_records(kafka_broker.bootstrap, topic, 2, settle=0.0, timeout=30.0)
        assert [r.key for r in recs] == [None, None]


def test_a_collector_file_kafka_to_kafka_runs_on_traceo(kafka_broker):
    """The Collector's own file (kafka receiver → tail_sampling → kafka
    exporter), which the real Collector validates, run by ``serve -c`` as
    it is, between two pipelines of one real Collector: its kafkaexporter
    (snappy) feeds it, its kafkareceiver reads the kept traces Traceo
    produced (exporters.kafka, mode sampled) and hands them to a sink."""
    t_in, t_out = topic_name("dropin-in"), topic_name("dropin-out")
    for t in (t_in, t_out):
        kafka_broker.create_topic(t, PARTITIONS)
    traces = _traces(15)
    errors = {tid for i, (tid, _, _) in enumerate(traces) if i % 3 == 0}
    part1 = make_request([k for _, k, _ in traces])
    part2 = make_request([t for _, _, t in traces])
    sent = {**_span_bytes(part1), **_span_bytes(part2)}
    (port,) = free_ports(1)
    with CaptureSink() as sink:
        col_cfg = {
            "receivers": {
                "otlp": {"protocols": {"grpc": {"endpoint": f"127.0.0.1:{port}"}}},
                "kafka": {"brokers": [kafka_broker.bootstrap],
                          "traces": {"topics": [t_out], "encoding": "otlp_proto"},
                          "group_id": topic_name("otelcol"), "initial_offset": "earliest"}},
            "exporters": {
                "kafka": _kafka_exporter(kafka_broker.bootstrap, t_in, False,
                                         compression="snappy"),
                "otlp": {"endpoint": sink.endpoint, "tls": {"insecure": True}}},
            "service": {"pipelines": {
                "traces/in": {"receivers": ["otlp"], "exporters": ["kafka"]},
                "traces/out": {"receivers": ["kafka"], "exporters": ["otlp"]}}},
        }
        text = yaml.safe_dump({
            "receivers": {"kafka": {"brokers": [kafka_broker.bootstrap],
                                    "traces": {"topics": [t_in], "encoding": "otlp_proto"},
                                    "group_id": topic_name("dropin"), "initial_offset": "earliest"}},
            "processors": {"tail_sampling": {"decision_wait": "1s", "policies": [
                {"name": "errors", "type": "status_code",
                 "status_code": {"status_codes": ["ERROR"]}}]}},
            "exporters": {"kafka": {"brokers": [kafka_broker.bootstrap],
                                    "traces": {"topic": t_out, "encoding": "otlp_proto"},
                                    "partition_traces_by_id": True}},
            "service": {"pipelines": {"traces": {"receivers": ["kafka"],
                                                 "processors": ["tail_sampling"],
                                                 "exporters": ["kafka"]}}},
        })
        d = Path(tempfile.mkdtemp(prefix="traceo-dropin-"))
        (d / "otelcol.yaml").write_text(text)
        ok = subprocess.run([otelcol_binary(), "validate", "--config", str(d / "otelcol.yaml")],
                            capture_output=True, text=True, timeout=60)
        assert ok.returncode == 0, ok.stderr
        env = {**os.environ,
               "PYTHONPATH": str(ROOT / "src") + os.pathsep + os.environ.get("PYTHONPATH", "")}
        with Otelcol(col_cfg), open(d / "stderr.log", "w+") as err:
            proc = subprocess.Popen(
                [sys.executable, "-m", "traceo_sampler", "serve", "-c", str(d / "otelcol.yaml")],
                stdout=subprocess.DEVNULL, stderr=err, env=env, cwd=d)
            try:
                _export(f"127.0.0.1:{port}", part1)
                _export(f"127.0.0.1:{port}", part2)
                try:
                    _wait(lambda: len(sink.spans()) >= 4 * len(errors), 30, "the kept traces")
                except AssertionError:
                    raise AssertionError((d / "stderr.log").read_text()[-3000:])
                time.sleep(0.5)
            finally:
                proc.terminate()
                proc.wait(30)
        got = sink.spans()
    assert {tid for tid, *_ in got} == errors
    assert len(got) == 4 * len(errors)
    for _, sp, _, _ in got:
        assert sp.trace_state.startswith("ot=th:")
        sp.ClearField("trace_state")
        assert _as_sent(sp, sent[sp.span_id])


@pytest.mark.parametrize("by_id", [True, False], ids=["partition_traces_by_id", "batched"])
def test_traceo_router_feeds_collector_kafkareceiver(kafka_broker, by_id):
    """Every span the router produced comes out of the Collector's pipeline
    unchanged (the receiver decodes Traceo's otlp_proto messages)."""
    topic = topic_name("router-col")
    kafka_broker.create_topic(topic, PARTITIONS)
    traces = _traces(40)
    bodies = [make_request([kids for _, kids, _ in traces[:20]], service="a"),
              make_request([top for _, _, top in traces[:20]] +
                           [kids for _, kids, _ in traces[20:]], service="b"),
              make_request([top for _, _, top in traces[20:]], service="c")]
    sent: dict[bytes, bytes] = {}
    for b in bodies:
        sent.update(_span_bytes(b))
    router = {"exporters": {"kafka": {"brokers": [kafka_broker.bootstrap], "topic": topic,
                                      "partition_traces_by_id": by_id}},
              "service": {"workers": 1}}
    with CaptureSink() as sink:
        col_cfg = {
            "receivers": {"kafka": {"brokers": [kafka_broker.bootstrap],
                                    "traces": {"topics": [topic], "encoding": "otlp_proto"},
                                    "group_id": topic_name("otelcol"),
                                    "initial_offset": "earliest"}},
            "exporters": {"otlp": {"endpoint": sink.endpoint, "tls": {"insecure": True},
                                   "compression": "none"}},
            "service": {"pipelines": {"traces": {"receivers": ["kafka"],
                                                 "exporters": ["otlp"]}}},
        }
        with _started(Otelcol(col_cfg), Serve(router)) as (col, s):
            for b in bodies:
                _export(s.endpoint, b)     # answered after the broker acked
            try:
                _wait(lambda: len(sink.spans()) >= len(sent), 30, "every span")
            except AssertionError:
                raise AssertionError(col.log())
            time.sleep(0.3)
            got = sink.spans()
    services = {}
    for _, sp, res, scope in got:
        assert _as_sent(sp, sent[sp.span_id])
        assert scope.name == "lib"
        services[sp.span_id] = res.attributes[0].value.string_value
    assert len(got) == len(sent) == 160
    assert set(services.values()) == {"a", "b", "c"}


def test_trace_partition_agrees_with_the_collector_keyed_by_trace_id(kafka_broker):
    """Children produced by the Collector (keyed by trace ID, murmur2),
    roots by Traceo's router: every trace in one partition. The Collector's
    default hasher (sarama_compat) puts a trace elsewhere."""
    mixed, sarama = topic_name("mixed"), topic_name("sarama")
    for t in (mixed, sarama):
        kafka_broker.create_topic(t, PARTITIONS)
    traces = _traces(40)
    (port,) = free_ports(1)
    col_cfg = _collector_to_kafka(port, {
        "kafka/murmur2": _kafka_exporter(kafka_broker.bootstrap, mixed, True),
        "kafka/default": _kafka_exporter(kafka_broker.bootstrap, sarama, True, hasher=None)})
    router = {"exporters": {"kafka": {"brokers": [kafka_broker.bootstrap], "topic": mixed}},
              "service": {"workers": 1}}
    with _started(Otelcol(col_cfg), Serve(router)) as (_, s):
        _export(f"127.0.0.1:{port}", make_request([kids for _, kids, _ in traces]))
        _export(s.endpoint, make_request([top for _, _, top in traces]))
    recs = read_records(kafka_broker.bootstrap, mixed, 40 + PARTITIONS, settle=0.0, timeout=30.0)
    where: dict[bytes, set[int]] = {}
    for rec in recs:
        for rs in ExportTraceServiceRequest.FromString(rec.value).resource_spans:
            for ss in rs.scope_spans:
                for sp in ss.spans:
                    where.setdefault(sp.trace_id, set()).add(rec.partition)
    assert len(recs) == 40 + PARTITIONS    # 40 keyed messages + the router's per-partition ones
    assert set(where) == {tid for tid, _, _ in traces}
    for tid, parts in where.items():
        assert parts == {java_partition(tid.hex().encode(), PARTITIONS)}, "one partition"

    recs = read_records(kafka_broker.bootstrap, sarama, 40, settle=0.0, timeout=30.0)
    assert len(recs) == 40
    differ = 0
    for rec in recs:
        assert rec.partition == _sarama_partition(rec.key, PARTITIONS)
        differ += rec.partition != java_partition(rec.key, PARTITIONS)
    assert differ > len(recs) // 2      # ~3 in 4 with 4 partitions: "most" (README)
