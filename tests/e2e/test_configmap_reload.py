"""Hot reload when the config is a Kubernetes ConfigMap volume (the chart mounts one
at /etc/traceo-sampler): the kubelet never rewrites config.yaml in place. The file
is a symlink through `..data` to a timestamped directory, and an update writes a new
directory and swaps `..data` atomically (kubelet's AtomicWriter). The sampler
watches the path it was given, so it must follow the swap."""
import os
import time

import grpc
import pytest
import yaml

from support_otlp import CaptureSink, make_request, trace
from support_serve import Serve

pytestmark = pytest.mark.e2e

METHOD = "/opentelemetry.proto.collector.trace.v1.TraceService/Export"
ERRORS = [{"name": "errors", "type": "status_code", "status_code": {"status_codes": ["ERROR"]}}]
ALL = [{"name": "all", "type": "always_sample"}]


def _project(dirpath: str, text: str, generation: int) -> None:
    """Write config.yaml the way the kubelet projects a ConfigMap."""
    ts = os.path.join(dirpath, f"..2026_12_01_00_00_0{generation}.{os.getpid()}")
    os.mkdir(ts)
    with open(os.path.join(ts, "config.yaml"), "w") as fh:
        fh.write(text)
    tmp = os.path.join(dirpath, "..data_tmp")
    os.symlink(os.path.basename(ts), tmp)
    os.replace(tmp, os.path.join(dirpath, "..data"))
    link = os.path.join(dirpath, "config.yaml")
    if not os.path.islink(link):
        os.symlink(os.path.join("..data", "config.yaml"), link)


def _send(endpoint: str, traces) -> None:
    with grpc.insecure_channel(endpoint) as ch:
        ch.unary_unary(METHOD)(make_request(traces), timeout=10)


def _wait(pred, timeout=20):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if pred():
            return True
        time.sleep(0.1)
    return False


def test_a_configmap_update_reloads_the_policies():
    with CaptureSink() as sink:
        srv = Serve({"sampler": {"root_wait": "100ms", "idle_timeout": "1s", "policies": ERRORS},
                     "exporters": {"otlp": {"endpoint": sink.endpoint}}})
        # replace the plain file Serve wrote by the kubelet's layout, same path
        with open(srv.path) as fh:
            first = fh.read()
        os.remove(srv.path)
        _project(srv.dir, first, 1)
        assert os.path.islink(srv.path)
        with srv:
            plain = trace(3)
            _send(srv.endpoint, [plain])
            assert _wait(lambda: srv.metric("traceo_sampler_traces_decided_total") >= 1)
            assert not sink.spans(), "errors-only policy kept a plain trace"
            cfg = yaml.safe_load(first)
            cfg["sampler"]["policies"] = ALL
            time.sleep(1.1)  # a new mtime on coarse-clock filesystems
            _project(srv.dir, yaml.safe_dump(cfg), 2)
            assert _wait(lambda: srv.metric("traceo_sampler_config_reloads_total",
                                            outcome="applied") >= 1), srv.read_stderr()
            again = trace(3)
            _send(srv.endpoint, [again])
            assert _wait(lambda: {t for t, *_ in sink.spans()} == {again[0]["trace_id"]})
            assert srv.stop() == 0
