"""Regenerate docs/sample-report.html: a what-if report over a loadgen
capture (3 000 traces of 8 services over about a minute), the embedded
default policies against a proposal without the error policy.

    PYTHONPATH=src python docs/make_sample_report.py
"""
import os
import struct
import subprocess
import sys
import tempfile

from traceo_sampler.loadgen import TraceGenerator

HERE = os.path.dirname(os.path.abspath(__file__))
CURRENT = """\
sampler:
  policies:
    - {name: errors, type: status_code, status_code: {status_codes: [ERROR]}}
    - {name: slow, type: latency, latency: {threshold_ms: 1000}}
    - {name: rest, type: probabilistic, probabilistic: {sampling_percentage: 10}}
cost: {usd_per_gib: 0.50, monthly_budget_usd: 20}
"""
PROPOSED = """\
sampler:
  policies:
    - {name: slow, type: latency, latency: {threshold_ms: 500}}
    - {name: rest, type: probabilistic, probabilistic: {sampling_percentage: 5}}
"""


def main() -> int:
    with tempfile.TemporaryDirectory() as d:
        cap = os.path.join(d, "capture.otlp.pb")
        reqs = TraceGenerator(7, services=8, error_rate=0.05, traces_per_s=50).build_requests(
            n_traces=3000, spans_per_request_target=256)
        with open(cap, "wb") as fh:
            for r in reqs:
                fh.write(struct.pack(">I", len(r)) + r)
        for name, text in (("current.yaml", CURRENT), ("proposed.yaml", PROPOSED)):
            with open(os.path.join(d, name), "w") as fh:
                fh.write(text)
        out = os.path.join(HERE, "sample-report.html")
        subprocess.run([sys.executable, "-m", "traceo_sampler", "simulate", "-c", "current.yaml",
                        "--compare", "proposed.yaml", "capture.otlp.pb", "--report", out],
                       cwd=d, check=True, stdout=subprocess.DEVNULL,
                       env=dict(os.environ, PYTHONPATH=os.path.join(os.path.dirname(HERE), "src")))
    print(out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
