"""A Collector config file run as it is (issue 11, items 1 and 2).

The upstream configs are read at test time from the tailsamplingprocessor
module v0.161.0 itself (``scripts/otelcol.sh source``, i.e. ``go mod
download``, cached in the Go module cache), so nothing is copied by hand
and the test follows the exact release: its ``testdata/`` files and every
YAML example of its README, each pasted unchanged into a whole Collector
file. Where the real Collector binary is already built, its own
``validate`` verdict is compared too.
"""
from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import yaml

import traceo_sampler
from traceo_sampler import collector_config as cc
from traceo_sampler.config import ConfigError, loads, loads_with_mapping

ROOT = Path(__file__).resolve().parents[2]
SRC = Path(traceo_sampler.__file__).resolve().parents[1]
MODULE = "github.com/open-telemetry/opentelemetry-collector-contrib/processor/tailsamplingprocessor"


@pytest.fixture(scope="module")
def module_dir() -> Path:
    if shutil.which("go") is None:
        pytest.skip("go is not installed: the upstream module source cannot be downloaded")
    out = subprocess.run([str(ROOT / "scripts" / "otelcol.sh"), "source", MODULE],
                         capture_output=True, text=True, timeout=300)
    if out.returncode != 0 or not out.stdout.strip():
        pytest.skip(f"go mod download failed: {out.stderr[-500:]}")
    return Path(out.stdout.strip().splitlines()[-1])


def whole_file(processors_yaml: str) -> str:
    """A processors-level block (``tail_sampling: ...``) or a ``processors:``
    document, pasted unchanged into a whole Collector file."""
    if not processors_yaml.lstrip().startswith("processors:"):
        processors_yaml = "processors:\n" + textwrap.indent(processors_yaml, "  ")
    return ("receivers:\n  otlp:\n    protocols:\n      grpc: {endpoint: 127.0.0.1:4317}\n"
            + processors_yaml.rstrip() + "\n"
            + "exporters:\n  otlp:\n    endpoint: 127.0.0.1:14317\n    tls: {insecure: true}\n"
            + "service:\n  pipelines:\n    traces:\n      receivers: [otlp]\n"
              "      processors: [tail_sampling]\n      exporters: [otlp]\n")


def readme_blocks(module_dir: Path) -> list[str]:
    text = (module_dir / "README.md").read_text()
    return re.findall(r"^```yaml\n(.*?)^```", text, re.S | re.M)


def collector_verdict(text: str, tmp_path: Path) -> bool | None:
    """The real Collector's ``validate`` (unmarshal and Validate; it does not
    create the policies), when its binary is already built."""
    out = subprocess.run([str(ROOT / "scripts" / "otelcol.sh"), "path"], capture_output=True,
                         text=True)
    binary = out.stdout.strip()
    if not binary or not os.access(binary, os.X_OK):
        return None
    f = tmp_path / "otelcol.yaml"
    f.write_text(text)
    return subprocess.run([binary, "validate", "--config", str(f)], capture_output=True,
                          timeout=60).returncode == 0


# ------------------------------------------------------------ upstream configs
def test_testdata_configs_accepted(module_dir, tmp_path):
    files = sorted((module_dir / "testdata").glob("*.yaml"))
    assert files, "no testdata in the module"
    for f in files:
        text = whole_file(f.read_text())
        cfg, mapping = loads_with_mapping(text, f.name)
        s = cfg.sampler
        assert s.semantics == "collector"
        raw = yaml.safe_load(f.read_text())["tail_sampling"]
        assert [p.name for p in s.policies] == [p["name"] for p in raw["policies"]]
        assert s.decision_wait.seconds == 10 and s.num_traces == 100
        assert (s.decision_cache.sampled, s.decision_cache.not_sampled) == (1000, 10000)
        assert collector_verdict(text, tmp_path) in (True, None)


