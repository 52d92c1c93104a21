"""Sidecar mode: keep decisions shared between sidecars over a Kafka topic
(``sampler.shared_decisions``, README "Sidecar mode").

A sidecar sees only its pod's spans. Each one decides its part of a trace
with the usual policies; a keep for a reason other than a consistent
probability (an error, latency, attributes, OTTL…) is published on the
decisions topic as the trace ID and the policy name. Every sidecar reads the
whole topic (its own consumer, no group: every sidecar must see every
decision) and keeps its part of any trace another one kept: the part it
holds now, and the spans still to come (they follow the decision cache).

A local "not sampled" is held ``hold`` longer (bounded by ``hold_max_mib``)
and becomes final only if no keep arrived meanwhile. Consistent probability
keeps are not published: every sidecar compares the same randomness with
the same threshold and keeps the same traces without talking.

Latency needs no special case: a sidecar's part spans at most the whole
trace, so a local latency keep is a true one, and the root's sidecar sees the
root span (usually the whole duration) and publishes the keep the others
cannot make.

The broker being unreachable never blocks a receiver or the pipeline: the
pipeline only appends to a list; a task publishes. While the broker is down
every decision is local again (nothing held, nothing published), counted
in ``shared_decisions_fallback_traces_total``; the first successful publish
(a heartbeat at the latest) ends the fallback.

Message value (one per batch, ``flush_interval`` apart at most):
``version:u8 sender:8B sent_ms:u64le nreasons:u8 (len:u8 name)* (trace_id:16B reason:u8)*``
— 17 bytes per trace plus one header per batch.
"""
from __future__ import annotations

import asyncio
import collections
import logging
import os
import struct
import time

from .decider import Decision
from .kafka_security import aiokafka_options, connect_error

log = logging.getLogger("traceo_sampler")

VERSION = 1
_HDR = struct.Struct("<B8sQ")
# policy types every sidecar evaluates the same way on its own part
CONSISTENT_TYPES = frozenset({"probabilistic", "always_sample"})
MAX_REASONS = 255


def encode(sender: bytes, sent_ms: int, items: list[tuple[bytes, str]]) -> bytes:
    """One message of (trace ID, reason) pairs (at most 255 distinct reasons)."""
    idx: dict[str, int] = {}
    body = bytearray()
    for tid, reason in items:
        i = idx.get(reason)
        if i is None:
            i = idx[reason] = len(idx)
        body += tid
        body.append(i)
    head = bytearray(_HDR.pack(VERSION, sender, sent_ms))
    head.append(len(idx))
    for reason in idx:
        r = reason.encode()[:255]
        head.append(len(r))
        head += r
    return bytes(head + body)


def decode(data: bytes) -> tuple[bytes, int, list[tuple[bytes, str]]]:
    """(sender, sent_ms, [(trace ID, reason)]); ValueError when malformed."""
    if len(data) < _HDR.size + 1:
        raise ValueError("decisions message too short")
    version, sender, sent_ms = _HDR.unpack_from(data)
    if version != VERSION:
        raise ValueError(f"decisions message version {version}, expected {VERSION}")
    pos = _HDR.size
    n = data[pos]
    pos += 1
    reasons = []
    for _ in range(n):
        if pos >= len(data):
            raise ValueError("decisions message truncated in its reasons")
        ln = data[pos]
        reasons.append(data[pos + 1:pos + 1 + ln].decode("utf-8", "replace"))
        pos += 1 + ln
    rest = len(data) - pos
    if rest % 17:
        raise ValueError("decisions message truncated in its records")
    out = []
    for off in range(pos, len(data), 17):
        i = data[off + 16]
        if i >= n:
            raise ValueError("decisions message names an unknown reason")
        out.append((bytes(data[off:off + 16]), reasons[i]))
    return sender, sent_ms, out


