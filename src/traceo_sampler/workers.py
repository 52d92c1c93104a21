"""``service.workers``: one ``serve`` over every core it is given
(docs/design.md §5, "One machine").

A supervisor process starts N worker processes and serves the one admin
endpoint of the group. Each worker is a whole sampler (receivers, buffer,
policies, exporters) that owns the traces whose trace-ID hash falls in its
shard (``shard.shard_of``: Kafka's murmur2 partitioner over the 16 raw
bytes). Every worker listens on the configured receiver ports
(``SO_REUSEPORT``: the kernel spreads client connections over them). One
walk of each request it receives buffers the spans of its own shard and
cuts out one request per other shard (``Pipeline.ingest`` with ``shards``:
span bytes copied under their original resource and scope headers, as
``shard.split`` does; no protobuf objects, nothing re-encoded); each is
handed, as a frame of raw bytes, over a Unix socket to the worker that owns
it, the parts for one worker of one event loop tick in one frame.

Decisions are the ones one process would make: every policy decides on the
whole trace, which only its owner holds; per-trace rules (status, latency,
attributes, probabilistic thresholds) are the same functions of the trace,
and budgets (rate and bytes limiters, service_rate caps, composite totals,
adaptive targets) and the memory limits are split across workers so their
totals hold.

Backpressure: a worker whose exporter queue is full (``queue_full: block``)
sets its byte in a shared flag map; every worker's receivers push back
while any byte is set, while a peer is unreachable, or while the bytes
waiting to be handed to a peer exceed ``FORWARD_HIGH``.

Lifecycle: SIGTERM/SIGINT to the supervisor drains every worker (receivers
stop, what is in flight between workers is delivered, then every buffered
trace is decided and exported); SIGHUP (or the config file changing)
reloads every worker; a worker that dies is restarted, and what it held in
its buffer (its last report) is counted as lost
(``worker_lost_spans_total``, ``worker_lost_traces_total``). The
supervisor's ``/metrics`` merges the workers' series (sums; the counters of
a dead worker are kept so merged counters never go back), ``/api/status``
and ``/status`` show the whole group.
"""
from __future__ import annotations

import asyncio
import collections
import contextlib
import json
import logging
import math
import mmap
import os
import re
import signal
import struct
import subprocess
import sys
import tempfile
import time
from typing import Callable

import msgspec

from . import shard as _shard
from .accounting import Account, Prices
from .config import Config, ConfigError, PolicyCfg, _dec_hook, _enc_hook, dump, load, loads
from .history import Counters

log = logging.getLogger("traceo_sampler.workers")

FORWARD_HIGH = 16 << 20        # bytes waiting for a peer before the receivers push back
PENDING_MAX = 64 << 20         # bytes kept for a peer that is down (restarting), then dropped
SNAPSHOT_INTERVAL = 5.0        # how often a worker leaves its counters for the supervisor
STATE_INTERVAL = 0.1           # how often a worker publishes its backpressure and buffer size


# ------------------------------------------------------------------ sizing
def cpus_available() -> int:
    """CPUs this process may use: its affinity mask, capped by the cgroup
    CPU quota (a container's ``--cpus``), rounded up."""
    try:
        n = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        n = os.cpu_count() or 1
    quota = _cgroup_quota()
    if quota is not None:
        n = min(n, max(1, math.ceil(quota)))
    return max(1, n)


def _cgroup_quota() -> float | None:
    try:   # cgroup v2: "max 100000" or "150000 100000"
        with open("/sys/fs/cgroup/cpu.max") as fh:
            q, p = fh.read().split()[:2]
        return None if q == "max" else int(q) / int(p)
    except (OSError, ValueError):
        pass
    try:   # cgroup v1
        with open("/sys/fs/cgroup/cpu/cpu.cfs_quota_us") as fh:
            quota_us = int(fh.read())
        with open("/sys/fs/cgroup/cpu/cpu.cfs_period_us") as fh:
            period_us = int(fh.read())
        return None if quota_us <= 0 or period_us <= 0 else quota_us / period_us
    except (OSError, ValueError):
        return None


def worker_count(cfg: Config) -> int:
    w = cfg.service.workers
    return cpus_available() if w == "auto" else int(w)


# ------------------------------------------------------------------ shares
def _part(total, n: int, i: int):
    """Worker i's share of a budget: integers split exactly (the shares
    add up to the total), floats evenly."""
    if isinstance(total, bool) or total is None:
        return total
    if isinstance(total, int):
        return total // n + (1 if i < total % n else 0)
    return total / n


_BUDGETS = {
    "rate_limiting": ("spans_per_second", "burst_capacity"),
    "bytes_limiting": ("bytes_per_second", "burst_capacity"),
    "composite": ("max_total_spans_per_second",),
    "adaptive": ("target_spans_per_second", "target_traces_per_second"),
}


def _split_budgets(obj, n: int, i: int):
    if isinstance(obj, list):
        return [_split_budgets(x, n, i) for x in obj]
    if not isinstance(obj, dict):
        return obj
    out = {}
    for k, v in obj.items():
        if k in _BUDGETS and isinstance(v, dict):
            v = {f: (_part(x, n, i) if f in _BUDGETS[k] else x) for f, x in v.items()}
        elif k == "service_rate" and isinstance(v, dict):
            v = dict(v)
            rate = ("spans_per_second", "burst_capacity")
            if isinstance(v.get("services"), dict):
                v["services"] = {s: {f: (_part(x, n, i) if f in rate else x) for f, x in e.items()}
                                 for s, e in v["services"].items()}
            if isinstance(v.get("default"), dict):
                v["default"] = {f: (_part(x, n, i) if f in rate else x)
                                for f, x in v["default"].items()}
        out[k] = _split_budgets(v, n, i)
    return out


def share(cfg: Config, n: int, i: int, admin_endpoint: str | None = None) -> Config:
    """Worker i's config: budgets, the buffer's memory limit and the
    exporter queues split across n workers; one process (workers: 1); its
    admin endpoint the supervisor's private one."""
    pols = []
    for p in cfg.sampler.policies:
        raw = _split_budgets(msgspec.to_builtins(p, enc_hook=_enc_hook), n, i)
        pols.append(msgspec.convert(raw, PolicyCfg, dec_hook=_dec_hook))
    s = cfg.sampler
    sampler = msgspec.structs.replace(s, policies=pols,
                                      memory_limit_mib=max(1, _part(s.memory_limit_mib, n, i)))
    if s.wal is not None:
        # each worker logs its own shard: the disk bound is the group's
        sampler.wal = msgspec.structs.replace(
            s.wal, max_bytes=max(1 << 20, _part(s.wal.max_bytes, n, i)))
    e = cfg.exporters
    repl = {}
    for name in ("otlp", "file"):
        ex = getattr(e, name, None)
        if ex is not None and hasattr(ex, "queue_max_bytes"):
            repl[name] = msgspec.structs.replace(
                ex, queue_max_bytes=max(1 << 20, _part(ex.queue_max_bytes, n, i)))
    exporters = msgspec.structs.replace(e, **repl) if repl else e
    out = msgspec.structs.replace(cfg, sampler=sampler, exporters=exporters,
                                  service=msgspec.structs.replace(
                                      cfg.service, workers=1,
                                      memory_limit_mib=_part(cfg.service.memory_limit_mib, n, i)))
    if admin_endpoint is not None:
        from .config import Admin
        # a worker's admin is the supervisor's private Unix socket: TLS and
        # tokens belong to the group's endpoint the supervisor serves
        out = msgspec.structs.replace(out, admin=msgspec.structs.replace(
            cfg.admin or Admin(), endpoint=admin_endpoint, tls=None, auth=None))
    return out


