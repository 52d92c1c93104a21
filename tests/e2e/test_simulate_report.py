"""`simulate --report` and `simulate --compare`: the HTML report carries the
same numbers as simulate's JSON, loads nothing from outside, renders in a
real headless Chromium without console errors; the what-if diff agrees with
two separate simulate runs and with what the policies must keep."""
import html.parser
import json
import os
import re
import shutil
import struct
import subprocess
import sys

import pytest

from traceo_sampler.forecast import MONTH_S
from traceo_sampler.loadgen import TraceGenerator

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
pytestmark = pytest.mark.e2e
CHROMIUM_ARGS = ["--headless=new", "--no-sandbox", "--disable-gpu", "--disable-quic",
                 "--no-first-run", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync"]
SHOTS = os.environ.get("TRACEO_SCREENSHOTS")   # keep the screenshots somewhere to look at

CURRENT = """\
sampler:
  policies:
    - {name: errors, type: status_code, status_code: {status_codes: [ERROR]}}
    - {name: slow, type: latency, latency: {threshold_ms: 1000}}
cost: {usd_per_gib: 0.5, monthly_budget_usd: 2}
"""
PROPOSED = """\
sampler:
  policies:
    - {name: slower, type: latency, latency: {threshold_ms: 500}}
"""


def _run(*args):
    env = dict(os.environ, PYTHONPATH=os.path.join(ROOT, "src"))
    return subprocess.run([sys.executable, "-m", "traceo_sampler", *args],
                          capture_output=True, text=True, env=env, timeout=120)


@pytest.fixture(scope="module")
def capture(tmp_path_factory):
    """800 loadgen traces over ~40 s of capture time, length-prefixed protobuf."""
    d = tmp_path_factory.mktemp("cap")
    gen = TraceGenerator(11, services=6, error_rate=0.08, traces_per_s=20)
    reqs = gen.build_requests(n_traces=800, spans_per_request_target=200)
    path = d / "cap.pb"
    with open(path, "wb") as fh:
        for r in reqs:
            fh.write(struct.pack(">I", len(r)) + r)
    (d / "current.yaml").write_text(CURRENT)
    (d / "proposed.yaml").write_text(PROPOSED)
    return d, path, reqs.traces


class _Page(html.parser.HTMLParser):
    """Collects what a self-contained page must not have and what it embeds."""

    def __init__(self):
        super().__init__()
        self.external: list[str] = []
        self.scripts: list[tuple[dict, str]] = []
        self._script: dict | None = None
        self._buf: list[str] = []
        self.cells: list[str] = []
        self._td = False
        self.keys: dict[str, str] = {}
        self._key: str | None = None

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        for name in ("src", "href", "srcset", "data", "action", "poster"):
            if a.get(name):
                self.external.append(f"<{tag} {name}={a[name]}>")
        if tag == "link" or tag == "iframe" or tag == "img":
            self.external.append(f"<{tag}>")
        if tag == "script":
            self._script, self._buf = a, []
        if tag == "td":
            self._td, self._buf = True, []
        if "data-key" in a:
            self._key, self._buf = a["data-key"], []

    def handle_endtag(self, tag):
        if tag == "script" and self._script is not None:
            self.scripts.append((self._script, "".join(self._buf)))
            self._script = None
        if tag == "td" and self._td:
            self.cells.append("".join(self._buf))
            self._td = False
        if tag == "div" and self._key is not None:
            self.keys[self._key] = "".join(self._buf)
            self._key = None

    def handle_data(self, data):
        self._buf.append(data)


def _parse(path) -> _Page:
    p = _Page()
    p.feed(open(path, encoding="utf-8").read())
    return p


def _embedded(page: _Page, sid: str) -> dict:
    return json.loads(next(body for a, body in page.scripts if a.get("id") == sid))


def _digits(text: str) -> int:
    return int(re.sub(r"\D", "", text))


def test_report_is_self_contained_and_carries_simulates_numbers(capture, tmp_path):
    d, cap, _traces = capture
    plain = _run("simulate", "-c", str(d / "current.yaml"), str(cap))
    assert plain.returncode == 0, plain.stderr
    want = json.loads(plain.stdout)
    out = tmp_path / "report.html"
    r = _run("simulate", "-c", str(d / "current.yaml"), str(cap), "--report", str(out))
    assert r.returncode == 0, r.stderr
    got = json.loads(r.stdout)
    assert got.pop("report") == str(out)
    assert got == want                      # the report changes nothing in the numbers
    page = _parse(out)
    assert page.external == []              # no src/href/link/img: nothing loaded from anywhere
    assert all("src" not in a for a, _ in page.scripts)
    assert _embedded(page, "report-data") == want
    # the visible numbers are simulate's
    assert _digits(page.keys["traces"]) == want["traces"]
    assert _digits(page.keys["traces_kept"]) == want["traces_kept"]
    assert _digits(page.keys["spans_after"]) == want["spans_after"]
    assert _digits(page.keys["bytes_after"]) == want["bytes_after"]
    for svc, row in want["per_service"].items():
        i = page.cells.index(svc)
        assert _digits(page.cells[i + 1]) == row["spans_before"]
        assert _digits(page.cells[i + 2]) == row["spans_after"]
    assert want["traces"] == 800 and 0 < want["traces_kept"] < 800
    # the charts' data: keep rate over time sums to the totals, latency bins too
    tl = want["timeline"]
    assert sum(tl["traces"]) == 800 and sum(tl["traces_kept"]) == want["traces_kept"]
    assert len(tl["traces"]) >= 30          # ~40 s of capture in 1 s buckets
    assert sum(want["latency"]["all"]) == 800 and sum(want["latency"]["kept"]) == want["traces_kept"]
    figs = _embedded(page, "figures")
    assert len(figs) >= 6


def test_report_renders_in_chromium_without_errors_or_requests(capture, tmp_path):
    chromium = shutil.which("chromium")
    assert chromium, "chromium missing: scripts/system-deps.sh installs Debian's chromium"
    from playwright.sync_api import sync_playwright
    d, cap, _ = capture
    out = tmp_path / "report.html"
    r = _run("simulate", "-c", str(d / "current.yaml"), "--compare", str(d / "proposed.yaml"),
             str(cap), "--report", str(out))
    assert r.returncode == 0, r.stderr
    rep = json.loads(r.stdout)
    shots = SHOTS or str(tmp_path)
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=chromium, args=CHROMIUM_ARGS)
        seen = {}
        for name, kw in (("phone", {"viewport": {"width": 390, "height": 844}}),
                         ("dark", {"viewport": {"width": 1280, "height": 900}, "color_scheme": "dark"})):
            page = browser.new_page(**kw)
            errors, requests = [], []
            page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
            page.on("pageerror", lambda e: errors.append(str(e)))
            page.on("request", lambda q: requests.append(q.url))
            page.goto(out.as_uri())
            page.wait_for_function("document.body.dataset.charts > 0", timeout=30000)
            n_charts = page.evaluate("document.querySelectorAll('.chart').length")
            drawn = page.evaluate("document.querySelectorAll('.chart .main-svg').length")
            seen[name] = {
                "charts": int(page.evaluate("document.body.dataset.charts")), "n": n_charts,
                "drawn": drawn, "errors": errors, "requests": requests,
                "bg": page.evaluate("getComputedStyle(document.body).backgroundColor"),
                "width": page.evaluate("document.documentElement.scrollWidth"),
                "keys": page.evaluate(
                    "Object.fromEntries([...document.querySelectorAll('[data-key]')]"
                    ".map(e => [e.dataset.key, e.textContent]))"),
                "font": page.evaluate(
                    "document.querySelector('.chart .main-svg text')"
                    " ? getComputedStyle(document.querySelector('.chart .main-svg text')).fill : ''"),
            }
            page.screenshot(path=os.path.join(shots, f"report-{name}.png"), full_page=True)
        browser.close()
    for name, s in seen.items():
        assert s["errors"] == [], name
        assert s["requests"] == [out.as_uri()], name          # nothing but the file itself
        assert s["charts"] == s["n"] >= 10 and s["drawn"] >= s["n"], name
    assert seen["phone"]["width"] <= 390 + 1                  # no sideways scrolling of the page
    assert seen["phone"]["bg"] != seen["dark"]["bg"]
    assert seen["phone"]["font"] != seen["dark"]["font"]      # chart text follows the theme
    k = seen["dark"]["keys"]
    diff = rep["diff"]
    assert _digits(k["diff_only_current"]) == diff["only_current"]["traces"]
    assert _digits(k["diff_only_proposed"]) == diff["only_proposed"]["traces"]
    assert _digits(k["traces_kept"]) == rep["current"]["traces_kept"]
    assert _digits(k["proposed.traces_kept"]) == rep["proposed"]["traces_kept"]
    assert "not kept by proposed" in k["compare_errors"]       # the proposal loses fast errors
    assert os.path.getsize(os.path.join(shots, "report-phone.png")) > 20_000


