"""What keeps received bytes from being forgotten before their traces are
settled: the accounting the Kafka receiver commits offsets with and the
write-ahead log deletes segments with (receivers/kafka.py, wal.py).

A ``Ledger`` is one ordered source of received bytes (a Kafka partition, the
write-ahead log) addressed by a position (an offset, a segment number). The
``OffsetTracker`` keeps, per trace ID, the (ledger, position) references of
what brought its spans; the pipeline tells it when a trace is decided not
kept (``done``) and hands it the trace IDs of every kept item (``take``: the
references then wait for the item's ack by every exporter). A ledger's
``commit_point`` is the lowest position still referenced: everything below
it may be committed (Kafka) or deleted (the log).
"""
from __future__ import annotations


class Ledger:
    """Positions of one source still referenced; ``dead`` once given up (a
    revoked partition), so late acks of its references change nothing."""

    __slots__ = ("outstanding", "tids", "next", "dead")

    def __init__(self) -> None:
        self.outstanding: dict[int, int] = {}   # position → references not released
        self.tids: dict[bytes, int] = {}        # trace_id → its references not released
        self.next: int | None = None            # the position after the last one read
        self.dead = False

    def commit_point(self) -> int | None:
        if self.outstanding:
            return min(self.outstanding)
        return self.next


class OffsetTracker:
    def __init__(self):
        self.holds: dict[bytes, list] = {}     # trace_id → [(ledger, position, trace_id)]

    def hold(self, part: Ledger, offset: int, tids) -> None:
        out = part.outstanding
        ptids = part.tids
        holds = self.holds
        for tid in tids:
            refs = holds.get(tid)
            if refs is None:
                holds[tid] = [(part, offset, tid)]
            else:
                refs.append((part, offset, tid))
            out[offset] = out.get(offset, 0) + 1
            ptids[tid] = ptids.get(tid, 0) + 1

    @staticmethod
    def release(refs) -> None:
        for part, off, tid in refs:
            if part.dead:
                continue
            out = part.outstanding
            n = out[off] - 1
            if n:
                out[off] = n
            else:
                del out[off]
            n = part.tids[tid] - 1
            if n:
                part.tids[tid] = n
            else:
                del part.tids[tid]

    def done(self, tid: bytes) -> bool:
        """The trace is settled without an export; True when it held
        references."""
        refs = self.holds.pop(tid, None)
        if refs:
            self.release(refs)
            return True
        return False

    def acked(self, tids: list[bytes]) -> None:
        """Called once every exporter acknowledged an item holding these
        traces (a hook: the write-ahead log records it)."""

    def take(self, tids, n_exporters: int):
        """The references of kept traces being exported: released once every
        exporter acknowledged the item (the returned callback)."""
        refs: list = []
        held: list[bytes] = []
        holds = self.holds
        for tid in tids:
            r = holds.pop(tid, None)
            if r:
                refs.extend(r)
                held.append(tid)
        if not refs:
            return None
        if n_exporters <= 0:
            self.release(refs)
            return None
        left = [n_exporters]

        def ack() -> None:
            left[0] -= 1
            if left[0] == 0:
                self.release(refs)
                self.acked(held)
        return ack

    def settle(self, tids, buffered) -> None:
        """After a message was ingested: what is neither buffered nor being
        exported (late spans of a dropped trace) is done. ``buffered``: a
        container of the buffered trace IDs, or a predicate."""
        held = buffered if callable(buffered) else buffered.__contains__
        for tid in tids:
            if not held(tid):
                self.done(tid)