# The README's examples as the Collector takes them: the third one's drop
# rule puts ``value`` in a string_attribute block, which the Collector's
# decoder refuses ("has invalid keys: value").
README_VERDICTS = [True, True, False]


def test_readme_examples_as_the_collector(module_dir, tmp_path):
    blocks = readme_blocks(module_dir)
    assert len(blocks) == len(README_VERDICTS), [b[:60] for b in blocks]
    for i, (block, ok) in enumerate(zip(blocks, README_VERDICTS)):
        text = whole_file(block)
        theirs = collector_verdict(text, tmp_path)
        if theirs is not None:
            assert theirs == ok, f"README block {i}: the Collector's own verdict changed"
        if ok:
            loads(text, f"readme[{i}]")
        else:
            with pytest.raises(ConfigError) as ei:
                loads(text, f"readme[{i}]")
            assert ei.value.problems == [
                "processors.tail_sampling.policies[6].drop.drop_sub_policy[0].string_attribute"
                ".value: unknown field (did you mean 'values'?)"]


# ------------------------------------------------------------ env
@pytest.mark.parametrize("text,env,expected", [
    ("a: ${env:X}", {"X": "1"}, "a: 1"),
    ("a: ${X}", {"X": "v"}, "a: v"),
    ("a: ${env:X:-dflt}", {}, "a: dflt"),
    ("a: ${env:X:-dflt}", {"X": "set"}, "a: set"),
    ("a: ${env:UNSET}", {}, "a: "),
    ("a: $${env:X}", {"X": "1"}, "a: ${env:X}"),
    ("a: host:${env:PORT}", {"PORT": "4317"}, "a: host:4317"),
])
def test_env_substitution(text, env, expected):
    assert cc.expand_env(text, env) == expected


FULL = """\
receivers:
  otlp:
    protocols:
      grpc: {endpoint: "${env:GRPC:-127.0.0.1:4317}", max_recv_msg_size_mib: 32}
      http:
processors:
  batch: {}
  memory_limiter: {limit_mib: 400}
  tail_sampling:
    decision_wait: 5s
    decision_wait_after_root_received: 2s
    sample_on_first_match: true
    drop_pending_traces_on_shutdown: true
    policies:
      - {name: errors, type: status_code, status_code: {status_codes: [ERROR]}}
exporters:
  otlphttp/tempo:
    endpoint: https://tempo.example:4318
    headers: {X-Scope-OrgID: "${env:TENANT}"}
    compression: none
    timeout: 7s
    tls: {ca_file: /etc/ca.pem}
    retry_on_failure: {enabled: true, initial_interval: 1s, max_interval: 10s, max_elapsed_time: 2m}
    sending_queue: {enabled: true, queue_size: 1000}
  file: {path: ./kept.jsonl}
  debug: {}
extensions:
  health_check: {}
service:
  extensions: [health_check]
  pipelines:
    traces:
      receivers: [otlp]
      processors: [memory_limiter, tail_sampling, batch]
      exporters: [otlphttp/tempo, file, debug]
"""


def test_full_file_maps(monkeypatch):
    monkeypatch.setenv("TENANT", "team-a")
    monkeypatch.delenv("GRPC", raising=False)
    cfg, mapping = loads_with_mapping(FULL, "otelcol.yaml")
    r = cfg.receivers.otlp
    assert (r.grpc.endpoint, r.grpc.max_recv_msg_size_mib) == ("127.0.0.1:4317", 32)
    assert r.http.endpoint == "localhost:4318"           # the Collector's default
    s = cfg.sampler
    assert s.semantics == "collector" and s.sample_on_first_match
    assert cfg.service.workers == 1                      # num_shards' default: one loop
    assert s.drop_pending_traces_on_shutdown and s.decision_wait_after_root_received.seconds == 2
    # no decision_cache: num_traces' default (how long the Collector remembers)
    assert (s.decision_cache.sampled, s.decision_cache.not_sampled) == (50_000, 50_000)
    e = cfg.exporters.otlp
    assert (e.protocol, e.endpoint) == ("http/protobuf", "https://tempo.example:4318/v1/traces")
    assert e.headers == {"X-Scope-OrgID": "team-a"} and e.compression == "none"
    assert e.timeout.seconds == 7 and e.tls.ca_file == "/etc/ca.pem"
    assert (e.retry.enabled, e.retry.initial_interval.seconds, e.retry.max_interval.seconds,
            e.retry.max_elapsed.seconds) == (True, 1, 10, 120)
    assert cfg.exporters.file.path == "./kept.jsonl"
    text = "\n".join(mapping)
    for needle in ("processors.batch", "not needed: Traceo batches", "processors.memory_limiter",
                   "exporters.debug", "extensions.health_check", "exporters.otlphttp/tempo",
                   "exporters.otlp (http/protobuf)", "processors.tail_sampling "):
        assert needle in text, needle