def test_compare_matches_two_separate_runs_and_the_policies(capture):
    d, cap, traces = capture
    a = json.loads(_run("simulate", "-c", str(d / "current.yaml"), str(cap)).stdout)
    b_cfg = d / "proposed_priced.yaml"
    # priced like current, as the comparison prices both sets
    b_cfg.write_text(PROPOSED + "cost: {usd_per_gib: 0.5, monthly_budget_usd: 2}\n")
    b = json.loads(_run("simulate", "-c", str(b_cfg), str(cap)).stdout)
    r = _run("simulate", "-c", str(d / "current.yaml"), "--compare", str(d / "proposed.yaml"), str(cap))
    assert r.returncode == 0, r.stderr
    out = json.loads(r.stdout)
    b["inputs"] = out["proposed"]["inputs"]
    assert out["current"] == a
    assert out["proposed"] == b
    diff = out["diff"]
    assert diff["traces_kept"] == {"current": a["traces_kept"], "proposed": b["traces_kept"],
                                   "change": b["traces_kept"] - a["traces_kept"]}
    assert diff["only_current"]["traces"] + diff["kept_by_both"] == a["traces_kept"]
    assert diff["only_proposed"]["traces"] + diff["kept_by_both"] == b["traces_kept"]
    assert diff["unpaired_decisions"] == {"current": 0, "proposed": 0}
    # what the policies must do, from the generator's own record of each trace
    ms = lambda t: t.duration_ns / 1e6  # noqa: E731
    keep_a = {t.trace_id.hex() for t in traces if t.error or ms(t) >= 1000}
    keep_b = {t.trace_id.hex() for t in traces if ms(t) >= 500}
    assert a["traces_kept"] == len(keep_a) and b["traces_kept"] == len(keep_b)
    assert diff["only_current"]["traces"] == len(keep_a - keep_b) > 0
    assert diff["only_proposed"]["traces"] == len(keep_b - keep_a) > 0
    assert diff["kept_by_both"] == len(keep_a & keep_b)
    # only-current traces are the fast errors, all attributed to "errors"
    assert diff["only_current"]["by_policy"] == {"errors": len(keep_a - keep_b)}
    assert diff["only_proposed"]["by_policy"] == {"slower": len(keep_b - keep_a)}
    errors = {t.trace_id.hex() for t in traces if t.error}
    e = diff["errors"]
    assert e["traces"] == len(errors) and e["all_kept_current"] is True
    assert e["kept_proposed"] == len(errors & keep_b) and e["all_kept_proposed"] is False
    assert set(e["lost_by_proposed_trace_ids"]) <= errors - keep_b
    # money: the difference of the two runs' monthly exported cost
    ca, cb = a["forecast"]["usd_exported_month"], b["forecast"]["usd_exported_month"]
    assert diff["cost_month"]["current"] == ca and diff["cost_month"]["proposed"] == cb
    assert diff["cost_month"]["change"] == pytest.approx(cb - ca, abs=1e-6)
    for svc, row in diff["per_service"].items():
        assert row["spans_after_current"] == a["per_service"][svc]["spans_after"]
        assert row["spans_after_proposed"] == b["per_service"][svc]["spans_after"]


