"""The write-ahead log of the direct OTLP path (``sampler.wal``).

An OTLP success from the receivers otherwise means "in memory": ``kill -9``
would lose the buffered traces and the export queues. With the log, the
accepted span bytes of every request are appended to a segment file before
the client is answered (with ``fsync: always``, after they are on disk;
concurrent requests share one fsync: group commit).

Segments are deleted with the accounting the Kafka receiver commits its
offsets with (``holds.OffsetTracker``): the log is one ``Ledger`` whose
positions are segment numbers; each request holds its segment for each of
its traces until the trace is decided not kept, or kept and acknowledged by
every exporter. The segments below the lowest one still held are deleted.

Besides span records the log holds decision records (a trace decided, kept
or not, with its policy and threshold) and ack records (kept traces every
exporter acknowledged). Recovery replays the span records into the buffer
at their original arrival times (a trace already past its timers is decided
at once); a trace the log says was decided is not decided again: a kept one
not acknowledged is exported again (counted as a possible duplicate), the
others are remembered in the decision cache so their late spans follow them.

Segment file: an 8-byte magic, then records ``[u32 payload length][u32
crc32 of kind + payload][u8 kind][payload]``. A record cut short or failing
its checksum ends the segment (a torn tail after a crash: what follows it
was never acknowledged with ``fsync: always``).
"""
from __future__ import annotations

import asyncio
import logging
import os
import struct
import time
import zlib
from concurrent.futures import ThreadPoolExecutor
from typing import Iterator

from .holds import Ledger, OffsetTracker

log = logging.getLogger("traceo_sampler.wal")

MAGIC = b"TRCWAL1\n"
_HEAD = struct.Struct("<IIB")
_ARRIVAL = struct.Struct("<q")
_DECISION = struct.Struct("<16sBQB")     # trace id, kept, threshold, policy length
SPANS, DECISIONS, ACKS = 1, 2, 3
KINDS = {SPANS: "spans", DECISIONS: "decisions", ACKS: "acks"}
SEGMENT_MAX = 64 << 20       # a segment is closed at this size (or max_bytes / 8)
SMALL_FLUSH = 64 << 10       # decision and ack entries are written in records of about this
SUFFIX = ".wal"


def segment_name(seq: int) -> str:
    return f"{seq:012d}{SUFFIX}"


def read_segment(path: str) -> tuple[list[tuple[int, bytes]], bool]:
    """(records as (kind, payload), torn): the records up to the first one
    cut short or failing its checksum."""
    with open(path, "rb") as fh:
        data = fh.read()
    out: list[tuple[int, bytes]] = []
    if not data.startswith(MAGIC):
        return out, bool(data)
    pos = len(MAGIC)
    n = len(data)
    mv = memoryview(data)
    while pos < n:
        if pos + _HEAD.size > n:
            return out, True
        length, crc, kind = _HEAD.unpack_from(data, pos)
        start = pos + _HEAD.size
        end = start + length
        if end > n or kind not in KINDS:
            return out, True
        payload = mv[start:end]
        if zlib.crc32(payload, zlib.crc32(bytes((kind,)))) != crc:
            return out, True
        out.append((kind, bytes(payload)))
        pos = end
    return out, False


def encode_decision(tid: bytes, kept: bool, policy: str, threshold: int) -> bytes:
    p = policy.encode()[:255]
    return _DECISION.pack(tid, 1 if kept else 0, threshold, len(p)) + p


def decode_decisions(payload: bytes) -> Iterator[tuple[bytes, bool, str, int]]:
    pos, n = 0, len(payload)
    while pos + _DECISION.size <= n:
        tid, kept, th, plen = _DECISION.unpack_from(payload, pos)
        pos += _DECISION.size
        policy = payload[pos:pos + plen].decode(errors="replace")
        pos += plen
        yield tid, bool(kept), policy, th


class WalError(Exception):
    pass


