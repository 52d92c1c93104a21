"""Kafka consumer-group ingest (``receivers.kafka``, docs/design.md §5).

Reads ``otlp_proto`` messages (one ``ExportTraceServiceRequest`` each, as the
router mode or the Collector's kafkaexporter write them) and feeds the same
pipeline as the OTLP receivers.

At-least-once: offsets are committed per partition only up to the lowest
offset holding a span that is still undecided, or decided kept and not yet
acknowledged by every exporter. The ``OffsetTracker`` keeps, per trace ID,
the (partition, offset) references of the messages that brought its spans;
the pipeline tells it when a trace is decided not kept (``done``) and hands
it the trace IDs of every kept item (``take``: the references then wait for
the item's ack). A message whose trace IDs are all settled right away (late
spans of a dropped trace, an invalid message) is done at once.

Rebalance: when partitions are revoked, the traces still undecided that came
from them are discarded from the buffer without a decision (nothing is
remembered), their offsets stay uncommitted, so the new owner re-reads them
whole; exports of traces already decided are flushed before the commit.
Stopping (SIGTERM) does the same for every assigned partition.
"""
from __future__ import annotations

import asyncio
import base64
import logging
import math
import time
from typing import Any

from ..holds import Ledger, OffsetTracker
from ..kafka_security import KafkaRefused, aiokafka_options, connect_error, describe
from ..scan import SPAN_LENGTH, SPAN_TRACE_ID, scan
from ..shard import KEY_RAW, split

log = logging.getLogger("traceo_sampler.receivers")


class _Part(Ledger):
    """Offsets of one assigned partition (a ``holds.Ledger`` whose
    positions are offsets)."""

    __slots__ = ("tp", "label", "committed", "replay_to", "replay")

    def __init__(self, tp):
        super().__init__()
        self.tp = tp
        self.label = (tp.topic, str(tp.partition))
        self.committed = -1
        # inherited from the previous owner's commit (see ``handoff``): below
        # ``replay_to`` only spans of traces in ``replay`` are read again
        self.replay_to = -1
        self.replay = _EMPTY

    def handoff(self, max_bytes: int = 0) -> str:
        """Commit metadata: the offset this owner read up to and the
        fingerprints of every trace still holding an offset here
        (undecided, or kept and not acknowledged). Between the commit and
        that offset, the next owner reads again only those traces: the
        others were decided here and their spans past the commit point
        must not start a partial trace there. '' when it does not fit the
        broker's metadata limit (then everything is read again).

        The exact form lists 4-byte fingerprints; when that does not fit, a
        Bloom filter filling the limit is used if its false-positive rate
        stays under 1 % (a false positive lets a decided trace's re-read
        part be buffered again, as without a handoff)."""
        if self.next is None:
            return ""
        limit = max_bytes or MAX_METADATA
        tids = list(self.tids)
        head = f"{HANDOFF}{self.next}:"
        fps = b"".join(_fp(t) for t in tids)
        text = head + base64.b64encode(fps).decode()
        if len(text) <= limit:
            return text
        nbytes = (limit - len(head) - 8) * 3 // 4
        m = nbytes * 8
        n = len(tids)
        k = max(1, min(8, round(m / n * math.log(2))))
        if (1 - math.exp(-k * n / m)) ** k > 0.01:
            return ""
        bits = bytearray(nbytes)
        for t in tids:
            for pos in _Bloom.positions(t, k, m):
                bits[pos >> 3] |= 1 << (pos & 7)
        return f"{head}b{k}:{base64.b64encode(bytes(bits)).decode()}"

HANDOFF = "traceo1:"
MAX_BEHIND = 300.0           # seconds the LagClock may lag the wall clock
MAX_METADATA = 3900          # broker default offset.metadata.max.bytes is 4096


def _fp(tid: bytes) -> bytes:
    return tid[:4]


class _Exact:
    __slots__ = ("fps",)

    def __init__(self, fps: frozenset):
        self.fps = fps

    def __contains__(self, tid: bytes) -> bool:
        return tid[:4] in self.fps

    def __len__(self) -> int:
        return len(self.fps)


