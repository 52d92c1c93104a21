"""`traceo-sampler simulate`: replay captures (OTLP JSON lines, as the file
exporter writes them, and length-prefixed protobuf) through the policies."""
import json
import os
import struct
import subprocess
import sys

import pytest

from support_otlp import make_request, trace
from traceo_sampler.otlp_json import request_to_json

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
pytestmark = pytest.mark.e2e


def _run(*args):
    env = dict(os.environ, PYTHONPATH=os.path.join(ROOT, "src"))
    return subprocess.run([sys.executable, "-m", "traceo_sampler", *args],
                          capture_output=True, text=True, env=env, timeout=120)


def test_simulate_reports_keep_rates_per_policy_and_service(tmp_path):
    cfg = tmp_path / "c.yaml"
    cfg.write_text("sampler:\n  policies:\n"
                   "    - {name: errors, type: status_code, status_code: {status_codes: [ERROR]}}\n"
                   "    - {name: none, type: probabilistic, probabilistic: {sampling_percentage: 0}}\n")
    t0 = 1_700_000_000 * 10**9
    errs = [trace(3, status=2, start=t0, end=t0 + 10**6) for _ in range(4)]
    oks = [trace(2, start=t0, end=t0 + 10**6) for _ in range(6)]
    jsonl = tmp_path / "kept.otlp.jsonl"
    jsonl.write_text(json.dumps(request_to_json(make_request(errs[:2] + oks[:3], service="a"))) + "\n")
    pb = tmp_path / "cap.pb"
    raw = make_request(errs[2:] + oks[3:], service="b")
    pb.write_bytes(struct.pack(">I", len(raw)) + raw)
    r = _run("simulate", "-c", str(cfg), str(jsonl), str(pb))
    assert r.returncode == 0, r.stderr
    rep = json.loads(r.stdout)
    assert rep["traces"] == 10 and rep["traces_kept"] == 4
    assert rep["spans_before"] == 4 * 3 + 6 * 2 and rep["spans_after"] == 12
    assert rep["per_policy"] == {"errors": {"traces": 4, "share_of_traces": 0.4}}
    assert rep["per_service"]["a"]["spans_before"] == 12 and rep["per_service"]["a"]["spans_after"] == 6
    assert rep["per_service"]["b"]["spans_after"] == 6
    assert 0 < rep["bytes_after"] < rep["bytes_before"]


def test_simulate_bad_input_is_a_clear_error(tmp_path):
    cfg = tmp_path / "c.yaml"
    cfg.write_text("sampler: {policies: [{name: all, type: always_sample}]}\n")
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"resourceSpans": [{"scopeSpans": [{"spans": [{"traceId": "zz"}]}]}]}\n')
    r = _run("simulate", "-c", str(cfg), str(bad))
    assert r.returncode == 1
    assert "bad.jsonl:1" in r.stderr and "traceId" in r.stderr
    trunc = tmp_path / "t.pb"
    trunc.write_bytes(struct.pack(">I", 100) + b"\x0a\x00")
    r = _run("simulate", "-c", str(cfg), str(trunc))
    assert r.returncode == 1 and "file ends first" in r.stderr


def test_simulate_with_arrival_times_reports_lags_and_late_decisions(tmp_path):
    """A capture carrying arrival times: the downstream service's batches
    arrive 4.5 s after the root's; a fixed root_wait of 2s decides first
    and the late errors are reported, the default (auto) waits for them."""
    t0 = 1_700_000_000 * 10**9
    lines = []
    n = 40
    for i in range(n):
        spans = trace(3, start=t0 + i * 10**9, end=t0 + i * 10**9 + 10**7)
        if i % 4 == 0:
            spans[2]["status"] = 2
        arrive = t0 + i * 10**9 + 2 * 10**7
        front = request_to_json(make_request([spans[:1]], service="front"))
        db = request_to_json(make_request([spans[1:]], service="db"))
        lines.append((arrive, {**front, "arrivalTimeUnixNano": str(arrive)}))
        lines.append((arrive + 4_500_000_000, {**db, "arrivalTimeUnixNano": arrive + 4_500_000_000}))
    cap = tmp_path / "arrivals.jsonl"
    cap.write_text("".join(json.dumps(d) + "\n" for _, d in sorted(lines, key=lambda x: x[0])))
    policies = ("  policies:\n"
                "    - {name: errors, type: status_code, status_code: {status_codes: [ERROR]}}\n")
    fixed = tmp_path / "fixed.yaml"
    fixed.write_text("sampler:\n  root_wait: 2s\n" + policies)
    auto = tmp_path / "auto.yaml"
    auto.write_text("sampler:\n" + policies)
    rf = json.loads(_run("simulate", "-c", str(fixed), str(cap)).stdout)
    ra = json.loads(_run("simulate", "-c", str(auto), str(cap)).stdout)
    assert rf["traces_kept"] == 0 and rf["completion"]["late_spans_would_change"] == n // 4
    assert rf["completion"]["root_wait"] == {"mode": "fixed", "seconds": 2.0}
    assert ra["traces_kept"] == n // 4 and ra["completion"]["late_spans_would_change"] == 0
    assert ra["spans_after"] == 3 * n // 4
    lag = ra["completion"]["arrival_lag"]["db"]["root"]
    assert lag["spans"] == 2 * n and lag["p50_le_s"] == 5.0 and lag["mean_s"] == pytest.approx(4.5)
    # the fixed run's late spans (db's, 4.5 s after the root) are in its lags too
    assert rf["completion"]["arrival_lag"]["db"]["root"]["spans"] == 2 * n


def test_simulate_a_collector_file(tmp_path):
    """simulate -c takes a Collector config file as serve does: its
    tail_sampling policies, Collector semantics (the FNV hash of
    probabilistic here), ${env:...} substituted."""
    from traceo_sampler.policies.probabilistic import CollectorProbabilistic
    cfg = tmp_path / "otelcol.yaml"
    cfg.write_text("""\
receivers:
  otlp: {protocols: {grpc: {endpoint: "127.0.0.1:${env:PORT:-4317}"}}}
processors:
  batch: {}
  tail_sampling:
    decision_wait: 5s
    policies:
      - {name: errors, type: status_code, status_code: {status_codes: [ERROR]}}
      - {name: some, type: probabilistic, probabilistic: {sampling_percentage: 30, hash_salt: s}}
exporters:
  otlp: {endpoint: "backend:4317", tls: {insecure: true}}
service:
  pipelines:
    traces: {receivers: [otlp], processors: [tail_sampling, batch], exporters: [otlp]}
""")
    t0 = 1_700_000_000 * 10**9
    errs = [trace(3, status=2, start=t0, end=t0 + 10**6) for _ in range(5)]
    oks = [trace(2, start=t0, end=t0 + 10**6) for _ in range(200)]
    jsonl = tmp_path / "cap.jsonl"
    jsonl.write_text(json.dumps(request_to_json(make_request(errs + oks))) + "\n")
    p = CollectorProbabilistic("some", 30, "s")
    hashed = sum(1 for t in oks if p.evaluate(type("T", (), {"trace_id": t[0]["trace_id"]})())[0] == 1)
    r = _run("simulate", "-c", str(cfg), str(jsonl))
    assert r.returncode == 0, r.stderr
    rep = json.loads(r.stdout)
    assert rep["traces"] == 205 and rep["traces_kept"] == 5 + hashed
    assert rep["per_policy"]["errors"]["traces"] == 5
    assert rep["per_policy"]["some"]["traces"] == hashed
