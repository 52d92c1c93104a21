"""Configuration (docs/design.md §4): the embedded default, a full config, and a
table of broken configs each with the exact problem lines; then the CLI's
``validate`` and ``serve`` on good and broken files."""
from __future__ import annotations

import os
import re
import socket
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

import traceo_sampler
from traceo_sampler import config as C
from traceo_sampler.config import ConfigError, Duration, load, loads, parse

ROOT = Path(__file__).resolve().parents[2]
# The subprocesses run the same package the tests import.
SRC = Path(traceo_sampler.__file__).resolve().parents[1]


def problems_of(text: str, source: str = "test.yaml") -> list[str]:
    with pytest.raises(ConfigError) as ei:
        loads(textwrap.dedent(text), source)
    return ei.value.problems


# ------------------------------------------------------------ embedded default
def test_embedded_default():
    cfg = load(None)
    pols = cfg.sampler.policies
    assert [(p.name, p.type) for p in pols] == [
        ("errors", "status_code"), ("slow", "latency"), ("rest", "probabilistic")]
    assert pols[0].status_code.status_codes == ["ERROR"]
    assert pols[1].latency.threshold_ms == 1000
    assert pols[1].latency.upper_threshold_ms == 0
    assert pols[2].probabilistic.sampling_percentage == 10
    assert cfg.receivers.otlp.grpc.endpoint == "127.0.0.1:4317"
    assert cfg.receivers.otlp.http.endpoint == "127.0.0.1:4318"
    assert cfg.receivers.kafka is None
    assert cfg.admin.endpoint == "127.0.0.1:9464"
    assert cfg.exporters.file.path == "./traceo-data/kept.otlp.jsonl"
    assert cfg.exporters.otlp is None and cfg.exporters.kafka is None
    s = cfg.sampler
    # root_wait / idle_timeout: learned from the arrival lags (issue 16),
    # from 6 s / 10 s before there is data
    assert s.decision_wait.seconds == 30 and s.root_wait.auto and s.idle_timeout.auto
    assert s.root_wait.text == "auto" and s.root_wait.seconds is None
    a = s.auto_wait
    assert (a.quantile, a.initial_root_wait.seconds, a.initial_idle_timeout.seconds) == (0.999, 6, 10)
    assert (a.floor.seconds, a.window.seconds, a.min_traces, a.headroom) == (1, 300, 1000, 0.25)
    assert s.dropped_grace is None
    assert (s.max_spans_per_trace, s.memory_limit_mib) == (10_000, 1024)
    assert (s.decision_cache.sampled, s.decision_cache.not_sampled) == (100_000, 1_000_000)
    assert cfg.cost.usd_per_gib == 0.5


def test_embedded_default_text_is_the_default():
    assert loads(C.DEFAULT_YAML) == load(None)


def test_embedded_default_decides():
    from types import SimpleNamespace

    from traceo_sampler.decider import Decider
    d = Decider(load(None).sampler.policies)
    base = dict(trace_id=bytes(16), span_count=2, min_start=0, max_end=5_000_000, status_mask=1,
                root_seen=True, services={"s"}, attrs=None, randomness=0, root_name="r", root_service="s")
    assert d.decide(SimpleNamespace(**{**base, "status_mask": 1 << 2})).policy == "errors"
    assert d.decide(SimpleNamespace(**{**base, "max_end": 1_000_000_000})).policy == "slow"
    assert d.decide(SimpleNamespace(**{**base, "randomness": (1 << 56) - 1})).policy == "rest"
    assert not d.decide(SimpleNamespace(**base)).sampled


def test_dump_round_trip():
    cfg = load(None)
    assert loads(C.dump(cfg)) == cfg


# ------------------------------------------------------------- full config
FULL = """\
receivers:
  otlp:
    grpc: {endpoint: "127.0.0.1:4317"}
    http: {endpoint: "127.0.0.1:4318"}
  kafka: {brokers: ["127.0.0.1:9092"], topic: otlp_spans, group_id: traceo-sampler, encoding: otlp_proto}
sampler:
  decision_wait: 30s
  root_wait: 2s
  idle_timeout: 5s
  max_spans_per_trace: 10000
  memory_limit_mib: 1024
  decision_cache: {sampled: 100000, not_sampled: 1000000}
  policies:                        # list; same shape as the Collector's tail_sampling policies
    - {name: errors, type: status_code, status_code: {status_codes: [ERROR]}}
    - {name: slow, type: latency, latency: {threshold_ms: 1000}}
    - {name: rest, type: probabilistic, probabilistic: {sampling_percentage: 10}}
exporters:
  otlp: {endpoint: "127.0.0.1:14317", compression: gzip}
  file: {path: ./traceo-data/kept.otlp.jsonl}
  kafka: {brokers: ["127.0.0.1:9092"], topic: otlp_spans_sampled}
admin: {endpoint: "127.0.0.1:9464"}
cost: {usd_per_gib: 0.50}
"""

