"""TLS and SASL of the Kafka clients: the config fields, their checks, and
the one mapping to each client's options (kafka_security.py). On the real
broker: tests/integration/test_kafka_security.py."""
from __future__ import annotations

import asyncio
import ssl

import pytest

from traceo_sampler.config import ConfigError, loads
from traceo_sampler.kafka_security import (aiokafka_options, describe, diagnose, env_password,
                                           librdkafka_options, security_protocol)

SAMPLER = "sampler: {policies: [{name: all, type: always_sample}]}\n"


def receiver(extra: str = ""):
    return loads("receivers:\n  kafka:\n    brokers: [k:9093]\n" + extra + SAMPLER).receivers.kafka


def exporter(extra: str = ""):
    return loads("exporters:\n  kafka:\n    brokers: [k:9093]\n    mode: router\n"
                 + extra).exporters.kafka


def problems(text: str) -> list[str]:
    with pytest.raises(ConfigError) as ei:
        loads(text)
    return ei.value.problems


def test_plaintext_has_no_security_options():
    """The plaintext path builds its clients exactly as before."""
    for blk in (receiver(), exporter(), receiver("    tls: {insecure: true}\n")):
        assert security_protocol(blk) == "PLAINTEXT"
        assert aiokafka_options(blk) == {} and librdkafka_options(blk) == {}


@pytest.mark.parametrize("tls,sasl,proto", [
    (True, False, "SSL"), (False, True, "SASL_PLAINTEXT"), (True, True, "SASL_SSL")])
def test_options_of_each_client(tmp_path, tls, sasl, proto, monkeypatch):
    import trustme
    ca = trustme.CA()
    ca.cert_pem.write_to_path(str(tmp_path / "ca.pem"))
    cert = ca.issue_cert("client")
    cert.cert_chain_pems[0].write_to_path(str(tmp_path / "c.pem"))
    cert.private_key_pem.write_to_path(str(tmp_path / "c.key"))
    monkeypatch.setenv("PW", "pa$$word")
    extra = ""
    if tls:
        extra += (f"    tls: {{ca_file: {tmp_path}/ca.pem, cert_file: {tmp_path}/c.pem, "
                  f"key_file: {tmp_path}/c.key}}\n")
    if sasl:
        extra += ("    auth: {sasl: {mechanism: SCRAM-SHA-256, username: u, "
                  "password: '${env:PW}'}}\n")
    blk = exporter(extra)
    assert security_protocol(blk) == proto
    a, r = aiokafka_options(blk), librdkafka_options(blk)
    assert a["security_protocol"] == proto and r["security.protocol"] == proto.lower()
    if tls:
        ctx = a["ssl_context"]
        assert ctx.verify_mode == ssl.CERT_REQUIRED and ctx.check_hostname
        assert (r["ssl.ca.location"], r["ssl.certificate.location"], r["ssl.key.location"]) == (
            f"{tmp_path}/ca.pem", f"{tmp_path}/c.pem", f"{tmp_path}/c.key")
        assert r["ssl.endpoint.identification.algorithm"] == "https"
    else:
        assert "ssl_context" not in a and not any(k.startswith("ssl.") for k in r)
    if sasl:
        assert (a["sasl_mechanism"], a["sasl_plain_username"], a["sasl_plain_password"]) == (
            "SCRAM-SHA-256", "u", "pa$$word")
        assert (r["sasl.mechanisms"], r["sasl.username"], r["sasl.password"]) == (
            "SCRAM-SHA-256", "u", "pa$$word")
        assert describe(blk) == f"{proto}, SCRAM-SHA-256 as u"
        assert "pa$$" not in describe(blk)
    else:
        assert "sasl_mechanism" not in a and "sasl.mechanisms" not in r


def test_skip_verify_and_system_cas():
    blk = receiver("    tls: {insecure_skip_verify: true}\n")
    ctx = aiokafka_options(blk)["ssl_context"]
    assert ctx.verify_mode == ssl.CERT_NONE and not ctx.check_hostname
    r = librdkafka_options(blk)
    assert r["enable.ssl.certificate.verification"] is False
    assert r["ssl.endpoint.identification.algorithm"] == "none"
    # no ca_file: the system's CAs (librdkafka probes where this OS keeps them)
    assert r["ssl.ca.location"] == "probe"