# ------------------------------------------------------------------ runtime dir
class Runtime:
    """Files the supervisor and its workers share: the config, the flag
    map, the forwarding and admin sockets, ready and summary files."""

    def __init__(self, path: str, n: int):
        self.path = path
        self.n = n

    def file(self, name: str) -> str:
        return os.path.join(self.path, name)

    def fwd(self, i: int) -> str:
        return self.file(f"w{i}.fwd.sock")

    def admin(self, i: int) -> str:
        return self.file(f"w{i}.admin.sock")


class Flags:
    """A shared file mapping: per worker a backpressure byte ([0, n)), a
    done-forwarding byte ([n, 2n): set once its receivers stopped and all it
    had for its peers was delivered), and the spans and traces its buffer
    holds (two u64 from 2n + 16 i, what is lost if it dies)."""

    _HELD = struct.Struct("<QQ")

    def __init__(self, path: str, n: int, create: bool = False):
        self.n = n
        size = 2 * n + 16 * n
        if create:
            with open(path, "wb") as fh:
                fh.write(b"\0" * size)
        self._fh = open(path, "r+b")
        self.mm = mmap.mmap(self._fh.fileno(), size)

    def set_held(self, i: int, spans: int, traces: int) -> None:
        self._HELD.pack_into(self.mm, 2 * self.n + 16 * i, spans, traces)

    def held(self, i: int) -> tuple[int, int]:
        return self._HELD.unpack_from(self.mm, 2 * self.n + 16 * i)

    def set_pressure(self, i: int, on: bool) -> None:
        self.mm[i] = 1 if on else 0

    def any_pressure(self) -> bool:
        return self.mm[:self.n].count(0) != self.n

    def set_done(self, i: int, on: bool = True) -> None:
        self.mm[self.n + i] = 1 if on else 0

    def all_done(self) -> bool:
        return self.mm[self.n:2 * self.n].count(0) == 0


# ------------------------------------------------------------------ forwarding
# A frame: [u32 body length][u32 spans in it][u32 record bytes][body: an
# encoded request, then the span records of the sender's walk, if any]. The
# span count travels with the frame so that a frame cut off (its sender died
# mid-write) is counted as lost by its receiver. The records (one per span,
# TraceBuffer.ingest's ``recs``) spare the owner a second walk of each span.
_FRAME = struct.Struct(">III")
# how long a starting worker waits for its peers' forwarding sockets before it
# says ready anyway
PEERS_WAIT = 10.0


class FrameReader:
    """Frames out of a byte stream that arrives in pieces of any size.

    A frame (the parts for one owner of one tick, often larger than one
    socket read) is copied once: the pieces it arrives in are kept as they
    came and joined when it is complete; whole frames inside one piece are
    sliced out of it."""

    def __init__(self) -> None:
        self.pieces: list = []     # the unfinished frame's pieces (bytes or views)
        self.have = 0              # their bytes
        self.need = 0              # the frame's bytes, header included (0: header not yet whole)

    def feed(self, data: bytes) -> list[tuple[bytes, int, int]]:
        """The (body, spans, record bytes at the end of body) of every
        frame completed by ``data``."""
        out: list[tuple[bytes, int, int]] = []
        chunk: bytes | memoryview = data
        pieces = self.pieces
        if pieces:
            pieces.append(chunk)
            self.have += len(chunk)
            if not self.need:
                if self.have < _FRAME.size:
                    return out
                # the header itself was cut (rare): one piece again
                pieces[:] = [b"".join(pieces)]
                self.need = _FRAME.size + _FRAME.unpack_from(pieces[0], 0)[0]
            if self.have < self.need:
                return out
            # complete: its body joined in one copy; the first piece holds the header
            _, spans, recs = _FRAME.unpack_from(pieces[0], 0)
            last = memoryview(pieces[-1])
            keep = len(last) - (self.have - self.need)   # bytes of the last piece in the frame
            if len(pieces) == 1:
                body = bytes(last[_FRAME.size:keep])
            else:
                body = b"".join([memoryview(pieces[0])[_FRAME.size:], *pieces[1:-1], last[:keep]])
            out.append((body, spans, recs))
            self.pieces, self.have, self.need = [], 0, 0
            if keep == len(last):
                return out
            chunk = last[keep:]                    # what follows, as a view: no copy
        # whole frames inside this piece are sliced out; the rest is kept
        pos, end = 0, len(chunk)
        while end - pos >= _FRAME.size:
            ln, spans, recs = _FRAME.unpack_from(chunk, pos)
            if end - pos - _FRAME.size < ln:
                break
            cut = chunk[pos + _FRAME.size:pos + _FRAME.size + ln]
            out.append((cut if isinstance(cut, bytes) else bytes(cut), spans, recs))
            pos += _FRAME.size + ln
        if pos < end:
            rest = memoryview(chunk)[pos:]
            self.pieces = [rest]
            self.have = end - pos
            self.need = (_FRAME.size + _FRAME.unpack_from(rest, 0)[0]
                         if self.have >= _FRAME.size else 0)
        return out

    def _spans(self) -> int:
        return _FRAME.unpack_from(b"".join(self.pieces)[:_FRAME.size], 0)[1]

    def cut(self) -> tuple[int, int]:
        """At the end of the stream: (bytes, spans) of the frame left
        unfinished (spans -1 when not even its header arrived)."""
        n = self.have
        if not n:
            return 0, 0
        spans = self._spans() if n >= _FRAME.size else -1
        self.pieces, self.have, self.need = [], 0, 0
        return n, spans


class _PeerConn(asyncio.Protocol):
    def __init__(self, peer: Peer) -> None:
        self.peer = peer
        self.transport: asyncio.WriteTransport | None = None
        self.lost = asyncio.get_running_loop().create_future()

    def connection_made(self, transport) -> None:
        self.transport = transport

    def data_received(self, data: bytes) -> None:
        # the owner writes only acks (with the log), a byte per frame
        self.peer._answered(data)

    def connection_lost(self, exc) -> None:
        if not self.lost.done():
            self.lost.set_result(None)


