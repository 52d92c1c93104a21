"""Router mode (``exporters.kafka``, docs/design.md §5): ``serve`` as a stateless
front tier. Every received OTLP request is regrouped by trace ID and produced
to a topic as ``otlp_proto`` messages (``ExportTraceServiceRequest``) holding
spans byte-identical under their original resource and scope headers. Each
trace's partition is murmur2 of its trace ID in lowercase hex, as the Java
client and aiokafka partition a message keyed by it, so producers in other
languages keying by the trace ID (the Collector's kafkaexporter with
``partition_traces_by_id``) land on the same partition.

By default a request becomes one message per partition it touches, holding
the spans of many traces (``shard.split``, compiled: no per-span Python
work); ``partition_traces_by_id: true`` produces one message per trace,
keyed by its hex trace ID, the Collector's form for consumers that need it.

The OTLP response is sent only once the broker acknowledged every message of
the request (``acks``); when it does not within ``timeout`` the client is told
to retry: gRPC ``UNAVAILABLE`` / HTTP 503.

The OTLP receivers feed ``RouterFront`` as they feed the pipeline: its
``ingest`` scans, regroups and starts producing, and returns a result whose
``acked`` the receiver awaits before it answers ('' or why not).
"""
from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import threading
import time
from typing import Any

from .. import shard as _shard
from ..buffer import TraceBuffer
from ..config import ConfigError
from ..kafka_security import (KafkaRefused, aiokafka_options, connect_error, describe,
                              librdkafka_options)
from ..scan import SPAN_GROUP, SPAN_LENGTH, SPAN_OFFSET, SPAN_TRACE_ID, ScanResultLike, scan
from ..wire import field as _field

log = logging.getLogger("traceo_sampler.router")
_NO_KEYS: frozenset = frozenset()


class _Result:
    """An ingest result (accepted, rejected, errors) plus ``acked``: the
    task producing it, resolving to '' once the broker acked every message,
    else to the error (None: nothing to produce)."""

    __slots__ = ("accepted", "rejected", "errors", "acked")

    def __init__(self, accepted: int, rejected: int, errors: list[str]):
        self.accepted = accepted
        self.rejected = rejected
        self.errors = errors
        self.acked: asyncio.Task[str] | None = None


def split_by_trace(data: bytes) -> tuple[list[tuple[bytes, bytes]], ScanResultLike]:
    """[(trace_id, ExportTraceServiceRequest bytes)] of one request, in first
    appearance order, each holding one trace's spans byte-identical under
    their original headers; and the scan result. Raises ValueError like the
    scanner when the request is not valid."""
    sc = scan(data, _NO_KEYS)
    groups = sc.groups
    # trace_id → {group index → [encoded Span fields]}
    by_trace: dict[bytes, dict[int, list[bytes]]] = {}
    for sp in sc.spans:
        tid, gi, off, ln = sp[SPAN_TRACE_ID], sp[SPAN_GROUP], sp[SPAN_OFFSET], sp[SPAN_LENGTH]
        per = by_trace.get(tid)
        if per is None:
            per = by_trace[tid] = {}
        lst = per.get(gi)
        if lst is None:
            lst = per[gi] = []
        lst.append(_field(0x12, data[off:off + ln]))
    enc = TraceBuffer.encode_groups
    out = [(tid, enc((groups[gi][0], groups[gi][1], spans) for gi, spans in per.items()))
           for tid, per in by_trace.items()]
    return out, sc


def _desync_errors() -> tuple:
    from aiokafka import errors as kerr
    return (kerr.OutOfOrderSequenceNumber, kerr.UnknownProducerId,
            kerr.NotLeaderForPartitionError, kerr.LeaderNotAvailableError)


