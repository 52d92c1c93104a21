"""exporters.kafka's Producer (exporters/kafka.py): an idempotent producer
whose sequence numbers fell out of step with the broker (aiokafka 0.14
numbers a batch that then expires unsent, and cannot reset) is replaced;
other failures keep it. Without a broker: aiokafka's producer is replaced
by a double; the real broker's side is the broker-restart tests
(tests/integration/test_kafka_group.py, test_kafka_sampled.py)."""
from __future__ import annotations

import asyncio

from aiokafka import errors as kerr

from traceo_sampler.config import loads
from traceo_sampler.exporters import kafka as K
from traceo_sampler.telemetry import Metrics


class Double:
    made = 0

    def __init__(self, **kw):
        Double.made += 1
        self.kw = kw
        self.stopped = False

    async def start(self):
        pass

    async def stop(self):
        self.stopped = True


def _cfg(extra: str = "", client: str = "aiokafka"):
    return loads("exporters: {kafka: {brokers: ['127.0.0.1:9'], mode: sampled, client: "
                 + client + extra + "}}\n"
                 "sampler: {policies: [{name: all, type: always_sample}]}\n").exporters.kafka


def test_idempotent_with_acks_all_only(monkeypatch):
    import aiokafka
    monkeypatch.setattr(aiokafka, "AIOKafkaProducer", Double)
    assert K.new_producer(_cfg()).kw["enable_idempotence"] is True
    assert K.new_producer(_cfg(", acks: 1")).kw["enable_idempotence"] is False
    assert K.new_producer(_cfg(", idempotent: false")).kw["enable_idempotence"] is False


def test_a_desynchronised_producer_is_replaced_others_are_kept(monkeypatch):
    import aiokafka
    monkeypatch.setattr(aiokafka, "AIOKafkaProducer", Double)
    metrics = Metrics()

    async def run():
        prod = K.Producer(_cfg(), metrics, "sampled")
        a = await prod.get()
        assert await prod.get() is a
        prod.failed(a, kerr.KafkaTimeoutError())           # the broker away: kept
        prod.failed(a, asyncio.TimeoutError())
        assert await prod.get() is a
        prod.failed(a, kerr.OutOfOrderSequenceNumber())
        b = await prod.get()
        assert b is not a and prod.replaced == 1
        prod.failed(a, kerr.OutOfOrderSequenceNumber())    # the old one again: nothing
        prod.failed(b, kerr.LeaderNotAvailableError())     # a numbered batch expired unsent
        c = await prod.get()
        assert c is not b and prod.replaced == 2
        await prod.close(1.0)
        assert a.stopped and b.stopped and c.stopped
        plain = K.Producer(_cfg(", acks: 1"), metrics, "router")
        d = await plain.get()
        plain.failed(d, kerr.OutOfOrderSequenceNumber())
        assert await plain.get() is d
        await plain.close(1.0)

    asyncio.run(run())
    assert metrics.kafka_producer_replaced_total.labels("sampled")._value.get() == 2


def test_confluent_kafka_is_the_default_idempotent_keyed_like_the_java_client():
    p = K.new_producer(_cfg(client="confluent-kafka"))
    assert isinstance(p, K.ConfluentProducer)
    assert (p.conf["enable.idempotence"], p.conf["acks"], p.conf["partitioner"]) == (
        True, "all", "murmur2_random")
    assert K.new_producer(_cfg(", acks: 1", "confluent-kafka")).conf["enable.idempotence"] is False
    k = loads("exporters: {kafka: {brokers: ['b:9092']}}\n").exporters.kafka
    assert k.client == "confluent-kafka"


def test_a_fatal_librdkafka_error_replaces_the_producer_a_retriable_one_does_not(monkeypatch):
    from confluent_kafka import KafkaError, KafkaException
    monkeypatch.setattr(K, "ConfluentProducer", lambda cfg: Double())
    metrics = Metrics()

    async def run():
        prod = K.Producer(_cfg(client="confluent-kafka"), metrics, "router")
        a = await prod.get()
        prod.failed(a, KafkaException(KafkaError(KafkaError._MSG_TIMED_OUT)))
        prod.failed(a, kerr.OutOfOrderSequenceNumber())     # aiokafka's: not this client's
        assert await prod.get() is a
        prod.failed(a, KafkaException(KafkaError(KafkaError._FATAL, "fatal", fatal=True)))
        assert await prod.get() is not a
        await prod.close(1.0)

    asyncio.run(run())
    assert K.kafka_error_kind(KafkaException(KafkaError(KafkaError.MSG_SIZE_TOO_LARGE))) == \
        "refused"
    assert K.kafka_error_kind(KafkaException(KafkaError(
        KafkaError.TOPIC_AUTHORIZATION_FAILED))) == "permanent"
    assert K.kafka_error_kind(KafkaException(KafkaError(KafkaError._TRANSPORT))) == "retry"
    assert K.kafka_error_kind(kerr.MessageSizeTooLargeError()) == "refused"