def test_grpc_exporter_tls_as_the_collector():
    def exp(block):
        return loads(whole_file("tail_sampling: {policies: []}").replace(
            "  otlp:\n    endpoint: 127.0.0.1:14317\n    tls: {insecure: true}\n", block)).exporters.otlp
    plain = exp("  otlp:\n    endpoint: jaeger:4317\n    tls: {insecure: true}\n")
    assert plain.tls.insecure and plain.compression == "gzip"     # gzip: the Collector's default
    tls = exp("  otlp:\n    endpoint: jaeger:4317\n")
    assert tls.tls is not None and not tls.tls.insecure            # TLS unless told otherwise


@pytest.mark.parametrize("extra,where", [
    ("k8sattributes: {}\n", "processors.k8sattributes"),
    ("attributes: {actions: []}\n", "processors.attributes"),
])
def test_unsupported_processor_refused_unless_ignored(extra, where):
    text = whole_file("tail_sampling: {policies: []}\n" + extra).replace(
        "processors: [tail_sampling]", f"processors: [{where.split('.')[1]}, tail_sampling]")
    with pytest.raises(ConfigError) as ei:
        loads_with_mapping(text, "f", ignore_unsupported=False)
    assert ei.value.problems == [f"{where}: not supported: Traceo does not run it, so the spans "
                                 "would reach the policies and the backend without it "
                                 "(pass --ignore-unsupported to run without it)"]
    _cfg, mapping = loads_with_mapping(text, "f", ignore_unsupported=True)
    assert any(line.startswith(where) and "skipped (--ignore-unsupported)" in line
               for line in mapping)


def test_refusals():
    def problems(text):
        with pytest.raises(ConfigError) as ei:
            loads_with_mapping(text, "f", ignore_unsupported=False)
        return ei.value.problems

    base = whole_file("tail_sampling: {policies: []}")
    assert problems(base.replace("processors: [tail_sampling]", "processors: []")) == [
        "service.pipelines: no traces pipeline with a tail_sampling processor "
        "(a Collector file is run for its tail_sampling)"]
    metrics = base + "    metrics:\n      receivers: [otlp]\n      exporters: [otlp]\n"
    assert problems(metrics) == [
        "service.pipelines.metrics: not supported: Traceo runs only the traces pipeline with "
        "tail_sampling (pass --ignore-unsupported to run without it)"]
    zipkin = base.replace("exporters: [otlp]", "exporters: [otlp, zipkin]").replace(
        "exporters:\n", "exporters:\n  zipkin: {endpoint: 'http://z:9411'}\n")
    assert problems(zipkin)[0].startswith("exporters.zipkin: not supported: Traceo exports")
    typo = base.replace("exporters: [otlp]", "exporters: [otlp/nope]")
    assert problems(typo) == [
        "service.pipelines.traces.exporters: 'otlp/nope' is not defined under exporters"]
    # a problem in the tail_sampling block is named by its path in the file
    bad = whole_file("tail_sampling: {decision_wiat: 1s, policies: []}")
    assert problems(bad) == ["processors.tail_sampling.decision_wiat: unknown field "
                             "(did you mean 'decision_wait'?)"]


