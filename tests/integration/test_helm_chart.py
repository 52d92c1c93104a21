"""The Helm chart (deploy/helm/traceo-sampler): `helm lint` is clean and every mode
renders objects that validate against the Kubernetes schemas (kubernetes-validate,
strict: unknown fields are errors) and fit together: Service ports and probes name
container ports, the config ConfigMap is mounted where `serve -c` reads it and passes
`traceo-sampler validate`, its listen ports are the container ports, the grace period
covers the drain, memory covers the buffer and the export queues. The plain manifests
in deploy/kubernetes/ are the chart's own renders.

Custom resources (ServiceMonitor, PrometheusRule, KEDA ScaledObject) have no schema in
kubernetes-validate: their fields are checked here by hand, the rules with promtool."""
from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys

import kubernetes_validate
import pytest
import yaml

from support.helm import CHART, KUBE_VERSIONS, ROOT, helm, render

pytestmark = [pytest.mark.integration, pytest.mark.timeout(900)]

MODES = ("gateway", "router", "consumer-group", "sidecar")
CRDS = {"ServiceMonitor", "PrometheusRule", "ScaledObject"}
EVERYTHING = {"serviceMonitor.enabled": "true", "prometheusRule.enabled": "true",
              "keda.enabled": "true"}


def _by_kind(objs: list[dict]) -> dict[str, list[dict]]:
    out: dict[str, list[dict]] = {}
    for o in objs:
        out.setdefault(o["kind"], []).append(o)
    return out


def _pod_spec(objs: list[dict]) -> tuple[dict, dict]:
    """(pod template, sampler container) of the one workload."""
    (dep,) = _by_kind(objs)["Deployment"]
    tpl = dep["spec"]["template"]
    spec = tpl["spec"]
    ctrs = spec.get("initContainers", []) + spec["containers"]
    (sampler,) = [c for c in ctrs if c["name"] == "traceo-sampler"]
    return tpl, sampler


def _config(objs: list[dict]) -> dict:
    (cm,) = [o for o in objs if o["kind"] == "ConfigMap" and o["metadata"]["name"].endswith("-config")]
    return yaml.safe_load(cm["data"]["config.yaml"])


def _seconds(d: str) -> float:
    m = re.fullmatch(r"(\d+(?:\.\d+)?)(ms|s|m|h)", d)
    return float(m.group(1)) * {"ms": 0.001, "s": 1, "m": 60, "h": 3600}[m.group(2)]


def _mib(q: str) -> float:
    m = re.fullmatch(r"(\d+)(Mi|Gi)", q)
    return int(m.group(1)) * (1024 if m.group(2) == "Gi" else 1)


def test_helm_lint_every_mode():
    for mode in MODES:
        r = helm("lint", str(CHART), "--strict", "--set", f"mode={mode}",
                 *sum((["--set", f"{k}={v}"] for k, v in EVERYTHING.items()), []), check=False)
        assert r.returncode == 0, f"{mode}:\n{r.stdout}\n{r.stderr}"
        assert "[ERROR]" not in r.stdout and "[WARNING]" not in r.stdout, r.stdout


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("kube", KUBE_VERSIONS)
def test_every_object_validates_against_the_kubernetes_schema(mode, kube):
    objs = render({"mode": mode, **EVERYTHING}, kube_version=kube)
    kinds = {o["kind"] for o in objs}
    for o in objs:
        if o["kind"] in CRDS:
            continue
        try:
            kubernetes_validate.validate(o, kube, strict=True)
        except kubernetes_validate.ValidationError as exc:
            pytest.fail(f"{mode} {o['kind']}/{o['metadata']['name']} on {kube}: {exc.message} "
                        f"at {list(exc.path)}")
    want = {"gateway": {"Deployment", "Service", "PodDisruptionBudget", "HorizontalPodAutoscaler",
                        "ConfigMap", "ServiceMonitor", "PrometheusRule"},
            "router": {"Deployment", "Service", "PodDisruptionBudget", "HorizontalPodAutoscaler",
                       "ConfigMap"},
            "consumer-group": {"Deployment", "Service", "PodDisruptionBudget", "ScaledObject",
                               "ConfigMap", "ServiceMonitor"},
            "sidecar": {"Deployment", "ConfigMap"}}[mode]
    assert want <= kinds, f"{mode}: missing {want - kinds}"


