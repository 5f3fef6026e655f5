"""Fixtures every test folder shares: the broker and the PostgreSQL server the tests run on
(see visio_deploy.testing for how they are chosen)."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator

import pytest
from visio_deploy.testing import create_database, drop_database, kafka_broker, postgres_server


@pytest.fixture(scope="session")
def kafka_bootstrap() -> Iterator[str]:
    with kafka_broker() as servers:
        yield servers


@pytest.fixture(scope="session")
def postgres_url() -> Iterator[str]:
    with postgres_server() as url:
        yield url


@pytest.fixture
async def fresh_database(postgres_url: str) -> AsyncIterator[str]:
    """An owner connection string to a database of its own, dropped afterwards."""
    url = await create_database(postgres_url)
    try:
        yield url
    finally:
        await drop_database(postgres_url, url)