# Every policy type in the Collector's YAML shape, as a user would paste them.
ALL_TYPES = """\
sampler:
  decision_wait: 10s
  root_wait: 250ms
  idle_timeout: 1.5s
  policies:
    - name: always
      type: always_sample
    - {name: slow, type: latency, latency: {threshold_ms: 500, upper_threshold_ms: 5000}}
    - {name: errors, type: status_code, status_code: {status_codes: [ERROR, UNSET]}}
    - {name: rest, type: probabilistic, probabilistic: {hash_salt: "s", sampling_percentage: 0.5}}
    - name: routes
      type: string_attribute
      string_attribute: {key: http.route, values: ["/api/.*"], enabled_regex_matching: true, cache_max_size: 10}
    - name: codes
      type: numeric_attribute
      numeric_attribute: {key: http.status_code, min_value: 500, max_value: 599, invert_match: false}
    - {name: debug, type: boolean_attribute, boolean_attribute: {key: debug, value: true}}
    - {name: big, type: span_count, span_count: {min_spans: 100}}
    - name: both
      type: and
      and:
        and_sub_policy:
          - {name: svc, type: string_attribute, string_attribute: {key: service.name, values: [checkout]}}
          - {name: p, type: probabilistic, probabilistic: {sampling_percentage: 50}}
    - name: not-errors
      type: not
      not:
        not_sub_policy: {name: e, type: status_code, status_code: {status_codes: [ERROR]}}
    - name: no-health
      type: drop
      drop:
        drop_sub_policy:
          - {name: h, type: string_attribute, string_attribute: {key: http.route, values: [/health]}}
"""


def test_full_config_from_design():
    cfg = loads(FULL)
    r = cfg.receivers
    assert r.otlp.grpc.endpoint == "127.0.0.1:4317" and r.otlp.http.endpoint == "127.0.0.1:4318"
    assert (r.kafka.brokers, r.kafka.topic, r.kafka.group_id, r.kafka.encoding) == (
        ["127.0.0.1:9092"], "otlp_spans", "traceo-sampler", "otlp_proto")
    s = cfg.sampler
    assert s.decision_wait == Duration("30s") and s.root_wait == Duration("2s")
    assert s.idle_timeout.seconds == 5.0
    assert [p.name for p in s.policies] == ["errors", "slow", "rest"]
    e = cfg.exporters
    assert (e.otlp.endpoint, e.otlp.compression) == ("127.0.0.1:14317", "gzip")
    assert e.file.path == "./traceo-data/kept.otlp.jsonl"
    assert (e.kafka.brokers, e.kafka.topic) == (["127.0.0.1:9092"], "otlp_spans_sampled")
    assert cfg.admin.endpoint == "127.0.0.1:9464"
    assert cfg.cost.usd_per_gib == 0.5


def test_every_policy_type_loads_and_builds():
    from traceo_sampler.decider import Decider
    cfg = loads(ALL_TYPES)
    s = cfg.sampler
    assert (s.decision_wait.seconds, s.root_wait.seconds, s.idle_timeout.seconds) == (10, 0.25, 1.5)
    assert [p.type for p in s.policies] == [
        "always_sample", "latency", "status_code", "probabilistic", "string_attribute",
        "numeric_attribute", "boolean_attribute", "span_count", "and", "not", "drop"]
    assert s.policies[3].probabilistic.hash_salt == "s"
    assert s.policies[8].and_.and_sub_policy[1].probabilistic.sampling_percentage == 50
    d = Decider(s.policies)
    assert d.attribute_keys == {"http.route", "http.status_code", "debug", "service.name"}


def test_absent_sections():
    cfg = loads("sampler: {policies: [{name: a, type: always_sample}]}\n")
    assert cfg.receivers.otlp is None and cfg.receivers.kafka is None
    assert cfg.exporters.otlp is None and cfg.exporters.file is None and cfg.exporters.kafka is None
    assert cfg.admin is None
    assert loads("").sampler.policies == []