class Peer:
    """The connection to another worker's forwarding socket. The parts sent
    to it in one event loop tick go out as one frame, their concatenation (a
    valid request: its resource_spans are those of every part), in one
    write: one syscall, and one ingest call at the owner, however many
    requests that tick brought. The parts' span records follow them, in
    the same order, when every part of the frame has them. While the peer
    is down (restarting) parts wait, up to PENDING_MAX bytes, and are sent
    on reconnect (without records)."""

    def __init__(self, index: int, path: str, metrics, acks: bool = False):
        """``acks`` (with sampler.wal): the owner answers every frame with a
        byte once it is in its log (0: logged, 1: not), and ``send``
        returns a future of that answer, so a client is told OK only once
        every part of its request is logged by its owner."""
        self.index = index
        self.path = path
        self.metrics = metrics
        self.acks = acks
        # per frame written, in order: the futures its ack answers
        self.waiting: collections.deque = collections.deque()
        self.conn: _PeerConn | None = None
        self.pending: list[tuple[bytes, int, asyncio.Future | None]] = []
        self.pending_bytes = 0
        # this tick's parts, not yet written, and the futures they answer
        self.batch: list[bytes] = []
        self.batch_recs: list[bytes] | None = []   # None: a part came without
        self.batch_futs: list[asyncio.Future] = []
        self.batch_spans = 0
        self.batch_bytes = 0
        self.closing = False
        self._task: asyncio.Task | None = None

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._run())

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        while not self.closing:
            try:
                _, conn = await loop.create_unix_connection(lambda: _PeerConn(self), self.path)
            except OSError:
                await asyncio.sleep(0.05)
                continue
            self.conn = conn
            pending, self.pending, self.pending_bytes = self.pending, [], 0
            for data, spans, fut in pending:
                self._batch(data, spans, fut)
            await conn.lost            # EOF: the owner is gone
            self.conn = None
            self._lost(f"worker {self.index} went away before logging its part; retry")
            if not self.closing:
                log.warning("worker %d: connection lost; reconnecting", self.index)

    def _answered(self, answers: bytes) -> None:
        for b in answers:
            if self.waiting:
                why = "" if b == 0 else f"worker {self.index} could not log its part"
                for f in self.waiting.popleft():
                    if not f.done():
                        f.set_result(why)

    def _lost(self, why: str) -> None:
        waiting, self.waiting = self.waiting, collections.deque()
        for futs in waiting:
            for f in futs:
                if not f.done():
                    f.set_result(why)

    def _transport(self) -> asyncio.WriteTransport | None:
        c = self.conn
        if c is None or c.transport is None or c.transport.is_closing():
            return None
        return c.transport

    @property
    def connected(self) -> bool:
        return self._transport() is not None

    def congested(self) -> bool:
        t = self._transport()
        return t is None or t.get_write_buffer_size() + self.batch_bytes > FORWARD_HIGH

    def _batch(self, data: bytes, spans: int, fut: asyncio.Future | None,
               recs: bytes = b"") -> None:
        if not self.batch:
            asyncio.get_running_loop().call_soon(self._flush)
        self.batch.append(data)
        if self.batch_recs is not None:
            if recs or not spans:
                self.batch_recs.append(recs)
            else:
                self.batch_recs = None
        if fut is not None:
            self.batch_futs.append(fut)
        self.batch_spans += spans
        self.batch_bytes += len(data)

    def send(self, data: bytes, spans: int, recs: bytes = b"") -> asyncio.Future | None:
        """Send one part of ``spans`` spans; ``recs``: their span records
        (TraceBuffer.ingest), b"" for none."""
        fut = None
        if self.acks:
            # every part of this tick is answered by its frame's one ack
            fut = (self.batch_futs[0] if self.batch_futs and self.connected
                   else asyncio.get_running_loop().create_future())
        if self.connected:
            self._batch(data, spans, None if fut in self.batch_futs else fut, recs)
        elif self.pending_bytes + len(data) <= PENDING_MAX:
            self.pending.append((data, spans, fut))
            self.pending_bytes += len(data)
        else:
            self.metrics.worker_forwarded_spans_total.labels("dropped").inc(spans)
            log.error("worker %d is down and %d bytes wait for it already: %d spans dropped",
                      self.index, self.pending_bytes, spans)
            if fut is not None:
                fut.set_result(f"worker {self.index} is down; retry")
        return fut

    def _flush(self) -> None:
        batch, futs, recs = self.batch, self.batch_futs, self.batch_recs
        spans, nbytes = self.batch_spans, self.batch_bytes
        self.batch, self.batch_futs, self.batch_spans, self.batch_bytes = [], [], 0, 0
        self.batch_recs = []
        if not batch:
            return
        t = self._transport()
        if t is None:
            # lost since they were batched: they wait for the reconnect
            self.pending.append((b"".join(batch), spans, futs[0] if futs else None))
            # (the other parts' answers ride on the same frame)
            self.pending.extend((b"", 0, f) for f in futs[1:])
            self.pending_bytes += nbytes
            return
        recs = recs or []
        nrec = sum(map(len, recs))
        t.writelines([_FRAME.pack(nbytes + nrec, spans, nrec), *batch, *recs])
        if self.acks:
            self.waiting.append(futs)
        self.metrics.worker_forwarded_spans_total.labels("sent").inc(spans)

    async def close(self, timeout: float) -> None:
        """Deliver what is written and pending, then close (EOF)."""
        deadline = time.monotonic() + timeout
        while (self.pending or self.batch) and time.monotonic() < deadline:
            await asyncio.sleep(0.02)
        self.closing = True
        c = self.conn
        if c is not None and c.transport is not None:
            while (c.transport.get_write_buffer_size() and not c.transport.is_closing()
                   and time.monotonic() < deadline):
                await asyncio.sleep(0.01)
            c.transport.close()
            with contextlib.suppress(Exception):
                await asyncio.wait_for(asyncio.shield(c.lost), 1.0)
        if self.pending:
            n = sum(s for _, s, _f in self.pending)
            self.metrics.worker_forwarded_spans_total.labels("dropped").inc(n)
            log.error("worker %d unreachable at shutdown: %d spans for it dropped", self.index, n)
            for _d, _s, f in self.pending:
                if f is not None and not f.done():
                    f.set_result(f"worker {self.index} unreachable at shutdown")
        self._lost(f"worker {self.index}: shutting down")
        if self._task is not None:
            self._task.cancel()


async def peers_connected(peers, timeout: float) -> bool:
    """Wait until every peer's connection is up, at most ``timeout``
    seconds; whether they all are."""
    peers = list(peers)
    deadline = time.monotonic() + timeout
    while not all(p.connected for p in peers):
        if time.monotonic() >= deadline:
            return False
        await asyncio.sleep(0.02)
    return True