def new_producer(cfg):
    """An (unstarted) producer for ``exporters.kafka``, in either mode, on
    ``cfg.client``: idempotent when ``idempotent`` and ``acks: all``
    (Kafka's rule)."""
    if cfg.client == "confluent-kafka":
        return ConfluentProducer(cfg)
    from aiokafka import AIOKafkaProducer
    return AIOKafkaProducer(
        bootstrap_servers=",".join(cfg.brokers), acks=cfg.acks,
        enable_idempotence=cfg.idempotent and cfg.acks == "all",
        compression_type=None if cfg.compression == "none" else cfg.compression,
        linger_ms=int(cfg.linger.seconds * 1000),
        max_request_size=16 << 20, max_batch_size=1 << 20,
        request_timeout_ms=max(1000, int(cfg.timeout.seconds * 1000)),
        **aiokafka_options(cfg))


class ConfluentProducer:
    """confluent-kafka (librdkafka) behind the calls the router and the
    sampled exporter make of an AIOKafkaProducer: ``start``, ``send``
    (returns a future of the broker's ack), ``partitions_for``, ``stop``.

    librdkafka runs its own threads; its delivery reports are served by
    ``poll`` on a thread of ours, which hands each to the event loop.
    Keyed messages go where the Java client puts them (``murmur2_random``:
    murmur2 of the key), as aiokafka and the router's own partitioning do.
    A failure is raised as ``confluent_kafka.KafkaException``."""

    def __init__(self, cfg):
        from confluent_kafka import Producer as _Producer
        self._make = _Producer
        timeout_ms = max(1000, int(cfg.timeout.seconds * 1000))
        self.conf = {
            "bootstrap.servers": ",".join(cfg.brokers),
            "acks": {"all": "all", 0: "0", 1: "1"}[cfg.acks],
            "enable.idempotence": cfg.idempotent and cfg.acks == "all",
            "linger.ms": int(cfg.linger.seconds * 1000),
            "compression.type": cfg.compression,
            "partitioner": "murmur2_random",
            "message.max.bytes": 16 << 20,
            # a message not acked within timeout fails (and is sent again by its caller)
            "message.timeout.ms": timeout_ms,
            "request.timeout.ms": timeout_ms,
            "logger": logging.getLogger("traceo_sampler.router.librdkafka"),
            **librdkafka_options(cfg),
        }
        self.timeout = timeout_ms / 1000
        # the last login or TLS refusal librdkafka reported ('' = none)
        self.refusal = ""
        sasl = cfg.auth.sasl if cfg.auth is not None else None
        self._who = f" ({sasl.mechanism}, user {sasl.username})" if sasl is not None else ""
        self._p: Any = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    async def start(self) -> None:
        from confluent_kafka import KafkaException
        self._loop = asyncio.get_running_loop()
        self._p = self._make({**self.conf, "error_cb": self._error})
        try:
            await self._loop.run_in_executor(None, self._metadata)
        except (KafkaException, KafkaRefused):
            self._p = None
            raise
        self._thread = threading.Thread(target=self._poll, name="kafka-producer-poll",
                                        daemon=True)
        self._thread.start()

    def _error(self, err) -> None:
        # on a librdkafka thread (poll): a client-level error, e.g. a refused login
        from confluent_kafka import KafkaError
        if err.code() == KafkaError._AUTHENTICATION:
            self.refusal = f"the broker refused the SASL credentials{self._who}: {err.str()}"
        elif err.code() == KafkaError._SSL:
            self.refusal = f"TLS: {err.str()}"

    def _metadata(self) -> None:
        """librdkafka connects lazily: ask for metadata to know a broker
        answers; a refused login or TLS handshake (reported to error_cb,
        served by poll) fails at once rather than at the timeout."""
        from confluent_kafka import KafkaException
        deadline = time.monotonic() + self.timeout
        while True:
            try:
                self._p.list_topics(timeout=min(1.0, self.timeout))
                return
            except KafkaException:
                self._p.poll(0)
                if self.refusal:
                    raise KafkaRefused(self.refusal) from None
                if time.monotonic() >= deadline:
                    raise

    def _poll(self) -> None:
        p = self._p
        while not self._stop.is_set():
            p.poll(0.05)

    def _delivered(self, fut: asyncio.Future, err, _msg) -> None:
        # on the poll thread
        assert self._loop is not None
        self._loop.call_soon_threadsafe(_settle, fut, err)

    async def send(self, topic: str, value: bytes, key: bytes | None = None,
                   partition: int | None = None) -> asyncio.Future:
        from confluent_kafka import KafkaError, KafkaException
        if self._p is None:
            raise KafkaException(KafkaError(KafkaError._STATE, "producer stopped"))
        assert self._loop is not None
        fut = self._loop.create_future()
        kw: dict[str, Any] = {"value": value, "on_delivery": functools.partial(self._delivered,
                                                                              fut)}
        if key is not None:
            kw["key"] = key
        if partition is not None:
            kw["partition"] = partition
        deadline = time.monotonic() + self.timeout
        while True:
            try:
                self._p.produce(topic, **kw)
                return fut
            except BufferError:
                # librdkafka's queue is full: wait for acks to make room
                if time.monotonic() > deadline:
                    raise KafkaException(KafkaError(KafkaError._QUEUE_FULL)) from None
                await asyncio.sleep(0.005)

    async def partitions_for(self, topic: str) -> set[int]:
        from confluent_kafka import KafkaException
        assert self._loop is not None
        md = await self._loop.run_in_executor(None, lambda: self._p.list_topics(
            topic, timeout=self.timeout))
        t = md.topics.get(topic)
        if t is None:
            return set()
        if t.error is not None:
            raise KafkaException(t.error)
        return set(t.partitions)

    async def stop(self) -> None:
        p = self._p
        if p is None:
            return
        assert self._loop is not None
        await self._loop.run_in_executor(None, p.flush, self.timeout)
        self._stop.set()
        if self._thread is not None:
            await self._loop.run_in_executor(None, self._thread.join)
        self._p = None


