"""Kept traces to a Kafka topic (exporters.kafka, mode sampled) on the real
broker: the kept traces arrive whole, once; a broker outage is retried with
the queue bounded and nothing lost once it is back; and behind
receivers.kafka (consume → sample → produce) the input offsets are
committed only once the output topic acked."""
from __future__ import annotations

import socket
import sys
import threading
import time
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
from tests.support.kafka import java_partition, read_records, run_async, topic_name  # noqa: E402
from tests.support.procs import free_ports  # noqa: E402

pytestmark = [pytest.mark.integration, pytest.mark.timeout(600)]
METHOD = "/opentelemetry.proto.collector.trace.v1.TraceService/Export"
PARTITIONS = 4
ERRORS_ONLY = {"root_wait": "200ms", "idle_timeout": "500ms", "decision_wait": "5s",
               "policies": [{"name": "errors", "type": "status_code",
                             "status_code": {"status_codes": ["ERROR"]}}]}


def _norm(sp) -> bytes:
    """A span as sent: a kept span carries the sampling threshold in its
    tracestate (``ot=th:0``), everything else is as it came."""
    if sp.trace_state:
        assert "th:" in sp.trace_state, sp.trace_state
        sp.trace_state = ""
    return sp.SerializeToString()


def spans_of(recs) -> dict[bytes, list[bytes]]:
    """trace_id → [serialized span] over every record, duplicates included."""
    out: dict[bytes, list[bytes]] = {}
    for rec in recs:
        req = ExportTraceServiceRequest.FromString(rec.value)
        for rs in req.resource_spans:
            for ss in rs.scope_spans:
                for sp in ss.spans:
                    out.setdefault(sp.trace_id, []).append(_norm(sp))
    return out


def tids_of(rec) -> set[bytes]:
    req = ExportTraceServiceRequest.FromString(rec.value)
    return {sp.trace_id for rs in req.resource_spans for ss in rs.scope_spans for sp in ss.spans}


def send_mixed(endpoint: str, n_requests: int, per_request: int = 30,
               deadline_s: float = 120.0) -> tuple[dict[bytes, list[bytes]], int]:
    """Traces with an error in every third one; retried while the sampler
    pushes back. Returns (error trace → its serialized spans, pushbacks)."""
    kept: dict[bytes, list[bytes]] = {}
    pushed_back = 0
    with grpc.insecure_channel(endpoint) as ch:
        export = ch.unary_unary(METHOD)
        for i in range(n_requests):
            ts = [trace(4, status=2 if j % 3 == 0 else 0) for j in range(per_request)]
            body = make_request(ts, service=f"svc-{i % 3}")
            for rs in ExportTraceServiceRequest.FromString(body).resource_spans:
                for ss in rs.scope_spans:
                    for sp in ss.spans:
                        if sp.status.code == 2:
                            kept.setdefault(sp.trace_id, [])
            for rs in ExportTraceServiceRequest.FromString(body).resource_spans:
                for ss in rs.scope_spans:
                    for sp in ss.spans:
                        if sp.trace_id in kept:
                            kept[sp.trace_id].append(_norm(sp))
            end = time.monotonic() + deadline_s
            while True:
                try:
                    export(body, timeout=30)
                    break
                except grpc.RpcError as exc:
                    assert exc.code() == grpc.StatusCode.RESOURCE_EXHAUSTED, exc
                    pushed_back += 1
                    assert time.monotonic() < end, "pushed back for too long"
                    time.sleep(0.3)
    return kept, pushed_back


def sampled_cfg(bootstrap: str, topic: str, **kafka) -> dict:
    return {"sampler": ERRORS_ONLY, "service": {"workers": 1, "shutdown_timeout": "20s"},
            "exporters": {"kafka": {"brokers": [bootstrap], "topic": topic, "mode": "sampled",
                                    **kafka}}}


