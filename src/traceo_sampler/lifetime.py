"""Helper processes (the workers of ``service.workers``, the file exporter's
encoder, the JSON decoder) must not outlive the process that started them:
``kill -9`` of serve gives them no chance to be told, and a
ProcessPoolExecutor's child never sees its queue close (it holds the
queue's write end itself)."""
from __future__ import annotations

import os
import signal


def die_with_parent(parent: int | None = None) -> None:
    """Ask the kernel to SIGKILL this process when its parent dies
    (PR_SET_PDEATHSIG, Linux); ``parent``: the pid it must have, checked
    after the request so that a parent gone before it is not missed."""
    try:
        import ctypes
        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGKILL)   # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        return
    if parent is not None and os.getppid() != parent:
        os._exit(1)