# ------------------------------------------------------------ the knobs
KNOBS = """\
decision_wait: 10s
num_traces: 1000
expected_new_traces_per_sec: 100
decision_cache: {sampled_cache_size: 500, non_sampled_cache_size: 600}
sample_on_first_match: true
decision_wait_after_root_received: 1s
block_on_overflow: true
maximum_trace_size_bytes: 1048576
drop_pending_traces_on_shutdown: true
sampling_strategy: trace-complete
num_shards: 4
policies: [{name: a, type: always_sample}]
"""


def test_every_knob_in_our_sampler_block_and_in_a_collector_file():
    ours = loads("sampler:\n" + textwrap.indent(KNOBS, "  ")).sampler
    theirs = loads(whole_file("tail_sampling:\n" + textwrap.indent(KNOBS, "  "))).sampler
    for s in (ours, theirs):
        assert s.decision_wait.seconds == 10 and s.num_traces == 1000
        assert s.expected_new_traces_per_sec == 100
        assert (s.decision_cache.sampled, s.decision_cache.not_sampled) == (500, 600)
        assert s.sample_on_first_match and s.block_on_overflow
        assert s.decision_wait_after_root_received.seconds == 1
        assert s.maximum_trace_size_bytes == 1 << 20 and s.drop_pending_traces_on_shutdown
        assert s.sampling_strategy == "trace-complete" and s.num_shards == 4
    assert ours.semantics == "traceo" and theirs.semantics == "collector"


@pytest.mark.parametrize("text,problem", [
    ("sampler: {sampling_strategy: span-ingest}",
     "sampler.sampling_strategy: span-ingest is not supported (Traceo decides on the whole "
     "trace: trace-complete)"),
    ("sampler: {num_shards: 300}", "sampler.num_shards: must be <= 256"),
    ("sampler: {decision_cache: {sampled_cache_sise: 5}}",
     "sampler.decision_cache.sampled_cache_sise: unknown field (did you mean 'sampled_cache_size'?)"),
    ("sampler: {decision_cache: {sampled: 5, sampled_cache_size: 5}}",
     "sampler.decision_cache.sampled_cache_size: set either sampled_cache_size or sampled, not both"),
    ("sampler: {sample_on_first_mach: true}",
     "sampler.sample_on_first_mach: unknown field (did you mean 'sample_on_first_match'?)"),
    ("sampler: {semantics: go}", "sampler.semantics: Invalid enum value 'go'"),
])
def test_knob_errors(text, problem):
    with pytest.raises(ConfigError) as ei:
        loads(text)
    assert ei.value.problems[0].startswith(problem.split(" matching")[0]), ei.value.problems


def test_collector_timers():
    from traceo_sampler.config import timers
    s = loads("sampler: {semantics: collector, decision_wait: 5s}").sampler
    assert timers(s) == (5.0, 5.0, 5.0)           # 5 one-second batches, no idle/root rule
    s = loads("sampler: {semantics: collector, decision_wait: 5s, "
              "decision_wait_after_root_received: 2s}").sampler
    assert timers(s) == (5.0, 2.0, 5.0)
    s = loads("sampler: {semantics: collector, decision_wait: 500ms, "
              "decision_wait_after_root_received: 500ms}").sampler
    assert timers(s) == (1.0, 0.0, 1.0)           # uint64(0.5 s) = 0: the next tick
    s = loads("sampler: {decision_wait: 5s, root_wait: 1s, idle_timeout: 2s}").sampler
    assert timers(s) == (5.0, 1.0, 2.0)           # ours: unchanged


# ------------------------------------------------------------ the CLI
def run_cli(*args, env=None):
    e = dict(os.environ, PYTHONPATH=str(SRC), **(env or {}))
    return subprocess.run([sys.executable, "-m", "traceo_sampler", *args], capture_output=True,
                          text=True, env=e, timeout=60)