@pytest.mark.parametrize("by_id,workers", [(False, 1), (True, 1), (False, 2)])
def test_kept_traces_arrive_whole_and_once(kafka_broker, tmp_path, by_id, workers):
    """Beside a file exporter, as in docs/design.md §4 (mode unset: sampled);
    with service.workers: 2 each worker produces what it keeps."""
    topic = topic_name("kept")
    kafka_broker.create_topic(topic, PARTITIONS)
    cfg = sampled_cfg(kafka_broker.bootstrap, topic, partition_traces_by_id=by_id)
    cfg["service"]["workers"] = workers
    del cfg["exporters"]["kafka"]["mode"]
    cfg["exporters"]["file"] = {"path": str(tmp_path / "kept.jsonl")}
    with Serve(cfg) as s:
        kept, _ = send_mixed(s.endpoint, 6)
        deadline = time.monotonic() + 60
        want = sum(len(v) for v in kept.values())
        while (s.metric("traceo_sampler_spans_exported_total", exporter="kafka") < want
               or s.metric("traceo_sampler_spans_exported_total", exporter="file") < want):
            assert time.monotonic() < deadline, "kept spans not acked by the broker"
            time.sleep(0.2)
        assert s.metric("traceo_sampler_spans_exported_total", exporter="kafka") == want
        assert s.metric("traceo_sampler_spans_exported_total", exporter="file") == want
        assert s.metric("traceo_sampler_export_failures_total", exporter="kafka") == 0
        status = s.get("/api/status")
    assert '"kafka"' in status
    recs = read_records(kafka_broker.bootstrap, topic)
    got = spans_of(recs)
    # exactly the kept traces, every one whole, every span once, byte-identical
    assert set(got) == set(kept)
    for tid, spans in got.items():
        assert sorted(spans) == sorted(kept[tid])
    for rec in recs:
        tids = tids_of(rec)
        if by_id:
            assert len(tids) == 1
            assert rec.key == next(iter(tids)).hex().encode()
            assert rec.partition == java_partition(rec.key, PARTITIONS)
        else:
            assert rec.key is None
            assert {java_partition(t.hex().encode(), PARTITIONS) for t in tids} == {rec.partition}
    if by_id:
        assert len(recs) == len(kept)
    else:
        assert len(recs) < len(kept) / 2, "many traces per message"


def readyz(s: Serve) -> tuple[int, str]:
    import urllib.error
    try:
        return 200, s.get("/readyz")
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()


def test_broker_down_retries_bounded_queue_nothing_lost(kafka_broker):
    """While the broker is down the batches are retried, the queue stays
    within queue_max_bytes and the receivers push back once it is full;
    once the broker is back every kept trace arrives."""
    topic = topic_name("kept-down")
    kafka_broker.create_topic(topic, PARTITIONS)
    qmax = 64 << 10
    cfg = sampled_cfg(kafka_broker.bootstrap, topic, timeout="2s", queue_max_bytes=qmax,
                      retry={"initial_interval": "100ms", "max_interval": "1s",
                             "max_elapsed": "5m"})
    sent: dict[bytes, int] = {}          # error trace → its spans
    try:
        with Serve(cfg) as s:
            first, _ = send_mixed(s.endpoint, 2)
            sent.update({t: len(v) for t, v in first.items()})
            deadline = time.monotonic() + 60
            while s.metric("traceo_sampler_spans_exported_total",
                           exporter="kafka") < sum(sent.values()):
                assert time.monotonic() < deadline
                time.sleep(0.2)
            kafka_broker.stop()
            t_down = time.monotonic()
            pushed_back = 0
            peak = 0.0
            with grpc.insecure_channel(s.endpoint) as ch:
                export = ch.unary_unary(METHOD)
                # enough kept spans to fill the queue several times over
                while time.monotonic() - t_down < 12:
                    ts = [trace(4, status=2) for _ in range(30)]
                    try:
                        export(make_request(ts), timeout=10)
                        sent.update({t[0]["trace_id"]: len(t) for t in ts})
                    except grpc.RpcError as exc:
                        assert exc.code() == grpc.StatusCode.RESOURCE_EXHAUSTED, exc
                        pushed_back += 1
                    peak = max(peak, s.metric("traceo_sampler_exporter_queue_bytes",
                                              exporter="kafka"))
                    time.sleep(0.2)
            code, body = readyz(s)
            assert code == 503 and "exporter kafka unreachable" in body, (code, body)
            assert pushed_back > 0, "the full queue pushed back"
            # traces decided together enter as one item: one over the bound at most
            assert qmax <= peak <= qmax + (256 << 10), peak
            assert s.metric("traceo_sampler_export_failures_total", exporter="kafka") >= 2
            kafka_broker.restart()
            deadline = time.monotonic() + 120
            while s.metric("traceo_sampler_spans_exported_total",
                           exporter="kafka") < sum(sent.values()):
                assert time.monotonic() < deadline, "not everything acked after the outage"
                time.sleep(0.5)
            assert s.metric("traceo_sampler_export_dropped_spans_total", exporter="kafka") == 0
            assert readyz(s)[0] == 200
            # how often the idempotent producer had to be replaced (0 or more:
            # the desynchronisation is a race with the broker's restart)
            print("producers replaced:", s.metric("traceo_sampler_kafka_producer_replaced_total"))
    finally:
        kafka_broker.ensure_running()
    got = spans_of(read_records(kafka_broker.bootstrap, topic))
    # nothing lost (a batch acked in part before a failure may be there twice)
    assert set(got) == set(sent)
    assert all(len(set(got[t])) == n for t, n in sent.items())


async def _admin(bootstrap: str, fn):
    from aiokafka.admin import AIOKafkaAdminClient
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap, request_timeout_ms=10000)
    await admin.start()
    try:
        return await fn(admin)
    finally:
        await admin.close()