@pytest.mark.parametrize("text,seconds", [
    ("250ms", 0.25), ("2s", 2.0), ("5m", 300.0), ("1h", 3600.0), ("1.5s", 1.5),
    ("100us", 1e-4), ("100µs", 1e-4), ("10ns", 1e-8), (" 3s ", 3.0), ("0s", 0.0),
])
def test_duration(text, seconds):
    assert Duration(text).seconds == pytest.approx(seconds)
    assert loads(f"sampler: {{root_wait: '{text}'}}\n").sampler.root_wait.seconds == pytest.approx(seconds)


@pytest.mark.parametrize("text", ["30", "3 parsecs", "s", "-1s", "1d", "1.s", "", "2 s s"])
def test_bad_duration(text):
    with pytest.raises(ValueError):
        Duration(text)


@pytest.mark.parametrize("ep", ["127.0.0.1:4317", "localhost:0", "http://collector:4318",
                                "https://tempo.example.com:443", "[::1]:4317", "http://[::1]:4317"])
def test_good_endpoints(ep):
    assert loads(f"exporters: {{otlp: {{endpoint: '{ep}'}}}}\n").exporters.otlp.endpoint == ep


def test_split_endpoint():
    assert C.split_endpoint("127.0.0.1:4317") == ("127.0.0.1", 4317)
    assert C.split_endpoint("https://tempo:443") == ("tempo", 443)
    assert C.split_endpoint("[::1]:4317") == ("::1", 4317)


# ----------------------------------------------------------- broken configs
TYPES = ("always_sample, latency, status_code, probabilistic, string_attribute, "
         "numeric_attribute, boolean_attribute, span_count, and, not, drop, "
         "rate_limiting, bytes_limiting, trace_state, composite, latency_tail, "
         "service_rate, adaptive, ottl_condition, trace_flags")

