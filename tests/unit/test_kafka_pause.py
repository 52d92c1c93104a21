"""The Kafka receiver pauses fetching (the consumer's partitions, not only
its reads) while the process memory limiter pushes back, and resumes once
it stops; without a broker: a consumer double records pause and resume
and refuses a fetch while paused. The real broker's side is
tests/integration/test_kafka_sampled.py::test_memory_limit_pauses_the_kafka_receiver."""
from __future__ import annotations

import asyncio
import sys
from pathlib import Path
from types import SimpleNamespace

from aiokafka.structs import TopicPartition

from traceo_sampler.config import loads
from traceo_sampler.pipeline import Pipeline
from traceo_sampler.receivers.kafka import KafkaReceiver, LagClock, OffsetTracker
from traceo_sampler.telemetry import Metrics

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from support_otlp import make_request, trace  # noqa: E402

TP = TopicPartition("spans", 0)


class Limiter:
    def __init__(self):
        self.refusing = True

    def over(self) -> bool:
        return self.refusing


class Consumer:
    def __init__(self, values: list[bytes]):
        self.values = values
        self.paused: set = set()
        self.events: list[str] = []
        self.offset = 0

    def assignment(self):
        return {TP}

    def pause(self, *tps):
        if not self.paused:
            self.events.append("pause")
        self.paused |= set(tps)

    def resume(self, *tps):
        self.events.append("resume")
        self.paused -= set(tps)

    async def getmany(self, timeout_ms: int, max_records: int):
        assert TP not in self.paused, "fetched while paused"
        await asyncio.sleep(0.01)
        if not self.values:
            return {}
        recs = [SimpleNamespace(offset=self.offset + i, value=v, timestamp=-1)
                for i, v in enumerate(self.values)]
        self.offset += len(recs)
        self.values = []
        self.events.append(f"fetched {len(recs)}")
        return {TP: recs}

    def highwater(self, tp):
        return self.offset

    async def commit(self, offsets):
        pass

    async def stop(self):
        pass


def test_the_memory_limiter_pauses_fetching_and_its_end_resumes_it():
    cfg = loads("sampler: {policies: [{name: all, type: always_sample}]}\n"
                "receivers: {kafka: {brokers: ['127.0.0.1:9'], topic: spans}}\n")
    metrics = Metrics()
    clock, tracker = LagClock(), OffsetTracker()
    pipeline = Pipeline(cfg, metrics, [], clock=clock, tracker=tracker)
    limiter = Limiter()
    consumer = Consumer([make_request([trace(3) for _ in range(4)]) for _ in range(5)])

    async def run():
        recv = KafkaReceiver(cfg.receivers.kafka, pipeline, metrics, clock=clock,
                             tracker=tracker, limiter=limiter)

        async def connect():
            recv._assign([TP])        # what the rebalance listener does
            return consumer
        recv._connect = connect
        await recv.start()
        await asyncio.sleep(0.5)
        assert consumer.events == ["pause"] and recv.messages == 0
        assert metrics.kafka_fetch_paused._value.get() == 1
        limiter.refusing = False
        await asyncio.sleep(0.5)
        assert consumer.events == ["pause", "resume", "fetched 5"]
        assert recv.messages == 5 and not consumer.paused
        assert metrics.kafka_fetch_paused._value.get() == 0
        limiter.refusing = True
        await asyncio.sleep(0.3)
        assert consumer.events[-1] == "pause" and consumer.paused == {TP}
        await recv.stop(grace=0)

    asyncio.run(run())
    assert metrics.spans_received_total.labels("svc")._value.get() == 5 * 4 * 3
