"""The /status page in a real headless Chromium (Debian's package, driven
by Playwright with executable_path): it updates live while load runs and
shows what /api/status says."""
import json
import shutil
import threading
import time

import grpc
import pytest

from support_otlp import CaptureSink, make_request, trace
from support_serve import Serve

pytestmark = pytest.mark.e2e

CHROMIUM_ARGS = ["--headless=new", "--no-sandbox", "--disable-gpu", "--disable-quic",
                 "--no-first-run", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync"]


def _send_load(endpoint, stop: threading.Event, sent: list):
    ch = grpc.insecure_channel(endpoint)
    export = ch.unary_unary("/opentelemetry.proto.collector.trace.v1.TraceService/Export")
    while not stop.is_set():
        export(make_request([trace(3, status=2 if len(sent) % 5 == 0 else 0) for _ in range(20)]))
        sent.append(60)
        time.sleep(0.05)
    ch.close()


def test_status_page_updates_live_and_matches_api(tmp_path):
    chromium = shutil.which("chromium")
    assert chromium, "chromium missing: scripts/system-deps.sh installs Debian's chromium"
    from playwright.sync_api import sync_playwright

    cfg = {"sampler": {"root_wait": "200ms", "policies": [
        {"name": "errors", "type": "status_code", "status_code": {"status_codes": ["ERROR"]}}]}}
    with CaptureSink() as sink:
        cfg["exporters"] = {"otlp": {"endpoint": sink.endpoint}}
        with Serve(cfg) as srv, sync_playwright() as pw:
            browser = pw.chromium.launch(executable_path=chromium, args=CHROMIUM_ARGS)
            page = browser.new_page(viewport={"width": 390, "height": 844})   # a phone
            stop, sent = threading.Event(), []
            loader = threading.Thread(target=_send_load, args=(srv.endpoint, stop, sent))
            loader.start()
            try:
                page.goto(f"http://127.0.0.1:{srv.admin_port}/status")
                page.wait_for_function("document.body.dataset.spansReceived > 0", timeout=20000)
                first = int(page.evaluate("document.body.dataset.spansReceived"))
                # the numbers move without a reload
                page.wait_for_function(f"document.body.dataset.spansReceived > {first}", timeout=20000)
            finally:
                stop.set()
                loader.join()
            total = sum(sent)
            page.wait_for_function(f"document.body.dataset.spansReceived == {total}", timeout=20000)
            time.sleep(1.5)   # let decisions settle, then compare with the API
            api = json.loads(srv.get("/api/status"))
            page.wait_for_function(
                f"document.getElementById('traces_decided').textContent.replace(/\\D/g, '') == '{api['traces_decided']}'",
                timeout=10000)
            shown = {k: page.text_content(f"#{k}") for k in
                     ("spans_received", "spans_kept", "traces_decided", "buf_traces")}
            waits = page.text_content("#waits")
            lags = page.text_content("#lags")
            page.screenshot(path=str(tmp_path / "status.png"), full_page=True)
            dark = browser.new_page(color_scheme="dark")
            dark.goto(f"http://127.0.0.1:{srv.admin_port}/status")
            dark.wait_for_function("document.body.dataset.spansReceived > 0", timeout=20000)
            bg_dark = dark.evaluate("getComputedStyle(document.body).backgroundColor")
            bg_light = page.evaluate("getComputedStyle(document.body).backgroundColor")
            dark.screenshot(path=str(tmp_path / "status-dark.png"), full_page=True)
            browser.close()
    digits = {k: int("".join(c for c in v if c.isdigit())) for k, v in shown.items()}
    assert digits["spans_received"] == api["spans_received"] == total
    assert digits["spans_kept"] == api["spans_kept"]
    assert digits["traces_decided"] == api["traces_decided"]
    assert digits["buf_traces"] == api["buffer"]["traces"]
    assert api["spans_kept"] > 0
    assert bg_dark != bg_light
    # completion: the waits in use and the arrival lags per service
    assert "root_wait (default)0.2fixed" in waits
    assert "p99 since root" in lags
    assert api["completion"]["root_wait"] == {"mode": "fixed", "seconds": 0.2}
    assert (tmp_path / "status.png").stat().st_size > 10_000