BROKEN = [
    ("negative-threshold", """
        sampler:
          policies:
            - {name: errors, type: status_code, status_code: {status_codes: [ERROR]}}
            - {name: rest, type: probabilistic, probabilistic: {sampling_percentage: 10}}
            - {name: slow, type: latency, latency: {threshold_ms: -1}}
        """, ["sampler.policies[2].latency.threshold_ms: must be >= 0"]),
    ("unknown-top-level-key", """
        recievers: {}
        """, ["recievers: unknown field"]),
    ("unknown-key-in-section", """
        receivers:
          otlp:
            grpc: {endpoint: "127.0.0.1:4317", port: 4317}
        """, ["receivers.otlp.grpc.port: unknown field"]),
    ("unknown-key-in-sampler", """
        sampler: {decision_wiat: 5s}
        """, ["sampler.decision_wiat: unknown field (did you mean 'decision_wait'?)"]),
    ("unknown-key-in-policy-block", """
        sampler:
          policies:
            - {name: slow, type: latency, latency: {threshold_ms: 10, treshold: 5}}
        """, ["sampler.policies[0].latency.treshold: unknown field (did you mean 'threshold_ms'?)"]),
    ("unknown-key-in-policy", """
        sampler:
          policies:
            - {name: slow, type: latency, latency: {threshold_ms: 10}, priority: 1}
        """, ["sampler.policies[0].priority: unknown field"]),
    ("unknown-policy-type", """
        sampler:
          policies:
            - {name: a, type: always_sample}
            - {name: b, type: sometimes_sample}
        """, [f"sampler.policies[1].type: unknown policy type 'sometimes_sample' (one of {TYPES})"]),
    ("unknown-policy-type-with-its-block", """
        sampler:
          policies:
            - {name: b, type: sometimes_sample, sometimes_sample: {often: true}}
        """, [f"sampler.policies[0].type: unknown policy type 'sometimes_sample' (one of {TYPES})"]),
    ("missing-required-block", """
        sampler:
          policies:
            - {name: errors, type: status_code}
        """, ["sampler.policies[0].status_code: required for a policy of type 'status_code'"]),
    ("missing-required-block-probabilistic", """
        sampler:
          policies:
            - {name: rest, type: probabilistic, latency: {threshold_ms: 1}}
        """, ["sampler.policies[0].probabilistic: required for a policy of type 'probabilistic'"]),
    ("missing-required-field-in-block", """
        sampler:
          policies:
            - {name: s, type: string_attribute, string_attribute: {values: [a]}}
        """, ["sampler.policies[0].string_attribute.key: required field missing"]),
    ("missing-name", """
        sampler:
          policies:
            - {type: always_sample}
        """, ["sampler.policies[0].name: required field missing"]),
    ("missing-type", """
        sampler:
          policies:
            - {name: a}
        """, ["sampler.policies[0].type: required field missing"]),
    ("duration-without-unit", """
        sampler: {decision_wait: 30}
        """, ["sampler.decision_wait: must be a duration such as 250ms, 2s or 5m"]),
    ("duration-parsecs", """
        sampler: {decision_wait: "3 parsecs"}
        """, ["sampler.decision_wait: must be a duration such as 250ms, 2s or 5m"]),
    ("duration-exporter", """
        exporters: {otlp: {endpoint: "127.0.0.1:14317", timeout: soon}}
        """, ["exporters.otlp.timeout: must be a duration such as 250ms, 2s or 5m"]),
    ("bad-regex", """
        sampler:
          policies:
            - name: routes
              type: string_attribute
              string_attribute: {key: http.route, values: ["/ok", "/api/(v1"], enabled_regex_matching: true}
        """, ["sampler.policies[0].string_attribute.values[1]: invalid regex "
              "(RE2, as the Collector's Go regexp): missing ): /api/(v1"]),
    ("regex-chars-without-regex-matching-are-fine-but-next-is-not", """
        sampler:
          policies:
            - {name: a, type: string_attribute, string_attribute: {key: k, values: ["(("]}}
            - {name: b, type: string_attribute, string_attribute: {key: k, values: ["(("], enabled_regex_matching: true}}
        """, ["sampler.policies[1].string_attribute.values[0]: invalid regex "
              "(RE2, as the Collector's Go regexp): missing ): (("]),
    ("nested-and", """
        sampler:
          policies:
            - {name: a, type: always_sample}
            - name: both
              type: and
              and:
                and_sub_policy:
                  - {name: x, type: always_sample}
                  - {name: y, type: latency, latency: {threshold_ms: -5}}
        """, ["sampler.policies[1].and.and_sub_policy[1].latency.threshold_ms: must be >= 0"]),
    ("nested-and-in-and", """
        sampler:
          policies:
            - name: outer
              type: and
              and:
                and_sub_policy:
                  - {name: x, type: always_sample}
                  - name: inner
                    type: and
                    and:
                      and_sub_policy:
                        - {name: z, type: probabilistic, probabilistic: {sampling_percentage: 101}}
        """, ["sampler.policies[0].and.and_sub_policy[1].and.and_sub_policy[0]"
              ".probabilistic.sampling_percentage: must be <= 100.0"]),
    ("nested-and-unknown-type", """
        sampler:
          policies:
            - {name: a, type: and, and: {and_sub_policy: [{name: x, type: nope}]}}
        """, [f"sampler.policies[0].and.and_sub_policy[0].type: unknown policy type 'nope' (one of {TYPES})"]),
    ("nested-and-unknown-key", """
        sampler:
          policies:
            - {name: a, type: and, and: {and_sub_policy: [{name: x, type: always_sample}], or: 1}}
        """, ["sampler.policies[0].and.or: unknown field"]),
    ("nested-and-empty", """
        sampler:
          policies:
            - {name: a, type: and, and: {and_sub_policy: []}}
        """, ["sampler.policies[0].and.and_sub_policy: must be a non-empty list of policies"]),
    ("nested-not", """
        sampler:
          policies:
            - name: n
              type: not
              not:
                not_sub_policy: {name: x, type: numeric_attribute, numeric_attribute: {key: k, min_value: 5, max_value: 1}}
        """, ["sampler.policies[0].not.not_sub_policy.numeric_attribute.max_value: must be >= min_value"]),
    ("nested-not-list", """
        sampler:
          policies:
            - {name: n, type: not, not: {not_sub_policy: [{name: x, type: always_sample}]}}
        """, ["sampler.policies[0].not.not_sub_policy: must be one policy"]),
    ("nested-drop", """
        sampler:
          policies:
            - name: d
              type: drop
              drop:
                drop_sub_policy:
                  - {name: x, type: always_sample}
                  - {name: y, type: status_code, status_code: {}}
        """, ["sampler.policies[0].drop.drop_sub_policy[1].status_code.status_codes: required field missing"]),
    ("duplicate-policy-names", """
        sampler:
          policies:
            - {name: keep, type: always_sample}
            - {name: other, type: always_sample}
            - {name: keep, type: latency, latency: {threshold_ms: 5}}
        """, ["sampler.policies[2].name: duplicate name 'keep'"]),
    ("bad-status-code", """
        sampler:
          policies:
            - {name: e, type: status_code, status_code: {status_codes: [ERROR, FAILED]}}
        """, ["sampler.policies[0].status_code.status_codes[1]: Invalid enum value 'FAILED'"]),
    ("percentage-above-100", """
        sampler:
          policies:
            - {name: p, type: probabilistic, probabilistic: {sampling_percentage: 100.5}}
        """, ["sampler.policies[0].probabilistic.sampling_percentage: must be <= 100.0"]),
    ("percentage-negative", """
        sampler:
          policies:
            - {name: p, type: probabilistic, probabilistic: {sampling_percentage: -1}}
        """, ["sampler.policies[0].probabilistic.sampling_percentage: must be >= 0.0"]),
    ("upper-below-threshold", """
        sampler:
          policies:
            - {name: l, type: latency, latency: {threshold_ms: 500, upper_threshold_ms: 100}}
        """, ["sampler.policies[0].latency.upper_threshold_ms: must be >= threshold_ms"]),
    ("wrong-type-of-value", """
        sampler:
          policies:
            - {name: l, type: latency, latency: {threshold_ms: fast}}
        """, ["sampler.policies[0].latency.threshold_ms: Expected `int`, got `str`"]),
    # ------------------------------------------------ the issue-3 policy types
    ("rate-limiting-negative", """
        sampler:
          policies:
            - {name: r, type: rate_limiting, rate_limiting: {spans_per_second: -5}}
        """, ["sampler.policies[0].rate_limiting.spans_per_second: must be >= 0"]),
    ("rate-limiting-missing-rate", """
        sampler:
          policies:
            - {name: r, type: rate_limiting, rate_limiting: {burst_capacity: 5}}
        """, ["sampler.policies[0].rate_limiting.spans_per_second: required field missing"]),
    ("bytes-limiting-unknown-field", """
        sampler:
          policies:
            - {name: b, type: bytes_limiting, bytes_limiting: {bytes_per_second: 5, burst: 9}}
        """, ["sampler.policies[0].bytes_limiting.burst: unknown field"]),
    ("trace-state-missing-block", """
        sampler:
          policies:
            - {name: t, type: trace_state}
        """, ["sampler.policies[0].trace_state: required for a policy of type 'trace_state'"]),
    ("composite-nested-error-path", """
        sampler:
          policies:
            - name: c
              type: composite
              composite:
                max_total_spans_per_second: 100
                composite_sub_policy:
                  - {name: ok, type: always_sample}
                  - {name: bad, type: latency, latency: {threshold_ms: -1}}
        """, ["sampler.policies[0].composite.composite_sub_policy[1].latency.threshold_ms: must be >= 0"]),
    ("composite-names", """
        sampler:
          policies:
            - name: c
              type: composite
              composite:
                max_total_spans_per_second: 100
                policy_order: [a, typo]
                composite_sub_policy:
                  - {name: a, type: always_sample}
                rate_allocation: [{policy: a, percent: 50}, {policy: nope, percent: 10}]
        """, ["sampler.policies[0].composite.policy_order[1]: 'typo' is not a composite_sub_policy name",
              "sampler.policies[0].composite.rate_allocation[1].policy: "
              "'nope' is not a composite_sub_policy name"]),
    ("composite-percent", """
        sampler:
          policies:
            - name: c
              type: composite
              composite:
                max_total_spans_per_second: 100
                composite_sub_policy: [{name: a, type: always_sample}]
                rate_allocation: [{policy: a, percent: 150}]
        """, ["sampler.policies[0].composite.rate_allocation[0].percent: must be <= 100.0"]),
    ("composite-empty", """
        sampler:
          policies:
            - {name: c, type: composite, composite: {max_total_spans_per_second: 1}}
        """, ["sampler.policies[0].composite.composite_sub_policy: must be a non-empty list of policies"]),
    ("composite-in-and-nested", """
        sampler:
          policies:
            - name: a
              type: and
              and:
                and_sub_policy:
                  - name: c
                    type: composite
                    composite:
                      max_total_spans_per_second: 10
                      composite_sub_policy: [{name: x, type: nope}]
        """, ["sampler.policies[0].and.and_sub_policy[0].composite.composite_sub_policy[0].type: "
              f"unknown policy type 'nope' (one of {TYPES})"]),
    ("latency-tail-quantile", """
        sampler:
          policies:
            - {name: l, type: latency_tail, latency_tail: {quantile: 1.5}}
        """, ["sampler.policies[0].latency_tail.quantile: must be <= 1.0"]),
    ("latency-tail-quantile-1", """
        sampler:
          policies:
            - {name: l, type: latency_tail, latency_tail: {quantile: 1}}
        """, ["sampler.policies[0].latency_tail.quantile: must be < 1"]),
    ("latency-tail-accuracy", """
        sampler:
          policies:
            - {name: l, type: latency_tail, latency_tail: {relative_accuracy: 0}}
        """, ["sampler.policies[0].latency_tail.relative_accuracy: must be > 0.0"]),
    ("latency-tail-half-life", """
        sampler:
          policies:
            - {name: l, type: latency_tail, latency_tail: {half_life: soon}}
        """, ["sampler.policies[0].latency_tail.half_life: must be a duration such as 250ms, 2s or 5m"]),
    ("service-rate-match", """
        sampler:
          policies:
            - {name: s, type: service_rate, service_rate: {match: leaf}}
        """, ["sampler.policies[0].service_rate.match: Invalid enum value 'leaf'"]),
    ("service-rate-entry", """
        sampler:
          policies:
            - {name: s, type: service_rate, service_rate: {services: {checkout: {sampling_percentage: 101}}}}
        """, ["sampler.policies[0].service_rate.services.checkout.sampling_percentage: must be <= 100.0"]),
    ("adaptive-no-target", """
        sampler:
          policies:
            - {name: a, type: adaptive, adaptive: {key_fields: [service.name]}}
        """, ["sampler.policies[0].adaptive: set exactly one of target_spans_per_second, "
              "target_traces_per_second"]),
    ("adaptive-two-targets", """
        sampler:
          policies:
            - {name: a, type: adaptive, adaptive: {target_spans_per_second: 5, target_traces_per_second: 1}}
        """, ["sampler.policies[0].adaptive: set exactly one of target_spans_per_second, "
              "target_traces_per_second"]),
    ("adaptive-interval", """
        sampler:
          policies:
            - {name: a, type: adaptive, adaptive: {target_spans_per_second: 5, adjustment_interval: 0s}}
        """, ["sampler.policies[0].adaptive.adjustment_interval: must be > 0"]),
    ("max-spans-zero", """
        sampler: {max_spans_per_trace: 0}
        """, ["sampler.max_spans_per_trace: must be >= 1"]),
    ("policies-not-a-list", """
        sampler: {policies: {name: a, type: always_sample}}
        """, ["sampler.policies: must be a list"]),
    ("policy-not-a-mapping", """
        sampler: {policies: [always_sample]}
        """, ["sampler.policies[0]: Expected `object`, got `str`"]),
    ("sampler-not-a-mapping", """
        sampler: [1]
        """, ["sampler: must be a mapping"]),
    ("document-not-a-mapping", """
        - 1
        - 2
        """, ["config: must be a mapping, got list"]),
    ("bad-exporter-endpoint", """
        exporters: {otlp: {endpoint: "collector"}}
        """, ["exporters.otlp.endpoint: must be host:port, got 'collector'"]),
    ("bad-receiver-port", """
        receivers: {otlp: {grpc: {endpoint: "127.0.0.1:99999"}}}
        """, ["receivers.otlp.grpc.endpoint: must be host:port, got '127.0.0.1:99999'"]),
    ("bad-receiver-port-text", """
        receivers: {otlp: {http: {endpoint: "127.0.0.1:http"}}}
        """, ["receivers.otlp.http.endpoint: must be host:port, got '127.0.0.1:http'"]),
    ("bad-admin-endpoint-no-host", """
        admin: {endpoint: ":9464"}
        """, ["admin.endpoint: must be host:port, got ':9464'"]),
    ("bad-compression", """
        exporters: {otlp: {endpoint: "a:1", compression: zstd}}
        """, ["exporters.otlp.compression: Invalid enum value 'zstd'"]),
    ("kafka-without-brokers", """
        receivers: {kafka: {topic: t}}
        """, ["receivers.kafka.brokers: required field missing"]),
    ("negative-cost", """
        cost: {usd_per_gib: -0.5}
        """, ["cost.usd_per_gib: must be >= 0.0"]),
    ("several-problems", """
        recievers: {}
        sampler:
          decision_wait: 30
          policies:
            - {name: a, type: latency, latency: {threshold_ms: -1}}
            - {name: a, type: always_sample}
            - {name: c, type: status_code}
        exporters: {otlp: {endpoint: nowhere}}
        admin: {endpoint: "localhost"}
        """, [
            "recievers: unknown field",
            "sampler.decision_wait: must be a duration such as 250ms, 2s or 5m",
            "sampler.policies[0].latency.threshold_ms: must be >= 0",
            "sampler.policies[2].status_code: required for a policy of type 'status_code'",
            "exporters.otlp.endpoint: must be host:port, got 'nowhere'",
            "admin.endpoint: must be host:port, got 'localhost'",
        ]),
    ("several-nested-problems", """
        sampler:
          policies:
            - name: outer
              type: and
              and:
                and_sub_policy:
                  - {name: x, type: latency, latency: {threshold_ms: -1}}
                  - {name: y, type: nope}
                  - {name: z, type: not, not: {not_sub_policy: {name: w, type: span_count, span_count: {min_spans: -2}}}}
        """, [
            "sampler.policies[0].and.and_sub_policy[0].latency.threshold_ms: must be >= 0",
            f"sampler.policies[0].and.and_sub_policy[1].type: unknown policy type 'nope' (one of {TYPES})",
            "sampler.policies[0].and.and_sub_policy[2].not.not_sub_policy.span_count.min_spans: must be >= 0",
        ]),
]


