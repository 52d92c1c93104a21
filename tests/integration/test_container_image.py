"""The container image (deploy/container/): built from Debian packages by
deploy/container/build.sh, then run the way a container runtime would run it —
its own entrypoint, user and working directory — with `buildah run --isolation
chroot` (podman/runc cannot start containers in this sandbox: they are refused
setrlimit). The chroot shares the host's network, so the test mounts a config over
the image's default that binds 127.0.0.1 on free ports (the image's own default
binds 0.0.0.0:4317/4318/9464, which is what a pod needs); the image's default
is checked with `traceo-sampler validate` inside the image."""
from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import tempfile
import time
import urllib.request
from pathlib import Path

import grpc
import psutil
import pytest
import yaml

from support.procs import free_ports
from support_otlp import CaptureSink, make_request, trace

pytestmark = [pytest.mark.integration, pytest.mark.timeout(1200)]

ROOT = Path(__file__).resolve().parents[2]
METHOD = "/opentelemetry.proto.collector.trace.v1.TraceService/Export"


def _buildah(*args: str, check: bool = True, timeout: float = 120) -> subprocess.CompletedProcess:
    return subprocess.run(["buildah", *args], capture_output=True, text=True, check=check,
                          timeout=timeout)


@pytest.fixture(scope="module")
def image() -> str:
    if shutil.which("buildah") is None or shutil.which("mmdebstrap") is None:
        pytest.fail("buildah and mmdebstrap are needed (scripts/system-deps.sh installs them)")
    given = os.environ.get("TRACEO_IMAGE")
    if given:
        return given
    out = subprocess.run([str(ROOT / "deploy" / "container" / "build.sh")], check=True,
                         stdout=subprocess.PIPE, text=True, timeout=1800).stdout
    return out.strip().splitlines()[-1]


@pytest.fixture
def container(image):
    """A working container from the image (buildah's equivalent of `create`)."""
    name = f"traceo-test-{os.getpid()}-{time.monotonic_ns()}"
    _buildah("from", "--pull-never", "--name", name, image)
    try:
        yield name
    finally:
        _buildah("rm", name, check=False)


def _config(image: str) -> dict:
    info = json.loads(_buildah("inspect", "--type", "image", image).stdout)
    return info["Docker"]["config"]


def test_image_metadata(image):
    c = _config(image)
    assert c["User"] == "10001:10001"
    assert set(c["ExposedPorts"]) == {"4317/tcp", "4318/tcp", "9464/tcp"}
    assert c["Entrypoint"] == ["/usr/bin/tini", "--", "traceo-sampler"]
    assert c["Cmd"] == ["serve", "-c", "/etc/traceo-sampler/config.yaml"]
    assert c["WorkingDir"] == "/var/lib/traceo-sampler"
    assert c["Healthcheck"]["Test"] == ["CMD", "/usr/local/bin/traceo-healthcheck"]
    assert c.get("StopSignal") == "SIGTERM"


def test_image_size_is_the_one_in_the_readme(image):
    """The README gives the image's size; it stays within 15 % of the real one."""
    import re
    readme = (ROOT / "README.md").read_text()
    m = re.search(r"slim\s+runtime; \*\*(\d+) MB\*\*", readme)
    assert m, "README: the image size is missing"
    out = _buildah("images", "--json", image).stdout
    num, unit = json.loads(out)[0]["size"].split()
    size = float(num) * {"kB": 1e-3, "MB": 1, "GB": 1e3}[unit]
    assert abs(size - int(m.group(1))) / size < 0.15, (size, m.group(1))


def test_image_ships_the_compiled_extension_and_a_valid_default(container):
    r = _buildah("run", "--isolation", "chroot", container, "--", "/opt/traceo-sampler/bin/python", "-c",
                 "from traceo_sampler import scan, buffer; import os; "
                 "print(scan.IMPLEMENTATION, buffer.IMPLEMENTATION, os.getuid())")
    assert r.stdout.split() == ["cython", "cython", "10001"], r.stdout + r.stderr
    r = _buildah("run", "--isolation", "chroot", container, "--",
                 "traceo-sampler", "validate", "-c", "/etc/traceo-sampler/config.yaml", check=False)
    assert r.returncode == 0, r.stderr
    r = _buildah("run", "--isolation", "chroot", container, "--", "cat", "/etc/traceo-sampler/config.yaml")
    cfg = yaml.safe_load(r.stdout)
    assert cfg["receivers"]["otlp"]["grpc"]["endpoint"] == "0.0.0.0:4317"
    assert cfg["receivers"]["otlp"]["http"]["endpoint"] == "0.0.0.0:4318"
    assert cfg["admin"]["endpoint"] == "0.0.0.0:9464"
    assert cfg == yaml.safe_load((ROOT / "deploy" / "container" / "config.yaml").read_text())


def _healthcheck(container: str, url: str) -> int:
    _buildah("config", "--env", f"TRACEO_SAMPLER_HEALTH_URL={url}", container)
    r = _buildah("run", "--isolation", "chroot", container, "--", "/usr/local/bin/traceo-healthcheck",
                 check=False, timeout=30)
    return r.returncode