def _settle(fut: asyncio.Future, err) -> None:
    if fut.done():
        return
    if err is None:
        fut.set_result(None)
    else:
        from confluent_kafka import KafkaException
        fut.set_exception(KafkaException(err))


def kafka_error_kind(exc: BaseException) -> str:
    """"refused" (the broker will never take this data as it is: a smaller
    batch may pass), "permanent" (no retry helps: configuration) or
    "retry", for either client's errors."""
    if _is_confluent(exc):
        from confluent_kafka import KafkaError
        code = exc.args[0].code()
        if code in (KafkaError.MSG_SIZE_TOO_LARGE, KafkaError.RECORD_LIST_TOO_LARGE,
                    KafkaError.INVALID_RECORD, KafkaError.INVALID_MSG,
                    KafkaError.INVALID_MSG_SIZE):
            return "refused"
        if code in (KafkaError.TOPIC_AUTHORIZATION_FAILED,
                    KafkaError.CLUSTER_AUTHORIZATION_FAILED, KafkaError.TOPIC_EXCEPTION,
                    KafkaError.INVALID_REQUIRED_ACKS):
            return "permanent"
        return "retry"
    from aiokafka import errors as kerr
    if isinstance(exc, (kerr.MessageSizeTooLargeError, kerr.RecordListTooLargeError,
                        kerr.CorruptRecordException)):
        return "refused"
    if isinstance(exc, (kerr.TopicAuthorizationFailedError,
                        kerr.ClusterAuthorizationFailedError, kerr.InvalidTopicError,
                        kerr.InvalidRequiredAcksError)):
        return "permanent"
    return "retry"


def _is_confluent(exc: BaseException) -> bool:
    try:
        from confluent_kafka import KafkaException
    except ImportError:       # only aiokafka installed
        return False
    return isinstance(exc, KafkaException) and bool(exc.args)


def _fatal(exc: BaseException) -> bool:
    """A librdkafka fatal error: the producer (idempotent) cannot go on."""
    return _is_confluent(exc) and exc.args[0].fatal()


