"""pytest fixtures for tests that need a real Jaeger v2 (tests/support/jaeger.py).

Use them from a conftest.py (or a test module):

    from tests.support.jaeger_fixture import jaeger  # noqa: F401

``jaeger`` is one Jaeger with in-memory storage, shared by the whole session: use
fresh trace IDs in each test and do not expect an empty store. A test that stops
or kills it should call ``jaeger.ensure_running()`` before it ends (memory storage
comes back EMPTY after a restart). Tests that need traces to survive a restart
should make their own ``Jaeger(storage="badger")`` (or use ``jaeger_badger``).

The first use builds the binary (scripts/jaeger.sh build): minutes with empty Go
caches, so a CI script should run ``scripts/jaeger.sh build`` before pytest, or the
first test using the fixture needs a large ``pytest.mark.timeout``.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from .jaeger import Jaeger


@pytest.fixture(scope="session")
def jaeger() -> Iterator[Jaeger]:
    """A Jaeger v2 on 127.0.0.1 (in-memory storage), OTLP gRPC/HTTP in, query API out."""
    with Jaeger(storage="memory") as j:
        yield j


@pytest.fixture()
def jaeger_badger() -> Iterator[Jaeger]:
    """A Jaeger v2 of this test alone with Badger storage: traces survive stop()/start()."""
    with Jaeger(storage="badger") as j:
        yield j
