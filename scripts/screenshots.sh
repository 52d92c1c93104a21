#!/usr/bin/env bash
# Regenerates docs/screenshots/*.png (the README's status page pictures):
# starts `traceo-sampler serve` on free 127.0.0.1 ports (kept traces to a
# file in a temp dir), runs `traceo-sampler loadgen` against it for SECONDS,
# and while the load still runs screenshots /status in headless Chromium
# (Debian's package driven by Playwright, as tests/e2e/test_status_*.py do):
# desktop light and dark (the top of the page), phone (the charts).
# Usage: scripts/screenshots.sh [SECONDS] [SPANS_PER_S] [OUT_DIR]
set -euo pipefail
cd "$(dirname "$0")/.."
secs=${1:-20}
rate=${2:-3000}
out=${3:-docs/screenshots}
export PYTHONPATH="$PWD/src${PYTHONPATH:+:$PYTHONPATH}"
mkdir -p "$out"
exec .venv/bin/python - "$secs" "$rate" "$out" <<'EOF'
import os, shutil, socket, subprocess, sys, tempfile, time, urllib.request

from playwright.sync_api import sync_playwright

secs, rate, out = float(sys.argv[1]), sys.argv[2], sys.argv[3]
CHROMIUM_ARGS = ["--headless=new", "--no-sandbox", "--disable-gpu", "--disable-quic",
                 "--no-first-run", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync"]


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


grpc_port, admin_port = free_port(), free_port()
tmp = tempfile.mkdtemp(prefix="traceo-shots-")
cfg = os.path.join(tmp, "config.yaml")
with open(cfg, "w") as fh:
    fh.write(f"""\
receivers: {{otlp: {{grpc: {{endpoint: "127.0.0.1:{grpc_port}"}}}}}}
sampler:
  root_wait: 500ms
  policies:
    - {{name: errors, type: status_code, status_code: {{status_codes: [ERROR]}}}}
    - {{name: slow, type: latency, latency: {{threshold_ms: 400}}}}
    - {{name: rest, type: probabilistic, probabilistic: {{sampling_percentage: 10}}}}
exporters: {{file: {{path: "{tmp}/kept.otlp.jsonl"}}}}
admin: {{endpoint: "127.0.0.1:{admin_port}", trace_url: "http://jaeger:16686/trace/{{trace_id}}"}}
cost: {{usd_per_gib: 0.50, monthly_budget_usd: 2000}}
""")
url = f"http://127.0.0.1:{admin_port}"
cli = [sys.executable, "-m", "traceo_sampler"]
serve = subprocess.Popen(cli + ["serve", "-c", cfg], stdout=subprocess.DEVNULL,
                         stderr=open(os.path.join(tmp, "serve.log"), "w"))
load = None
try:
    for _ in range(200):
        try:
            urllib.request.urlopen(f"{url}/readyz", timeout=1)
            break
        except OSError:
            time.sleep(0.1)
    else:
        sys.exit(f"serve did not become ready, see {tmp}/serve.log")
    load = subprocess.Popen(cli + ["loadgen", "--endpoint", f"127.0.0.1:{grpc_port}", "--rate", rate,
                                   "--duration", str(secs + 120), "--seed", "7"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    time.sleep(secs)   # the charts fill, one point a second
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=shutil.which("chromium"), args=CHROMIUM_ARGS)
        for name, opts in [("status-light.png", {"viewport": {"width": 1280, "height": 1000}}),
                           ("status-dark.png", {"viewport": {"width": 1280, "height": 1000},
                                                "color_scheme": "dark"}),
                           ("status-phone.png", {"viewport": {"width": 390, "height": 844},
                                                 "device_scale_factor": 1.5})]:
            page = browser.new_page(**opts)
            page.goto(f"{url}/status")
            page.wait_for_function("document.body.dataset.historyPoints >= 4", timeout=30000)
            page.wait_for_function("document.querySelectorAll('.hchart .main-svg').length >= 5",
                                   timeout=30000)
            page.wait_for_timeout(1500)
            if name == "status-phone.png":   # on a phone: the charts, stacked
                page.locator("#history").screenshot(path=os.path.join(out, name))
            else:
                page.screenshot(path=os.path.join(out, name))
            print(os.path.join(out, name), os.path.getsize(os.path.join(out, name)), "bytes")
        browser.close()
finally:
    if load:
        load.terminate()
        load.wait()
    serve.terminate()
    serve.wait(timeout=30)
    shutil.rmtree(tmp, ignore_errors=True)
EOF
