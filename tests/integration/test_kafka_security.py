"""Kafka over TLS and SASL on the real broker (KRaft Kafka 4.4, one for the
module, its SSL listener requiring a client certificate, its SASL_PLAINTEXT
and SASL_SSL listeners taking PLAIN, SCRAM-SHA-256 and SCRAM-SHA-512):

- a consumer group member (receivers.kafka, aiokafka) reading a SASL_SSL
  listener with the password from ``${env:...}`` keeps every trace;
- the router (exporters.kafka) produces over SSL with a client certificate,
  SASL_PLAINTEXT and SASL_SSL, with both producer clients;
- a wrong password or an untrusted broker certificate: the router refuses
  to start with one line saying so, a member stays unready with the reason
  in /readyz and the log, no traceback, no hang, the password never shown;
- a Collector file whose kafka receiver and kafka exporter carry ``tls`` and
  ``auth.sasl`` runs unchanged on ``serve -c``, fed by the real Collector's
  kafkaexporter over SASL_SSL (when its binary can be built).
"""
from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import time
import urllib.error
from pathlib import Path

import grpc
import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
for p in (str(ROOT), str(ROOT / "tests")):
    if p not in sys.path:
        sys.path.insert(0, p)

from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (  # noqa: E402
    ExportTraceServiceRequest,
)

from support_otlp import CaptureSink, make_request, trace  # noqa: E402
from support_serve import Serve  # noqa: E402
from tests.support.kafka import (KafkaBroker, SecureListeners, read_records,  # noqa: E402
                                 topic_name)
from tests.support.procs import free_ports  # noqa: E402

pytestmark = [pytest.mark.integration, pytest.mark.timeout(300)]
METHOD = "/opentelemetry.proto.collector.trace.v1.TraceService/Export"
PARTITIONS = 4
PASSWORD = "Tr4ceo-s3cret"


@pytest.fixture(scope="module")
def broker(tmp_path_factory):
    sec = SecureListeners(tmp_path_factory.mktemp("kafka-tls"), users={"traceo": PASSWORD})
    with KafkaBroker(num_partitions=PARTITIONS, secure=sec) as b:
        yield b


def client_block(b: KafkaBroker, proto: str, mechanism: str = "SCRAM-SHA-256",
                 password: str = PASSWORD, ca_file: str | None = None) -> dict:
    """brokers, tls and auth of receivers.kafka / exporters.kafka for one listener."""
    sec = b.secure
    assert sec is not None
    out: dict = {"brokers": [b.bootstrap_of(proto)]}
    if "SSL" in proto:
        out["tls"] = {"ca_file": ca_file or sec.ca_file}
    if proto == "SSL":
        out["tls"].update(cert_file=sec.cert_file, key_file=sec.key_file)
    if proto.startswith("SASL"):
        out["auth"] = {"sasl": {"mechanism": mechanism, "username": "traceo",
                                "password": password}}
    return out


def _span_ids(body: bytes) -> dict[bytes, bytes]:
    req = ExportTraceServiceRequest.FromString(body)
    return {sp.span_id: sp.trace_id
            for rs in req.resource_spans for ss in rs.scope_spans for sp in ss.spans}


def _readyz(s: Serve) -> tuple[int, str]:
    try:
        return 200, s.get("/readyz")
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()
    except OSError as exc:
        return 0, str(exc)