def test_entrypoint_serves_keeps_traces_and_drains_on_sigterm(image, container):
    c = _config(image)
    grpc_port, http_port, admin_port = free_ports(3)
    with CaptureSink() as sink:
        cfgdir = Path(tempfile.mkdtemp(prefix="traceo-image-"))
        # The image's default, moved to 127.0.0.1 and free ports, exporting to the sink.
        cfg = yaml.safe_load((ROOT / "deploy" / "container" / "config.yaml").read_text())
        cfg["receivers"]["otlp"]["grpc"]["endpoint"] = f"127.0.0.1:{grpc_port}"
        cfg["receivers"]["otlp"]["http"]["endpoint"] = f"127.0.0.1:{http_port}"
        cfg["admin"]["endpoint"] = f"127.0.0.1:{admin_port}"
        cfg["exporters"]["otlp"] = {"endpoint": sink.endpoint}
        (cfgdir / "config.yaml").write_text(yaml.safe_dump(cfg))
        os.chmod(cfgdir, 0o755)
        os.chmod(cfgdir / "config.yaml", 0o644)
        # tini is PID 1 in a pod; here it is not, so it registers as a subreaper
        _buildah("config", "--env", "TINI_SUBREAPER=1", container)
        log = open(cfgdir / "container.log", "w+")
        # what a runtime runs: the image's entrypoint + command, as its user, in its workdir
        proc = subprocess.Popen(
            ["buildah", "run", "--isolation", "chroot", "-v", f"{cfgdir}:/etc/traceo-sampler:ro",
             container, "--", *c["Entrypoint"], *c["Cmd"]],
            stdout=log, stderr=subprocess.STDOUT)

        def logtext() -> str:
            log.flush()
            return (cfgdir / "container.log").read_text()

        try:
            deadline = time.monotonic() + 90
            while True:
                assert proc.poll() is None, f"container exited {proc.returncode}:\n{logtext()}"
                try:
                    with urllib.request.urlopen(f"http://127.0.0.1:{admin_port}/readyz", timeout=1) as r:
                        if r.status == 200:
                            break
                except OSError:
                    pass
                assert time.monotonic() < deadline, f"not ready in 90 s:\n{logtext()}"
                time.sleep(0.2)
            # the process tree: tini (the entrypoint) and the sampler under it, as uid 10001
            tree = psutil.Process(proc.pid).children(recursive=True)
            (tini,) = [p for p in tree if p.cmdline()[:1] == ["/usr/bin/tini"]]
            sampler = [p for p in tini.children() if "serve" in p.cmdline()]
            assert sampler and sampler[0].uids().real == 10001
            assert tini.uids().real == 10001
            # the image's HEALTHCHECK command, in the image, against the running sampler
            assert _healthcheck(container, f"http://127.0.0.1:{admin_port}/healthz") == 0

            errors = [trace(4, status=2) for _ in range(50)]
            plain = [trace(4) for _ in range(200)]
            with grpc.insecure_channel(f"127.0.0.1:{grpc_port}") as ch:
                export = ch.unary_unary(METHOD)
                for i in range(0, 250, 25):
                    export(make_request((errors + plain)[i:i + 25]), timeout=10)
            # SIGTERM right away, as Kubernetes does to PID 1: nothing is decided yet
            # (root_wait is 2 s), so the drain decides and exports every trace.
            t0 = time.monotonic()
            tini.send_signal(signal.SIGTERM)
            rc = proc.wait(60)
            drain_s = time.monotonic() - t0
        finally:
            if proc.poll() is None:
                for p in psutil.Process(proc.pid).children(recursive=True):
                    p.kill()
                proc.kill()
                proc.wait(10)
        out = logtext()
        print(f"image drain after SIGTERM: {drain_s:.2f} s for 250 buffered traces")
        assert rc == 0, out
        assert drain_s < cfg_seconds(cfg["service"]["shutdown_timeout"]), drain_s
        summary = next(json.loads(line)["summary"] for line in reversed(out.splitlines())
                       if line.startswith('{"summary"'))
        assert summary["traces_decided"] == 250, summary
        assert summary["decisions_by_trigger"].get("shutdown", 0) > 0, summary
        got: dict[bytes, set[bytes]] = {}
        for tid, sp, _r, _s in sink.spans():
            got.setdefault(tid, set()).add(sp.span_id)
        for t in errors:
            assert got.get(t[0]["trace_id"]) == {s["span_id"] for s in t}, "error trace not kept whole"
        kept_plain = [t for t in plain if t[0]["trace_id"] in got]
        assert len(kept_plain) < 60, "about 10 % of the rest"
    # the sampler is down: the same HEALTHCHECK now reports unhealthy
    assert _healthcheck(container, f"http://127.0.0.1:{admin_port}/healthz") == 1
    # the file exporter wrote as the non-root user into the writable data dir
    r = _buildah("run", "--isolation", "chroot", container, "--", "stat", "-c", "%u",
                 "/var/lib/traceo-sampler/kept.otlp.jsonl")
    assert r.stdout.strip() == "10001"


def cfg_seconds(d: str) -> float:
    return float(d.rstrip("s"))


def test_the_sidecar_examples_app_runs_in_the_image(container):
    """The chart's sidecar example runs the image's load generator as "the app":
    its command line, as rendered, sends to a sampler (here one on the host, with
    the duration shortened)."""
    from support.helm import render
    from support_serve import Serve
    objs = render({"mode": "sidecar"})
    (dep,) = [o for o in objs if o["kind"] == "Deployment"]
    (app,) = dep["spec"]["template"]["spec"]["containers"]
    args = list(app["args"])
    assert args[0] == "loadgen"
    with Serve({"sampler": {"policies": [{"name": "all", "type": "always_sample"}]},
                "exporters": {"file": {"path": "kept.jsonl"}}}) as srv:
        args[args.index("--endpoint") + 1] = srv.endpoint
        args[args.index("--duration") + 1] = "3"
        r = _buildah("run", "--isolation", "chroot", container, "--", "traceo-sampler", *args,
                     check=False, timeout=120)
        assert r.returncode == 0, r.stdout + r.stderr
        got = srv.metric("traceo_sampler_spans_received_total")
        rate = float(args[args.index("--rate") + 1])
        assert rate * 3 * 0.5 <= got <= rate * 3 * 1.5 + 512, got
