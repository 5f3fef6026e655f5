"""Fixtures every test folder shares: the broker and the PostgreSQL server the tests run on
(see visio_testing for how they are chosen)."""

from __future__ import annotations

import os
from collections.abc import AsyncIterator, Iterator

import pytest
from visio_fakes.processes import FREE_PORTS_SETTING
from visio_runtime.local_stack import VAR_DIR_SETTING
from visio_testing import create_database, drop_database, kafka_broker, postgres_server


@pytest.fixture(scope="session", autouse=True)
def no_running_stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    """What the tests run never talks to a stack a developer's `visio-rdv up` runs in this
    checkout: commands look for one in an empty folder (a test that wants a stack says where)."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv(VAR_DIR_SETTING, str(tmp_path_factory.mktemp("no-stack")))
        # Three workers run whole stacks side by side on one PostgreSQL server (100
        # connections by default): meetings' pool (20 in production, where a handling keeps
        # its connection across Graph calls) is kept to 8 in the stacks the tests start.
        patch.setenv("MEETINGS_DATABASE_POOL_MAX", "8")
        block = free_ports_block(os.environ.get("PYTEST_XDIST_WORKER", "gw0"))
        if block is not None and FREE_PORTS_SETTING not in os.environ:
            patch.setenv(FREE_PORTS_SETTING, block)
        yield


def free_ports_block(worker: str) -> str | None:
    """The ports a test worker's stacks pick from: 1,000 of its own (gw0: 20000-20999, gw1:
    22000-22999…), each admin port (the port + 1000) in the thousand after, all below the
    kernel's ephemeral range. Side by side, two workers' stacks could pick the same port, or
    one the admin port of another before it was bound, and a service then fails to start
    (what most likely stopped alerts in one CI run)."""
    first = 20_000 + 2_000 * int(worker.removeprefix("gw") or 0)
    return f"{first}-{first + 999}" if first + 1_999 < 32_768 else None


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


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """The files marked `long` first, each in its place otherwise: a worker takes a file at a
    time in this order (`--no-loadscope-reorder`), so the longest start first and the short
    ones fill in around them, rather than a proof starting last and running alone."""
    items.sort(key=lambda item: item.get_closest_marker("long") is None)
