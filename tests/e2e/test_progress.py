"""Progress bars: `simulate` and `loadgen` draw one (rate, ETA) when stderr
is a terminal, and print nothing to stderr when it is not."""
import fcntl
import json
import os
import pty
import re
import select
import struct
import subprocess
import sys
import termios
import time

import pytest

from support_otlp import CaptureSink
from traceo_sampler.loadgen import TraceGenerator

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
pytestmark = pytest.mark.e2e
ENV = dict(os.environ, PYTHONPATH=os.path.join(ROOT, "src"))
ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")


def _on_pty(args, timeout=120) -> tuple[int, str, str]:
    """Run with stderr on a pseudo-terminal (stdout a pipe); returns
    (exit code, stdout, what the terminal showed)."""
    master, slave = pty.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 30, 110, 0, 0))
    proc = subprocess.Popen([sys.executable, "-m", "traceo_sampler", *args], stdout=subprocess.PIPE,
                            stderr=slave, stdin=subprocess.DEVNULL, env=ENV)
    os.close(slave)
    shown = b""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        r, _, _ = select.select([master], [], [], 0.2)
        if r:
            try:
                chunk = os.read(master, 65536)
            except OSError:      # the child closed the terminal
                break
            if not chunk:
                break
            shown += chunk
        elif proc.poll() is not None:
            break
    out = proc.stdout.read().decode()
    rc = proc.wait(timeout=30)
    os.close(master)
    return rc, out, ANSI.sub("", shown.decode(errors="replace"))


@pytest.fixture(scope="module")
def capture(tmp_path_factory):
    d = tmp_path_factory.mktemp("prog")
    reqs = TraceGenerator(5, services=4, traces_per_s=50).build_requests(n_traces=400)
    path = d / "cap.pb"
    path.write_bytes(b"".join(struct.pack(">I", len(r)) + r for r in reqs))
    cfg = d / "c.yaml"
    cfg.write_text("sampler:\n  policies:\n"
                   "    - {name: rest, type: probabilistic, probabilistic: {sampling_percentage: 10}}\n")
    return cfg, path


def test_simulate_draws_a_bar_on_a_terminal(capture):
    cfg, path = capture
    rc, out, shown = _on_pty(["simulate", "-c", str(cfg), str(path)])
    assert rc == 0, shown
    assert json.loads(out)["traces"] == 400          # stdout is still the JSON alone
    assert "simulate" in shown and "100%" in shown
    # the size done of the total, elapsed<remaining (the ETA) and a rate
    assert re.search(r"\[\d\d:\d\d<\d\d:\d\d, +[\d.]+ ?[kMG]?B/s\]", shown), shown


def test_simulate_is_quiet_when_not_a_terminal(capture):
    cfg, path = capture
    r = subprocess.run([sys.executable, "-m", "traceo_sampler", "simulate", "-c", str(cfg), str(path)],
                       capture_output=True, text=True, env=ENV, timeout=120)
    assert r.returncode == 0
    assert r.stderr == ""
    assert json.loads(r.stdout)["traces"] == 400


def test_loadgen_draws_a_bar_on_a_terminal_and_is_quiet_otherwise():
    with CaptureSink() as sink:
        args = ["loadgen", "--endpoint", sink.endpoint, "--spans", "3000", "--seed", "1",
                "--spans-per-request", "100"]
        rc, out, shown = _on_pty(args)
        assert rc == 0, shown
        assert json.loads(out)["spans"] >= 3000
        assert "loadgen" in shown and "100%" in shown and "span/s" in shown, shown
        assert re.search(r"\d+/\d+ \[\d\d:\d\d<\d\d:\d\d", shown), shown
        rc, out, shown = _on_pty(args[:-4] + ["--duration", "2", "--rate", "2000"])
        assert rc == 0, shown
        assert "spans/s" in shown and re.search(r"\[\d\d:\d\d<\d\d:\d\d", shown), shown
        r = subprocess.run([sys.executable, "-m", "traceo_sampler", *args], capture_output=True,
                           text=True, env=ENV, timeout=120)
        assert r.returncode == 0 and r.stderr == ""
