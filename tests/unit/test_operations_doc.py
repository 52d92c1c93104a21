"""docs/operations.md stays true to the repository: every alert rule is explained,
every metric it names exists in the one metric table, every file it points at
exists, and the memory formula it gives is the chart's."""
import os
import re

import yaml

from traceo_sampler.telemetry import METRICS, PREFIX

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
DOC = open(os.path.join(ROOT, "docs", "operations.md")).read()


def test_every_alert_rule_is_explained():
    with open(os.path.join(ROOT, "deploy", "prometheus", "traceo-sampler-rules.yaml")) as fh:
        names = {r["alert"] for g in yaml.safe_load(fh)["groups"] for r in g["rules"]}
    assert names
    for name in names:
        assert re.search(rf"^\| `{name}`", DOC, re.M), f"{name} has no row in the alert table"


def test_every_metric_named_exists():
    known = set()
    for spec in METRICS:
        known.add(spec[0])
        if spec[1].__name__ == "Histogram":
            known |= {spec[0] + s for s in ("_bucket", "_sum", "_count")}
    named = set(re.findall(r"`(?:traceo_sampler_)?([a-z0-9_]+_(?:total|bytes|spans|traces|lag|messages|seconds))(?:\{[^`]*\})?`", DOC))
    assert named, "the guide names no metric"
    # config fields with metric-like names (queue_max_bytes) are not metrics
    cfg_src = open(os.path.join(ROOT, "src", "traceo_sampler", "config.py")).read()
    named = {n for n in named if not re.search(rf"^\s+{n}:", cfg_src, re.M)}
    assert named - known == set(), f"unknown metrics in docs/operations.md: {sorted(named - known)}"
    assert PREFIX == "traceo_sampler_"


def test_every_path_named_exists():
    paths = set(re.findall(r"`((?:deploy|tests|benchmarks|docs|scripts|src)/[A-Za-z0-9_./-]+?)(?:::[a-z_]+)?`", DOC))
    assert len(paths) > 10
    missing = [p for p in paths if not os.path.exists(os.path.join(ROOT, p))]
    assert not missing, missing


def test_the_memory_formula_is_the_charts():
    tpl = open(os.path.join(ROOT, "deploy", "helm", "traceo-sampler", "templates", "_helpers.tpl")).read()
    assert '(add $buffer $queue (mul 64 (int .Values.workers)) 128)' in tpl
    assert "memory_limit_mib + Σ queue_max_bytes + 64 MiB × workers + 128 MiB" in DOC
