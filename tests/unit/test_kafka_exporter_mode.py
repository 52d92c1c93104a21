"""exporters.kafka's two modes (config.kafka_mode): an unset mode keeps what
a file always meant (router when exporters.kafka runs alone), anywhere else
it exports kept traces; validate says which and why."""
from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

import traceo_sampler
from traceo_sampler.config import ConfigError, kafka_mode, kafka_mode_line, loads

SRC = Path(traceo_sampler.__file__).resolve().parents[1]
K = "kafka: {brokers: ['127.0.0.1:9092']"
POL = "sampler: {policies: [{name: all, type: always_sample}]}\n"


def mode(text: str) -> str | None:
    cfg = loads(textwrap.dedent(text))
    m = kafka_mode(cfg.exporters, cfg.receivers)
    return None if m is None else m[0]


@pytest.mark.parametrize("text,want", [
    # the README's router.yaml: alone, no policies
    (f"receivers: {{otlp: {{grpc: {{endpoint: '127.0.0.1:4317'}}}}}}\nexporters: {{{K}}}}}\n",
     "router"),
    # docs/design.md §4: beside otlp and file, each exporter gets every kept trace
    (f"exporters: {{otlp: {{endpoint: '127.0.0.1:4317'}}, file: {{path: /tmp/k.jsonl}}, "
     f"{K}}}}}\n{POL}", "sampled"),
    # consume → sample → produce
    (f"receivers: {{{K}}}}}\nexporters: {{{K}, topic: out}}}}\n{POL}", "sampled"),
    (f"exporters: {{{K}, mode: sampled}}}}\n{POL}", "sampled"),
    (f"exporters: {{{K}, mode: router}}}}\n", "router"),
    (f"exporters: {{file: {{path: /tmp/k.jsonl}}}}\n{POL}", None),
])
def test_the_mode_rule(text, want):
    assert mode(text) == want


def test_an_explicit_router_beside_a_sampler_or_with_queue_fields_is_refused():
    with pytest.raises(ConfigError) as ei:
        loads(f"exporters: {{file: {{path: /tmp/k.jsonl}}, {K}, mode: router}}}}\n{POL}")
    assert ei.value.problems == [
        "exporters.kafka.mode: router forwards every span unsampled and cannot be combined with "
        "exporters.file; mode: sampled exports the kept traces to Kafka beside them"]
    with pytest.raises(ConfigError) as ei:
        loads(f"exporters: {{{K}, queue_max_bytes: 1000, retry: {{enabled: false}}}}}}\n")
    assert ei.value.problems == [
        "exporters.kafka.retry: only read with mode: sampled (this exporters.kafka is router "
        "mode, mode unset, exporters.kafka is the only exporter and there is no receivers.kafka)",
        "exporters.kafka.queue_max_bytes: only read with mode: sampled (this exporters.kafka is "
        "router mode, mode unset, exporters.kafka is the only exporter and there is no "
        "receivers.kafka)"]
    # the same fields are the sampled exporter's queue
    cfg = loads(f"exporters: {{{K}, mode: sampled, queue_max_bytes: 1000, "
                f"queue_full: drop_oldest}}}}\n{POL}")
    assert cfg.exporters.kafka.queue_max_bytes == 1000


def test_a_sampled_kafka_exporter_needs_policies_a_router_does_not():
    from traceo_sampler.preflight import check
    router = loads(f"exporters: {{{K}}}}}\n")
    assert check(router) == []
    sampled = loads(f"exporters: {{{K}, mode: sampled}}}}\n")
    assert check(sampled)[0].startswith("sampler.policies: empty")


def test_validate_prints_the_mode_and_why(tmp_path):
    env = dict(os.environ, PYTHONPATH=str(SRC))

    def validate(text: str) -> list[str]:
        f = tmp_path / "c.yaml"
        f.write_text(text)
        r = subprocess.run([sys.executable, "-m", "traceo_sampler", "validate", "-c", str(f)],
                           capture_output=True, text=True, env=env, timeout=60)
        assert r.returncode == 0, r.stderr
        return r.stdout.splitlines()

    out = validate(f"exporters: {{{K}, topic: spans}}}}\n")
    assert out[0] == ("exporters.kafka: router mode: every received span is produced unsampled "
                      "to topic spans (sampler.policies are not applied); mode: sampled exports "
                      "kept traces instead (mode unset, exporters.kafka is the only exporter and "
                      "there is no receivers.kafka)")
    out = validate(f"exporters: {{otlp: {{endpoint: '127.0.0.1:4317'}}, {K}}}}}\n{POL}")
    assert out[0] == ("exporters.kafka: mode sampled: kept traces are produced to topic "
                      "otlp_spans_sampled (mode unset, beside exporters.otlp)")
    cfg = loads(f"exporters: {{{K}, mode: sampled}}}}\n{POL}")
    assert kafka_mode_line(cfg).endswith("(set by exporters.kafka.mode)")


COLLECTOR = """\
receivers:
  otlp:
    protocols:
      grpc: {endpoint: 127.0.0.1:4317}
processors:
  tail_sampling:
    policies: [{name: all, type: always_sample}]
exporters:
  otlp:
    endpoint: 127.0.0.1:14317
    tls: {insecure: true}
  kafka%s
service:
  pipelines:
    traces:
      receivers: [otlp]
      processors: [tail_sampling]
      exporters: [otlp, kafka]
"""


def test_a_collector_kafkaexporter_after_tail_sampling_is_the_sampled_exporter():
    from traceo_sampler.config import loads_with_mapping
    cfg, lines = loads_with_mapping(COLLECTOR % ":\n    brokers: [b1:9092, b2:9092]\n"
                                    "    partition_traces_by_id: true\n"
                                    "    traces: {topic: kept}\n"
                                    "    producer: {required_acks: -1, max_message_bytes: 500000,"
                                    " compression: gzip}\n"
                                    "    retry_on_failure: {initial_interval: 1s}\n", "f")
    k = cfg.exporters.kafka
    assert (k.mode, k.brokers, k.topic, k.partition_traces_by_id, k.acks, k.batch_max_bytes,
            k.timeout.seconds, k.retry.initial_interval.seconds, k.compression) == (
        "sampled", ["b1:9092", "b2:9092"], "kept", True, "all", 500000, 5.0, 1.0, "gzip")
    text = "\n".join(lines)
    assert "exporters.kafka (mode sampled: the kept traces): topic kept on b1:9092, b2:9092" in text
    # the Collector's defaults: brokers, topic, acks 1, unkeyed batches
    cfg, _ = loads_with_mapping(COLLECTOR % ": {}\n", "f")
    k = cfg.exporters.kafka
    assert (k.mode, k.brokers, k.topic, k.acks, k.partition_traces_by_id) == (
        "sampled", ["localhost:9092"], "otlp_spans", 1, False)


def test_a_collector_kafkaexporter_it_cannot_run_is_refused_by_field():
    from traceo_sampler.config import loads_with_mapping
    with pytest.raises(ConfigError) as ei:
        loads_with_mapping(COLLECTOR % ":\n    traces: {encoding: jaeger_proto}\n"
                           "    auth: {kerberos: {service_name: kafka}}\n", "f",
                           ignore_unsupported=False)
    assert [p.split(":")[0] for p in ei.value.problems] == [
        "exporters.kafka.traces.encoding", "exporters.kafka.auth.kerberos"]