@pytest.mark.parametrize("client,proto,mechanism", [
    ("confluent-kafka", "SASL_SSL", "SCRAM-SHA-512"),
    ("aiokafka", "SASL_SSL", "SCRAM-SHA-256"),
    ("confluent-kafka", "SSL", None),
    ("aiokafka", "SASL_PLAINTEXT", "PLAIN"),
    ("confluent-kafka", "SASL_PLAINTEXT", "SCRAM-SHA-256"),
])
def test_router_produces_over_tls_and_sasl(broker, client, proto, mechanism):
    """Every span the router acked is on the topic (read back on the
    plaintext listener): TLS with a client certificate, SASL in plaintext
    and over TLS, each producer client."""
    topic = topic_name("sec-router")
    broker.create_topic(topic, PARTITIONS)
    blk = client_block(broker, proto, mechanism or "PLAIN")
    cfg = {"exporters": {"kafka": {**blk, "topic": topic, "client": client}},
           "service": {"workers": 1}}
    bodies = [make_request([trace(3) for _ in range(20)], service=f"svc-{i}") for i in range(3)]
    with Serve(cfg) as s:
        with grpc.insecure_channel(s.endpoint) as ch:
            for body in bodies:
                ch.unary_unary(METHOD)(body, timeout=30)
        acked = s.metric("traceo_sampler_kafka_produced_messages_total", outcome="acked")
        s.stop()
    assert s.returncode == 0
    assert PASSWORD not in s.stderr
    assert f"({proto}" in s.stderr, "the log line says how it connects"
    sent: dict[bytes, bytes] = {}
    for body in bodies:
        sent.update(_span_ids(body))
    recs = read_records(broker.bootstrap, topic, int(acked), settle=0.5, timeout=30.0)
    got: dict[bytes, bytes] = {}
    for r in recs:
        got.update(_span_ids(r.value))
    assert got == sent


def test_member_consumes_a_sasl_ssl_topic_and_keeps_traces(broker, monkeypatch):
    """receivers.kafka over SASL_SSL (SCRAM-SHA-512, the password from the
    environment): every trace produced to the topic reaches the exporter."""
    from confluent_kafka import Producer
    topic, group = topic_name("sec-member"), topic_name("traceo")
    broker.create_topic(topic, PARTITIONS)
    monkeypatch.setenv("TRACEO_TEST_KAFKA_PASSWORD", PASSWORD)
    bodies = [make_request([trace(4) for _ in range(10)], service=f"svc-{i}") for i in range(4)]
    prod = Producer({"bootstrap.servers": broker.bootstrap})
    for body in bodies:
        prod.produce(topic, body)
    assert prod.flush(30) == 0
    sent: dict[bytes, bytes] = {}
    for body in bodies:
        sent.update(_span_ids(body))
    with CaptureSink() as sink:
        member = {
            "receivers": {"kafka": {
                **client_block(broker, "SASL_SSL", "SCRAM-SHA-512",
                               password="${env:TRACEO_TEST_KAFKA_PASSWORD}"),
                "topic": topic, "group_id": group, "commit_interval": "500ms"}},
            "sampler": {"root_wait": "300ms", "idle_timeout": "1s",
                        "policies": [{"name": "all", "type": "always_sample"}]},
            "exporters": {"otlp": {"endpoint": sink.endpoint, "compression": "none"}},
            "service": {"workers": 1}}
        with Serve(member) as s:
            deadline = time.monotonic() + 30
            while len(sink.spans()) < len(sent):
                assert time.monotonic() < deadline, s.read_stderr()[-3000:]
                time.sleep(0.2)
            assert s.metric("traceo_sampler_kafka_messages_total") >= len(bodies)
            s.stop()
        got = {sp.span_id: tid for tid, sp, _, _ in sink.spans()}
    assert got == sent and len(sink.spans()) == len(sent)
    assert "(SASL_SSL, SCRAM-SHA-512 as traceo)" in s.stderr
    assert PASSWORD not in s.stderr


@pytest.mark.parametrize("client,wrong", [("confluent-kafka", "password"),
                                          ("aiokafka", "password"),
                                          ("confluent-kafka", "ca"),
                                          ("aiokafka", "ca"),
                                          ("aiokafka", "server name")])