@pytest.mark.parametrize("text,expected", [pytest.param(t, e, id=i) for i, t, e in BROKEN])
def test_broken_config(text, expected):
    assert problems_of(text) == expected


@pytest.mark.parametrize("text,expected", [pytest.param(t, e, id=i) for i, t, e in BROKEN])
def test_broken_config_message(text, expected):
    with pytest.raises(ConfigError) as ei:
        loads(textwrap.dedent(text))
    assert str(ei.value) == "\n".join(expected)


@pytest.mark.parametrize("text,line", [
    ("sampler:\n  policies: [1, 2\nadmin: {}\n", 3),
    ("sampler:\n  policies:\n    - name: a\n   type: x\n", 4),
    ("a: b: c\n", 1),
    ("receivers:\n\totlp: {}\n", 2),
])
def test_invalid_yaml_names_line(text, line):
    (p,) = problems_of(text, "my.yaml")
    assert re.fullmatch(rf"my\.yaml: not valid YAML \(line {line}, column \d+\): .+", p), p


def test_unreadable_file(tmp_path):
    missing = tmp_path / "nope.yaml"
    with pytest.raises(ConfigError) as ei:
        load(str(missing))
    assert ei.value.problems == [f"{missing}: cannot read: No such file or directory"]


def test_parse_accepts_dicts_and_reports_the_same():
    with pytest.raises(ConfigError) as ei:
        parse({"sampler": {"policies": [{"name": "s", "type": "latency", "latency": {"threshold_ms": -3}}]}})
    assert ei.value.problems == ["sampler.policies[0].latency.threshold_ms: must be >= 0"]


