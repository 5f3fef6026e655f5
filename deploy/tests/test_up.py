"""What `up` decides on its own: it says `ready` only once every consumer group holds all the
partitions it reads — a member joining makes a settled group settle again, and the check sees
it — and it will not start a second stack on a var/ whose stack still runs."""

from __future__ import annotations

import asyncio
import os
import sys
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from visio_deploy.ops.topology import subscriptions
from visio_deploy.readiness import expected_partitions, waiting_for
from visio_deploy.up import UpSettings, refuse_a_second_stack
from visio_deploy.up_stack import Stack
from visio_runtime.kafka import ensure_topics
from visio_runtime.local_stack import LocalStack, process_started
from visio_runtime.service import build_runtime
from visio_runtime.settings import ServiceSettings
from visio_runtime.testing import running, wait_until
from visio_shared import Topics


@pytest.fixture
async def settings(kafka_bootstrap: str) -> ServiceSettings:
    settings = ServiceSettings(
        kafka_bootstrap_servers=kafka_bootstrap, topic_prefix=f"ready-{uuid.uuid4().hex[:8]}"
    )
    await ensure_topics(settings, Topics(settings.topic_prefix).all())
    return settings


def ready_answer(state: str, partitions: int, held: int = 0) -> dict[str, Any]:
    """A /health/ready answer of a healthy process whose consumer is in that state."""
    return {
        "status": "ok",
        "checks": {"database": "ok", "kafka": "ok"},
        "consumer": {"state": state, "partitions": partitions, "held": held},
    }


def test_a_process_is_ready_only_once_its_group_holds_every_partition_it_reads() -> None:
    assert waiting_for(None, None, 12) == "not answering yet"
    unavailable = {"status": "unavailable", "checks": {"database": "ok", "kafka": "error"}}
    assert waiting_for(503, unavailable, 12) == "/health/ready answers 503 (kafka)"
    assert waiting_for(200, ready_answer("waiting", 0), 12) == (
        "its consumer waits for the group (0 of 12 partitions)"
    )
    assert waiting_for(200, ready_answer("assigned", 6), 12) == (
        "its group is settling (6 of 12 partitions held)"
    )
    assert waiting_for(200, ready_answer("assigned", 12), 12) is None
    assert waiting_for(200, ready_answer("none", 0), 0) is None  # a process that reads nothing


async def test_each_group_must_hold_every_partition_of_the_topics_its_code_reads(
    settings: ServiceSettings,
) -> None:
    expected = await expected_partitions(settings)

    reads: dict[str, set[str]] = {}
    for subscription in subscriptions(settings.topic_prefix):
        reads.setdefault(subscription.service, set()).update(subscription.topics)
    assert expected == {name: 6 * len(topics) for name, topics in reads.items()}
    # Notifications reads its two topics with a client each (each in a group of its own): a
    # process is ready once its clients together hold all twelve.
    assert expected["notifications"] == 12


async def test_a_member_joining_a_settled_group_makes_the_check_wait_again(
    settings: ServiceSettings,
) -> None:
    topic = Topics(settings.topic_prefix).appointments
    first = build_runtime("notifications", settings)
    first.consumer.subscribe(topic)
    async with running(first):
        assert waiting_for(200, ready_answer(**first.consumer.state()), 6) is None

        # Another member (as a copy started by hand would be) joins the group: it rebalances.
        second = build_runtime("notifications", settings)
        second.consumer.subscribe(topic)
        joining = asyncio.create_task(second.broker.start())
        try:
            why = await wait_until(
                lambda: waiting_for(200, ready_answer(**first.consumer.state()), 6),
                60,
                "the first member to see its group settle again",
            )
            assert why.startswith(("its group is settling", "its consumer waits for the group"))
        finally:
            joining.cancel()
            await asyncio.gather(joining, return_exceptions=True)
            await second.broker.stop()


def test_up_refuses_a_second_stack_on_a_var_whose_stack_runs(tmp_path: Path) -> None:
    running_stack = LocalStack(
        pid=os.getpid(),
        process_started=process_started(os.getpid()),
        started_at=datetime(2026, 12, 6, 9, 30, tzinfo=UTC),
        var_dir=tmp_path,
        kafka_bootstrap_servers="127.0.0.1:9092",
        broker="tansu",
        topic_prefix="visio-rdv",
        database_url="postgresql://postgres:@/postgres?host=/tmp/pg",
        database_label="embedded",
        http={},
        graph_url="https://127.0.0.1:8443",
        smtp="127.0.0.1:1025",
        api_key_file=tmp_path / "dev-api-key",
        link_keys_file=tmp_path / "link-keys",
        mail_dir=tmp_path / "mail",
        consent_var_dir=tmp_path / "consent",
        log_dir=tmp_path / "log",
    )
    running_stack.write()

    with pytest.raises(RuntimeError, match=f"the stack in {tmp_path} .* is running: stop it"):
        refuse_a_second_stack(tmp_path)

    # Once that process is gone (here: another pid start time), the file is stale: up may go.
    running_stack.model_copy(update={"process_started": -1}).write()
    refuse_a_second_stack(tmp_path)


def test_a_process_that_stopped_is_reported_with_the_end_of_its_log(tmp_path: Path) -> None:
    """The error says why, not only where the log was: a test's stack is in a temporary
    folder, gone by the time CI's output is read."""
    stack = Stack(UpSettings(var_dir=tmp_path))
    stack.launch(
        "alerts",
        [
            sys.executable,
            "-c",
            "import sys; print('[Errno 98] address already in use'); sys.exit(3)",
        ],
    )
    stack.process("alerts").wait(30)
    with pytest.raises(RuntimeError) as stopped:
        stack.check_alive()
    assert "alerts exited with code 3" in str(stopped.value)
    assert str(stopped.value).endswith("[Errno 98] address already in use")
