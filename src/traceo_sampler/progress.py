"""Progress bars for long commands (``simulate``, ``loadgen``): rate and ETA
on a terminal, nothing at all otherwise (a log file or a pipe gets no
carriage-return noise). Drawn by tqdm on stderr, so stdout stays the
command's JSON."""
from __future__ import annotations

import os
import sys
from typing import TextIO

from tqdm import tqdm


def on_terminal(stream: TextIO | None = None) -> bool:
    stream = stream if stream is not None else sys.stderr
    try:
        return stream.isatty()
    except (AttributeError, ValueError):   # closed or not a real file
        return False


class Progress:
    """``total`` units of work; ``update(n)`` as they are done; ``close()``
    once (or use it as a context manager). ``unit="B"`` scales to kB/MB."""

    def __init__(self, total: float | None, unit: str, desc: str, stream: TextIO | None = None):
        stream = stream if stream is not None else sys.stderr
        self.enabled = on_terminal(stream)
        self._bar = None
        if self.enabled:
            # a terminal that reports no size (some ptys, serial consoles)
            # gets 80 columns rather than an empty bar
            try:
                cols = os.get_terminal_size(stream.fileno()).columns
            except (OSError, ValueError, AttributeError):
                cols = 0
            self._bar = tqdm(total=total, unit=unit, desc=desc, file=stream,
                             unit_scale=unit == "B", unit_divisor=1024 if unit == "B" else 1000,
                             dynamic_ncols=cols > 0, ncols=None if cols > 0 else 80,
                             mininterval=0.25, leave=True)

    def update(self, n: float) -> None:
        b = self._bar
        if b is not None:
            if b.total is not None and b.n + n > b.total:
                # work measured in whole units (a trace's spans) may overshoot
                # its estimate: a bar past its total would lose its ETA
                b.total = b.n + n
            b.update(n)

    def set(self, done: float, note: str = "") -> None:
        """Move to ``done`` units (for work measured by time) with a note."""
        if self._bar is not None:
            self._bar.n = min(done, self._bar.total or done)
            if note:
                self._bar.set_postfix_str(note, refresh=False)
            self._bar.refresh()

    def note(self, text: str) -> None:
        if self._bar is not None:
            self._bar.set_postfix_str(text, refresh=False)

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()
            self._bar = None

    def __enter__(self) -> "Progress":
        return self

    def __exit__(self, *exc) -> None:
        self.close()
