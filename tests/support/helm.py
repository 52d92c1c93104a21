"""Helm (built from its Go module by ``scripts/helm.sh``) for the chart tests."""
from __future__ import annotations

import os
import subprocess
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[2]
CHART = ROOT / "deploy" / "helm" / "traceo-sampler"
# The oldest Kubernetes the chart supports (native sidecars are on by default from
# 1.29) and the newest whose schemas kubernetes-validate ships.
KUBE_VERSIONS = ("1.29.0", "1.37.0")


def helm_binary() -> str:
    """Path of the helm binary; builds it on first use (minutes, cold)."""
    given = os.environ.get("TRACEO_HELM_BIN")
    if given:
        return given
    out = subprocess.run([str(ROOT / "scripts" / "helm.sh"), "build"], check=True,
                         stdout=subprocess.PIPE, text=True).stdout
    return out.strip().splitlines()[-1]


def helm(*args: str, check: bool = True) -> subprocess.CompletedProcess:
    env = {**os.environ, "HELM_CACHE_HOME": "/tmp/traceo-helm/cache",
           "HELM_CONFIG_HOME": "/tmp/traceo-helm/config", "HELM_DATA_HOME": "/tmp/traceo-helm/data"}
    return subprocess.run([helm_binary(), *args], capture_output=True, text=True, check=check, env=env)


def render(sets: dict | None = None, release: str = "traceo-sampler",
           kube_version: str = KUBE_VERSIONS[-1]) -> list[dict]:
    """`helm template` of the chart with --set KEY=VALUE pairs: the rendered objects."""
    args = ["template", release, str(CHART), "--kube-version", kube_version]
    for k, v in (sets or {}).items():
        args += ["--set", f"{k}={v}"]
    out = helm(*args).stdout
    return [d for d in yaml.safe_load_all(out) if d]