class ShardFront:
    """What a worker's OTLP receivers see as the pipeline: the spans of its
    own shard go to its pipeline, the others to their owners. Without the
    log, one walk of each request does both (``Pipeline.ingest`` with
    ``shards``); with it (sampler.wal, ``pipeline`` is the log's front),
    the request is split first and the log takes this shard's part."""

    def __init__(self, pipeline, index: int, n: int, peers: dict[int, Peer], flags: Flags):
        from .pipeline import Pipeline
        self.pipeline = pipeline
        self.fused = isinstance(pipeline, Pipeline)
        self.index = index
        self.n = n
        self.peers = peers
        self.flags = flags
        self.RETRY_AFTER = pipeline.RETRY_AFTER

    def backpressure(self) -> bool:
        if self.pipeline.backpressure() or self.flags.any_pressure():
            return True
        for p in self.peers.values():
            if p.congested():
                return True
        return False

    def pushback_reason(self) -> str:
        if self.pipeline.backpressure():
            reason = getattr(self.pipeline, "pushback_reason", None)
            return reason() if reason is not None else "exporter queue full"
        return ("another worker cannot take more (its exporter queue or write-ahead log "
                "is full, or it is restarting)")

    def ingest(self, data: bytes):
        from .pipeline import IngestResult
        p = self.pipeline
        waits = []
        if self.fused:
            res = p.ingest(data, shards=(self.n, self.index))
            accepted, rejected, errors = res.accepted, res.rejected, res.errors
            recs = res.recs
            for j, part in enumerate(res.parts):
                if part:
                    f = self.peers[j].send(part, res.counts[j], recs[j] if recs else b"")
                    if f is not None:
                        waits.append(f)
        else:
            sr = _shard.split(data, self.n, p.attr_keys)
            accepted, rejected, errors = sr.accepted, sr.rejected, sr.errors
            m = p.metrics
            for reason in sr.reasons:
                m.invalid_spans_total.labels(reason).inc()
            own = b""
            for j, part in enumerate(sr.parts):
                if not part:
                    continue
                if j == self.index:
                    own = part
                else:
                    f = self.peers[j].send(part, sr.counts[j])
                    if f is not None:
                        waits.append(f)
            if own:
                acked = getattr(p.ingest(own), "acked", None)
                if acked is not None:
                    waits.append(acked)
        if waits:
            # sampler.wal: answered once every part is in its owner's log
            return _Logged(accepted, rejected, errors, _first_error(waits))
        return IngestResult(accepted, rejected, errors)


class _Logged:
    __slots__ = ("accepted", "rejected", "errors", "acked")

    def __init__(self, accepted: int, rejected: int, errors: list[str], acked):
        self.accepted = accepted
        self.rejected = rejected
        self.errors = errors
        self.acked = acked


async def _first_error(waits) -> str:
    err = ""
    for w in waits:
        e = await w
        err = err or e
    return err


class _InboundConn(asyncio.Protocol):
    def __init__(self, inbound: Inbound) -> None:
        self.inbound = inbound
        self.frames = FrameReader()
        self.answers: asyncio.Queue | None = None
        self.answering: asyncio.Task | None = None

    def connection_made(self, transport) -> None:
        self.inbound.open += 1
        if self.inbound.acks:
            # answered in frame order, each once its part is logged (with
            # fsync: always, after the group commit that covers it)
            self.answers = asyncio.Queue()
            self.answering = asyncio.get_running_loop().create_task(
                Inbound._answer(self.answers, transport))

    def data_received(self, data: bytes) -> None:
        inbound = self.inbound
        ingest = inbound.pipeline.ingest
        checked = inbound.checked
        answers = self.answers
        for body, _spans, recs in self.frames.feed(data):
            try:
                if checked:
                    # the pipeline itself (no log in front); the spans were
                    # checked by the worker that received them
                    ingest(body, checked=True, recs=recs)
                    acked = ""
                else:
                    if recs:
                        body = body[:len(body) - recs]
                    acked = getattr(ingest(body), "acked", None) or ""
            except Exception:  # noqa: BLE001 - one bad part must not stop the hand-off
                log.exception("ingest of a forwarded part failed")
                acked = "ingest failed"
            if answers is not None:
                answers.put_nowait(acked)

    def connection_lost(self, exc) -> None:
        self.inbound.open -= 1
        if self.answers is not None:
            self.answers.put_nowait(None)
        nbytes, spans = self.frames.cut()
        if nbytes:
            # its sender died mid-frame: what the frame held is lost
            if spans > 0:
                self.inbound.metrics.worker_forwarded_spans_total.labels("lost").inc(spans)
            log.error("a peer's connection ended inside a frame: %d bytes (%s spans) lost",
                      nbytes, spans if spans >= 0 else "unknown")


class Inbound:
    """A worker's forwarding socket: every frame is a request of its shard,
    ingested as it completes (in the protocol callback: no task per frame)."""

    def __init__(self, path: str, pipeline, metrics, acks: bool = False):
        """``pipeline``: what the frames are ingested into (the pipeline,
        or the log in front of it); ``acks``: answer each frame with a byte
        once it is logged (see ``Peer``)."""
        from .pipeline import Pipeline
        self.path = path
        self.pipeline = pipeline
        # every frame is a peer's, cut out of spans that peer checked: the
        # pipeline only extracts them (the log in front keeps its own ingest)
        self.checked = isinstance(pipeline, Pipeline)
        self.metrics = metrics
        self.acks = acks
        self.server: asyncio.AbstractServer | None = None
        self.open = 0

    async def start(self) -> None:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self.path)
        self.server = await asyncio.get_running_loop().create_unix_server(
            lambda: _InboundConn(self), self.path)

    @staticmethod
    async def _answer(answers: asyncio.Queue, transport) -> None:
        while True:
            a = await answers.get()
            if a is None:
                return
            err = a if isinstance(a, str) else await a
            if transport.is_closing():
                return        # the sender is gone: it retries
            transport.write(b"\x01" if err else b"\x00")

    async def stop(self) -> None:
        if self.server is not None:
            self.server.close()