def test_server_name_override_is_the_name_verified():
    ctx = aiokafka_options(receiver("    tls: {server_name_override: kafka.internal}\n")
                           )["ssl_context"]
    incoming, outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
    assert ctx.wrap_bio(incoming, outgoing, server_hostname="10.0.0.7").server_hostname == (
        "kafka.internal")


def test_env_password():
    env = {"A": "x", "E": ""}
    assert env_password("${env:A}", env) == ("x", "")
    assert env_password("${A}-${env:B:-d}", env) == ("x-d", "")
    assert env_password("lit$$eral", env) == ("lit$eral", "")
    assert env_password("${env:B}", env)[1] == "the environment variable B is not set"
    assert env_password("${env:E}", env)[1] == "must not be empty"


def test_config_problems_name_the_field(monkeypatch):
    monkeypatch.delenv("NO_SUCH_PW", raising=False)
    assert problems("receivers:\n  kafka:\n    brokers: [k:1]\n    auth: {sasl: {mechanism: PLAIN,"
                    " username: '', password: '${env:NO_SUCH_PW}'}}\n" + SAMPLER) == [
        "receivers.kafka.auth.sasl.username: must not be empty",
        "receivers.kafka.auth.sasl.password: the environment variable NO_SUCH_PW is not set"]
    assert problems("exporters:\n  kafka:\n    brokers: [k:1]\n    mode: router\n"
                    "    tls: {server_name_override: n}\n") == [
        "exporters.kafka.tls.server_name_override: not supported by the confluent-kafka client "
        "(librdkafka verifies the broker's own host name); set client: aiokafka, or connect "
        "by that name"]
    assert exporter("    client: aiokafka\n    tls: {server_name_override: n}\n"
                    ).tls.server_name_override == "n"
    assert problems("exporters:\n  kafka:\n    brokers: [k:1]\n    mode: router\n"
                    "    tls: {key_file: k.pem}\n") == [
        "exporters.kafka.tls.key_file: set without cert_file"]


def test_shared_decisions_take_the_same_tls_and_auth(monkeypatch):
    monkeypatch.delenv("NO_SUCH_PW", raising=False)
    base = ("sampler:\n  shared_decisions:\n    brokers: [k:1]\n%s"
            "  policies: [{name: all, type: always_sample}]\n")
    sd = loads(base % "    tls: {}\n    auth: {sasl: {mechanism: PLAIN, username: u, "
                      "password: p}}\n").sampler.shared_decisions
    assert aiokafka_options(sd)["security_protocol"] == "SASL_SSL"
    assert problems(base % "    auth: {sasl: {mechanism: PLAIN, username: u, "
                           "password: '${env:NO_SUCH_PW}'}}\n") == [
        "sampler.shared_decisions.auth.sasl.password: the environment variable NO_SUCH_PW "
        "is not set"]


def test_unknown_mechanism_is_a_config_error():
    out = problems("exporters:\n  kafka:\n    brokers: [k:1]\n    mode: router\n"
                   "    auth: {sasl: {mechanism: GSSAPI, username: u, password: p}}\n")
    assert len(out) == 1 and out[0].startswith("exporters.kafka.auth.sasl.mechanism:"), out
    assert "GSSAPI" in out[0] or "PLAIN" in out[0]


def test_preflight_reads_the_tls_files(tmp_path):
    from traceo_sampler import preflight
    cfg = loads(f"receivers:\n  kafka:\n    brokers: [k:1]\n    tls: {{ca_file: {tmp_path}/none.pem}}\n"
                + SAMPLER)
    out = preflight.check(cfg)
    assert any(p.startswith("receivers.kafka.tls.ca_file:") for p in out), out


def test_diagnose_says_why_no_broker_answers():
    from support.procs import free_ports
    port = free_ports(1)[0]
    blk = loads(f"receivers:\n  kafka:\n    brokers: ['127.0.0.1:{port}']\n"
                "    auth: {sasl: {mechanism: PLAIN, username: u, password: p}}\n"
                + SAMPLER).receivers.kafka
    why, refused = asyncio.run(diagnose(blk, timeout=2))
    assert why.startswith(f"127.0.0.1:{port}: cannot connect (SASL_PLAINTEXT):") and not refused