def test_validate_prints_the_mapping(tmp_path, monkeypatch):
    f = tmp_path / "otelcol.yaml"
    # validate reads the TLS files a config names (preflight.py): a real CA
    import trustme
    ca = tmp_path / "ca.pem"
    trustme.CA().cert_pem.write_to_path(str(ca))
    f.write_text(FULL.replace("/etc/ca.pem", str(ca)))
    out = run_cli("validate", "-c", str(f), env={"TENANT": "x"})
    assert out.returncode == 0, out.stderr
    assert "an OpenTelemetry Collector config, run with Collector semantics" in out.stdout
    assert "processors.batch" in out.stdout and out.stdout.rstrip().endswith(": ok")


def test_validate_refuses_then_ignores(tmp_path):
    f = tmp_path / "otelcol.yaml"
    # one policy: an empty list is refused on its own (preflight.py)
    f.write_text(whole_file("tail_sampling: {policies: [{name: all, type: always_sample}]}\n"
                            "k8sattributes: {}\n").replace(
        "processors: [tail_sampling]", "processors: [k8sattributes, tail_sampling]"))
    out = run_cli("validate", "-c", str(f))
    assert out.returncode == 1 and "processors.k8sattributes: not supported" in out.stderr
    out = run_cli("validate", "--ignore-unsupported", "-c", str(f))
    assert out.returncode == 0, out.stderr
    assert "skipped (--ignore-unsupported)" in out.stdout


@pytest.mark.parametrize("pattern,accepted", [
    ("v[0-9]+.HealthCheck$", True), ("^/api/(users|orders)/\\d+$", True),
    ("(?=look)ahead", False), ("(a)\\1", False), ("[unclosed", False), ("(?<!x)y", False),
])
def test_regexes_as_go_regexp(pattern, accepted):
    """Validation accepts what Go's regexp (RE2) compiles and refuses the rest
    (string_tag_filter.go addFilters -> regexp.Compile)."""
    pol = {"name": "r", "type": "string_attribute", "string_attribute": {
        "key": "k", "values": [pattern], "enabled_regex_matching": True}}
    from traceo_sampler.config import parse
    if accepted:
        parse({"sampler": {"policies": [pol]}})
    else:
        with pytest.raises(ConfigError) as ei:
            parse({"sampler": {"policies": [pol]}})
        assert ei.value.problems[0].startswith(
            "sampler.policies[0].string_attribute.values[0]: invalid regex (RE2")


# ------------------------------------------------------------ more of the mapping
def test_receiver_tls_translated_and_tail_storage_refused():
    text = whole_file("tail_sampling: {policies: [], tail_storage: file_storage}").replace(
        "grpc: {endpoint: 127.0.0.1:4317}",
        "grpc: {endpoint: 127.0.0.1:4317, tls: {cert_file: c.pem, key_file: k.pem}}")
    with pytest.raises(ConfigError) as ei:
        loads_with_mapping(text, "f", ignore_unsupported=False)
    assert ei.value.problems == [
        "processors.tail_sampling.tail_storage: not supported: Traceo's buffer is in memory "
        "(sampler.wal is its durable option) (pass --ignore-unsupported to run without it)"]
    tls = loads(text.replace(", tail_storage: file_storage", "")).receivers.otlp.grpc.tls
    assert (tls.cert_file, tls.key_file, tls.client_ca_file) == ("c.pem", "k.pem", "")


def test_otlphttp_traces_endpoint():
    text = whole_file("tail_sampling: {policies: []}").replace(
        "  otlp:\n    endpoint: 127.0.0.1:14317\n    tls: {insecure: true}\n",
        "  otlphttp:\n    traces_endpoint: http://tempo:4318/otlp/v1/traces\n").replace(
        "exporters: [otlp]", "exporters: [otlphttp]")
    e = loads(text).exporters.otlp
    assert (e.protocol, e.endpoint, e.tls) == ("http/protobuf", "http://tempo:4318/otlp/v1/traces",
                                              None)