@pytest.mark.parametrize("mode", MODES)
def test_rendered_config_passes_validate_and_matches_the_pod(mode, tmp_path):
    objs = render({"mode": mode})
    cfg = _config(objs)
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(cfg))
    r = subprocess.run([sys.executable, "-m", "traceo_sampler", "validate", "-c", str(path)],
                       capture_output=True, text=True, env={"PYTHONPATH": str(ROOT / "src")})
    assert r.returncode == 0, r.stderr
    tpl, ctr = _pod_spec(objs)
    spec = tpl["spec"]
    # the config file is where serve reads it
    assert ctr["args"] == ["serve", "-c", "/etc/traceo-sampler/config.yaml"]
    mounts = {m["name"]: m["mountPath"] for m in ctr["volumeMounts"]}
    vols = {v["name"]: v for v in spec["volumes"]}
    assert mounts["config"] == "/etc/traceo-sampler"
    (cm,) = [o for o in objs if o["kind"] == "ConfigMap" and o["metadata"]["name"].endswith("-config")]
    assert vols["config"]["configMap"]["name"] == cm["metadata"]["name"]
    # the file exporter's directory (if any) and /tmp are writable on a read-only root
    assert ctr["securityContext"]["readOnlyRootFilesystem"] is True
    assert mounts["data"] == "/var/lib/traceo-sampler"
    # listen ports are the container ports; probes hit the admin port
    ports = {p["name"]: p["containerPort"] for p in ctr["ports"]}
    host = "127.0.0.1" if mode == "sidecar" else "0.0.0.0"
    assert cfg["admin"]["endpoint"] == f"{host}:{ports['admin']}"
    if mode == "consumer-group":
        assert "otlp" not in cfg["receivers"] and cfg["receivers"]["kafka"]["brokers"]
        assert set(ports) == {"admin"}
    else:
        assert cfg["receivers"]["otlp"]["grpc"]["endpoint"] == f"{host}:{ports['otlp-grpc']}"
        assert cfg["receivers"]["otlp"]["http"]["endpoint"] == f"{host}:{ports['otlp-http']}"
    if mode == "router":
        assert set(cfg["exporters"]) == {"kafka"}
    if mode == "sidecar":
        assert ctr["restartPolicy"] == "Always", "a native sidecar (restartable init container)"
        cmd = ctr["livenessProbe"]["exec"]["command"]
        assert cmd == ["/usr/local/bin/traceo-healthcheck"]
        assert {"name": "TRACEO_SAMPLER_HEALTH_URL",
                "value": f"http://127.0.0.1:{ports['admin']}/healthz"} in ctr["env"]
        app = spec["containers"][0]
        assert f"127.0.0.1:{ports['otlp-grpc']}" in app["args"]
        assert ctr["resources"]["requests"]["cpu"] == "100m"
    else:
        assert ctr["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "admin"}
        assert ctr["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": "admin"}
    # SIGTERM drains within the grace period: preStop sleep + shutdown_timeout + margin
    pre = float(ctr["lifecycle"]["preStop"]["exec"]["command"][1])
    assert spec["terminationGracePeriodSeconds"] >= pre + _seconds(cfg["service"]["shutdown_timeout"]) + 10
    # memory: what the buffer may hold + the export queues + the idle process
    mem = ctr["resources"]["limits"]["memory"]
    assert ctr["resources"]["requests"]["memory"] == mem
    if mode != "router":
        queues = sum(e.get("queue_max_bytes", 256 << 20) for e in cfg["exporters"].values()) / (1 << 20)
        assert _mib(mem) >= cfg["sampler"]["memory_limit_mib"] + queues + 64
    assert spec["securityContext"]["runAsNonRoot"] is True


@pytest.mark.parametrize("mode", ("gateway", "router", "consumer-group"))
def test_services_pdb_hpa_and_monitors_point_at_the_pods(mode):
    objs = render({"mode": mode, **EVERYTHING})
    k = _by_kind(objs)
    tpl, ctr = _pod_spec(objs)
    labels = tpl["metadata"]["labels"]
    names = {p["name"] for p in ctr["ports"]}
    (dep,) = k["Deployment"]
    for svc in k["Service"]:
        assert svc["spec"]["selector"].items() <= labels.items()
        for p in svc["spec"]["ports"]:
            assert p["targetPort"] in names, (svc["metadata"]["name"], p)
    (pdb,) = k["PodDisruptionBudget"]
    assert pdb["spec"]["selector"]["matchLabels"].items() <= labels.items()
    (sm,) = k["ServiceMonitor"]
    assert sm["spec"]["endpoints"][0]["port"] == "admin"
    assert sm["spec"]["endpoints"][0]["path"] == "/metrics"
    assert any(sm["spec"]["selector"]["matchLabels"].items() <= s["metadata"]["labels"].items()
               and any(p["name"] == "admin" for p in s["spec"]["ports"]) for s in k["Service"])
    if mode == "consumer-group":
        (so,) = k["ScaledObject"]
        assert so["spec"]["scaleTargetRef"]["name"] == dep["metadata"]["name"]
        trig = so["spec"]["triggers"][0]
        cfg = _config(objs)["receivers"]["kafka"]
        assert trig["type"] == "kafka"
        assert trig["metadata"]["consumerGroup"] == cfg["group_id"]
        assert trig["metadata"]["topic"] == cfg["topic"]
        assert trig["metadata"]["bootstrapServers"] == ",".join(cfg["brokers"])
        assert so["spec"]["maxReplicaCount"] <= 12, "never more members than partitions"
        assert "replicas" not in dep["spec"], "KEDA owns the replica count"
        assert "HorizontalPodAutoscaler" not in k
    else:
        (hpa,) = k["HorizontalPodAutoscaler"]
        assert hpa["spec"]["scaleTargetRef"] == {"apiVersion": "apps/v1", "kind": "Deployment",
                                                 "name": dep["metadata"]["name"]}
        assert "replicas" not in dep["spec"], "the HPA owns the replica count"
    if mode == "gateway":
        (headless,) = [s for s in k["Service"] if s["spec"].get("clusterIP") == "None"]
        assert headless["metadata"]["name"].endswith("-headless")


def test_prometheus_rule_and_dashboard_are_the_deploy_files(tmp_path):
    objs = render({"prometheusRule.enabled": "true"})
    k = _by_kind(objs)
    (rule,) = k["PrometheusRule"]
    with open(ROOT / "deploy" / "prometheus" / "traceo-sampler-rules.yaml") as fh:
        assert rule["spec"] == yaml.safe_load(fh)
    promtool = shutil.which("promtool")
    if promtool:
        p = tmp_path / "rules.yaml"
        p.write_text(yaml.safe_dump(rule["spec"]))
        r = subprocess.run([promtool, "check", "rules", str(p)], capture_output=True, text=True)
        assert r.returncode == 0, r.stdout + r.stderr
    (dash,) = [o for o in k["ConfigMap"] if o["metadata"]["name"].endswith("-dashboard")]
    assert dash["metadata"]["labels"]["grafana_dashboard"] == "1"
    with open(ROOT / "deploy" / "grafana" / "traceo-sampler.json") as fh:
        assert json.loads(dash["data"]["traceo-sampler.json"]) == json.load(fh)


def test_values_change_what_they_say():
    objs = render({"config.sampler.memory_limit_mib": "256", "config.exporters.otlp.queue_max_bytes": "67108864",
                   "shutdownTimeoutSeconds": "60", "ports.grpc": "14317", "autoscaling.enabled": "false",
                   "replicaCount": "3"})
    more = render({"workers": "4", "resources.cpu.request": "4"})
    assert _pod_spec(more)[1]["resources"]["limits"]["memory"] == f"{1024 + 256 + 4 * 64 + 128}Mi"
    assert _config(more)["service"]["workers"] == 4
    tpl, ctr = _pod_spec(objs)
    cfg = _config(objs)
    assert ctr["resources"]["limits"]["memory"] == "512Mi"  # 256 + 64 + 64 x 1 worker + 128
    assert cfg["service"]["workers"] == 1
    assert cfg["service"]["shutdown_timeout"] == "60s"
    assert tpl["spec"]["terminationGracePeriodSeconds"] == 80
    assert cfg["receivers"]["otlp"]["grpc"]["endpoint"] == "0.0.0.0:14317"
    (dep,) = _by_kind(objs)["Deployment"]
    assert dep["spec"]["replicas"] == 3 and "HorizontalPodAutoscaler" not in _by_kind(objs)
    objs = render({"resources.memory": "3Gi", "rollOnConfigChange": "true"})
    tpl, ctr = _pod_spec(objs)
    assert ctr["resources"]["limits"]["memory"] == "3Gi"
    assert re.fullmatch(r"[0-9a-f]{64}", tpl["metadata"]["annotations"]["checksum/config"])


def test_sidecar_mode_shares_decisions_over_kafka():
    """The sidecar's config carries sampler.shared_decisions (README "Sidecar
    mode") on kafka.brokers; it can be turned off; other modes never get it."""
    cfg = _config(render({"mode": "sidecar", "kafka.brokers": "{k1:9092,k2:9092}",
                          "sidecar.sharedDecisions.hold": "8s"}))
    assert cfg["sampler"]["shared_decisions"] == {"brokers": ["k1:9092", "k2:9092"],
                                                  "topic": "traceo_decisions", "hold": "8s"}
    off = _config(render({"mode": "sidecar", "sidecar.sharedDecisions.enabled": "false"}))
    assert "shared_decisions" not in (off.get("sampler") or {})
    assert "shared_decisions" not in (_config(render({"mode": "gateway"})).get("sampler") or {})
    r = helm("template", "t", str(CHART), "--set", "mode=sidecar",
             "--set", "sidecar.sharedDecisions.hold=soon", check=False)
    assert r.returncode != 0 and "hold" in r.stderr, r.stderr


def test_gateway_mode_has_the_write_ahead_log_on_the_data_volume():
    """Gateway mode runs with sampler.wal (README "Crash safety") in the
    emptyDir mounted at /var/lib/traceo-sampler, which survives a container
    restart; it can be turned off or tuned; other modes never get it."""
    objs = render({"mode": "gateway"})
    cfg = _config(objs)
    assert cfg["sampler"]["wal"] == {"dir": "/var/lib/traceo-sampler/wal", "fsync": "interval",
                                     "max_bytes": 1 << 30}
    _tpl, ctr = _pod_spec(objs)
    assert {"name": "data", "mountPath": "/var/lib/traceo-sampler"} in ctr["volumeMounts"]
    tuned = _config(render({"gateway.wal.fsync": "always", "config.sampler.wal.max_bytes": "2097152"}))
    assert tuned["sampler"]["wal"]["fsync"] == "always" and tuned["sampler"]["wal"]["max_bytes"] == 2097152
    assert "wal" not in (_config(render({"gateway.wal.enabled": "false"})).get("sampler") or {})
    for mode in ("router", "consumer-group", "sidecar"):
        assert "wal" not in (_config(render({"mode": mode})).get("sampler") or {})
    r = helm("template", "t", str(CHART), "--set", "gateway.wal.fsync=sometimes", check=False)
    assert r.returncode != 0 and "fsync" in r.stderr, r.stderr


def test_schema_rejects_bad_values_naming_them():
    r = helm("template", "t", str(CHART), "--set", "mode=bogus", check=False)
    assert r.returncode != 0 and "mode" in r.stderr, r.stderr
    r = helm("template", "t", str(CHART), "--set", "ports.grpc=70000", check=False)
    assert r.returncode != 0 and "ports" in r.stderr and "grpc" in r.stderr, r.stderr
    r = helm("template", "t", str(CHART), "--set", "config.receivers.otlp.grpc.endpoint=x:1", check=False)
    assert r.returncode != 0 and "receivers" in r.stderr, r.stderr


def test_a_bad_sampler_config_is_caught_by_validate(tmp_path):
    """The chart passes config through: what the sampler rejects, validate names."""
    objs = render({"config.sampler.policies[0].latency.threshold_ms": "-1",
                   "config.sampler.policies[0].type": "latency",
                   "config.sampler.policies[0].name": "slow"})
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(_config(objs)))
    r = subprocess.run([sys.executable, "-m", "traceo_sampler", "validate", "-c", str(path)],
                       capture_output=True, text=True, env={"PYTHONPATH": str(ROOT / "src")})
    assert r.returncode == 1 and "sampler.policies[0]" in r.stderr, r.stderr


def test_plain_manifests_are_the_charts_renders():
    for mode in MODES:
        path = ROOT / "deploy" / "kubernetes" / f"{mode}.yaml"
        rendered = subprocess.run([str(ROOT / "deploy" / "kubernetes" / "render.sh"), "--stdout", mode],
                                  capture_output=True, text=True, check=True).stdout
        assert path.read_text() == rendered, f"{path} is stale: run deploy/kubernetes/render.sh"
