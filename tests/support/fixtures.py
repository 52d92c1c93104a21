"""pytest fixtures for tests that need a real Kafka broker.

Use them from a conftest.py (or a test module):

    from tests.support.fixtures import kafka_broker  # noqa: F401

The broker is shared by the whole session. A test that stops or kills it
should call ``kafka_broker.ensure_running()`` (or ``restart()``) before it ends.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from .kafka import KafkaBroker


@pytest.fixture(scope="session")
def kafka_broker() -> Iterator[KafkaBroker]:
    """A Kafka 4.x KRaft broker on 127.0.0.1 (4 partitions per auto-created topic)."""
    # a large offset metadata limit, so the sampler's commit handoff always
    # fits (receivers.kafka.handoff_max_bytes in the tests' member config)
    with KafkaBroker(num_partitions=4,
                     extra_properties={"offset.metadata.max.bytes": 1 << 20}) as broker:
        yield broker