def test_router_refused_by_the_brokers_says_why_and_exits(broker, client, wrong):
    """A wrong password, a broker certificate the CA file does not trust,
    or one not valid for tls.server_name_override (the name checked instead
    of 127.0.0.1): serve exits 1 at once with one line naming the cause
    (not after the 60 s a broker that is down gets), no traceback."""
    sec = broker.secure
    assert sec is not None
    blk = client_block(broker, "SASL_SSL", "SCRAM-SHA-256",
                       password="not-" + PASSWORD if wrong == "password" else PASSWORD,
                       ca_file=sec.other_ca_file if wrong == "ca" else None)
    if wrong == "server name":
        blk["tls"]["server_name_override"] = "other.test"
    cfg = {"exporters": {"kafka": {**blk, "topic": topic_name("sec-refused"),
                                   "client": client, "timeout": "20s"}},
           "service": {"workers": 1}}
    s = Serve(cfg, wait_ready=False)
    t0 = time.monotonic()
    with s:
        assert s.proc is not None
        s.proc.wait(30)
        took = time.monotonic() - t0
        err = s.read_stderr()
    assert s.proc.returncode == 1, err
    assert took < 15, f"took {took:.1f} s"
    assert "Traceback" not in err and PASSWORD not in err
    if wrong == "password":
        assert "exporters.kafka:" in err and "refused the SASL credentials (SCRAM-SHA-256, " \
            "user traceo)" in err, err
    elif wrong == "ca":
        assert "exporters.kafka:" in err and "certificate" in err, err
    else:
        assert "exporters.kafka:" in err and "not valid for 'other.test'" in err, err


@pytest.mark.parametrize("wrong,why", [
    ("password", "refused the SASL credentials (SCRAM-SHA-256, user traceo)"),
    ("client certificate", "does the listener require a client certificate (tls.cert_file)?")])
def test_member_refused_is_unready_and_says_why(broker, wrong, why):
    """The member keeps retrying (the credentials may be fixed on the
    brokers) and says why in /readyz and its log; SIGTERM still ends it."""
    if wrong == "password":
        blk = client_block(broker, "SASL_SSL", "SCRAM-SHA-256", password="not-" + PASSWORD)
    else:
        blk = client_block(broker, "SSL")
        del blk["tls"]["cert_file"], blk["tls"]["key_file"]
    cfg = {"receivers": {"kafka": {**blk, "topic": topic_name("sec-unready"),
                                   "group_id": topic_name("g")}},
           "sampler": {"policies": [{"name": "all", "type": "always_sample"}]},
           "exporters": {"file": {"path": os.path.join(tempfile.mkdtemp(), "out.jsonl")}},
           "service": {"workers": 1}}
    with Serve(cfg, wait_ready=False) as s:
        deadline = time.monotonic() + 30
        while True:
            code, body = _readyz(s)
            if code == 503 and "receivers.kafka not connected" in body:
                break
            assert time.monotonic() < deadline, (code, body, s.read_stderr()[-2000:])
            time.sleep(0.2)
        assert why in body, body
        t0 = time.monotonic()
        assert s.stop() == 0
        assert time.monotonic() - t0 < 15
    err = s.stderr
    assert "kafka receiver: cannot connect to" in err and why in err
    assert "Traceback" not in err and PASSWORD not in err


def test_sampled_exporter_refused_is_unready_and_says_why(broker):
    """mode: sampled with a wrong password: its batches are retried and
    /readyz says why."""
    blk = client_block(broker, "SASL_SSL", "PLAIN", password="not-" + PASSWORD)
    cfg = {"sampler": {"root_wait": "200ms", "idle_timeout": "500ms",
                       "policies": [{"name": "all", "type": "always_sample"}]},
           "exporters": {"kafka": {**blk, "mode": "sampled", "topic": topic_name("sec-kept"),
                                   "timeout": "5s"}},
           # the kept trace cannot be delivered: do not wait the default 30 s for it
           "service": {"workers": 1, "shutdown_timeout": "2s"}}
    with Serve(cfg, wait_ready=False) as s:
        deadline = time.monotonic() + 30
        sent = False
        while True:
            if not sent:
                try:
                    with grpc.insecure_channel(s.endpoint) as ch:
                        ch.unary_unary(METHOD)(make_request([trace(2)]), timeout=5)
                    sent = True
                except grpc.RpcError:
                    pass
            code, body = _readyz(s)
            if code == 503 and "exporter kafka unreachable" in body:
                break
            assert time.monotonic() < deadline, (code, body, s.read_stderr()[-2000:])
            time.sleep(0.2)
        assert "refused the SASL credentials (PLAIN, user traceo)" in body, body
        assert s.metric("traceo_sampler_export_failures_total", exporter="kafka") >= 1
        s.stop()
    assert "Traceback" not in s.stderr and PASSWORD not in s.stderr