class Producer:
    """The producer of ``exporters.kafka`` (either mode), replaced by a
    fresh one when an idempotent one falls out of step with the broker.

    aiokafka 0.14's idempotent producer numbers a batch when it leaves the
    accumulator. A batch that waited past ``timeout`` for a partition with
    no leader (a broker restarting) is taken out *numbered* and failed
    (NotLeaderForPartition / LeaderNotAvailable) without being sent: the
    broker then sees a gap, answers every later batch of that partition
    OUT_OF_ORDER_SEQUENCE_NUMBER, which aiokafka treats as final, and has no
    epoch bump or sequence reset to recover (the Java client's KIP-360).
    With idempotence those errors reach a message only that way, so on any
    of them the producer is dropped and the next ``get`` starts another:
    a new producer ID, sequences from 0. What the old one still held fails
    and its caller sends it again (the exporter's retry, the router's
    client), so only around a replacement can a message be written twice."""

    def __init__(self, cfg, metrics, mode: str):
        self.cfg = cfg
        self.metrics = metrics
        self.mode = mode
        self.idempotent = cfg.idempotent and cfg.acks == "all"
        self.current: Any = None    # an AIOKafkaProducer (aiokafka is untyped)
        self.replaced = 0
        self._lock = asyncio.Lock()
        self._stopping: set[asyncio.Task] = set()
        self._desync = _desync_errors() if cfg.client == "aiokafka" else ()

    async def get(self):
        """The started producer; one is started when there is none (what
        its start raises when no broker answers propagates)."""
        p = self.current
        if p is not None:
            return p
        async with self._lock:
            if self.current is None:
                p = new_producer(self.cfg)
                try:
                    await asyncio.wait_for(p.start(), max(1.0, self.cfg.timeout.seconds))
                except Exception as exc:
                    await p.stop()
                    # the cause, in words: a refused login, an untrusted certificate
                    raise await connect_error(self.cfg, exc) from exc
                except BaseException:
                    await p.stop()
                    raise
                self.current = p
                c = self.cfg
                log.info("exporters.kafka (%s): producing to topic %s at %s (%s, acks=%s%s)",
                         self.mode, c.topic, ",".join(c.brokers), describe(c), c.acks,
                         ", idempotent" if self.idempotent else "")
            return self.current

    def failed(self, p, exc: BaseException) -> None:
        """``p`` (from ``get``) failed a message with ``exc``."""
        if p is not self.current or not (
                _fatal(exc) or (self.idempotent and self.cfg.client == "aiokafka"
                                and isinstance(exc, self._desync))):
            return
        self.current = None
        self.replaced += 1
        self.metrics.kafka_producer_replaced_total.labels(self.mode).inc()
        log.warning("exporters.kafka (%s): the idempotent producer's sequence numbers fell out "
                    "of step with the broker (%s); a new producer takes over", self.mode,
                    type(exc).__name__)
        # its pending batches fail (out of order) or expire; not awaited here
        t = asyncio.get_running_loop().create_task(p.stop())
        self._stopping.add(t)
        t.add_done_callback(self._stopping.discard)

    async def close(self, timeout: float) -> None:
        p, self.current = self.current, None
        if p is not None:
            await p.stop()
        if self._stopping:
            await asyncio.wait(list(self._stopping), timeout=timeout)


