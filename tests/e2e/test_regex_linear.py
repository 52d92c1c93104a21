"""``string_attribute`` regexes run in linear time with RE2 semantics (issue
9, item 4), through the command line: a pattern Go's regexp refuses is a
config error naming the field (``validate`` and ``serve``), and a
catastrophic-backtracking pattern with a crafted attribute value, sent by
the OpenTelemetry SDK, does not freeze ``serve``'s event loop."""
from __future__ import annotations

import os
import subprocess
import sys
import time
import urllib.request

import pytest
import yaml
from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor

from support_otlp import CaptureSink
from support_serve import ROOT, Serve, free_port

pytestmark = pytest.mark.e2e


def policy(values: list[str]) -> dict:
    return {"name": "route", "type": "string_attribute",
            "string_attribute": {"key": "q", "values": values, "enabled_regex_matching": True}}


def run_cli(cmd: str, tmp_path, values: list[str]) -> subprocess.CompletedProcess:
    path = tmp_path / "c.yaml"
    path.write_text(yaml.safe_dump({"sampler": {"policies": [policy(values)]},
                                    "exporters": {"file": {"path": str(tmp_path / "o.jsonl")}},
                                    "admin": {"endpoint": f"127.0.0.1:{free_port()}"},
                                    "receivers": {"otlp": {"grpc": {
                                        "endpoint": f"127.0.0.1:{free_port()}"}}}}))
    env = dict(os.environ, PYTHONPATH=os.path.join(ROOT, "src"))
    return subprocess.run([sys.executable, "-m", "traceo_sampler", cmd, "-c", str(path)],
                          capture_output=True, text=True, env=env, timeout=60)


# patterns Python's re takes and Go's regexp (RE2) refuses, with RE2's words
REFUSED = [
    (r"(a)\1", "invalid escape sequence: \\1"),
    (r"(?=x)y", "invalid perl operator: (?="),
    (r"(?<!x)y", "invalid perl operator: (?<!"),
    (r"end\Z", "invalid escape sequence: \\Z"),
    (r"a\Cb", "invalid escape sequence: \\C"),
    (r"(?P<n>a)(?P=n)", "invalid perl operator: (?P"),
    (r"a{1001}", "invalid repetition size: {1001}"),
]
ACCEPTED = [r"^/api/v[0-9]+/", r"(?i)checkout", r"\pL+", r"(a+)+$", r"[[:alpha:]]", r"a\\Cb"]


@pytest.mark.parametrize("pattern,words", REFUSED, ids=[p for p, _ in REFUSED])
@pytest.mark.parametrize("cmd", ["validate", "serve"])
def test_pattern_go_refuses_is_a_config_error(tmp_path, cmd, pattern, words):
    r = run_cli(cmd, tmp_path, ["ok", pattern])
    assert r.returncode == 1, r.stderr
    lines = [ln for ln in (r.stdout + r.stderr).splitlines() if ln.strip()]
    want = ("sampler.policies[0].string_attribute.values[1]: invalid regex (RE2, as the "
            "Collector's Go regexp): ")
    assert any(ln.startswith(want) and words in ln for ln in lines), lines
    assert "Traceback" not in r.stderr


def test_patterns_go_accepts_validate(tmp_path):
    r = run_cli("validate", tmp_path, ACCEPTED)
    assert r.returncode == 0, r.stdout + r.stderr


def test_catastrophic_pattern_does_not_freeze_the_loop():
    with CaptureSink() as sink:
        cfg = {"sampler": {"root_wait": "100ms", "idle_timeout": "1s", "decision_wait": "5s",
                           "policies": [policy([r"^(a+)+$", r"^(x|x)*y$"])]},
               "exporters": {"otlp": {"endpoint": sink.endpoint}}}
        with Serve(cfg) as s:
            provider = TracerProvider(resource=Resource.create({"service.name": "web"}))
            provider.add_span_processor(SimpleSpanProcessor(
                OTLPSpanExporter(endpoint=f"http://{s.endpoint}", insecure=True)))
            tracer = provider.get_tracer("t")
            # backtracking engines need 2^40 steps for these values
            for value in ("a" * 40 + "!", "x" * 40):
                with tracer.start_as_current_span("GET /", attributes={"q": value}):
                    pass
            with tracer.start_as_current_span("GET /", attributes={"q": "aaaa"}) as kept:
                pass
            time.sleep(0.5)   # all three decided meanwhile
            t0 = time.monotonic()
            with urllib.request.urlopen(f"http://127.0.0.1:{s.admin_port}/healthz", timeout=5):
                pass
            with tracer.start_as_current_span("after"):
                pass          # an export through the receiver, answered at once
            assert time.monotonic() - t0 < 2.0
            deadline = time.monotonic() + 10
            while time.monotonic() < deadline and s.metric(
                    "traceo_sampler_traces_decided_total") < 4:
                time.sleep(0.1)
            decided = s.metric("traceo_sampler_traces_decided_total")
            sampled = s.metric("traceo_sampler_traces_decided_total", decision="sampled")
            provider.shutdown()
        assert decided == 4 and sampled == 1
        kept_tid = kept.get_span_context().trace_id.to_bytes(16, "big")
        assert {sp[0] for sp in sink.spans()} == {kept_tid}
