"""The real Kafka 4.x test broker (tests/support/kafka.py) works end to end.

No skip when Kafka is absent: the broker's jars are fetched from Maven Central
on first use (scripts/kafka.sh fetch), so a failure here is a real failure.
"""

from __future__ import annotations

import asyncio
import socket
import sys
import time
import uuid
from pathlib import Path

import pytest

try:
    from tests.support.fixtures import kafka_broker  # noqa: F401  (fixture)
    from tests.support.kafka import KafkaBroker, KafkaError, free_ports
except ModuleNotFoundError:  # pytest started without the repo root on sys.path
    sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
    from tests.support.fixtures import kafka_broker  # noqa: F401  (fixture)
    from tests.support.kafka import KafkaBroker, KafkaError, free_ports

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer

# The first test may fetch the jars (~1-2 min cold) and start the session broker.
pytestmark = [pytest.mark.integration, pytest.mark.timeout(900)]

PARTITIONS = 4
MESSAGES = 1000
CLIENT_TIMEOUT_S = 90.0


def _name(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:10]}"


async def _produce(bootstrap: str, topic: str, keys: range) -> dict[str, tuple[int, int]]:
    """Send key i / value i for every i; return key -> (partition, offset)."""
    producer = AIOKafkaProducer(
        bootstrap_servers=bootstrap,
        acks="all",
        enable_idempotence=True,
        linger_ms=5,
        request_timeout_ms=30000,
    )
    await producer.start()
    try:
        pending = [
            await producer.send(topic, key=f"key-{i}".encode(), value=f"value-{i}".encode())
            for i in keys
        ]
        metas = await asyncio.gather(*pending)
    finally:
        await producer.stop()
    return {f"key-{i}": (m.partition, m.offset) for i, m in zip(keys, metas)}


async def _consume(bootstrap: str, topic: str, group: str, expected: int) -> list:
    """Read `expected` records in consumer group `group`, commit, then check nothing more comes."""
    consumer = AIOKafkaConsumer(
        topic,
        bootstrap_servers=bootstrap,
        group_id=group,
        auto_offset_reset="earliest",
        enable_auto_commit=False,
        request_timeout_ms=30000,
    )
    await consumer.start()
    records = []
    try:
        deadline = time.monotonic() + CLIENT_TIMEOUT_S
        while len(records) < expected:
            if time.monotonic() > deadline:
                raise AssertionError(
                    f"consumed {len(records)} of {expected} records from {topic!r} "
                    f"in {CLIENT_TIMEOUT_S:.0f}s"
                )
            batch = await consumer.getmany(timeout_ms=1000)
            for recs in batch.values():
                records.extend(recs)
        # Nothing beyond what was expected (no duplicates, no strays).
        extra = await consumer.getmany(timeout_ms=1500)
        records.extend(r for recs in extra.values() for r in recs)
        await consumer.commit()
    finally:
        await consumer.stop()
    return records


def _check_records(records: list, sent: dict[str, tuple[int, int]]) -> None:
    keys = [r.key.decode() for r in records]
    assert len(keys) == len(sent), f"got {len(keys)} records, sent {len(sent)}"
    assert set(keys) == set(sent)
    for r in records:
        key = r.key.decode()
        assert r.value.decode() == key.replace("key-", "value-")
        assert (r.partition, r.offset) == sent[key], f"{key} moved"
    # Order is kept within each partition.
    by_partition: dict[int, list[int]] = {}
    for r in records:
        by_partition.setdefault(r.partition, []).append(r.offset)
    for offsets in by_partition.values():
        assert offsets == sorted(offsets)


def test_produce_consume_then_restart(kafka_broker: KafkaBroker) -> None:
    broker = kafka_broker
    assert broker.bootstrap.startswith("127.0.0.1:")
    topic = _name("it-keyed")
    broker.create_topic(topic, partitions=PARTITIONS)

    sent = asyncio.run(_produce(broker.bootstrap, topic, range(MESSAGES)))
    assert {p for p, _ in sent.values()} == set(range(PARTITIONS)), "keys should spread over all partitions"

    group = _name("it-group")
    records = asyncio.run(_consume(broker.bootstrap, topic, group, MESSAGES))
    _check_records(records, sent)

    # Same ports, same data: topic, records and committed offsets survive.
    pid, bootstrap = broker.pid, broker.bootstrap
    broker.restart()
    assert broker.is_running and broker.pid != pid and broker.bootstrap == bootstrap

    more = asyncio.run(_produce(broker.bootstrap, topic, range(MESSAGES, MESSAGES + 100)))
    resumed = asyncio.run(_consume(broker.bootstrap, topic, group, 100))
    _check_records(resumed, more)  # the group resumes after its committed offsets

    everything = asyncio.run(_consume(broker.bootstrap, topic, _name("it-fresh"), MESSAGES + 100))
    _check_records(everything, {**sent, **more})


def test_broker_comes_back_after_kill(kafka_broker: KafkaBroker) -> None:
    broker = kafka_broker
    try:
        assert broker.kill() == -9
        assert not broker.is_running
        broker.restart()  # recovers from the unclean shutdown
    finally:
        broker.ensure_running()

    # auto.create.topics.enable with num.partitions=4 from the fixture
    topic = _name("it-auto")
    sent = asyncio.run(_produce(broker.bootstrap, topic, range(200)))
    assert {p for p, _ in sent.values()} == set(range(PARTITIONS))
    records = asyncio.run(_consume(broker.bootstrap, topic, _name("it-group"), 200))
    _check_records(records, sent)


def test_broker_that_cannot_start_fails_with_its_log() -> None:
    # Its client port is taken: the JVM exits, and the error carries the log tail.
    with socket.socket() as squatter:
        squatter.bind(("127.0.0.1", 0))
        squatter.listen()
        taken = squatter.getsockname()[1]
        (ctrl,) = free_ports(1)
        listeners = f"PLAINTEXT://127.0.0.1:{taken},CONTROLLER://127.0.0.1:{ctrl}"
        broker = KafkaBroker(
            extra_properties={
                "listeners": listeners,
                "advertised.listeners": listeners,
                "controller.quorum.bootstrap.servers": f"127.0.0.1:{ctrl}",
            },
            startup_timeout=120,
        )
        with pytest.raises(KafkaError) as info:
            with broker:
                pass
    message = str(info.value)
    assert "exited with code" in message, message
    assert "Address already in use" in message, message
    assert not broker.is_running
    assert broker.data_dir is None  # cleaned up