class KafkaRouter:
    name = "kafka"

    def __init__(self, cfg, metrics):
        self.cfg = cfg
        self.metrics = metrics
        self._producer = Producer(cfg, metrics, "router")
        self.reachable = False
        self.last_error = "not started"
        self.messages = 0
        self.failed = 0
        self.partitions = 1
        self._tasks: set[asyncio.Task] = set()
        self._refresh: asyncio.Task | None = None

    async def start(self, timeout: float = 60.0) -> None:
        c = self.cfg
        deadline = time.monotonic() + timeout
        while True:
            try:
                p = await self._producer.get()
            except KafkaRefused as exc:
                # credentials or TLS: waiting would not help
                raise ConfigError([f"exporters.kafka: {exc}"]) from None
            except Exception as exc:  # noqa: BLE001 - broker not there yet
                self.last_error = str(exc)[:200]
                if time.monotonic() > deadline:
                    raise ConfigError([f"exporters.kafka: no broker reachable at "
                                       f"{','.join(c.brokers)}: {exc}"]) from None
                log.warning("router: broker not reachable yet (%s); retrying", exc)
                await asyncio.sleep(1.0)
                continue
            self.partitions = await self._count_partitions(p)
            self._refresh = asyncio.get_running_loop().create_task(self._refresh_partitions())
            self.reachable = True
            self.last_error = ""
            return

    async def _count_partitions(self, p) -> int:
        try:
            parts = await asyncio.wait_for(p.partitions_for(self.cfg.topic), 30)
        except Exception as exc:  # noqa: BLE001 - e.g. the topic is auto-created later
            log.warning("router: partitions of %s unknown (%s); producing to partition 0",
                        self.cfg.topic, exc)
            return 1
        return max(1, len(parts or ()))

    async def _refresh_partitions(self) -> None:
        """Partitions added to the topic are used (traces then move, as they
        do for any producer keyed by trace ID)."""
        while True:
            await asyncio.sleep(30)
            with contextlib.suppress(Exception):
                p = self._producer.current
                parts = await p.partitions_for(self.cfg.topic) if p else None
                if parts:
                    self.partitions = len(parts)

    def route(self, data: bytes) -> _Result:
        """Scan and regroup one request and start producing it (the
        result's ``acked``)."""
        out: list[tuple[bytes | None, int | None, bytes]]
        if self.cfg.partition_traces_by_id:
            msgs, sc = split_by_trace(data)
            out = [(tid.hex().encode(), None, blob) for tid, blob in msgs]
            res = _Result(len(sc.spans), sc.rejected, list(sc.errors))
            reasons = sc.reasons
        else:
            sp = _shard.split(data, self.partitions, _NO_KEYS, _shard.KEY_HEX)
            out = [(None, part_no, part) for part_no, part in enumerate(sp.parts) if part]
            res = _Result(sp.accepted, sp.rejected, list(sp.errors))
            reasons = sp.reasons
        m = self.metrics
        for reason in reasons:
            m.invalid_spans_total.labels(reason).inc()
        if out:
            task = asyncio.get_running_loop().create_task(self._produce(out))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)
            res.acked = task
        return res

    async def _produce(self, msgs: list[tuple[bytes | None, int | None, bytes]]) -> str:
        """'' when the broker acked every message, else the error."""
        topic = self.cfg.topic
        m = self.metrics
        p = None
        try:
            p = await self._producer.get()
            futs = [await p.send(topic, value=blob, key=key, partition=part)
                    for key, part, blob in msgs]
            await asyncio.wait_for(asyncio.gather(*futs), self.cfg.timeout.seconds)
        except Exception as exc:  # noqa: BLE001 - the client is told to retry
            if p is not None:
                self._producer.failed(p, exc)
            self.failed += len(msgs)
            m.kafka_produced_messages_total.labels("failed").inc(len(msgs))
            self.reachable = False
            self.last_error = f"{type(exc).__name__}: {exc}"[:200]
            return f"kafka did not ack: {self.last_error or 'produce failed'}"
        self.reachable = True
        self.messages += len(msgs)
        m.kafka_produced_messages_total.labels("acked").inc(len(msgs))
        return ""

    async def close(self, timeout: float) -> None:
        if self._refresh is not None:
            self._refresh.cancel()
        if self._tasks:
            await asyncio.wait(list(self._tasks), timeout=timeout)
        await self._producer.close(timeout)


class RouterFront:
    """What the OTLP receivers see as the pipeline in router mode."""

    RETRY_AFTER = 1.0

    def __init__(self, router: KafkaRouter):
        self.router = router

    def backpressure(self) -> bool:
        return False

    def ingest(self, data: bytes) -> _Result:
        return self.router.route(data)