# ---------------------------------------------------------------- the CLI
def run_cli(*args, timeout=60, cwd=None):
    env = {**os.environ, "PYTHONPATH": str(SRC)}
    return subprocess.run([sys.executable, "-m", "traceo_sampler", *args], capture_output=True,
                          text=True, timeout=timeout, env=env, cwd=cwd or str(ROOT))


def test_cli_validate_good(tmp_path):
    f = tmp_path / "good.yaml"
    f.write_text(FULL)
    r = run_cli("validate", "-c", str(f))
    assert r.returncode == 0, r.stderr
    assert r.stderr.strip() == ""


def test_cli_validate_all_types(tmp_path):
    f = tmp_path / "all.yaml"
    f.write_text(ALL_TYPES)
    r = run_cli("validate", "-c", str(f))
    assert r.returncode == 0, r.stderr


BROKEN_BY_ID = {i: (textwrap.dedent(t), e) for i, t, e in BROKEN}


@pytest.mark.parametrize("case", ["negative-threshold", "several-problems", "several-nested-problems",
                                  "unknown-top-level-key"])
def test_cli_validate_broken(tmp_path, case):
    text, expected = BROKEN_BY_ID[case]
    f = tmp_path / "broken.yaml"
    f.write_text(text)
    r = run_cli("validate", "-c", str(f))
    assert r.returncode == 1
    assert r.stderr.splitlines() == expected
    assert r.stdout == ""