class SharedDecisions:
    """The pipeline's seam (pipeline.py): ``review`` each fresh decision,
    ``settled`` for a held trace coming back, ``due`` on every tick."""

    def __init__(self, cfg, metrics, buffer, policy_cfgs, clock=time.monotonic):
        """``cfg``: config.SharedDecisions; ``buffer``: the pipeline's trace
        buffer, whose decision cache a remote keep is written to
        (``remember``/``cached``) so later spans follow it."""
        self.cfg = cfg
        self.m = metrics
        self._remember = buffer.remember
        self._cached = buffer.cached
        self.clock = clock
        self.consistent = frozenset(c.name for c in policy_cfgs if c.type in CONSISTENT_TYPES)
        self.sender = os.urandom(8)
        self.hold = cfg.hold.seconds
        self.hold_max = cfg.hold_max_mib << 20
        # trace ID → [(trace, trigger)] held after a local not-sampled
        self._held: dict[bytes, list] = {}
        self._expiry: collections.deque = collections.deque()   # (deadline, trace ID, entry)
        self.held_bytes = 0
        self.held_count = 0
        # per-trace counts, moved to the metrics once per tick (_gauges):
        # prometheus-client's labels()/inc() cost more than a review
        self._n_remote = self._n_published = self._n_fallback = 0
        self._n_held: dict[str, int] = {}     # outcome → held traces released
        self._ready: list = []            # held traces another sidecar kept
        self._settled: dict[int, Decision] = {}   # id(trace) → its final decision
        # trace ID → reason, of keeps heard from others (bounded, oldest out)
        self._remote: dict[bytes, str] = {}
        self._pending: list[tuple[bytes, str]] = []
        self.up = False
        self._why = ""     # the last reason the broker was unreachable
        self.closing = False
        self.published = 0
        self.messages_out = 0
        self.bytes_out = 0
        self._tasks: list[asyncio.Task] = []
        self._producer = None
        self._consumer = None
        self._wake = asyncio.Event()
        self._last_offset: dict = {}
        metrics.shared_decisions_broker_up.set(0)

    # ------------------------------------------------------------ the seam
    def review(self, t, dec: Decision, now: float, trigger: str = "") -> Decision | None:
        """The final decision for a freshly decided trace, or None: held."""
        tid = t.trace_id
        reason = self._remote.get(tid)
        if reason is not None:
            self._n_remote += 1
            return Decision(True, reason, 0)
        if dec.sampled:
            if dec.policy not in self.consistent:
                if self.up:
                    self._pending.append((tid, dec.policy))
                    if len(self._pending) >= self.cfg.batch_max:
                        self._wake.set()
                    self._n_published += 1
                else:
                    self._n_fallback += 1
            return dec
        if self.closing:
            return dec
        if not self.up:
            self._n_fallback += 1
            return dec
        size = t.nbytes
        while self._expiry and self.held_bytes + size > self.hold_max:
            self._release_oldest("evicted")
        entry = [t, dec, trigger]
        self._held.setdefault(tid, []).append(entry)
        self._expiry.append((now + self.hold, tid, entry))
        self.held_bytes += size
        self.held_count += 1
        return None

    def settled(self, t) -> Decision | None:
        """The decision of a held trace coming back through ``due``."""
        if not self._settled:
            return None
        return self._settled.pop(id(t), None)

    def fresh(self, items: list) -> list:
        """The items of a decision round that are not held traces coming back."""
        settled = self._settled
        if not settled:
            return items
        return [it for it in items if id(it[0]) not in settled]

    def due(self, now: float) -> list:
        """Held traces whose fate is known: kept by another sidecar, or
        their hold passed with no keep from anyone."""
        out = self._ready
        self._ready = []
        exp = self._expiry
        while exp and exp[0][0] <= now:
            self._release_oldest("expired", out)
        self.gauges()
        return out

    def drain(self) -> list:
        """Shutdown: nothing is held any longer, every held trace is final."""
        self.closing = True
        out = self._ready
        self._ready = []
        while self._expiry:
            self._release_oldest("expired", out)
        self.gauges()
        return out

    def _release_oldest(self, outcome: str, out: list | None = None) -> None:
        _d, tid, entry = self._expiry.popleft()
        lst = self._held.get(tid)
        if lst is None or entry not in lst:
            return      # already kept by a remote decision
        lst.remove(entry)
        if not lst:
            del self._held[tid]
        t, dec, trigger = entry
        self.held_bytes -= t.nbytes
        self.held_count -= 1
        self._n_held[outcome] = self._n_held.get(outcome, 0) + 1
        self._settled[id(t)] = dec
        (out if out is not None else self._ready).append((t, trigger))

    def on_keep(self, tid: bytes, reason: str) -> str:
        """Another sidecar kept this trace; returns what it meant here."""
        remote = self._remote
        if tid in remote:
            return "duplicate"
        remote[tid] = reason
        if len(remote) > self.cfg.cache:
            del remote[next(iter(remote))]
        lst = self._held.pop(tid, None)
        if lst:
            keep = Decision(True, reason, 0)
            self.held_count -= len(lst)
            for t, _dec, trigger in lst:
                self.held_bytes -= t.nbytes
                self._settled[id(t)] = keep
                self._ready.append((t, trigger))
            self.m.shared_decisions_held_total.labels("kept_remote").inc(len(lst))
            outcome = "held"
        elif self._cached(tid) is False:
            outcome = "too_late"     # decided not sampled here already: partial
        else:
            outcome = "ahead"        # buffered undecided, or spans not here yet
        # later spans of it follow the decision cache
        self._remember(tid, True, reason, 0)
        return outcome

    def gauges(self) -> None:
        m = self.m
        if self._n_remote:
            m.shared_decisions_kept_total.labels("remote").inc(self._n_remote)
            self._n_remote = 0
        if self._n_published:
            m.shared_decisions_kept_total.labels("published").inc(self._n_published)
            self._n_published = 0
        if self._n_fallback:
            m.shared_decisions_fallback_traces_total.inc(self._n_fallback)
            self._n_fallback = 0
        if self._n_held:
            for outcome, n in self._n_held.items():
                m.shared_decisions_held_total.labels(outcome).inc(n)
            self._n_held = {}
        self.m.shared_decisions_held_bytes.set(self.held_bytes)
        self.m.shared_decisions_held_traces.set(self.held_count)

    # ------------------------------------------------------------ kafka
    async def start(self) -> None:
        loop = asyncio.get_running_loop()
        self._tasks = [loop.create_task(self._publish_loop()),
                       loop.create_task(self._consume_loop())]

    async def close(self, timeout: float) -> None:
        """Publish what is pending (within ``timeout``), then stop."""
        self.closing = True
        if self._pending and self.up and self._producer is not None:
            try:
                await asyncio.wait_for(self._flush(), timeout)
            except Exception as exc:  # noqa: BLE001 - shutting down anyway
                log.warning("shared decisions: final publish failed: %s", exc)
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            try:
                await task
            except (asyncio.CancelledError, Exception):  # noqa: BLE001
                pass
        for client in (self._producer, self._consumer):
            if client is not None:
                try:
                    await asyncio.wait_for(client.stop(), 5)
                except (asyncio.TimeoutError, Exception):  # noqa: BLE001
                    pass

    def _down(self, why) -> None:
        why = str(why)
        if self.up or why != self._why:
            # also before the first connection: a refused login must not be silent
            log.warning("shared decisions: broker unreachable (%s); deciding locally", why)
        if self.up:
            self.m.shared_decisions_outages_total.inc()
        self._why = why
        self.up = False
        self.m.shared_decisions_broker_up.set(0)

    def _mark_up(self) -> None:
        if not self.up:
            log.info("shared decisions: broker reachable; decisions shared again")
        self.up = True
        self.m.shared_decisions_broker_up.set(1)

    async def _publish_loop(self) -> None:
        from aiokafka import AIOKafkaProducer
        c = self.cfg
        while self._producer is None:
            p = AIOKafkaProducer(bootstrap_servers=c.brokers, acks=1, linger_ms=0,
                                 request_timeout_ms=max(1000, int(c.timeout.seconds * 1000)),
                                 retry_backoff_ms=200, **aiokafka_options(c))
            try:
                await asyncio.wait_for(p.start(), c.timeout.seconds * 2)
                self._producer = p
            except Exception as exc:  # noqa: BLE001 - broker not there yet: local decisions
                # the cause in words (a refused login, an untrusted certificate)
                self._down(await connect_error(c, exc))
                try:
                    await p.stop()
                except Exception:  # noqa: BLE001
                    pass
                await asyncio.sleep(1.0)
        last = 0.0
        while True:
            try:
                await asyncio.wait_for(self._wake.wait(), c.flush_interval.seconds)
            except asyncio.TimeoutError:
                pass
            self._wake.clear()
            now = time.monotonic()
            if not self._pending and now - last < c.heartbeat.seconds:
                continue
            last = now
            try:
                # bounded as a whole: a send waiting for metadata of an
                # unreachable broker must not hold the heartbeat back
                await asyncio.wait_for(self._flush(), 2 * c.timeout.seconds)
            except Exception as exc:  # noqa: BLE001 - fall back, retry at the next heartbeat
                self._down(exc or "timeout")

    async def _flush(self) -> None:
        batch, self._pending = self._pending[:self.cfg.batch_max], self._pending[self.cfg.batch_max:]
        msgs: list[tuple[list, bytes]] = []
        while batch or not msgs:
            part: list = []
            reasons: set = set()
            while batch and (batch[0][1] in reasons or len(reasons) < MAX_REASONS):
                reasons.add(batch[0][1])
                part.append(batch.pop(0))
            msgs.append((part, encode(self.sender, int(time.time() * 1000), part)))
        try:
            futs = [await self._producer.send(self.cfg.topic, value=v, key=self.sender)
                    for _part, v in msgs]
            await asyncio.wait_for(asyncio.gather(*futs), self.cfg.timeout.seconds)
        except BaseException:
            lost = sum(len(p) for p, _v in msgs)
            if lost:
                self.m.shared_decisions_fallback_traces_total.inc(lost)
                self.m.shared_decisions_unpublished_total.inc(lost)
            raise
        self._mark_up()
        for part, v in msgs:
            kind = "decisions" if part else "heartbeat"
            self.m.shared_decisions_messages_total.labels("out", kind).inc()
            self.m.shared_decisions_bytes_total.labels("out", kind).inc(len(v))
            self.published += len(part)
            if part:
                self.messages_out += 1
                self.bytes_out += len(v)

    async def _consume_loop(self) -> None:
        from aiokafka import AIOKafkaConsumer
        c = self.cfg
        while self._consumer is None:
            # no group: every sidecar reads every partition of the topic
            cons = AIOKafkaConsumer(c.topic, bootstrap_servers=c.brokers, group_id=None,
                                    auto_offset_reset="latest", enable_auto_commit=False,
                                    request_timeout_ms=max(1000, int(c.timeout.seconds * 1000) + 1000),
                                    fetch_max_wait_ms=50, retry_backoff_ms=200,
                                    **aiokafka_options(c))
            try:
                await asyncio.wait_for(cons.start(), c.timeout.seconds * 2)
                self._consumer = cons
            except Exception as exc:  # noqa: BLE001 - broker not there yet
                self._down(await connect_error(c, exc))
                try:
                    await cons.stop()
                except Exception:  # noqa: BLE001
                    pass
                await asyncio.sleep(1.0)
        cons = self._consumer
        m = self.m
        while True:
            try:
                got = await cons.getmany(timeout_ms=200, max_records=1000)
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # noqa: BLE001 - aiokafka reconnects by itself
                log.debug("shared decisions: fetch failed: %s", exc)
                await asyncio.sleep(0.5)
                continue
            now_ms = time.time() * 1000
            outcomes: dict[str, int] = {}
            for tp, recs in got.items():
                for r in recs:
                    self._last_offset[tp] = r.offset
                    try:
                        sender, sent_ms, items = decode(r.value)
                    except ValueError as exc:
                        m.shared_decisions_messages_total.labels("in", "invalid").inc()
                        log.warning("shared decisions: %s[%d] offset %d: %s",
                                    tp.topic, tp.partition, r.offset, exc)
                        continue
                    kind = "decisions" if items else "heartbeat"
                    m.shared_decisions_messages_total.labels("in", kind).inc()
                    m.shared_decisions_bytes_total.labels("in", kind).inc(len(r.value))
                    if sender == self.sender:
                        continue
                    m.shared_decisions_delay_seconds.observe(max(0.0, now_ms - sent_ms) / 1000)
                    for tid, reason in items:
                        o = self.on_keep(tid, reason)
                        outcomes[o] = outcomes.get(o, 0) + 1
            for o, n in outcomes.items():
                m.shared_decisions_received_total.labels(o).inc(n)
            if outcomes:
                self.gauges()
            for tp in cons.assignment():
                hw = cons.highwater(tp)
                if hw is not None:
                    last = self._last_offset.get(tp)
                    lag = hw - (last + 1) if last is not None else 0
                    m.shared_decisions_lag_messages.labels(str(tp.partition)).set(max(0, lag))