_EMPTY = _Exact(frozenset())


class _Bloom:
    __slots__ = ("bits", "k", "m")

    def __init__(self, bits: bytes, k: int):
        self.bits = bits
        self.k = k
        self.m = len(bits) * 8

    @staticmethod
    def positions(tid: bytes, k: int, m: int):
        t = tid.ljust(16, b"\0")
        h1 = int.from_bytes(t[:8], "little")
        h2 = int.from_bytes(t[8:16], "little") | 1
        return [(h1 + i * h2) % m for i in range(k)]

    def __contains__(self, tid: bytes) -> bool:
        b = self.bits
        return all(b[p >> 3] >> (p & 7) & 1 for p in self.positions(tid, self.k, self.m))

    def __len__(self) -> int:
        return -1     # unknown


def parse_handoff(meta: str | None):
    """(offset read up to, membership of the traces to read again), or
    (-1, empty) when there is no usable handoff."""
    if not meta or not meta.startswith(HANDOFF):
        return -1, _EMPTY
    try:
        r, b = meta[len(HANDOFF):].split(":", 1)
        if b.startswith("b"):
            k, b = b[1:].split(":", 1)
            bits = base64.b64decode(b, validate=True)
            if not bits or not 1 <= int(k) <= 16:
                return -1, _EMPTY
            return int(r), _Bloom(bits, int(k))
        raw = base64.b64decode(b, validate=True)
        return int(r), _Exact(frozenset(raw[i:i + 4] for i in range(0, len(raw), 4)))
    except (ValueError, TypeError):
        return -1, _EMPTY


class _Subset:
    """Scan-shaped subset of a message's spans."""

    __slots__ = ("groups", "spans", "rejected", "errors", "reasons", "span_bytes")

    def __init__(self, groups, spans):
        self.groups = groups
        self.spans = spans
        self.rejected = 0
        self.errors: list[str] = []
        self.reasons: list[str] = []
        self.span_bytes = sum(sp[SPAN_LENGTH] for sp in spans)


class LagClock:
    """The pipeline's clock while it reads Kafka: monotonic time held back by
    how far the consumer is behind (now minus the timestamp of the last
    record read, on the partition furthest behind), never going backwards.

    A consumer catching up a backlog (after a rebalance, a restart, a slow
    spell) reads in a second spans that arrived over minutes; on the wall
    clock the idle and root timers would fire between two messages of one
    trace and decide it on part of its spans. On this clock, time passes for
    the buffer as it passed for the records: the timers of docs/design.md §2 hold
    in record time. Memory pressure still decides early when the backlog
    does not fit."""

    def __init__(self):
        self.behind: dict = {}      # tp → seconds behind
        self._last = 0.0

    def __call__(self) -> float:
        v = time.monotonic() - max(self.behind.values(), default=0.0)
        if v < self._last:
            return self._last
        self._last = v
        return v