def committed(bootstrap: str, group: str, topic: str) -> dict[int, int]:
    async def fn(admin):
        offs = await admin.list_consumer_group_offsets(group)
        return {tp.partition: om.offset for tp, om in offs.items() if tp.topic == topic}
    return run_async(lambda: _admin(bootstrap, fn), 30)


class Bootstrap(threading.Thread):
    """A TCP forwarder to the broker on a port of its own: the output's only
    bootstrap address. Until ``open()`` nothing listens there, so the
    exporter cannot reach its cluster (connection refused, retryable);
    then it gets the metadata through it and talks to the broker."""

    def __init__(self, target: tuple[str, int]):
        super().__init__(daemon=True)
        self.target = target
        self.port = free_ports(1)[0]
        self._srv: socket.socket | None = None

    def open(self) -> None:
        srv = socket.socket()
        srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        srv.bind(("127.0.0.1", self.port))
        srv.listen(16)
        self._srv = srv
        self.start()

    def run(self) -> None:
        assert self._srv is not None
        while True:
            try:
                a, _ = self._srv.accept()
            except OSError:
                return
            b = socket.create_connection(self.target)
            for x, y in ((a, b), (b, a)):
                threading.Thread(target=self._pump, args=(x, y), daemon=True).start()

    @staticmethod
    def _pump(x: socket.socket, y: socket.socket) -> None:
        try:
            while data := x.recv(65536):
                y.sendall(data)
        except OSError:
            pass
        finally:
            for s in (x, y):
                try:
                    s.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass

    def close(self) -> None:
        if self._srv is not None:
            self._srv.close()


def produce(bootstrap: str, topic: str, bodies: list[bytes]) -> None:
    from aiokafka import AIOKafkaProducer

    async def go():
        p = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all")
        await p.start()
        try:
            for i, b in enumerate(bodies):
                await p.send_and_wait(topic, b, partition=i % PARTITIONS)
        finally:
            await p.stop()
    run_async(go, 60)


