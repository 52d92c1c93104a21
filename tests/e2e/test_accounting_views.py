"""One capture, three views: ``serve``'s /api/status, its shutdown summary
(one process and a group of workers, whose status is the workers' accounts
merged) and ``simulate``'s JSON report the same counts, and what reached the
exporter is what they say was kept (accounting.py)."""
import json
import os
import struct
import subprocess
import sys
import time

import grpc
import pytest
import yaml

from support_otlp import SERVICE, CaptureSink, make_request, trace
from support_serve import ROOT, Serve

pytestmark = pytest.mark.e2e

SAMPLER = {"root_wait": "200ms", "idle_timeout": "1s", "decision_wait": "30s",
           "policies": [
               {"name": "errors", "type": "status_code", "status_code": {"status_codes": ["ERROR"]}},
               {"name": "some", "type": "probabilistic", "probabilistic": {"sampling_percentage": 30}}]}
# the keys of /api/status that the account renders (the rest: buffer,
# exporters, uptime... are not counts of the capture)
COUNTED = ("spans_received", "bytes_received", "spans_kept", "traces_decided", "traces_kept",
           "traces_not_kept", "keep_ratio_traces", "keep_ratio_spans", "kept_by_policy",
           "decisions_by_trigger", "late_spans", "services", "cost")


def _capture():
    """Requests of whole traces over two services (root in front, two
    spans in db, one trace in four an error), then one request of late spans
    (end time 10 s later, so simulate's clock has decided the traces)."""
    t0 = 1_700_000_000 * 10**9
    reqs, traces = [], []
    for r in range(5):
        front, db = [], []
        for i in range(8):
            t = trace(3, start=t0 + r * 10**6, end=t0 + r * 10**6 + 5 * 10**5)
            if i % 4 == 0:
                t[2]["status"] = 2
            traces.append(t)
            front.append(t[:1])
            db.append(t[1:])
        # two resource spans in one request (protobuf messages concatenate)
        reqs.append(make_request(front, service="front") + make_request(db, service="db"))
    late = [trace(1, root=False, tid=traces[k][0]["trace_id"], start=t0 + 10**10, end=t0 + 10**10 + 1)
            for k in (0, 1, 2, 3)]
    return reqs, make_request(late, service="db"), len(traces)


def _wait(pred, timeout=30.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if pred():
            return True
        time.sleep(0.1)
    return False


def _simulate(tmp_path, reqs) -> dict:
    cfg = tmp_path / "c.yaml"
    cfg.write_text(yaml.safe_dump({"sampler": SAMPLER}))
    cap = tmp_path / "cap.pb"
    cap.write_bytes(b"".join(struct.pack(">I", len(r)) + r for r in reqs))
    env = dict(os.environ, PYTHONPATH=os.path.join(ROOT, "src"))
    r = subprocess.run([sys.executable, "-m", "traceo_sampler", "simulate", "-c", str(cfg), str(cap)],
                       capture_output=True, text=True, env=env, timeout=120)
    assert r.returncode == 0, r.stderr
    return json.loads(r.stdout)


@pytest.mark.parametrize("workers", [1, 2])
def test_status_summary_and_simulate_agree(tmp_path, workers):
    reqs, late, n_traces = _capture()
    sim = _simulate(tmp_path, reqs + [late])
    with CaptureSink() as sink:
        cfg = {"sampler": SAMPLER, "exporters": {"otlp": {"endpoint": sink.endpoint}},
               "service": {"workers": workers}}
        with Serve(cfg) as srv:
            ch = grpc.insecure_channel(srv.endpoint)
            export = ch.unary_unary(f"/{SERVICE}/Export")
            for r in reqs:
                export(r, timeout=10)
            status = lambda: json.loads(srv.get("/api/status"))  # noqa: E731
            assert _wait(lambda: status()["traces_decided"] == n_traces), status()
            export(late, timeout=10)        # follows the decisions made
            ch.close()
            assert _wait(lambda: sum(status()["late_spans"].values()) == 4), status()
            st = status()
            assert srv.stop() == 0, srv.stderr[-3000:]
            summary = srv.summary()
        exported = len(sink.spans())

    assert (workers > 1) == ("workers" in st)
    # the summary is the status at exit: nothing arrived in between
    assert {k: summary[k] for k in COUNTED} == {k: st[k] for k in COUNTED}
    assert "recent_kept" not in summary and len(st["recent_kept"]) == st["traces_kept"]
    # the status and simulate count the same capture alike
    assert st["traces_decided"] == sim["traces"] == n_traces
    assert st["traces_kept"] == sim["traces_kept"] >= n_traces // 4
    assert st["traces_kept"] + st["traces_not_kept"] == st["traces_decided"]
    assert st["keep_ratio_traces"] == sim["keep_rate_traces"]
    assert st["spans_received"] == sim["spans_before"] == n_traces * 3 + 4
    assert st["spans_kept"] == sim["spans_after"] == exported
    assert st["bytes_received"] == sim["bytes_before"]
    assert st["late_spans"] == sim["late_spans"] and st["late_spans"]["sampled"] >= 1
    assert {k: v["traces"] for k, v in st["kept_by_policy"].items()} == \
        {k: v["traces"] for k, v in sim["per_policy"].items()}
    assert sum(st["decisions_by_trigger"].values()) == sum(sim["per_trigger"].values())
    assert set(st["services"]) == set(sim["per_service"]) == {"front", "db"}
    for svc, row in st["services"].items():
        s = sim["per_service"][svc]
        assert (row["spans_received"], row["spans_exported"], row["bytes_received"],
                row["bytes_exported"]) == (s["spans_before"], s["spans_after"], s["bytes_before"],
                                           s["bytes_after"]), svc
        assert row["usd_received"] == round(s["usd_before"], 6)
    assert sum(r["spans_exported"] for r in st["services"].values()) == st["spans_kept"]
    assert st["cost"]["usd_exported"] == round(sim["cost"]["usd_after"], 6)
    assert st["cost"]["usd_received"] == round(sim["cost"]["usd_before"], 6)
