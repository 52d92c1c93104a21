"""Kept traces to a Kafka topic (``exporters.kafka`` with ``mode: sampled``):
an exporter like otlp and file, behind the same bounded queue (base.py:
``queue_max_bytes``, ``queue_full``, retries, acks), so downstream consumers
read the sampled stream.

Messages are ``otlp_proto`` (``ExportTraceServiceRequest``), spans
byte-identical under their original resource and scope headers. By default a
batch becomes one message per partition it touches, each trace whole in the
partition murmur2 of its lowercase hex trace ID picks (the Java client's
partitioner for that key, as the router does); ``partition_traces_by_id:
true`` produces one message per trace keyed by that hex ID, the Collector
kafkaexporter's form. Late spans of a kept trace follow it to the same
partition.

At-least-once: a batch counts as exported (``spans_exported_total``, the
decision latency, the Kafka receiver's offsets) only once the broker acked
every message of it; otherwise the whole batch is tried again, so a message
acked before another one failed may be written twice. A batch the broker
refuses as too large is split down to the trace at fault (base.py).
"""
from __future__ import annotations

import asyncio
import logging
import time

from .. import shard as _shard
from ..config import KafkaExporter as KafkaCfg
from .base import Exporter
from .kafka import Producer, kafka_error_kind, split_by_trace

log = logging.getLogger("traceo_sampler.exporters")
_NO_KEYS: frozenset = frozenset()
PARTITIONS_EVERY = 30.0

def _retrieve(fut: asyncio.Future) -> None:
    # a message still in flight when its batch gave up resolves later: its
    # error was already counted with the batch
    if not fut.cancelled():
        fut.exception()


class KafkaSampledExporter(Exporter):
    name = "kafka"

    def __init__(self, cfg: KafkaCfg, metrics):
        super().__init__(metrics, cfg.queue_max_bytes, cfg.batch_max_spans, cfg.batch_max_bytes,
                         cfg.queue_full, cfg.retry)
        self.cfg = cfg
        # started on the first batch (and again after it was replaced): a
        # broker not there yet is a retryable failure, not a start-up error
        self._producer = Producer(cfg, metrics, "sampled")
        self._parts: tuple | None = None     # (producer, partitions)
        self._parts_at = 0.0

    async def _partitions(self, p) -> int:
        """The topic's partition count, asked again every PARTITIONS_EVERY
        seconds (partitions added to it are used; traces then move, as for
        any producer keyed by trace ID). Asking for a topic not there yet
        lets the broker auto-create it, if it allows; an error is a
        retryable failure of the batch."""
        now = time.monotonic()
        if self._parts is None or now - self._parts_at > PARTITIONS_EVERY or self._parts[0] is not p:
            parts = await p.partitions_for(self.cfg.topic)
            if not parts:
                raise OSError(f"topic {self.cfg.topic}: no partitions known yet")
            self._parts, self._parts_at = (p, len(parts)), now
        return self._parts[1]

    async def send(self, payload: bytes) -> None:
        await asyncio.wait_for(self._produce(payload), self.cfg.timeout.seconds)

    async def _produce(self, payload: bytes) -> None:
        p = await self._producer.get()
        topic = self.cfg.topic
        futs: list[asyncio.Future] = []
        try:
            if self.cfg.partition_traces_by_id:
                msgs, _sc = split_by_trace(payload)
                for tid, blob in msgs:
                    futs.append(await p.send(topic, value=blob, key=tid.hex().encode()))
            else:
                sp = _shard.split(payload, await self._partitions(p), _NO_KEYS, _shard.KEY_HEX)
                if sp.errors:
                    # kept spans the scanner refuses: never produced as they are
                    raise ValueError(f"kept batch does not scan: {sp.errors[0]}")
                for part_no, part in enumerate(sp.parts):
                    if part:
                        futs.append(await p.send(topic, value=part, partition=part_no))
            if futs:
                # not gather: a timeout (send's wait_for) must not cancel
                # messages the client may still deliver
                await asyncio.wait(futs)
        except BaseException as exc:
            for f in futs:
                f.add_done_callback(_retrieve)
            self._producer.failed(p, exc)
            raise
        errors = [e for e in (f.exception() for f in futs) if e is not None]
        for e in errors:
            self._producer.failed(p, e)
        if errors:
            raise errors[0]

    def retryable(self, exc: Exception) -> bool:
        if isinstance(exc, ValueError):
            return False
        return kafka_error_kind(exc) == "retry"

    def refused(self, exc: Exception) -> bool:
        return isinstance(exc, ValueError) or kafka_error_kind(exc) == "refused"

    async def aclose(self) -> None:
        await self._producer.close(5.0)
