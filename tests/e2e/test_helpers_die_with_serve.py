"""kill -9 of serve leaves no process behind: its workers, the file
exporter's encoder and the JSON decoder die with it (lifetime.py), so a
restarted serve does not share its output file with an orphan."""
from __future__ import annotations

import os
import signal
import sys
import time
import urllib.request

import grpc
import pytest

from support_otlp import make_request, trace
from support_serve import Serve

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "..", "benchmarks"))
from bench_json_intake import json_body  # noqa: E402

pytestmark = pytest.mark.e2e
METHOD = "/opentelemetry.proto.collector.trace.v1.TraceService/Export"


def _children() -> dict[int, list[int]]:
    out: dict[int, list[int]] = {}
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        try:
            with open(f"/proc/{name}/stat") as fh:
                stat = fh.read()
        except OSError:
            continue
        ppid = int(stat.rsplit(")", 1)[1].split()[1])
        out.setdefault(ppid, []).append(int(name))
    return out


def _descendants(pid: int) -> set[int]:
    kids, out, todo = _children(), set(), [pid]
    while todo:
        for c in kids.get(todo.pop(), []):
            out.add(c)
            todo.append(c)
    return out


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as fh:
            return fh.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


@pytest.mark.parametrize("workers", [1, 2])
def test_kill_9_of_serve_leaves_no_helper_process(tmp_path, workers):
    out = tmp_path / "kept.jsonl"
    srv = Serve({"sampler": {"root_wait": "100ms", "idle_timeout": "200ms",
                             "policies": [{"name": "all", "type": "always_sample"}]},
                 "service": {"workers": workers},
                 "exporters": {"file": {"path": str(out)}}}, http=True)
    with srv:
        with grpc.insecure_channel(srv.endpoint) as ch:
            ch.unary_unary(METHOD)(make_request([trace(3) for _ in range(20)]), timeout=10)
        # a body past the inline limit starts the JSON decoding helper
        req = urllib.request.Request(f"http://127.0.0.1:{srv.http_port}/v1/traces", data=json_body(1),
                                     headers={"Content-Type": "application/json"})
        with urllib.request.urlopen(req, timeout=60) as r:
            assert r.status == 200
        deadline = time.monotonic() + 15
        while (not out.exists() or out.stat().st_size == 0) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert out.stat().st_size > 0
        helpers = _descendants(srv.proc.pid)
        # the encoder and the decoder (one each per worker), plus the workers
        assert len(helpers) >= 2 * workers + (workers if workers > 1 else 0), helpers
        srv.stop(signal.SIGKILL)
    deadline = time.monotonic() + 10
    while any(_alive(p) for p in helpers) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not [p for p in helpers if _alive(p)], "helper processes outlived kill -9 of serve"