# ------------------------------------------------------------------ worker process
async def _run_worker(rt: Runtime, i: int, config_path: str | None, parent: int) -> int:
    from .receivers.otlp_grpc import OtlpGrpcReceiver
    from .receivers.otlp_http import OtlpHttpReceiver
    from .server import App
    n = rt.n
    with open(rt.file("config.yaml"), encoding="utf-8") as fh:
        base: Config = loads(fh.read(), "the supervisor's config")
    admin = f"unix:{rt.admin(i)}"
    cfg = share(base, n, i, admin)
    OtlpGrpcReceiver.reuse_port = True
    OtlpHttpReceiver.reuse_port = True
    flags = Flags(rt.file("flags"), n)
    peers: dict[int, Peer] = {}
    inbound: list[Inbound] = []

    async def before_drain(app) -> None:
        # receivers are stopped: deliver what this worker holds for its
        # peers, then wait until every peer did the same, so nothing still
        # on its way here misses the drain
        timeout = app.cfg.service.shutdown_timeout.seconds
        await asyncio.gather(*(p.close(timeout) for p in peers.values()))
        flags.set_done(i)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and not (flags.all_done() and inbound[0].open == 0):
            await asyncio.sleep(0.02)
        await inbound[0].stop()

    def front(pipeline):
        return ShardFront(pipeline, i, n, peers, flags)

    def adjust(new: Config) -> Config:
        return share(new, n, i, admin)

    app = App(cfg, front=front, adjust=adjust, before_drain=before_drain, worker=i)
    # sampler.wal: every worker logs its own shard (dir/worker-i), and a
    # part handed over is acknowledged once its owner logged it
    acks = cfg.sampler.wal is not None
    for j in range(n):
        if j != i:
            peers[j] = Peer(j, rt.fwd(j), app.metrics, acks)
    inb = Inbound(rt.fwd(i), app.intake, app.metrics, acks)
    inbound.append(inb)
    if not acks:
        await inb.start()
    for p in peers.values():
        p.start()
    await app.start()
    if acks:
        # after the log is open and recovered: parts wait in their senders till then
        await inb.start()
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    if config_path:
        loop.add_signal_handler(signal.SIGHUP, app.reload_from, config_path)
    else:
        loop.add_signal_handler(signal.SIGHUP, lambda: log.info("SIGHUP: no config file to reload"))

    async def pressure() -> None:
        from prometheus_client import generate_latest
        buf = app.pipeline.buffer
        last = 0.0
        while not stop.is_set():
            # the log's (sampler.wal: full) too, so every worker pushes back
            flags.set_pressure(i, app.intake.backpressure())
            flags.set_held(i, buf.nspans, buf.ntraces)
            if os.getppid() != parent:
                log.error("supervisor gone: worker %d stops", i)
                stop.set()
            now = time.monotonic()
            if now - last >= SNAPSHOT_INTERVAL:
                # what the supervisor keeps of this worker's counts if it dies
                last = now
                _write(rt.file(f"w{i}.metrics.txt"), generate_latest(app.metrics.registry).decode())
                _write(rt.file(f"w{i}.status.json"), json.dumps(app.status()))
            await asyncio.sleep(STATE_INTERVAL)
    ptask = loop.create_task(pressure())
    # ready (and so /readyz) only once the hand-off reaches every peer: a
    # part for a peer not yet connected makes the receivers push back, so a
    # client's first request would be refused by a serve that said ready
    # (bounded: a peer recovering a long log lets this one start anyway)
    await peers_connected(peers.values(), PEERS_WAIT)
    with open(rt.file(f"w{i}.ready"), "w") as fh:
        fh.write(json.dumps({"pid": os.getpid()}))
    await stop.wait()
    ptask.cancel()
    flags.set_pressure(i, False)
    await app.shutdown()
    tmp = rt.file(f"w{i}.summary.tmp")
    with open(tmp, "w") as fh:
        fh.write(json.dumps(app.summary()))
    os.replace(tmp, rt.file(f"w{i}.summary.json"))
    return 0


def _write(path: str, text: str) -> None:
    tmp = path + ".tmp"
    with open(tmp, "w", encoding="utf-8") as fh:
        fh.write(text)
    os.replace(tmp, path)


def worker_main(argv: list[str]) -> int:
    """``python -m traceo_sampler.workers RUNTIME_DIR INDEX N PARENT_PID [CONFIG]``"""
    from .lifetime import die_with_parent
    die_with_parent()
    rt_dir, i, n, parent = argv[0], int(argv[1]), int(argv[2]), int(argv[3])
    config_path = argv[4] if len(argv) > 4 and argv[4] else None
    logging.basicConfig(level=os.environ.get("TRACEO_SAMPLER_LOG_LEVEL", "INFO"),
                        format=f"%(asctime)s %(levelname)s %(name)s[w{i}]: %(message)s")
    if os.getppid() != parent:
        return 1
    rt = Runtime(rt_dir, n)
    from .config import ConfigError
    try:
        try:
            import uvloop
        except ImportError:
            return asyncio.run(_run_worker(rt, i, config_path, parent))
        return uvloop.run(_run_worker(rt, i, config_path, parent))
    except ConfigError as exc:
        # a receiver port in use: the same field-named line as with one process
        for line in exc.problems:
            print(line, file=sys.stderr, flush=True)
        return 1


# ------------------------------------------------------------------ merging
# gauges that are the same setting in every worker (not a share of a total)
# and counters that count one group-wide event per worker: the maximum
_MAX_SAMPLES = {"traceo_sampler_cost_budget_usd_monthly",
                "traceo_sampler_config_reloads_total",
                # each worker learns its own waits: the group shows the longest
                "traceo_sampler_completion_wait_seconds"}


_LABEL = re.compile(r'([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"')
_UNESC = re.compile(r"\\(.)")
_UNESC_MAP = {"n": "\n", "\\": "\\", '"': '"'}


def _unesc(v: str) -> str:
    return _UNESC.sub(lambda m: _UNESC_MAP.get(m.group(1), "\\" + m.group(1)), v) if "\\" in v else v


def parse_metrics(text: str) -> dict:
    """Prometheus text (as prometheus_client writes it) → {(name, labels
    tuple): value} plus the families' (type, help) by name, as
    prometheus_client's parser gives them; ``_created`` samples are left
    out (per process). A line walk: that parser, character by character, was
    most of the supervisor's CPU (it reads every worker's /metrics for each
    scrape and each history sample)."""
    samples: dict = {}
    families: dict = {}
    helps: dict = {}
    keys: list | None = None
    for line in text.split("\n"):
        if not line:
            continue
        if line[0] == "#":
            parts = line.split(" ", 3)
            if len(parts) < 3:
                continue
            if parts[1] == "HELP":
                helps[parts[2]] = _unesc(parts[3]) if len(parts) > 3 else ""
            elif parts[1] == "TYPE":
                name, typ = parts[2], (parts[3] if len(parts) > 3 else "untyped")
                fam = name[:-6] if typ == "counter" and name.endswith("_total") else name
                if fam.endswith("_created"):
                    keys = None
                else:
                    keys = []
                    families[fam] = (typ, helps.get(name, ""), keys)
            continue
        brace = line.find("{")
        if brace >= 0:
            close = line.rfind("}")
            sname = line[:brace]
            labels = tuple(sorted((k, _unesc(v)) for k, v in _LABEL.findall(line[brace + 1:close])))
            value = line[close + 1:].split()[0]
        else:
            sname, value = line.split()[:2]
            labels = ()
        if keys is None or sname.endswith("_created"):
            continue
        key = (sname, labels)
        samples[key] = samples.get(key, 0.0) + float(value)
        keys.append(key)
    return {"samples": samples, "families": families}


def merge_metrics(parsed: list[dict]) -> tuple[dict, dict]:
    samples: dict = {}
    families: dict = {}
    for p in parsed:
        for name, (typ, doc, keys) in p["families"].items():
            fam = families.setdefault(name, (typ, doc, {}))
            for k in keys:
                fam[2][k] = None
        for key, v in p["samples"].items():
            if key in samples:
                samples[key] = max(samples[key], v) if key[0] in _MAX_SAMPLES else samples[key] + v
            else:
                samples[key] = v
    return samples, families