def test_a_collector_file_with_kafka_tls_and_sasl_runs_unchanged(broker, monkeypatch):
    """The Collector's own file (kafka receiver → tail_sampling → kafka
    exporter, each with tls and auth.sasl, the password from ${env:...}),
    validated by the real Collector, run by ``serve -c`` as it is; fed by
    the real Collector's kafkaexporter over SASL_SSL when its binary can be
    built (else by a producer on the plaintext listener). The kept traces
    (errors) are on the output topic, whole."""
    from tests.support.otelcol import Otelcol, otelcol_binary
    sec = broker.secure
    assert sec is not None
    t_in, t_out = topic_name("sec-dropin-in"), topic_name("sec-dropin-out")
    for t in (t_in, t_out):
        broker.create_topic(t, PARTITIONS)
    monkeypatch.setenv("KAFKA_PASSWORD", PASSWORD)
    traces = [trace(4, status=2) if i % 3 == 0 else trace(4) for i in range(15)]
    body = make_request(traces, service="checkout")
    spans = _span_ids(body)
    errors = {t[0]["trace_id"] for i, t in enumerate(traces) if i % 3 == 0}

    def sasl(mech: str) -> dict:
        return {"sasl": {"mechanism": mech, "username": "traceo",
                         "password": "${env:KAFKA_PASSWORD}"}}
    tls = {"ca_file": sec.ca_file}
    text = yaml.safe_dump({
        "receivers": {"kafka": {"brokers": [broker.bootstrap_of("SASL_SSL")],
                                "traces": {"topics": [t_in], "encoding": "otlp_proto"},
                                "group_id": topic_name("dropin"), "initial_offset": "earliest",
                                "tls": tls, "auth": sasl("SCRAM-SHA-512")}},
        "processors": {"tail_sampling": {"decision_wait": "1s", "policies": [
            {"name": "errors", "type": "status_code",
             "status_code": {"status_codes": ["ERROR"]}}]}},
        "exporters": {"kafka": {"brokers": [broker.bootstrap_of("SASL_SSL")],
                                "traces": {"topic": t_out, "encoding": "otlp_proto"},
                                "tls": tls, "auth": sasl("PLAIN")}},
        "service": {"pipelines": {"traces": {"receivers": ["kafka"],
                                             "processors": ["tail_sampling"],
                                             "exporters": ["kafka"]}}},
    })
    d = Path(tempfile.mkdtemp(prefix="traceo-sec-dropin-"))
    (d / "otelcol.yaml").write_text(text)
    try:
        binary: str | None = otelcol_binary()
    except Exception:  # noqa: BLE001 - no Go toolchain or module proxy: feed it ourselves
        binary = None
    if binary is not None:
        ok = subprocess.run([binary, "validate", "--config", str(d / "otelcol.yaml")],
                            capture_output=True, text=True, timeout=60)
        assert ok.returncode == 0, ok.stderr
    env = {**os.environ,
           "PYTHONPATH": str(ROOT / "src") + os.pathsep + os.environ.get("PYTHONPATH", "")}
    with open(d / "stderr.log", "w+") as err:
        proc = subprocess.Popen(
            [sys.executable, "-m", "traceo_sampler", "serve", "-c", str(d / "otelcol.yaml")],
            stdout=subprocess.DEVNULL, stderr=err, env=env, cwd=d)
        try:
            if binary is not None:
                (port,) = free_ports(1)
                col_cfg = {
                    "receivers": {"otlp": {"protocols": {"grpc": {
                        "endpoint": f"127.0.0.1:{port}"}}}},
                    "exporters": {"kafka": {
                        "brokers": [broker.bootstrap_of("SASL_SSL")],
                        "traces": {"topic": t_in, "encoding": "otlp_proto"},
                        "tls": tls, "auth": sasl("SCRAM-SHA-256"),
                        "sending_queue": {"enabled": False}}},
                    "service": {"pipelines": {"traces": {"receivers": ["otlp"],
                                                         "exporters": ["kafka"]}}}}
                with Otelcol(col_cfg) as col:
                    with grpc.insecure_channel(f"127.0.0.1:{port}") as ch:
                        try:
                            ch.unary_unary(METHOD)(body, timeout=30)
                        except grpc.RpcError:
                            raise AssertionError(col.log()) from None
            else:
                from confluent_kafka import Producer
                prod = Producer({"bootstrap.servers": broker.bootstrap})
                prod.produce(t_in, body)
                assert prod.flush(30) == 0
            expected = sum(1 for tid in spans.values() if tid in errors)
            deadline = time.monotonic() + 40
            got: dict[bytes, bytes] = {}
            while len(got) < expected:
                assert time.monotonic() < deadline, (d / "stderr.log").read_text()[-3000:]
                for r in read_records(broker.bootstrap, t_out, 1, settle=0.0, timeout=5.0):
                    got.update(_span_ids(r.value))
        finally:
            proc.terminate()
            proc.wait(30)
    log = (d / "stderr.log").read_text()
    assert proc.returncode == 0, log[-3000:]
    assert set(got.values()) == errors
    assert got == {sid: tid for sid, tid in spans.items() if tid in errors}, "traces whole"
    assert PASSWORD not in log and "Traceback" not in log


