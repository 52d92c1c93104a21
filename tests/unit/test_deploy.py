"""deploy/: the dashboard and the alert rules reference only metrics that
exist in the one metric table, and the rules pass promtool."""
import json
import os
import re
import shutil
import subprocess
import sys

import yaml

from traceo_sampler.telemetry import METRICS, PREFIX

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
RULES = os.path.join(ROOT, "deploy", "prometheus", "traceo-sampler-rules.yaml")
DASH = os.path.join(ROOT, "deploy", "grafana", "traceo-sampler.json")
NAME = re.compile(r"\b(traceo_sampler_[a-z0-9_]+)")


def _known() -> set[str]:
    out = set()
    for spec in METRICS:
        out.add(PREFIX + spec[0])
        if spec[1].__name__.endswith("Histogram"):     # Histogram, CountsHistogram
            out |= {PREFIX + spec[0] + s for s in ("_bucket", "_sum", "_count")}
    return out


def _exprs_rules():
    with open(RULES) as fh:
        doc = yaml.safe_load(fh)
    return [r["expr"] for g in doc["groups"] for r in g["rules"]]


def _exprs_dashboard():
    with open(DASH) as fh:
        d = json.load(fh)
    return [t["expr"] for p in d["panels"] for t in p["targets"]]


def test_rules_and_dashboard_reference_existing_metrics():
    known = _known()
    used = set()
    for e in _exprs_rules() + _exprs_dashboard():
        used |= set(NAME.findall(e))
    assert used, "no metric referenced at all"
    assert used - known == set(), f"unknown metrics: {sorted(used - known)}"


def test_required_alerts_present():
    with open(RULES) as fh:
        names = {r["alert"] for g in yaml.safe_load(fh)["groups"] for r in g["rules"]}
    for want in ("TraceoSamplerBufferNearLimit", "TraceoSamplerMemoryDecisions",
                 "TraceoSamplerExportFailures", "TraceoSamplerLateSpanRatioHigh",
                 "TraceoSamplerCostAboveBudget", "TraceoSamplerLateSpansWouldChangeDecisions"):
        assert want in names


def test_dashboard_is_generated_from_its_script():
    sys.path.insert(0, os.path.join(ROOT, "deploy", "grafana"))
    try:
        import make_dashboard
    finally:
        sys.path.pop(0)
    with open(DASH) as fh:
        assert json.load(fh) == make_dashboard.build(), "run deploy/grafana/make_dashboard.py"


def test_promtool_check_rules():
    promtool = shutil.which("promtool")
    assert promtool, "promtool missing: scripts/system-deps.sh installs Debian's prometheus package"
    r = subprocess.run([promtool, "check", "rules", RULES], capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "SUCCESS" in r.stdout