def test_collector_policy_rules():
    def problems(policies):
        with pytest.raises(ConfigError) as ei:
            loads_with_mapping(whole_file(yaml.safe_dump({"tail_sampling": {"policies": policies}})),
                               "f")
        return ei.value.problems

    inner_and = {"name": "o", "type": "and", "and": {"and_sub_policy": [
        {"name": "i", "type": "and", "and": {"and_sub_policy": [
            {"name": "x", "type": "always_sample"}]}}]}}
    assert problems([inner_and]) == [
        "processors.tail_sampling.policies[0].and.and_sub_policy[0].type: 'and' is not accepted "
        "inside 'and' (the Collector refuses it as an unknown sampling policy type)"]
    # ours, nested the same, is accepted
    loads(yaml.safe_dump({"sampler": {"policies": [inner_and]}}))
    assert problems([{"name": "t", "type": "latency_tail"}])[0].startswith(
        "processors.tail_sampling.policies[0].type: 'latency_tail' is not accepted with collector")
    # a missing block is the zero value, as the Collector decodes it
    cfg, mapping = loads_with_mapping(whole_file(yaml.safe_dump({"tail_sampling": {"policies": [
        {"name": "p", "type": "probabilistic"},
        {"name": "b", "type": "boolean_attribute", "string_attribute": {"key": "k"}}]}})), "f")
    p, b = cfg.sampler.policies
    assert p.probabilistic.sampling_percentage == 0 and b.boolean_attribute.key == ""
    assert any(line.startswith("processors.tail_sampling.policies[1].string_attribute")
               and "ignored" in line for line in mapping)
    # ours: the block is required
    with pytest.raises(ConfigError):
        loads("sampler: {policies: [{name: p, type: probabilistic}]}")


def test_sample_on_first_match_asks_drop_first():
    from types import SimpleNamespace
    from traceo_sampler.decider import Decider
    cfg = loads("""
sampler:
  sample_on_first_match: true
  policies:
    - {name: all, type: always_sample}
    - {name: no-debug, type: drop, drop: {drop_sub_policy: [{name: d, type: boolean_attribute, boolean_attribute: {key: debug, value: true}}]}}
    - {name: later, type: always_sample}
""")
    d = Decider(cfg.sampler.policies, sample_on_first_match=True)
    t = SimpleNamespace(trace_id=b"\x01" * 16, span_count=1, min_start=0, max_end=1, status_mask=1,
                        root_seen=True, services={"s"}, attrs={"debug": {True}}, randomness=0,
                        root_name="r", root_service="s", trace_state="")
    assert d.decide(t).dropped
    t.attrs = {"debug": {False}}
    dec = d.decide(t)
    assert dec.sampled and dec.policy == "all"


def test_drop_pending_traces_on_shutdown():
    from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
    from traceo_sampler.pipeline import Pipeline
    from traceo_sampler.telemetry import Metrics
    from support_otlp import ItemSink

    req = ExportTraceServiceRequest()
    ss = req.resource_spans.add().scope_spans.add()
    ss.spans.add(trace_id=b"\x01" * 16, span_id=b"\x01" * 8, name="r", start_time_unix_nano=1,
                 end_time_unix_nano=2)
    for drop, kept in ((False, 1), (True, 0)):
        cfg = loads(f"sampler: {{drop_pending_traces_on_shutdown: {str(drop).lower()}, "
                    "policies: [{name: all, type: always_sample}]}")
        cap = ItemSink()
        p = Pipeline(cfg, Metrics(), [cap], clock=lambda: 0.0)
        p.ingest(req.SerializeToString())
        assert p.drain(shutdown=True) == 1
        assert len(cap.items) == kept and p.account.decided == 1
        assert p.buffer.ntraces == 0