def test_sidecar_shares_decisions_over_sasl_ssl(broker):
    """sampler.shared_decisions over SASL_SSL: a kept trace's decision is
    published to the decisions topic (read back on the plaintext listener);
    with a wrong password the sidecar decides locally and says why."""
    from traceo_sampler.shared_decisions import decode
    topic = topic_name("sec-decisions")
    broker.create_topic(topic, 1)
    err = trace(2, status=2)
    sampler = {"root_wait": "200ms", "idle_timeout": "500ms",
               "policies": [{"name": "errors", "type": "status_code",
                             "status_code": {"status_codes": ["ERROR"]}}]}

    def cfg(password: str) -> dict:
        sd = {**client_block(broker, "SASL_SSL", "SCRAM-SHA-256", password=password),
              "topic": topic, "hold": "1s", "timeout": "2s", "heartbeat": "500ms"}
        return {"sampler": {**sampler, "shared_decisions": sd},
                "exporters": {"file": {"path": os.path.join(tempfile.mkdtemp(), "o.jsonl")}},
                "service": {"workers": 1}}
    with Serve(cfg(PASSWORD)) as s:
        deadline = time.monotonic() + 30
        while s.metric("traceo_sampler_shared_decisions_broker_up") != 1:
            assert time.monotonic() < deadline, s.read_stderr()[-2000:]
            time.sleep(0.2)
        with grpc.insecure_channel(s.endpoint) as ch:
            ch.unary_unary(METHOD)(make_request([err]), timeout=10)
        while s.metric("traceo_sampler_shared_decisions_kept_total", source="published") < 1:
            assert time.monotonic() < deadline, s.read_stderr()[-2000:]
            time.sleep(0.2)
        s.stop()
    assert PASSWORD not in s.stderr
    published = set()
    for r in read_records(broker.bootstrap, topic, 1, settle=0.5, timeout=20.0):
        published |= {tid for tid, _reason in decode(r.value)[2]}
    assert err[0]["trace_id"] in published
    with Serve(cfg("not-" + PASSWORD)) as s:
        deadline = time.monotonic() + 30
        while "refused the SASL credentials" not in s.read_stderr():
            assert time.monotonic() < deadline, s.read_stderr()[-2000:]
            time.sleep(0.2)
        assert s.metric("traceo_sampler_shared_decisions_broker_up") == 0
        s.stop()
    assert "shared decisions: broker unreachable" in s.stderr and "Traceback" not in s.stderr