class WriteAheadLog:
    """Segment files in one directory; everything but the fsyncs runs on the
    event loop (a write to the page cache is cheap, an fsync is not)."""

    def __init__(self, cfg, metrics, directory: str):
        self.cfg = cfg
        self.metrics = metrics
        self.dir = directory
        self.mode = cfg.fsync
        from .config import parse_size
        self.max_bytes = parse_size(cfg.max_bytes) or 0     # converted when loaded
        self.segment_max = max(1 << 20, min(SEGMENT_MAX, self.max_bytes // 8))
        self.ledger = Ledger()
        self.sizes: dict[int, int] = {}      # segment number → bytes on disk
        self.total = 0
        self.seq = -1                        # the active segment
        self._fd = -1
        self._small = bytearray()            # decision and ack entries not yet written
        self._small_kind = 0
        self._dirty: list[int] = []          # fds written since the last fsync
        self._sealed: list[int] = []         # fds of closed segments, closed after their fsync
        self._dir_dirty = False
        self._waiters: list[asyncio.Future] = []
        self._kick: asyncio.Event | None = None
        self._task: asyncio.Task | None = None
        self._pool: ThreadPoolExecutor | None = None
        self.error = ""                      # the disk error, once one happened
        self.closed = False
        self._lock_fd = -1

    # ------------------------------------------------------------ state
    @property
    def healthy(self) -> bool:
        return not self.error

    def full(self) -> bool:
        return self.total >= self.max_bytes

    def existing(self) -> list[int]:
        """Segment numbers found in the directory, oldest first."""
        out = []
        for name in os.listdir(self.dir):
            if name.endswith(SUFFIX) and name[:-len(SUFFIX)].isdigit():
                out.append(int(name[:-len(SUFFIX)]))
        return sorted(out)

    def path(self, seq: int) -> str:
        return os.path.join(self.dir, segment_name(seq))

    def _gauges(self) -> None:
        self.metrics.wal_bytes.set(self.total)
        self.metrics.wal_segments.set(len(self.sizes))
        self.metrics.wal_full.set(1 if self.full() else 0)

    def _fail(self, op: str, exc: BaseException) -> None:
        self.metrics.wal_errors_total.labels(op).inc()
        if not self.error:
            self.error = f"write-ahead log {op} failed in {self.dir}: {exc}"
            self.metrics.wal_healthy.set(0)
            how = ("requests are refused (UNAVAILABLE / 503)" if self.cfg.on_error == "refuse"
                   else "serving continues WITHOUT the log (sampler.wal.on_error: continue)")
            log.error("%s; %s until a restart", self.error, how)

    # ------------------------------------------------------------ open / close
    def open(self) -> list[int]:
        """Create the directory, find the segments a previous run left
        (returned, for ``recover``) and start a new one after them."""
        os.makedirs(self.dir, exist_ok=True)
        self._lock()
        old = self.existing()
        for seq in old:
            size = os.path.getsize(self.path(seq))
            self.sizes[seq] = size
            self.total += size
        self._rotate(old[-1] + 1 if old else 0)
        self.metrics.wal_healthy.set(1 if self.healthy else 0)
        return old

    LOCK_WAIT = 10.0

    def _lock(self) -> None:
        """One process per log: a second one appending to or deleting from
        segments the first still writes would lose what the first
        acknowledged. A process being killed releases it as it dies, so a
        restart waits for that (a while) before giving up."""
        import fcntl
        fd = os.open(os.path.join(self.dir, "lock"), os.O_RDWR | os.O_CREAT, 0o644)
        deadline = time.monotonic() + self.LOCK_WAIT
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() > deadline:
                    os.close(fd)
                    raise OSError(f"in use by another process (its lock file {self.dir}/lock "
                                  f"is held)") from None
                time.sleep(0.05)
        self._lock_fd = fd

    async def start(self) -> None:
        """The fsync task: group commits (always) or the interval timer."""
        self._pool = ThreadPoolExecutor(1, thread_name_prefix="wal-fsync")
        self._kick = asyncio.Event()
        self._task = asyncio.get_running_loop().create_task(self._run(), name="wal")

    def _rotate(self, seq: int) -> None:
        self._write_small()
        if self._fd >= 0:
            if self.mode == "never":
                os.close(self._fd)
            else:
                self._sealed.append(self._fd)
        self._fd = -1
        try:
            fd = os.open(self.path(seq), os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_APPEND, 0o644)
            os.write(fd, MAGIC)
        except OSError as exc:
            self._fail("open", exc)
            return
        self._fd = fd
        self.seq = seq
        self.ledger.next = seq
        self.sizes[seq] = len(MAGIC)
        self.total += len(MAGIC)
        self._dirty.append(fd)
        self._dir_dirty = True
        self._gauges()

    async def close(self) -> None:
        """Write and sync what is pending; when nothing is held any more (a
        clean drain), every segment is deleted."""
        if self.closed:
            return
        self.closed = True
        if self._task is not None:
            self._task.cancel()
            try:
                await self._task
            except (asyncio.CancelledError, Exception):  # noqa: BLE001
                pass
        self._write_small()
        if self.healthy and self.mode != "never":
            try:
                self._sync(list(self._dirty), self._dir_dirty)
            except OSError as exc:
                self._fail("fsync", exc)
        self._dirty = []
        self._release_waiters(self.error)
        for fd in self._sealed + ([self._fd] if self._fd >= 0 else []):
            try:
                os.close(fd)
            except OSError:
                pass
        self._sealed, self._fd = [], -1
        if not self.ledger.outstanding:
            self.ledger.next = self.seq + 1
        self.collect()
        if self._pool is not None:
            self._pool.shutdown(wait=False)
        if self._lock_fd >= 0:
            os.close(self._lock_fd)      # releases the lock
            self._lock_fd = -1

    # ------------------------------------------------------------ appending
    def append_spans(self, data: bytes, arrival_ns: int) -> int:
        """Append one request's accepted spans; returns the segment number
        holding them, or -1 after a disk error."""
        if self.error or self._fd < 0:
            return -1
        self._write_small()
        prefix = bytes((SPANS,)) + _ARRIVAL.pack(arrival_ns)
        crc = zlib.crc32(data, zlib.crc32(prefix))
        head = _HEAD.pack(len(data) + _ARRIVAL.size, crc, SPANS) + prefix[1:]
        n = self._writev([head, data])
        if n < 0:
            return -1
        self.metrics.wal_appended_bytes_total.labels("spans").inc(n)
        seq = self.seq
        if self.sizes[seq] >= self.segment_max:
            self._rotate(seq + 1)
        return seq

    def _writev(self, bufs) -> int:
        total = sum(len(b) for b in bufs)
        try:
            n = os.writev(self._fd, bufs)
            while n < total:     # a short write (rare: a signal, a full disk)
                joined = b"".join(bufs)
                n += os.write(self._fd, joined[n:])
        except OSError as exc:
            self._fail("write", exc)
            return -1
        self.sizes[self.seq] += total
        self.total += total
        if not self._dirty or self._dirty[-1] != self._fd:
            self._dirty.append(self._fd)
        return total

    def note_decision(self, tid: bytes, kept: bool, policy: str, threshold: int) -> None:
        self._small_entry(DECISIONS, encode_decision(tid, kept, policy, threshold))

    def note_acked(self, tids: list[bytes]) -> None:
        self._small_entry(ACKS, b"".join(tids))

    def _small_entry(self, kind: int, entry: bytes) -> None:
        if self.error or self.closed:
            return
        if self._small_kind != kind:
            self._write_small()
            self._small_kind = kind
        self._small += entry
        if len(self._small) >= SMALL_FLUSH:
            self._write_small()

    def write_records(self) -> None:
        """Write the pending decision and ack entries (to the page cache)."""
        self._write_small()

    def _write_small(self) -> None:
        if not self._small:
            return
        kind, payload = self._small_kind, bytes(self._small)
        self._small.clear()
        if self.error or self._fd < 0:
            return
        crc = zlib.crc32(payload, zlib.crc32(bytes((kind,))))
        n = self._writev([_HEAD.pack(len(payload), crc, kind), payload])
        if n > 0:
            self.metrics.wal_appended_bytes_total.labels(KINDS[kind]).inc(n)

    # ------------------------------------------------------------ durability
    def durable(self) -> "asyncio.Future[str] | None":
        """With ``fsync: always``, a future that resolves ('' or the error)
        once everything appended so far is on disk; else None."""
        if self.mode != "always" or self._kick is None:
            return None
        fut = asyncio.get_running_loop().create_future()
        if self.error:
            fut.set_result(self.error)
            return fut
        self._waiters.append(fut)
        self._kick.set()
        return fut

    def _release_waiters(self, err: str) -> None:
        waiters, self._waiters = self._waiters, []
        for f in waiters:
            if not f.done():
                f.set_result(err)

    def _sync(self, fds: list[int], dir_too: bool) -> None:
        for fd in fds:
            os.fdatasync(fd)
        if dir_too:
            dfd = os.open(self.dir, os.O_RDONLY)
            try:
                os.fsync(dfd)
            finally:
                os.close(dfd)

    async def _sync_once(self) -> None:
        """One fsync of every fd written since the last, off the loop; the
        waiters registered before it started are answered by it."""
        assert self._pool is not None
        self._write_small()
        waiters, self._waiters = self._waiters, []
        fds, self._dirty = self._dirty, []
        sealed, self._sealed = self._sealed, []
        dir_too, self._dir_dirty = self._dir_dirty, False
        err = ""
        if fds or dir_too:
            t0 = time.perf_counter()
            try:
                await asyncio.get_running_loop().run_in_executor(self._pool, self._sync, fds,
                                                                 dir_too)
            except OSError as exc:
                self._fail("fsync", exc)
                err = self.error
            self.metrics.wal_fsync_seconds.observe(time.perf_counter() - t0)
        for fd in sealed:
            try:
                os.close(fd)
            except OSError:
                pass
        for f in waiters:
            if not f.done():
                f.set_result(err or self.error)

    async def _run(self) -> None:
        kick = self._kick
        assert kick is not None
        period = self.cfg.fsync_interval.seconds
        last_collect = time.monotonic()
        while True:
            if self.mode == "always":
                try:
                    await asyncio.wait_for(kick.wait(), 0.1)
                except asyncio.TimeoutError:
                    pass
                kick.clear()
            else:
                await asyncio.sleep(period if self.mode == "interval" else 0.1)
            try:
                if self.mode == "never":
                    self._write_small()
                    for fd in self._sealed:
                        os.close(fd)
                    self._sealed, self._dirty = [], []
                elif self.healthy or self._waiters:
                    await self._sync_once()
                now = time.monotonic()
                if now - last_collect >= 0.1:
                    last_collect = now
                    self.collect()
                    self._gauges()
            except asyncio.CancelledError:
                raise
            except Exception:  # noqa: BLE001 - the log must keep syncing
                log.exception("write-ahead log task")

    # ------------------------------------------------------------ deleting
    def collect(self) -> int:
        """Delete the closed segments below the lowest one still held."""
        cp = self.ledger.commit_point()
        if cp is None:
            return 0
        n = 0
        for seq in sorted(self.sizes):
            if seq >= cp or seq == self.seq and not self.closed:
                break
            try:
                os.unlink(self.path(seq))
            except FileNotFoundError:
                pass
            except OSError as exc:
                self._fail("delete", exc)
                break
            self.total -= self.sizes.pop(seq)
            n += 1
        if n:
            self._gauges()
        return n


class WalTracker(OffsetTracker):
    """The pipeline's tracker with the log: besides releasing references it
    writes a decision record for each trace the log holds when it is
    decided (``cached``: the buffer's decision cache, which knows the kept
    policy and threshold) and an ack record once every exporter
    acknowledged it."""

    def __init__(self, wal: WriteAheadLog, cached):
        super().__init__()
        self.wal = wal
        self.cached = cached

    def hold(self, part: Ledger, offset: int, tids) -> None:
        # segments are deleted as a prefix (below the lowest one held) and a
        # trace's references are released all at once, so only its first
        # segment matters: a later request of a trace already held adds none
        holds = self.holds
        super().hold(part, offset, [t for t in tids if t not in holds])

    def done(self, tid: bytes) -> bool:
        if super().done(tid):
            self.wal.note_decision(tid, False, "", 0)
            return True
        return False

    def take(self, tids, n_exporters: int):
        holds = self.holds
        noted = False
        for tid in tids:
            if tid in holds:
                c = self.cached(tid)
                if isinstance(c, tuple):
                    self.wal.note_decision(tid, True, c[0], c[1])
                    noted = True
        if noted:
            # written before the exporters get the item: a kill -9 after it
            # left must find the decision, so a restart exports the trace
            # again as a counted duplicate instead of deciding it anew
            self.wal.write_records()
        return super().take(tids, n_exporters)

    def acked(self, tids: list[bytes]) -> None:
        self.wal.note_acked(tids)


class _Result:
    """What the receivers get: the pipeline's counts and, with ``fsync:
    always`` (or after a disk error), ``acked`` to await before answering."""

    __slots__ = ("accepted", "rejected", "errors", "acked")

    def __init__(self, accepted: int, rejected: int, errors: list[str], acked=None):
        self.accepted = accepted
        self.rejected = rejected
        self.errors = errors
        self.acked = acked


class _Subset:
    """Scan-shaped subset of a request's spans."""

    __slots__ = ("groups", "spans")

    def __init__(self, groups, spans):
        self.groups = groups
        self.spans = spans


class WalFront:
    """What the receivers feed when the log is on: the accepted spans of a
    request are appended (and held for each of their traces) before the
    pipeline ingests it."""

    def __init__(self, pipeline, wal: WriteAheadLog, tracker: WalTracker):
        self.pipeline = pipeline
        self.wal = wal
        self.tracker = tracker
        self.RETRY_AFTER = pipeline.RETRY_AFTER

    @property
    def attr_keys(self):
        return self.pipeline.attr_keys

    @property
    def metrics(self):
        return self.pipeline.metrics

    def backpressure(self) -> bool:
        if self.wal.full() and self.wal.healthy:
            return True
        return self.pipeline.backpressure()

    def pushback_reason(self) -> str:
        if self.wal.full() and self.wal.healthy:
            return "write-ahead log full (sampler.wal.max_bytes)"
        return "exporter queue full"

    def _refused(self) -> _Result:
        fut = asyncio.get_running_loop().create_future()
        fut.set_result(self.wal.error)
        return _Result(0, 0, [], fut)

    def ingest(self, data: bytes):
        from .shard import KEY_RAW, split
        wal = self.wal
        p = self.pipeline
        if wal.error:
            if wal.cfg.on_error == "refuse":
                return self._refused()
            return p.ingest(data)
        # the trace IDs (for the holds) and only the accepted spans' bytes
        # (for the log), by the splitter's light walk; ValueError: invalid
        sr = split(data, 1, p.attr_keys, KEY_RAW, True)
        if not sr.accepted:
            return p.ingest(data)
        seq = wal.append_spans(sr.parts[0], time.time_ns())
        if seq < 0:
            if wal.cfg.on_error == "refuse":
                return self._refused()
            return p.ingest(data)
        assert sr.trace_ids is not None     # with_trace_ids=True
        tids = sr.trace_ids[0]
        tr = self.tracker
        tr.hold(wal.ledger, seq, tids)
        try:
            res = p.ingest(data)
        except BaseException:
            for tid in tids:
                tr.done(tid)
            raise
        tr.settle(tids, p.holds)
        return _Result(res.accepted, res.rejected, res.errors, wal.durable())


class Recovery:
    """What ``recover`` found and did (the start-up log line, /api/status)."""

    __slots__ = ("segments", "records", "torn", "spans", "traces", "skipped_spans",
                 "reexported_traces", "reexported_spans", "seconds")

    def __init__(self):
        self.segments = self.records = self.torn = 0
        self.spans = self.traces = self.skipped_spans = 0
        self.reexported_traces = self.reexported_spans = 0
        self.seconds = 0.0

    def as_dict(self) -> dict:
        return {k: getattr(self, k) for k in self.__slots__}


def recover(wal: WriteAheadLog, old: list[int], pipeline, tracker: WalTracker,
            wall=time.time_ns) -> Recovery:
    """Replay the segments a previous run left (``old``, from ``open``) into
    the pipeline, at their original arrival times (on the pipeline's clock:
    ``clock() - age``). A trace with a decision record is not decided again:
    kept and not acknowledged, it is exported again (its spans follow the
    remembered decision as late spans do); otherwise its spans are skipped
    and the decision remembered for late spans still to come."""
    from .scan import SPAN_TRACE_ID, scan
    from .shard import KEY_RAW, split
    r = Recovery()
    t0 = time.monotonic()
    m = wal.metrics
    decisions: dict[bytes, tuple[bool, str, int]] = {}
    acked: set[bytes] = set()
    # pass 1: the decision and ack records of every segment (span records
    # are read again segment by segment in pass 2, so a log of many GiB is
    # never in memory at once)
    readable: list[int] = []
    for seq in old:
        try:
            records, torn = read_segment(wal.path(seq))
        except OSError as exc:
            wal._fail("open", exc)
            log.error("write-ahead log: cannot read segment %s: %s", wal.path(seq), exc)
            continue
        readable.append(seq)
        r.segments += 1
        r.records += len(records)
        if torn:
            r.torn += 1
            m.wal_torn_records_total.inc()
            log.warning("write-ahead log: segment %s ends in an incomplete or corrupt record "
                        "(a torn tail after a crash); read up to it", wal.path(seq))
        for kind, payload in records:
            if kind == DECISIONS:
                for tid, kept, policy, th in decode_decisions(payload):
                    decisions[tid] = (kept, policy, th)
            elif kind == ACKS:
                for i in range(0, len(payload) - 15, 16):
                    acked.add(payload[i:i + 16])
        del records
    buf = pipeline.buffer
    # decided before the crash: late spans follow the decision; a kept one
    # not acknowledged is exported again through that path
    skip: set[bytes] = set()
    again: set[bytes] = set()
    for tid, (kept, policy, th) in decisions.items():
        buf.remember(tid, kept, policy, th)
        if kept and tid not in acked:
            again.add(tid)
        else:
            skip.add(tid)
    clock_now = pipeline.clock()
    wall_now = wall()
    attr = pipeline.attr_keys
    seen: set[bytes] = set()
    again_seen: set[bytes] = set()
    for seq in readable:
        try:
            records, _torn = read_segment(wal.path(seq))
        except OSError as exc:
            wal._fail("open", exc)
            continue
        for kind, payload in records:
            if kind != SPANS:
                continue
            arrival = _ARRIVAL.unpack_from(payload)[0]
            data = payload[_ARRIVAL.size:]
            now = clock_now - max(0.0, (wall_now - arrival) / 1e9)
            try:
                ids = split(data, 1, attr, KEY_RAW, True).trace_ids
                assert ids is not None      # with_trace_ids=True
                tids = ids[0]
                scanned = None
                if not skip.isdisjoint(tids) or not again.isdisjoint(tids):
                    sc = scan(data, attr)
                    keep = [sp for sp in sc.spans if sp[SPAN_TRACE_ID] not in skip]
                    r.skipped_spans += len(sc.spans) - len(keep)
                    for sp in keep:
                        if sp[SPAN_TRACE_ID] in again:
                            r.reexported_spans += 1
                            again_seen.add(sp[SPAN_TRACE_ID])
                    if not keep:
                        continue
                    scanned = _Subset(sc.groups, keep)
                    tids = {sp[SPAN_TRACE_ID] for sp in keep}
                tracker.hold(wal.ledger, seq, tids)
                res = pipeline.ingest(data, scanned, now)
                tracker.settle(tids, pipeline.holds)
            except Exception:  # noqa: BLE001 - one bad record must not stop the recovery
                log.exception("write-ahead log: a record of segment %s could not be replayed",
                              wal.path(seq))
                continue
            r.spans += res.accepted
            for tid in tids:
                if tid not in seen and tid not in again:
                    seen.add(tid)
                    r.traces += 1
    r.reexported_traces = len(again_seen)
    r.spans -= r.reexported_spans
    r.seconds = round(time.monotonic() - t0, 3)
    m.wal_replayed_spans_total.inc(r.spans)
    m.wal_replayed_traces_total.inc(r.traces)
    m.wal_duplicate_export_traces_total.inc(r.reexported_traces)
    m.wal_duplicate_export_spans_total.inc(r.reexported_spans)
    if r.segments:
        log.info("write-ahead log: recovered %d segments (%d records, %d torn) in %.2f s: "
                 "%d spans of %d undecided traces back in the buffer, %d kept traces not "
                 "acknowledged exported again (%d spans), %d spans of decided traces skipped",
                 r.segments, r.records, r.torn, r.seconds, r.spans, r.traces,
                 r.reexported_traces, r.reexported_spans, r.skipped_spans)
    return r