# ------------------------------------------------------------ Kafka receiver
def kafka_file(receiver_yaml: str) -> str:
    return whole_file("tail_sampling: {policies: []}").replace(
        "receivers:\n  otlp:\n    protocols:\n      grpc: {endpoint: 127.0.0.1:4317}\n",
        "receivers:\n" + textwrap.indent(receiver_yaml, "  ")).replace(
        "receivers: [otlp]", "receivers: [kafka]")


def test_kafka_receiver_as_the_collector(tmp_path):
    """v0.161.0's kafkareceiver block → receivers.kafka, the Collector's own
    defaults where ours differ; the real Collector accepts the same file."""
    text = kafka_file("kafka:\n  brokers: [k1:9092, k2:9092]\n  group_id: samplers\n"
                      "  initial_offset: earliest\n  session_timeout: 6s\n"
                      "  traces: {topics: [spans], encoding: otlp_proto}\n"
                      "  message_marking: {after: true}\n")
    cfg, mapping = loads_with_mapping(text, "otelcol.yaml")
    k = cfg.receivers.kafka
    assert (k.brokers, k.topic, k.group_id, k.initial_offset) == (
        ["k1:9092", "k2:9092"], "spans", "samplers", "earliest")
    assert k.session_timeout.seconds == 6
    assert cfg.receivers.otlp is None
    lines = [" ".join(line.split()) for line in mapping]
    assert ("receivers.kafka receivers.kafka: topic spans on k1:9092, k2:9092, group samplers, "
            "initial_offset earliest") in lines
    assert "receivers.kafka.message_marking not read" in lines
    assert collector_verdict(text, tmp_path) in (True, None)
    assert collector_verdict(text.replace("topics: [spans]", "topicz: [spans]"),
                             tmp_path) in (False, None)
    assert loads(kafka_file("kafka: {tls: {insecure: true}}\n")).receivers.kafka is not None
    # nothing set: the Collector's defaults (topic, brokers, its group, latest)
    k = loads(kafka_file("kafka: {}\n")).receivers.kafka
    assert (k.brokers, k.topic, k.group_id, k.initial_offset) == (
        ["localhost:9092"], "otlp_spans", "otel-collector", "latest")
    # older releases' spellings
    assert loads(kafka_file("kafka: {topic: old}\n")).receivers.kafka.topic == "old"
    assert loads(kafka_file("kafka: {traces: {topic: old2}}\n")).receivers.kafka.topic == "old2"


@pytest.mark.parametrize("block,where,what", [
    ("kafka: {traces: {topics: [a, b]}}\n", "receivers.kafka.traces.topics",
     "not supported: ['a', 'b'] (receivers.kafka reads one topic, named, not a pattern)"),
    ("kafka: {traces: {topics: ['^spans-.*']}}\n", "receivers.kafka.traces.topics",
     "not supported: ['^spans-.*'] (receivers.kafka reads one topic, named, not a pattern)"),
    ("kafka: {traces: {encoding: jaeger_proto}}\n", "receivers.kafka.traces.encoding",
     "not supported: encoding 'jaeger_proto' (only otlp_proto)"),
    ("kafka: {auth: {kerberos: {service_name: kafka, realm: EXAMPLE.COM}}}\n",
     "receivers.kafka.auth.kerberos",
     "not supported: Kerberos (GSSAPI); Traceo authenticates with SASL PLAIN or SCRAM"),
    ("kafka: {auth: {sasl: {mechanism: AWS_MSK_IAM_OAUTHBEARER, aws_msk: {region: eu-west-1}}}}\n",
     "receivers.kafka.auth.sasl.mechanism",
     "not supported: 'AWS_MSK_IAM_OAUTHBEARER' (PLAIN, SCRAM-SHA-256 or SCRAM-SHA-512)"),
    ("kafka: {auth: {sasl: {mechanism: PLAIN, username: u, password: p, aws_msk: {region: x}}}}\n",
     "receivers.kafka.auth.sasl.aws_msk", "not supported: only PLAIN and SCRAM"),
    ("kafka: {tls: {ca_pem: '-----BEGIN CERTIFICATE-----'}}\n", "receivers.kafka.tls.ca_pem",
     "not supported: inline PEM; put it in a file and set ca_file"),
])
def test_kafka_receiver_refusals(block, where, what):
    with pytest.raises(ConfigError) as ei:
        loads_with_mapping(kafka_file(block), "f", ignore_unsupported=False)
    assert ei.value.problems == [f"{where}: {what} (pass --ignore-unsupported to run without it)"]