def test_consume_sample_produce_commits_input_only_after_the_output_acked(kafka_broker):
    """receivers.kafka → sampler → exporters.kafka (mode unset: sampled,
    beside receivers.kafka). The output cluster is unreachable at first;
    until it takes the kept traces no input offset holding one is
    committed (the dropped traces' offsets are). Then every kept trace
    arrives and the input offsets reach the end."""
    src, dst, group = topic_name("in"), topic_name("out"), topic_name("group")
    kafka_broker.create_topic(src, PARTITIONS)
    kafka_broker.create_topic(dst, PARTITIONS)
    bodies, kept = [], {}
    for i in range(16):
        ts = [trace(3, status=2 if j % 2 == 0 else 0) for j in range(10)]
        for t in ts:
            if t[0].get("status") == 2:
                kept[t[0]["trace_id"]] = len(t)
        bodies.append(make_request(ts, service=f"svc-{i % 2}"))
    produce(kafka_broker.bootstrap, src, bodies)
    out = Bootstrap(("127.0.0.1", kafka_broker.port))
    cfg = {"receivers": {"kafka": {"brokers": [kafka_broker.bootstrap], "topic": src,
                                   "group_id": group, "commit_interval": "200ms"}},
           "sampler": ERRORS_ONLY, "service": {"workers": 1, "shutdown_timeout": "10s"},
           "exporters": {"kafka": {"brokers": [f"127.0.0.1:{out.port}"], "topic": dst,
                                   "timeout": "1s"}}}
    try:
        with Serve(cfg) as s:
            deadline = time.monotonic() + 60
            while s.metric("traceo_sampler_kafka_messages_total", outcome="ok") < len(bodies):
                assert time.monotonic() < deadline, "input not consumed"
                time.sleep(0.2)
            # decided (root_wait 200ms), the output tried and failed a few times
            while s.metric("traceo_sampler_export_failures_total", exporter="kafka") < 2:
                assert time.monotonic() < deadline, "the output never failed"
                time.sleep(0.2)
            time.sleep(1.0)     # several commit intervals
            assert s.metric("traceo_sampler_spans_exported_total", exporter="kafka") == 0
            # every input message holds a kept trace: nothing is committable
            assert all(v <= 0 for v in committed(kafka_broker.bootstrap, group, src).values())
            assert s.metric("traceo_sampler_kafka_uncommitted_messages") == len(bodies)
            out.open()
            deadline = time.monotonic() + 60
            while committed(kafka_broker.bootstrap, group, src) != {
                    p: len(bodies) // PARTITIONS for p in range(PARTITIONS)}:
                assert time.monotonic() < deadline, committed(kafka_broker.bootstrap, group, src)
                time.sleep(0.3)
            assert s.metric("traceo_sampler_spans_exported_total",
                            exporter="kafka") == sum(kept.values())
            assert s.metric("traceo_sampler_kafka_uncommitted_messages") == 0
    finally:
        out.close()
    got = spans_of(read_records(kafka_broker.bootstrap, dst))
    assert set(got) == set(kept)
    assert all(len(set(got[t])) == n for t, n in kept.items())


def test_a_trace_too_large_for_the_topic_is_refused_alone(kafka_broker):
    """The topic takes messages up to 4 KiB: the batch holding one trace
    over that is refused by the broker, split down to that trace, which is
    dropped and counted; the kept traces decided with it arrive."""
    topic = topic_name("kept-small")
    kafka_broker.create_topic(topic, 1, config={"max.message.bytes": "4096"})
    cfg = sampled_cfg(kafka_broker.bootstrap, topic)
    small = [trace(2, status=2) for _ in range(8)]
    big = trace(2, status=2, attrs={"blob": "x" * 10_000})
    with Serve(cfg) as s:
        with grpc.insecure_channel(s.endpoint) as ch:
            ch.unary_unary(METHOD)(make_request(small + [big]), timeout=30)
        deadline = time.monotonic() + 60
        while s.metric("traceo_sampler_export_refused_traces_total", exporter="kafka") < 1:
            assert time.monotonic() < deadline, "the big trace was not refused"
            time.sleep(0.2)
        assert s.metric("traceo_sampler_spans_exported_total", exporter="kafka") == 16
        assert s.metric("traceo_sampler_export_dropped_spans_total", exporter="kafka") == 2
    got = spans_of(read_records(kafka_broker.bootstrap, topic))
    assert set(got) == {t[0]["trace_id"] for t in small}


def test_memory_limit_pauses_the_kafka_receiver(kafka_broker):
    """service.memory_limit_mib below what the process needs: the limiter
    pushes back for good, so the Kafka receiver pauses its partitions and
    reads nothing (the resume is tests/unit/test_kafka_pause.py)."""
    src, group = topic_name("in-mem"), topic_name("group")
    kafka_broker.create_topic(src, PARTITIONS)
    produce(kafka_broker.bootstrap, src, [make_request([trace(3)]) for _ in range(8)])
    cfg = {"receivers": {"kafka": {"brokers": [kafka_broker.bootstrap], "topic": src,
                                   "group_id": group}},
           "sampler": ERRORS_ONLY, "exporters": {"file": {"path": "kept.jsonl"}},
           "service": {"workers": 1, "memory_limit_mib": 1}}
    with Serve(cfg) as s:
        deadline = time.monotonic() + 30
        while s.metric("traceo_sampler_kafka_fetch_paused") != 1:
            assert time.monotonic() < deadline, "never paused"
            time.sleep(0.2)
        time.sleep(3)
        assert s.metric("traceo_sampler_memory_limiter_refusing") == 1
        assert s.metric("traceo_sampler_kafka_messages_total") == 0
        assert s.metric("traceo_sampler_spans_received_total") == 0
        assert "fetching paused (process memory above service.memory_limit_mib)" in \
            s.read_stderr()


@pytest.mark.parametrize("client,codec", [("confluent-kafka", "zstd"), ("aiokafka", "lz4"),
                                          ("confluent-kafka", "gzip")])
def test_compressed_kept_traces_read_back_whole(kafka_broker, client, codec):
    """exporters.kafka.compression, with either client: a consumer reads the
    kept traces back whole."""
    topic = topic_name(f"kept-{codec}")
    kafka_broker.create_topic(topic, PARTITIONS)
    cfg = sampled_cfg(kafka_broker.bootstrap, topic, compression=codec, client=client)
    with Serve(cfg) as s:
        kept, _ = send_mixed(s.endpoint, 2)
        deadline = time.monotonic() + 60
        want = sum(len(v) for v in kept.values())
        while s.metric("traceo_sampler_spans_exported_total", exporter="kafka") < want:
            assert time.monotonic() < deadline, "kept spans not acked by the broker"
            time.sleep(0.2)
    got = spans_of(read_records(kafka_broker.bootstrap, topic))
    assert set(got) == set(kept)
    assert all(sorted(got[t]) == sorted(v) for t, v in kept.items())
    # the record batches on the broker's disk carry the codec (attributes & 7)
    codecs = set()
    for seg in Path(kafka_broker.data_dir, "kraft-logs").glob(f"{topic}-*/*.log"):
        data = seg.read_bytes()
        pos = 0
        while pos + 23 <= len(data):
            length = int.from_bytes(data[pos + 8:pos + 12], "big")
            codecs.add(int.from_bytes(data[pos + 21:pos + 23], "big") & 7)
            pos += 12 + length
    assert codecs == {{"gzip": 1, "snappy": 2, "lz4": 3, "zstd": 4}[codec]}, codecs