class KafkaReceiver:
    name = "kafka"

    def __init__(self, cfg, pipeline, metrics, flush_timeout: float = 30.0, *,
                 clock: "LagClock", tracker: OffsetTracker, limiter=None):
        """``clock`` and ``tracker``: the ones the pipeline was built with
        (server.App), so its timers and policies run on the lag clock and
        every decision reaches the offsets. ``limiter``: the process memory
        limiter (receivers/limiter.py), whose pushing back pauses fetching
        as a full exporter queue does."""
        self.cfg = cfg
        self.limiter = limiter
        self.paused = False
        self.pipeline = pipeline
        self.metrics = metrics
        self.flush_timeout = flush_timeout
        self.tracker = tracker
        self.clock = clock
        self.parts: dict = {}
        self.consumer: Any = None   # an AIOKafkaConsumer once started (aiokafka is untyped)
        self._task: asyncio.Task | None = None
        self._stopping = False
        self._lock = asyncio.Lock()
        self.messages = 0
        self.invalid = 0
        self.discarded = 0
        # why the last attempt to connect failed ('' before one did and once one
        # succeeded): /readyz says it
        self.last_error = ""

    # ------------------------------------------------------------ lifecycle
    async def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._run(), name="kafka-receiver")

    async def _connect(self):
        from aiokafka import AIOKafkaConsumer
        from aiokafka.abc import ConsumerRebalanceListener
        c = self.cfg
        recv = self

        class Listener(ConsumerRebalanceListener):
            async def on_partitions_revoked(self, revoked):
                await recv._revoke(list(revoked))

            async def on_partitions_assigned(self, assigned):
                recv._assign(list(assigned))
                await recv._inherit(list(assigned))

        security = aiokafka_options(c)
        delay = 1.0
        while not self._stopping:
            consumer = AIOKafkaConsumer(
                bootstrap_servers=",".join(c.brokers), group_id=c.group_id,
                enable_auto_commit=False, auto_offset_reset=c.initial_offset,
                session_timeout_ms=int(c.session_timeout.seconds * 1000),
                heartbeat_interval_ms=max(100, int(c.session_timeout.seconds * 1000) // 4),
                max_partition_fetch_bytes=4 << 20, fetch_max_bytes=16 << 20, **security)
            consumer.subscribe([c.topic], listener=Listener())
            self.consumer = consumer
            try:
                await consumer.start()
            except Exception as exc:  # noqa: BLE001 - broker not there yet
                try:
                    await consumer.stop()
                except Exception:  # noqa: BLE001
                    pass
                # aiokafka only says it could not bootstrap; the cause (a
                # refused password, an untrusted certificate) is found by
                # connecting once more, for the log and /readyz
                err = await connect_error(c, exc)
                self.last_error = why = str(err)
                log.warning("kafka receiver: cannot connect to %s (%s): %s; retrying in %.0f s",
                            ",".join(c.brokers), describe(c), why, delay)
                await asyncio.sleep(delay)
                # refused (credentials, TLS): back off, the brokers log every attempt;
                # not there yet: every second, as ever
                delay = min(10.0, delay * 2) if isinstance(err, KafkaRefused) else 1.0
                continue
            self.last_error = ""
            log.info("kafka receiver: group %s consuming topic %s (%s)", c.group_id, c.topic,
                     describe(c))
            return consumer
        return None

    async def _run(self) -> None:
        self.consumer = consumer = await self._connect()
        if consumer is None:
            return
        p = self.pipeline
        last_commit = time.monotonic()
        interval = self.cfg.commit_interval.seconds
        while not self._stopping:
            if p.backpressure() or (self.limiter is not None and self.limiter.over()):
                self._pause(consumer)
                await asyncio.sleep(0.1)
                # kept traces acked meanwhile release their offsets
                now = time.monotonic()
                if now - last_commit >= interval:
                    last_commit = now
                    await self._commit()
                continue
            if self.paused:
                self._resume(consumer)
            try:
                batches = await consumer.getmany(timeout_ms=200, max_records=2000)
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # noqa: BLE001 - keep consuming
                log.warning("kafka receiver: fetch failed: %s", exc)
                await asyncio.sleep(0.5)
                continue
            if self._stopping:
                break   # not ingested: re-read by the next owner
            for tp, msgs in batches.items():
                part = self.parts.get(tp)
                if part is None:
                    continue    # revoked meanwhile: the new owner reads them
                for msg in msgs:
                    self._handle(part, msg)
                if msgs:
                    hw = consumer.highwater(tp)
                    ts = msgs[-1].timestamp
                    if hw is not None and hw > part.next and ts and ts > 0:
                        # capped: a producer's clock far off must not stop time
                        self.clock.behind[tp] = min(MAX_BEHIND,
                                                    max(0.0, time.time() - ts / 1000.0))
                    else:
                        self.clock.behind.pop(tp, None)
            self._lag()
            now = time.monotonic()
            if now - last_commit >= interval:
                last_commit = now
                await self._commit()
            if not batches:
                await asyncio.sleep(0)

    def _pause(self, consumer) -> None:
        """Stop fetching, not only reading: the consumer's prefetch would
        otherwise go on filling memory. Asked again each round, so that
        partitions assigned meanwhile are paused too."""
        tps = consumer.assignment()
        if tps:
            consumer.pause(*tps)
        if not self.paused:
            self.paused = True
            self.metrics.kafka_fetch_paused.set(1)
            log.warning("kafka receiver: fetching paused (%s)",
                        "an exporter queue is full" if self.pipeline.backpressure()
                        else "process memory above service.memory_limit_mib")

    def _resume(self, consumer) -> None:
        tps = consumer.assignment()
        if tps:
            consumer.resume(*tps)
        self.paused = False
        self.metrics.kafka_fetch_paused.set(0)
        log.info("kafka receiver: fetching resumed")

    def _handle(self, part: _Part, msg) -> None:
        p = self.pipeline
        m = self.metrics
        off = msg.offset
        part.next = off + 1
        self.messages += 1
        data = msg.value
        replayed = off < part.replay_to
        sc = None
        try:
            if not data:
                raise ValueError("empty message")
            if replayed:
                sc = scan(data, p.attr_keys)
            else:
                # only the trace IDs, by the splitter's light walk (the
                # scanner's checks, no per-span tuple); the spans then go
                # through the buffer's fused ingest
                ids = split(data, 1, p.attr_keys, KEY_RAW, True).trace_ids
                assert ids is not None   # with_trace_ids=True
                tids = ids[0]
        except ValueError as exc:
            self.invalid += 1
            m.kafka_messages_total.labels("invalid").inc()
            m.invalid_requests_total.labels(self.name).inc()
            log.warning("kafka receiver: %s[%d] offset %d is not an ExportTraceServiceRequest "
                        "(skipped): %s", part.tp.topic, part.tp.partition, off, exc)
            return
        if replayed:
            # read before by the previous owner: only the traces it left
            # undecided (or unacknowledged) are read again; what it had
            # exported but not seen acknowledged may leave twice
            keep = part.replay
            assert sc is not None    # scanned above when replayed
            spans = [sp for sp in sc.spans if sp[SPAN_TRACE_ID] in keep]
            if len(spans) != len(sc.spans):
                m.kafka_messages_total.labels("replay_skipped").inc()
                if not spans:
                    return
                sc = _Subset(sc.groups, spans)
            tids = {sp[SPAN_TRACE_ID] for sp in sc.spans}
        self.tracker.hold(part, off, tids)
        try:
            res = p.ingest(data, sc)
        except Exception:  # noqa: BLE001 - one message must not stop the group
            log.exception("kafka receiver: ingest of %s[%d] offset %d failed",
                          part.tp.topic, part.tp.partition, off)
            m.kafka_messages_total.labels("invalid").inc()
            for tid in tids:
                self.tracker.done(tid)
            return
        m.kafka_messages_total.labels(
            "partial" if res.rejected else "replayed" if replayed else "ok").inc()
        self.tracker.settle(tids, p.holds)

    def status(self) -> dict:
        c = self.consumer
        parts = {}
        for tp, part in sorted(self.parts.items(), key=lambda kv: (kv[0].topic, kv[0].partition)):
            hw = c.highwater(tp) if c is not None else None
            parts[f"{tp.topic}/{tp.partition}"] = {
                "next_offset": part.next, "committed": part.committed,
                "lag": (hw - part.next) if hw is not None and part.next is not None else None,
                "uncommitted_messages": len(part.outstanding),
                "replay_to": part.replay_to if part.replay_to >= 0 else None}
        return {"topic": self.cfg.topic, "group_id": self.cfg.group_id,
                "messages": self.messages, "invalid_messages": self.invalid,
                "discarded_on_revoke": self.discarded, "partitions": parts,
                "clock_behind_s": round(max(self.clock.behind.values(), default=0.0), 3)}

    def _lag(self) -> None:
        c = self.consumer
        m = self.metrics
        for tp, part in self.parts.items():
            hw = c.highwater(tp)
            if hw is not None and part.next is not None:
                m.kafka_consumer_lag.labels(*part.label).set(max(0, hw - part.next))
            m.kafka_uncommitted_messages.labels(*part.label).set(len(part.outstanding))

    async def _commit(self, parts=None, final: bool = False) -> None:
        offsets = {}
        for part in (parts if parts is not None else list(self.parts.values())):
            cp = part.commit_point()
            if cp is not None and (cp > part.committed or final):
                offsets[part.tp] = (cp, part.handoff(self.cfg.handoff_max_bytes))
        if not offsets or self.consumer is None:
            return
        try:
            await self.consumer.commit(offsets)
        except Exception as exc:  # noqa: BLE001 - the next commit catches up
            self.metrics.kafka_commits_total.labels("failed").inc()
            log.warning("kafka receiver: commit failed (retried later): %s", exc)
            return
        self.metrics.kafka_commits_total.labels("ok").inc()
        for part in (parts if parts is not None else list(self.parts.values())):
            if part.tp in offsets:
                part.committed = offsets[part.tp][0]

    # ------------------------------------------------------------ rebalance
    def _assign(self, tps) -> None:
        for tp in tps:
            if tp not in self.parts:
                self.parts[tp] = _Part(tp)
        self.metrics.kafka_rebalances_total.labels("assigned").inc(len(tps))
        log.info("kafka receiver: assigned %s", sorted(tp.partition for tp in tps))

    async def _inherit(self, tps) -> None:
        """Read the previous owner's handoff from the committed offsets'
        metadata (aiokafka exposes it only on the coordinator)."""
        coord = getattr(self.consumer, "_coordinator", None)
        if coord is None or not tps:
            return
        try:
            committed = await coord.fetch_committed_offsets(set(tps))
        except Exception as exc:  # noqa: BLE001 - then everything is read again
            log.warning("kafka receiver: cannot read the committed metadata: %s", exc)
            return
        for tp, om in committed.items():
            part = self.parts.get(tp)
            if part is None or om is None:
                continue
            r, fps = parse_handoff(getattr(om, "metadata", ""))
            if r > om.offset:
                part.replay_to, part.replay = r, fps
                log.info("kafka receiver: %s[%d] offsets %d..%d were read by the previous "
                         "owner: only its %s undecided traces are read again", tp.topic,
                         tp.partition, om.offset, r,
                         len(fps) if len(fps) >= 0 else "(Bloom filter of)")

    async def _revoke(self, tps) -> None:
        async with self._lock:
            parts = [self.parts.pop(tp) for tp in tps if tp in self.parts]
            if not parts:
                return
            for part in parts:
                self.clock.behind.pop(part.tp, None)
            # from now on records of these partitions are not ingested (a
            # fetch returning while this waits below): the new owner reads them
            gone = set(parts)
            p = self.pipeline
            holds = self.tracker.holds
            forget = []
            for tid, refs in list(holds.items()):
                if any(r[0] in gone for r in refs):
                    forget.append(tid)
                    # the references stay counted: the commit stops below them
                    del holds[tid]
                    OffsetTracker.release([r for r in refs if r[0] not in gone])
            discarded = p.discard(forget)
            self.discarded += discarded
            self.metrics.kafka_discarded_traces_total.inc(discarded)
            # kept traces already decided: their exports are acknowledged
            # (releasing their offsets) before the commit
            await p.flush_exports(self.flush_timeout)
            await self._commit(parts, final=True)
            for part in parts:
                part.dead = True
                self.metrics.kafka_consumer_lag.labels(*part.label).set(0)
                self.metrics.kafka_uncommitted_messages.labels(*part.label).set(0)
            self.metrics.kafka_rebalances_total.labels("revoked").inc(len(parts))
            log.info("kafka receiver: revoked %s; %d undecided traces left for the new owner",
                     sorted(part.tp.partition for part in parts), discarded)

    async def stop(self, grace: float = 2.0) -> None:
        self._stopping = True
        if self._task is not None:
            try:
                await asyncio.wait_for(asyncio.shield(self._task), 2.0 + grace)
            except (asyncio.TimeoutError, Exception):  # noqa: BLE001
                self._task.cancel()
                try:
                    await self._task
                except (asyncio.CancelledError, Exception):  # noqa: BLE001
                    pass
        if self.consumer is not None:
            await self._revoke(list(self.parts))
            try:
                await self.consumer.stop()
            except Exception as exc:  # noqa: BLE001
                log.warning("kafka receiver: stop: %s", exc)