def test_kafka_tls_and_sasl_as_the_collector(tmp_path, monkeypatch):
    """configkafka's tls and auth.sasl (testdata/client_config.yaml's
    kafka/full) on the kafkareceiver and the kafkaexporter → our tls and
    auth.sasl; ${env:...} as the Collector expands it; the real Collector
    accepts the same file."""
    monkeypatch.setenv("KAFKA_PW", "s3cr$t")
    sec = ("  tls: {ca_file: /etc/ca.pem, cert_file: /etc/c.pem, key_file: /etc/c.key,\n"
           "        server_name_override: kafka.internal, min_version: '1.3'}\n"
           "  auth: {sasl: {mechanism: SCRAM-SHA-512, username: traceo,\n"
           "                password: '${env:KAFKA_PW}', version: 1}}\n")
    text = kafka_file("kafka:\n  brokers: [k1:9093]\n" + sec).replace(
        "exporters:\n", "exporters:\n  kafka:\n    brokers: [k1:9093]\n"
        + textwrap.indent(sec, "  ")).replace("exporters: [otlp]", "exporters: [kafka]")
    cfg, mapping = loads_with_mapping(text, "otelcol.yaml")
    for k in (cfg.receivers.kafka, cfg.exporters.kafka):
        assert (k.tls.ca_file, k.tls.cert_file, k.tls.key_file, k.tls.server_name_override,
                k.tls.insecure) == ("/etc/ca.pem", "/etc/c.pem", "/etc/c.key", "kafka.internal",
                                    False)
        s = k.auth.sasl
        assert (s.mechanism, s.username) == ("SCRAM-SHA-512", "traceo")
        from traceo_sampler.kafka_security import env_password
        assert env_password(s.password) == ("s3cr$t", "")
    lines = [" ".join(line.split()) for line in mapping]
    assert "receivers.kafka.auth.sasl receivers.kafka.auth.sasl: SCRAM-SHA-512 as traceo" in lines
    assert "exporters.kafka.tls exporters.kafka.tls: TLS to the brokers" in lines
    assert "receivers.kafka.tls.min_version not read" in lines
    assert not any("s3cr" in line for line in mapping), "the password is never shown"
    assert collector_verdict(text, tmp_path) in (True, None)
    # the deprecated spellings: auth.plain_text (SASL/PLAIN) and auth.tls
    k = loads(kafka_file("kafka: {auth: {plain_text: {username: u, password: p},\n"
                         "                tls: {ca_file: /ca.pem}}}\n")).receivers.kafka
    assert (k.auth.sasl.mechanism, k.auth.sasl.username, k.tls.ca_file) == ("PLAIN", "u", "/ca.pem")
    # tls.insecure: plaintext, as the Collector
    k = loads(kafka_file("kafka: {tls: {insecure: true}}\n")).receivers.kafka
    assert k.tls.insecure is True
    # the Collector's own rule: a SASL user and password are required
    with pytest.raises(ConfigError) as ei:
        loads(kafka_file("kafka: {auth: {sasl: {mechanism: PLAIN, username: u}}}\n"))
    assert ei.value.problems == ["receivers.kafka.auth.sasl.password: must not be empty"]