def test_cli_validate_invalid_yaml(tmp_path):
    f = tmp_path / "bad.yaml"
    f.write_text("sampler:\n  policies: [1, 2\nadmin: {}\n")
    r = run_cli("validate", "-c", str(f))
    assert r.returncode == 1
    (line,) = r.stderr.splitlines()
    assert line.startswith(f"{f}: not valid YAML (line 3, ")


def test_cli_validate_missing_file(tmp_path):
    r = run_cli("validate", "-c", str(tmp_path / "missing.yaml"))
    assert r.returncode == 1
    assert r.stderr.splitlines() == [f"{tmp_path / 'missing.yaml'}: cannot read: No such file or directory"]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _port_free(port: int) -> bool:
    with socket.socket() as s:
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
        return True


def test_cli_serve_broken_exits_without_listening(tmp_path):
    grpc, http, admin = _free_port(), _free_port(), _free_port()
    out = tmp_path / "kept.otlp.jsonl"
    ready = tmp_path / "ready.json"
    f = tmp_path / "broken.yaml"
    f.write_text(textwrap.dedent(f"""\
        receivers:
          otlp:
            grpc: {{endpoint: "127.0.0.1:{grpc}"}}
            http: {{endpoint: "127.0.0.1:{http}"}}
        sampler:
          policies:
            - {{name: errors, type: status_code, status_code: {{status_codes: [ERROR]}}}}
            - {{name: rest, type: probabilistic, probabilistic: {{sampling_percentage: 10}}}}
            - {{name: slow, type: latency, latency: {{threshold_ms: -1}}}}
            - {{name: rest, type: always_sample}}
        exporters:
          file: {{path: "{out}"}}
        admin: {{endpoint: "127.0.0.1:{admin}"}}
        """))
    r = run_cli("serve", "-c", str(f), "--ready-file", str(ready), timeout=30, cwd=str(tmp_path))
    assert r.returncode == 1
    assert r.stderr.splitlines() == [
        "sampler.policies[2].latency.threshold_ms: must be >= 0",
        "sampler.policies[3].name: duplicate name 'rest'",
    ]
    assert not ready.exists()
    assert not out.exists() and not out.parent.joinpath("traceo-data").exists()
    assert all(_port_free(p) for p in (grpc, http, admin))