def _esc(v: str) -> str:
    return v.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def render_metrics(samples: dict, families: dict) -> str:
    from prometheus_client.utils import floatToGoString
    out = []
    for name, (typ, doc, keys) in families.items():
        full = name + "_total" if typ == "counter" and not name.endswith("_total") else name
        out.append(f"# HELP {full} {doc}")
        out.append(f"# TYPE {full} {typ}")
        for key in keys:
            sname, labels = key
            body = ",".join(f'{k}="{_esc(v)}"' for k, v in labels)
            out.append(f"{sname}{{{body}}} {floatToGoString(samples[key])}" if body
                       else f"{sname} {floatToGoString(samples[key])}")
    return "\n".join(out) + "\n"


_MAX_KEYS = {"uptime_s", "clock_behind_s", "usd_per_gib", "queue_max_bytes_each",
             # completion (per worker): the longest wait, the highest lag
             # quantile bound and mean of any worker
             "seconds", "quantile", "mean_s", "p50_le_s", "p99_le_s", "p999_le_s",
             "tail_quantile_s", "gap_quantile_s", "root_wait_s", "idle_timeout_s"}


def _merge(a, b, key: str = ""):
    if a is None:
        return b
    if b is None:
        return a
    if isinstance(a, bool) or isinstance(b, bool):
        return bool(a) and bool(b)
    if isinstance(a, (int, float)) and isinstance(b, (int, float)):
        v = max(a, b) if key in _MAX_KEYS else a + b
        return round(v, 6) if isinstance(v, float) else v
    if isinstance(a, dict) and isinstance(b, dict):
        out = dict(a)
        for k, v in b.items():
            out[k] = _merge(a.get(k), v, k)
        return out
    if isinstance(a, list) and isinstance(b, list):
        return a + b
    return a if a not in ("", None) else b


def merge_status(parts: list[dict], prices: Prices,
                 label: Callable[[str], str] | None = None) -> dict:
    """The workers' /api/status (or summaries) as one. The counts are each
    worker's Account read back and merged (accounting.py: the same object
    and rendering as one process's status); the rest (buffer, exporters,
    completion, consistency) is summed, ratios recomputed from the sums.
    ``label``: the group's service label (telemetry.max_services)."""
    out: dict = {}
    for p in parts:
        rest = {k: v for k, v in p.items() if k not in Account.STATUS_KEYS}
        out = _merge(out, rest) if out else rest
    b = out.get("buffer")
    if b:
        b["occupancy"] = round(b["bytes"] / b["limit_bytes"], 4) if b["limit_bytes"] else 0.0
    account = Account.merged(Account.from_status(p) for p in parts)
    if label is not None:
        account = account.relabel(label)
    out.update(account.status(prices, recent=any("recent_kept" in p for p in parts)))
    return out


# ------------------------------------------------------------------ supervisor
class _Child:
    def __init__(self, index: int):
        self.index = index
        self.proc: subprocess.Popen | None = None
        self.started = 0.0
        self.ready = False
        self.status: dict | None = None     # last /api/status
        self.metrics: dict | None = None    # last parsed /metrics
        self.counters: Counters | None = None   # last /api/counters
        self.failures = 0

    @property
    def process(self) -> subprocess.Popen:
        """Its process (every worker is started by Supervisor.start)."""
        if self.proc is None:
            raise RuntimeError(f"worker {self.index} was never started")
        return self.proc