def test_forecast_is_the_capture_rate_scaled_to_a_month(capture):
    d, cap, _ = capture
    rep = json.loads(_run("simulate", "-c", str(d / "current.yaml"), str(cap)).stdout)
    f = rep["forecast"]
    window = rep["capture"]["seconds"]
    assert 35 < window < 60 and f["window_s"] == pytest.approx(window, abs=1e-6)
    per_byte = 0.5 / 2**30
    for svc, row in rep["per_service"].items():
        assert f["services"][svc]["usd_received_month"] == pytest.approx(
            row["bytes_before"] * per_byte * MONTH_S / window, rel=1e-5)
        assert f["services"][svc]["usd_exported_month"] == pytest.approx(
            row["bytes_after"] * per_byte * MONTH_S / window, rel=1e-5)
    assert f["usd_received_month"] == pytest.approx(rep["bytes_before"] * per_byte * MONTH_S / window, rel=1e-5)
    assert f["usd_exported_month"] == pytest.approx(rep["bytes_after"] * per_byte * MONTH_S / window, rel=1e-5)
    assert f["budget_usd_month"] == 2
    assert f["budget_used"] == pytest.approx(f["usd_exported_month"] / 2, rel=1e-6)
    assert f["over_budget"] is (f["usd_exported_month"] > 2)


def test_compare_with_a_bad_proposal_names_the_file_and_field(capture, tmp_path):
    d, cap, _ = capture
    bad = tmp_path / "bad.yaml"
    bad.write_text("sampler:\n  policies:\n    - {name: x, type: latency, latency: {threshold_ms: -1}}\n")
    r = _run("simulate", "-c", str(d / "current.yaml"), "--compare", str(bad), str(cap))
    assert r.returncode == 1
    assert "bad.yaml" in r.stderr and "sampler.policies[0].latency.threshold_ms" in r.stderr
    assert "Traceback" not in r.stderr


def test_an_unwritable_report_fails_before_the_replay(capture, tmp_path):
    d, cap, _ = capture
    r = _run("simulate", "-c", str(d / "current.yaml"), str(cap), "--report",
             str(tmp_path / "missing-dir" / "r.html"))
    assert r.returncode == 1 and r.stdout == ""
    assert "cannot write the report" in r.stderr and "Traceback" not in r.stderr