def test_cli_validate_and_serve_agree(tmp_path):
    text, expected = BROKEN_BY_ID["several-problems"]
    f = tmp_path / "broken.yaml"
    f.write_text(text)
    v = run_cli("validate", "-c", str(f))
    s = run_cli("serve", "-c", str(f), timeout=30, cwd=str(tmp_path))
    assert v.returncode == s.returncode == 1
    assert v.stderr == s.stderr
    assert s.stderr.splitlines() == expected


def test_validate_and_serve_refuse_an_explicit_router_behind_a_sampler(tmp_path):
    import os
    import subprocess
    import sys
    cfg = tmp_path / "k.yaml"
    cfg.write_text("receivers:\n  kafka: {brokers: ['127.0.0.1:9092']}\n"
                   "exporters:\n  kafka: {brokers: ['127.0.0.1:9092'], mode: router}\n")
    env = dict(os.environ)
    env["PYTHONPATH"] = os.path.join(os.path.dirname(os.path.dirname(os.path.dirname(
        os.path.abspath(__file__)))), "src")
    want = ["exporters.kafka.mode: router forwards every span unsampled and cannot be combined "
            "with receivers.kafka; mode: sampled exports the kept traces to Kafka beside them"]
    for cmd in ("validate", "serve"):
        r = subprocess.run([sys.executable, "-m", "traceo_sampler", cmd, "-c", str(cfg)],
                           capture_output=True, text=True, env=env, timeout=60)
        assert r.returncode == 1
        assert r.stderr.splitlines() == want, (cmd, r.stderr)


def test_waits_auto_or_fixed_and_their_errors():
    s = loads("sampler: {root_wait: auto, idle_timeout: 7s}\n").sampler
    assert s.root_wait.auto and not s.idle_timeout.auto and s.idle_timeout.seconds == 7
    with pytest.raises(ConfigError) as ei:
        loads("sampler: {root_wait: soon, auto_wait: {quantile: 1, window: 0s}, "
              "dropped_grace: {max_bytes: 0}}\n")
    probs = ei.value.problems
    assert any(p.startswith("sampler.root_wait: must be auto or a duration") for p in probs), probs
    s = loads("sampler: {dropped_grace: {duration: 3s}}\n").sampler
    assert s.dropped_grace.duration.seconds == 3 and s.dropped_grace.max_bytes == 64 << 20
    for text, want in (("sampler: {auto_wait: {quantile: 1}}\n", "sampler.auto_wait.quantile: must be < 1"),
                       ("sampler: {auto_wait: {window: 0s}}\n", "sampler.auto_wait.window: must be > 0"),
                       ("sampler: {dropped_grace: {max_bytes: 0}}\n", "sampler.dropped_grace.max_bytes: must be >= 1")):
        with pytest.raises(ConfigError) as ei:
            loads(text)
        assert want in ei.value.problems, ei.value.problems