class Supervisor:
    """The group's process: starts and watches the workers, serves the
    admin endpoint with their merged state, relays signals."""

    def __init__(self, cfg: Config, n: int, config_path: str | None):
        from .telemetry import Metrics
        self.cfg = cfg
        self.n = n
        self.config_path = config_path
        self.metrics = Metrics(cfg.telemetry.max_services, cfg.cost.usd_per_gib)
        self.metrics.workers.set(n)
        self.prices = Prices.of(cfg.cost)
        self.rt = Runtime(tempfile.mkdtemp(prefix="traceo-workers-"), n)
        # the config as the workers read it: the public format, written once
        with open(self.rt.file("config.yaml"), "w", encoding="utf-8") as fh:
            fh.write(dump(cfg))
        self.flags = Flags(self.rt.file("flags"), n, create=True)
        self.children = [_Child(i) for i in range(n)]
        # counters (and status counts) of workers that died: kept in the
        # merged series
        self.retired: list[dict] = []
        self.retired_status: list[dict] = []
        self.retired_counters: list = []
        self.services: set[str] = set()
        self.stopping = False
        self.started = time.time()
        self.lost_spans = 0
        self.lost_traces = 0
        self.restarts = 0
        # the group's history for the /status page's charts (history.py)
        from .history import History
        self.history = History()

    # ------------------------------------------------------------ children
    def _spawn(self, c: _Child) -> None:
        for name in (f"w{c.index}.ready", f"w{c.index}.summary.json", f"w{c.index}.metrics.txt",
                     f"w{c.index}.status.json"):
            with contextlib.suppress(FileNotFoundError):
                os.unlink(self.rt.file(name))
        env = dict(os.environ)
        env["TRACEO_SAMPLER_LOG_LEVEL"] = logging.getLevelName(logging.getLogger().level)
        c.proc = subprocess.Popen(
            [sys.executable, "-m", "traceo_sampler.workers", self.rt.path, str(c.index),
             str(self.n), str(os.getpid()), self.config_path or ""],
            stdin=subprocess.DEVNULL, env=env)
        c.started = time.monotonic()
        c.ready = False
        c.status = None
        c.metrics = None

    async def _get(self, c: _Child, path: str, timeout: float = 5.0) -> tuple[int, str]:
        import aiohttp
        conn = aiohttp.UnixConnector(path=self.rt.admin(c.index))
        async with aiohttp.ClientSession(connector=conn) as s:
            async with s.get(f"http://worker{path}", timeout=aiohttp.ClientTimeout(total=timeout)) as r:
                return r.status, await r.text()

    async def _scrape(self, c: _Child, status: bool = True, metrics: bool = True) -> None:
        """Refresh what is asked of the worker's last state (each costs the
        worker a render and the supervisor a parse: only what is needed)."""
        try:
            st = (await self._get(c, "/api/status"))[1] if status else None
            mt = (await self._get(c, "/metrics"))[1] if metrics else None
        except Exception:  # noqa: BLE001 - not up yet, or dying
            return
        if st is not None:
            c.status = json.loads(st)
        if mt is not None:
            c.metrics = parse_metrics(mt)

    async def start(self, timeout: float = 60.0) -> None:
        for c in self.children:
            self._spawn(c)
        deadline = time.monotonic() + timeout
        while not all(os.path.exists(self.rt.file(f"w{c.index}.ready")) for c in self.children):
            for c in self.children:
                if c.process.poll() is not None:
                    raise RuntimeError(f"worker {c.index} exited with code {c.process.returncode} "
                                       "during startup (its log is above)")
            if time.monotonic() > deadline:
                raise RuntimeError(f"workers not ready within {timeout:.0f} s")
            await asyncio.sleep(0.05)
        for c in self.children:
            c.ready = True

    async def watch(self) -> None:
        """Restart dead workers."""
        while not self.stopping:
            for c in self.children:
                if c.process.poll() is not None and not self.stopping:
                    self._lost(c)
                    await asyncio.sleep(min(5.0, 0.2 * 2 ** min(c.failures, 5)))
                    if self.stopping:
                        break
                    self._spawn(c)
                elif not c.ready and os.path.exists(self.rt.file(f"w{c.index}.ready")):
                    c.ready = True
                    c.failures = 0
                    log.info("worker %d restarted (pid %d)", c.index, c.process.pid)
            await asyncio.sleep(0.1)

    def _lost(self, c: _Child) -> None:
        spans, traces = self.flags.held(c.index)
        self.flags.set_held(c.index, 0, 0)
        try:
            with open(self.rt.file(f"w{c.index}.metrics.txt"), encoding="utf-8") as fh:
                c.metrics = parse_metrics(fh.read())
            with open(self.rt.file(f"w{c.index}.status.json"), encoding="utf-8") as fh:
                c.status = json.load(fh)
        except (OSError, ValueError):
            pass      # died before its first snapshot
        self.lost_spans += spans
        self.lost_traces += traces
        self.restarts += 1
        m = self.metrics
        m.worker_restarts_total.inc()
        m.worker_lost_spans_total.inc(spans)
        m.worker_lost_traces_total.inc(traces)
        if c.metrics is not None:
            # its counters stay in the merged series (gauges go with it)
            keep = {k: v for k, v in c.metrics["samples"].items()
                    if c.metrics["families"].get(_family(k[0]), ("gauge",))[0] != "gauge"}
            self.retired.append({"samples": keep, "families": c.metrics["families"]})
        if c.status is not None:
            st = dict(c.status)
            for k in ("buffer", "throughput", "exporters", "recent_kept", "kafka_receiver",
                      "kafka_router"):
                st.pop(k, None)
            self.retired_status.append(st)
        if c.counters is not None:
            # its last second's figures stay in the group's history (rates never go back)
            self.retired_counters.append(c.counters)
            c.counters = None
        c.failures += 1 if not c.ready else 0
        log.error("worker %d (pid %d) died with code %s; %d buffered spans of %d traces lost; "
                  "restarting", c.index, c.process.pid, c.process.returncode, spans, traces)
        c.ready = False
        c.status = None
        c.metrics = None
        # its peers must not wait for it at a drain
        self.flags.set_pressure(c.index, False)

    def signal_all(self, sig: int) -> None:
        for c in self.children:
            if c.proc is not None and c.proc.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    c.proc.send_signal(sig)

    async def stop(self) -> None:
        self.stopping = True
        self.signal_all(signal.SIGTERM)
        timeout = self.cfg.service.shutdown_timeout.seconds + 30
        deadline = time.monotonic() + timeout
        while any(c.process.poll() is None for c in self.children):
            for c in self.children:
                if c.process.poll() is not None:
                    self.flags.set_done(c.index)   # dead: not waited for
            if time.monotonic() > deadline:
                log.error("workers still running after %.0f s: killed", timeout)
                self.signal_all(signal.SIGKILL)
                break
            await asyncio.sleep(0.05)

    # ------------------------------------------------------------ state
    def summaries(self) -> list[dict]:
        out = []
        for c in self.children:
            try:
                with open(self.rt.file(f"w{c.index}.summary.json")) as fh:
                    out.append(json.load(fh))
            except (OSError, ValueError):
                pass
        return out

    def _group(self, merged: dict) -> dict:
        merged["uptime_s"] = round(time.time() - self.started, 3)
        merged["workers"] = {
            "count": self.n, "restarts": self.restarts,
            "lost_spans": self.lost_spans, "lost_traces": self.lost_traces,
            "alive": [{"index": c.index, "pid": c.proc.pid if c.proc else None,
                       "ready": c.ready, "admin_socket": self.rt.admin(c.index)}
                      for c in self.children]}
        return merged

    async def status(self, with_metrics: bool = False) -> dict:
        await asyncio.gather(*(self._scrape(c, metrics=with_metrics)
                               for c in self.children if c.ready))
        st = self._group(merge_status(
            [c.status for c in self.children if c.status] + self.retired_status,
            self.prices, self._label))
        # each worker's forecast covers its own shard: the group's is its own
        st["forecast"] = self.history.forecast(self.cfg.cost.monthly_budget_usd)
        return st

    async def _fetch_counters(self, c: _Child) -> None:
        from .history import counters_from_json
        try:
            c.counters = counters_from_json(json.loads((await self._get(c, "/api/counters"))[1]))
        except Exception:  # noqa: BLE001 - not up yet, or dying: its last ones stand
            pass

    async def sample_history(self) -> None:
        """One point of the group's history: the sum of every worker's
        counters (history.Counters, a few numbers each: the workers are not
        asked to render /metrics and /api/status every second)."""
        from .history import merge_counters
        await asyncio.gather(*(self._fetch_counters(c) for c in self.children if c.ready))
        live = [c.counters for c in self.children if c.counters is not None]
        if not live:
            return
        merged = merge_counters(live + self.retired_counters, self._label)
        self.history.sample(merged._replace(
            buffer_occupancy=sum(c.buffer_occupancy for c in live) / len(live)))

    async def metrics_text(self) -> str:
        await asyncio.gather(*(self._scrape(c, status=False) for c in self.children if c.ready))
        from prometheus_client import generate_latest
        own = parse_metrics(generate_latest(self.metrics.registry).decode())
        # the supervisor's own: its workers' gauges and its admin endpoint's
        # refused requests and certificate reloads
        mine = ("traceo_sampler_worker", "traceo_sampler_unauthenticated_requests",
                "traceo_sampler_tls_reloads")
        own = {"samples": {k: v for k, v in own["samples"].items()
                           if k[0].startswith(mine)},
               "families": {k: v for k, v in own["families"].items()
                            if k.startswith(mine)}}
        parts = [c.metrics for c in self.children if c.metrics] + self.retired + [own]
        return render_metrics(*self._cap(*merge_metrics(parts)))

    def _label(self, svc: str) -> str:
        """telemetry.max_services for the group: each worker caps its own
        labels, so the union is capped again here, first come first kept."""
        if svc in self.services or svc == "other":
            return svc
        if len(self.services) < self.cfg.telemetry.max_services:
            self.services.add(svc)
            return svc
        return "other"

    def _cap(self, samples: dict, families: dict) -> tuple[dict, dict]:
        out: dict = {}
        fams: dict = {}
        for name, (typ, doc, keys) in families.items():
            nk: dict = {}
            for key in keys:
                sname, labels = key
                if any(k == "service" for k, _ in labels):
                    labels = tuple((k, self._label(v) if k == "service" else v) for k, v in labels)
                k2 = (sname, labels)
                nk[k2] = None
                if k2 in out and sname not in _MAX_SAMPLES:
                    out[k2] += samples[key]
                else:
                    out[k2] = samples[key]
            fams[name] = (typ, doc, nk)
        return out, fams

    async def ready(self) -> tuple[bool, str]:
        if self.stopping:
            return False, "draining"
        for c in self.children:
            if not c.ready:
                return False, f"worker {c.index} not running"
            try:
                code, text = await self._get(c, "/readyz", 2.0)
            except Exception as exc:  # noqa: BLE001
                return False, f"worker {c.index}: {exc}"
            if code != 200:
                return False, f"worker {c.index}: {text.strip()}"
        return True, ""

    def watch_config(self) -> asyncio.Task | None:
        if not self.config_path:
            return None
        path = self.config_path

        def stamp():
            try:
                st = os.stat(path)
                return (st.st_mtime_ns, st.st_size)
            except OSError:
                return None

        async def loop():
            last = stamp()
            while not self.stopping:
                await asyncio.sleep(1.0)
                cur = stamp()
                if cur is not None and cur != last:
                    last = cur
                    self.reload()
        return asyncio.get_running_loop().create_task(loop())

    def reload(self) -> None:
        """SIGHUP or a changed file: checked here once (its problems logged
        once), then every worker reloads it."""
        try:
            load(self.config_path)
        except ConfigError as exc:
            for p in exc.problems:
                log.error("config reload rejected, keeping the running config: %s", p)
        self.signal_all(signal.SIGHUP)

    def cleanup(self) -> None:
        import shutil
        shutil.rmtree(self.rt.path, ignore_errors=True)


