"""The /status page's history charts, cost forecast and trace links, in a
real headless Chromium: the charts fill over a short live run from
/api/history, every last-kept trace links to admin.trace_url with its ID,
and the why-kept line names the policy's rule."""
import json
import os
import shutil
import threading
import time
import urllib.error

import grpc
import pytest

from support_otlp import CaptureSink, make_request, trace
from support_serve import Serve

pytestmark = pytest.mark.e2e
CHROMIUM_ARGS = ["--headless=new", "--no-sandbox", "--disable-gpu", "--disable-quic",
                 "--no-first-run", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync"]
SHOTS = os.environ.get("TRACEO_SCREENSHOTS")
TRACE_URL = "http://jaeger.example:16686/trace/{trace_id}"


def _send_load(endpoint, stop: threading.Event, sent: list):
    ch = grpc.insecure_channel(endpoint)
    export = ch.unary_unary("/opentelemetry.proto.collector.trace.v1.TraceService/Export")
    while not stop.is_set():
        now = time.time_ns()
        export(make_request([trace(3, status=2 if len(sent) % 4 == 0 else 0, start=now - 5_000_000, end=now)
                             for _ in range(20)]))
        sent.append(60)
        time.sleep(0.05)
    ch.close()


def test_status_page_history_forecast_and_trace_links(tmp_path):
    chromium = shutil.which("chromium")
    assert chromium, "chromium missing: scripts/system-deps.sh installs Debian's chromium"
    from playwright.sync_api import sync_playwright

    cfg = {"sampler": {"root_wait": "200ms", "policies": [
        {"name": "errors", "type": "status_code", "status_code": {"status_codes": ["ERROR"]}}]},
        "admin": {"trace_url": TRACE_URL},
        "cost": {"usd_per_gib": 1000.0, "monthly_budget_usd": 50.0}}
    shots = SHOTS or str(tmp_path)
    with CaptureSink() as sink:
        cfg["exporters"] = {"otlp": {"endpoint": sink.endpoint}}
        with Serve(cfg) as srv, sync_playwright() as pw:
            browser = pw.chromium.launch(executable_path=chromium, args=CHROMIUM_ARGS)
            page = browser.new_page(viewport={"width": 390, "height": 844})
            errors = []
            page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
            page.on("pageerror", lambda e: errors.append(str(e)))
            stop, sent = threading.Event(), []
            loader = threading.Thread(target=_send_load, args=(srv.endpoint, stop, sent))
            loader.start()
            try:
                page.goto(f"http://127.0.0.1:{srv.admin_port}/status")
                # the charts fill as the run goes on
                page.wait_for_function("document.body.dataset.historyPoints >= 4", timeout=30000)
                first = int(page.evaluate("document.body.dataset.historyPoints"))
                page.wait_for_function(f"document.body.dataset.historyPoints > {first + 2}", timeout=30000)
                page.wait_for_function("document.querySelectorAll('#recent a').length > 0", timeout=20000)
                page.wait_for_function("document.getElementById('fc_out').textContent.startsWith('$')",
                                       timeout=30000)
            finally:
                stop.set()
                loader.join()
            time.sleep(1.5)
            width = page.evaluate("document.documentElement.scrollWidth")
            drawn = page.evaluate("[...document.querySelectorAll('.hchart > div')]"
                                  ".filter(d => d.querySelector('.main-svg')).length")
            links = page.evaluate("[...document.querySelectorAll('#recent a')].map(a => [a.href, a.textContent])")
            why = page.evaluate("[...document.querySelectorAll('#recent td.why')].map(t => t.textContent)")
            rules = page.text_content("#policies")
            budget = page.text_content("#fc_budget")
            history = json.loads(srv.get("/api/history"))
            status = json.loads(srv.get("/api/status"))
            later = json.loads(srv.get(f"/api/history?since={history['points'][-3][0]}"))
            page.screenshot(path=os.path.join(shots, "status-history.png"), full_page=True)
            dark = browser.new_page(viewport={"width": 1280, "height": 900}, color_scheme="dark")
            dark.goto(f"http://127.0.0.1:{srv.admin_port}/status")
            dark.wait_for_function("document.body.dataset.historyPoints >= 4", timeout=30000)
            dark.wait_for_timeout(500)
            dark.screenshot(path=os.path.join(shots, "status-history-dark.png"), full_page=True)
            # without plotly.js (blocked) the numbers and tables still update
            bare = browser.new_page()
            bare_errors = []
            bare.on("pageerror", lambda e: bare_errors.append(str(e)))
            bare.route("**/assets/plotly.min.js", lambda route: route.abort())
            bare.goto(f"http://127.0.0.1:{srv.admin_port}/status")
            bare.wait_for_function("document.body.dataset.spansReceived > 0", timeout=20000)
            bare.wait_for_function("document.querySelectorAll('#recent a').length > 0", timeout=20000)
            bare_charts = bare.evaluate("document.querySelectorAll('.main-svg').length")
            js = srv.get_raw("/assets/plotly.min.js", {"Accept-Encoding": "gzip"})
            with pytest.raises(urllib.error.HTTPError) as bad:
                srv.get("/api/history?since=yesterday")
            browser.close()
    assert errors == []
    assert bare_errors == [] and bare_charts == 0
    assert drawn == 5
    assert width <= 391                                       # no sideways scrolling on a phone
    # every link is the configured URL with the trace's own ID
    assert links and all(href == TRACE_URL.format(trace_id=text) and len(text) == 32
                         for href, text in links)
    assert {text for _, text in links} <= {t["trace_id"] for t in status["recent_kept"]}
    assert all("errors — status_code: status_codes=" in w and "error" in w for w in why)
    assert 'status_code: status_codes=["ERROR"]' in rules
    # the history: one point a second, rates that add up to what was sent
    cols = history["columns"]
    pts = history["points"]
    assert cols[:3] == ["t", "spans_in_per_s", "spans_out_per_s"] and len(pts) >= 6
    ts = [p[0] for p in pts]
    assert ts == sorted(ts) and all(0.5 < b - a < 3 for a, b in zip(ts, ts[1:]))
    assert max(p[1] for p in pts) > 100                       # ~1200 spans/s were sent
    assert any(p[3] is not None and 0 < p[3] < 1 for p in pts)  # 1 in 4 requests' traces kept
    assert [p[0] for p in later["points"]][:2] == ts[-2:]     # only what is newer than ?since
    # the forecast from the live counters, against the budget
    f = status["forecast"]
    assert f["basis"] == "live" and f["window_s"] >= 9
    assert f["usd_exported_month"] > 0 and f["usd_received_month"] > f["usd_exported_month"]
    assert f["budget_usd_month"] == 50.0 and ("over" in budget or "within" in budget)
    assert status["trace_url"] == TRACE_URL
    assert bad.value.code == 400
    assert js.startswith(b"\x1f\x8b")                          # served compressed
    assert os.path.getsize(os.path.join(shots, "status-history.png")) > 20_000


def test_history_and_forecast_of_a_group_of_workers():
    """With service.workers the supervisor samples the group's merged state:
    one history, one forecast for the whole group, the workers' trace links."""
    import asyncio
    from traceo_sampler import loadgen
    cfg = {"sampler": {"root_wait": "200ms", "policies": [
        {"name": "rest", "type": "probabilistic", "probabilistic": {"sampling_percentage": 20}}]},
        "admin": {"trace_url": TRACE_URL}, "service": {"workers": 2},
        "cost": {"monthly_budget_usd": 1.0}}
    reqs = loadgen.build_requests(n_spans=6000, spans_per_request_target=100, seed=3)
    with CaptureSink() as sink:
        cfg["exporters"] = {"otlp": {"endpoint": sink.endpoint}}
        with Serve(cfg) as srv:
            res = asyncio.run(loadgen.send(srv.endpoint, reqs, 500.0, None, 2))
            assert res["requests_failed"] == 0
            time.sleep(2.5)
            history = json.loads(srv.get("/api/history"))
            status = json.loads(srv.get("/api/status"))
    pts = history["points"]
    assert len(pts) >= 10
    # the group's rates: spans in per second integrate to what was sent
    dts = [b[0] - a[0] for a, b in zip(pts, pts[1:])]
    sent = sum(p[1] * dt for p, dt in zip(pts[1:], dts))
    assert abs(sent - reqs.n_spans) <= 0.1 * reqs.n_spans
    f = status["forecast"]
    assert f["basis"] == "live" and f["window_s"] >= 9 and f["budget_usd_month"] == 1.0
    assert f["usd_received_month"] > f["usd_exported_month"] > 0
    assert status["trace_url"] == TRACE_URL
    assert status["policy_rules"] == {"rest": "probabilistic: sampling_percentage=20.0"}
    assert status["workers"]["count"] == 2
