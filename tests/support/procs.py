"""Process and port helpers shared by the real-service test harnesses
(kafka.py, jaeger.py)."""

from __future__ import annotations

import ctypes
import shutil
import signal
import socket
import subprocess
from collections import deque
from pathlib import Path


def free_ports(count: int, host: str = "127.0.0.1") -> list[int]:
    """`count` distinct ports that were free on `host` a moment ago."""
    socks = []
    try:
        for _ in range(count):
            s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            s.bind((host, 0))
            socks.append(s)
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


def port_open(host: str, port: int, timeout: float = 1.0) -> bool:
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


def tail(path: Path, lines: int) -> str:
    try:
        with path.open("r", errors="replace") as f:
            return "".join(deque(f, maxlen=lines))
    except FileNotFoundError:
        return f"({path} does not exist)\n"


def die_with_parent() -> None:  # runs in the child between fork and exec
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    except Exception:
        pass


def with_parent_death(argv: list[str]) -> tuple[list[str], dict]:
    """`argv` and Popen keywords so the child is killed when this thread dies.

    setpriv sets PR_SET_PDEATHSIG without running Python in the forked child:
    a preexec_fn there can abort when the test process's gRPC threads hold
    locks at fork time (seen as a Kafka broker or otelcol "exited with -6",
    gRPC's "epoll_wait error: Bad file descriptor" in its console log).
    PDEATHSIG follows the forking *thread*: call this from the main one."""
    setpriv = shutil.which("setpriv")
    if setpriv:
        return [setpriv, "--pdeathsig", "KILL", *argv], {}
    return argv, {"preexec_fn": die_with_parent}


def send_signal(proc: subprocess.Popen, sig: int) -> None:
    try:
        proc.send_signal(sig)
    except ProcessLookupError:
        pass


def terminate(proc: subprocess.Popen, timeout: float) -> int | None:
    """SIGTERM and wait up to `timeout`: the exit code, or None if it is
    still running (the caller kills it)."""
    send_signal(proc, signal.SIGTERM)
    try:
        return proc.wait(timeout)
    except subprocess.TimeoutExpired:
        return None


def kill(proc: subprocess.Popen, timeout: float, error: type[Exception], what: str) -> int | None:
    """SIGKILL, as a crash would, and wait for it: its exit code."""
    if proc.poll() is None:
        send_signal(proc, signal.SIGKILL)
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired as exc:
            raise error(f"{what} pid {proc.pid} survived SIGKILL") from exc
    return proc.returncode


def finalize(proc_holder: list) -> None:
    """Last resort (interpreter exit, garbage collection): no child process outlives us."""
    proc = proc_holder[0] if proc_holder else None
    if proc is not None and proc.poll() is None:
        send_signal(proc, signal.SIGKILL)
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            pass