def _family(sample: str) -> str:
    for suf in ("_total", "_bucket", "_count", "_sum"):
        if sample.endswith(suf):
            return sample[: -len(suf)]
    return sample


class GroupAdmin:
    """The supervisor's admin endpoint: the routes of admin.Admin over the
    merged state of every worker."""

    def __init__(self, endpoint: str, sup: Supervisor, tls=None, auth=None):
        from .admin import Admin
        from .receivers.gate import Gate
        from .receivers.security import BearerTokens
        gate = None
        if auth is not None:
            gate = Gate("admin", sup.metrics, BearerTokens(auth), None,
                        frozenset(("/healthz", "/readyz")))
        self.admin = Admin(endpoint, sup, tls=tls, gate=gate)
        self.sup = sup
        self._sampler: asyncio.Task | None = None

    async def start(self) -> None:
        from aiohttp import web
        from prometheus_client import CONTENT_TYPE_LATEST
        sup = self.sup

        async def metrics(request):
            return web.Response(body=(await sup.metrics_text()).encode(),
                                headers={"Content-Type": CONTENT_TYPE_LATEST})

        async def readyz(request):
            ok, why = await sup.ready()
            return web.Response(status=200 if ok else 503, text=("ready" if ok else why) + "\n")

        async def api_status(request):
            return web.Response(text=json.dumps(await sup.status(), indent=1),
                                content_type="application/json")
        await self.admin.start(overrides={"/metrics": metrics, "/readyz": readyz,
                                          "/api/status": api_status})

        async def sample():
            while True:
                try:
                    await sup.sample_history()
                except Exception:  # noqa: BLE001 - the charts must not stop the group
                    log.exception("history sample failed")
                await asyncio.sleep(1.0)
        self._sampler = asyncio.get_running_loop().create_task(sample())

    async def stop(self) -> None:
        if self._sampler is not None:
            self._sampler.cancel()
        await self.admin.stop()


async def _supervise(cfg: Config, n: int, ready_file: str | None, config_path: str | None) -> int:
    sup = Supervisor(cfg, n, config_path)
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    loop.add_signal_handler(signal.SIGHUP, sup.reload if config_path else lambda: None)
    admin = None
    try:
        try:
            await sup.start()
        except RuntimeError as exc:
            log.error("%s", exc)
            sup.stopping = True
            sup.signal_all(signal.SIGKILL)
            return 1
        if cfg.admin is not None:
            admin = GroupAdmin(cfg.admin.endpoint, sup, cfg.admin.tls, cfg.admin.auth)
            try:
                await admin.start()
            except OSError as exc:
                from .preflight import listen_error
                for line in listen_error("admin", cfg.admin.endpoint, exc).problems:
                    print(line, file=sys.stderr, flush=True)
                admin = None
                sup.stopping = True
                sup.signal_all(signal.SIGKILL)
                return 1
        watcher = loop.create_task(sup.watch())
        cfg_watch = sup.watch_config()
        log.info("traceo-sampler serving with %d workers; Ctrl-C or SIGTERM drains and exits", n)
        if ready_file:
            port = None
            r = cfg.receivers
            if r.otlp is not None and r.otlp.grpc is not None:
                port = int(r.otlp.grpc.endpoint.rpartition(":")[2])
            with open(ready_file, "w") as fh:
                fh.write(json.dumps({"grpc_port": port}))
        await stop.wait()
        log.info("draining %d workers", n)
        sup.stopping = True
        watcher.cancel()
        if cfg_watch is not None:
            cfg_watch.cancel()
        await sup.stop()
        summary = sup._group(merge_status(sup.summaries() + sup.retired_status, sup.prices,
                                          sup._label))
        print(json.dumps({"summary": summary}), file=sys.stderr, flush=True)
        bad = [c.index for c in sup.children if c.process.returncode not in (0, None)]
        return 1 if bad else 0
    finally:
        if admin is not None:
            await admin.stop()
        sup.cleanup()


def supervise(cfg: Config, n: int, ready_file: str | None = None,
              config_path: str | None = None) -> int:
    try:
        cfg = _fixed_ports(cfg)
    except OSError as exc:
        print(exc, file=sys.stderr)
        return 1
    try:
        import uvloop
    except ImportError:
        return asyncio.run(_supervise(cfg, n, ready_file, config_path))
    return uvloop.run(_supervise(cfg, n, ready_file, config_path))


def _fixed_ports(cfg: Config) -> Config:
    """Port 0 (any free port) must be the same one for every worker: it is
    chosen here, once. A port already taken is refused here: the workers
    bind with SO_REUSEPORT, which would otherwise let them join another
    process's listeners (another serve of the same user) silently."""
    import socket
    r = cfg.receivers
    if r.otlp is None:
        return cfg
    repl = {}
    for name in ("grpc", "http"):
        ep = getattr(r.otlp, name)
        if ep is None:
            continue
        host, _, port = ep.endpoint.rpartition(":")
        addr = host.split("://")[-1].strip("[]") or "0.0.0.0"
        fam = socket.AF_INET6 if ":" in addr else socket.AF_INET
        with socket.socket(fam, socket.SOCK_STREAM) as s:
            # as the listeners themselves: closed connections in TIME_WAIT do
            # not count, a listening socket does
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                s.bind((addr, int(port)))
            except OSError as exc:
                raise OSError(f"receivers.otlp.{name}.endpoint: cannot listen on "
                              f"{ep.endpoint}: {exc.strerror}") from None
            if port == "0":
                repl[name] = msgspec.structs.replace(ep, endpoint=f"{host}:{s.getsockname()[1]}")
    if not repl:
        return cfg
    otlp = msgspec.structs.replace(r.otlp, **repl)
    return msgspec.structs.replace(cfg, receivers=msgspec.structs.replace(r, otlp=otlp))


if __name__ == "__main__":
    sys.exit(worker_main(sys.argv[1:]))
