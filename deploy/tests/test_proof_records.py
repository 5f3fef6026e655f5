"""The Kafka check of `visio-rdv proof inputs`, on the real broker, against consumers of its
own: sound ones pass it — every hostile record dead-lettered by each group that reads it, each
letter matched to its record, every partition committed to its end — and it fails when the
system is broken on purpose: a consumer that lets FastStream decode values itself (a thousand
'[' raise RecursionError there, redelivered forever), or a letter reader that drops a topic."""

from __future__ import annotations

import logging
import uuid
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack

import pytest
from faststream.middlewares import AckPolicy
from visio_deploy.ops import dlq
from visio_deploy.ops.topology import Subscription
from visio_deploy.proof import records
from visio_deploy.proof.report import Report
from visio_runtime.service import Runtime, build_runtime
from visio_runtime.settings import ServiceSettings
from visio_runtime.testing import running
from visio_shared import AppointmentRequested, Topics

pytestmark = pytest.mark.long  # whole stacks: handed out first (conftest.py)


def settings_for(kafka_bootstrap: str) -> ServiceSettings:
    return ServiceSettings(
        kafka_bootstrap_servers=kafka_bootstrap,
        topic_prefix=f"hostile-{uuid.uuid4().hex[:8]}",
        topic_partitions=2,
    )


def reader(service: str, settings: ServiceSettings) -> Runtime:
    """A service's consumer of appointments.v1, handling AppointmentRequested (and nothing
    reaching it is valid, so it only ever dead-letters or skips)."""
    rt = build_runtime(service, settings)

    @rt.consumer.on(AppointmentRequested)
    async def never(event: AppointmentRequested) -> None:
        raise AssertionError("no hostile record is a valid event")

    return rt


def subscription(rt: Runtime) -> Subscription:
    group = rt.topics.group(rt.service)
    return Subscription(rt.service, group, (rt.topics.appointments,), tuple(rt.consumer.handled))


def judged(found: records.Findings) -> Report:
    report = Report("inputs")
    found.judge(report)
    return report


@pytest.fixture
async def sound(kafka_bootstrap: str) -> AsyncIterator[tuple[ServiceSettings, list[Runtime]]]:
    settings = settings_for(kafka_bootstrap)
    runtimes = [reader("meetings", settings), reader("notifications", settings)]
    async with AsyncExitStack() as stack:
        for rt in runtimes:
            rt.consumer.subscribe(rt.topics.appointments)
            await stack.enter_async_context(running(rt))
        yield settings, runtimes


async def test_sound_consumers_pass_and_a_reader_that_drops_a_topic_fails(
    sound: tuple[ServiceSettings, list[Runtime]], monkeypatch: pytest.MonkeyPatch
) -> None:
    settings, runtimes = sound
    topics = Topics(settings.topic_prefix)
    battery = records.battery(topics, [topics.appointments], tag="sound")
    sent = await records.send(settings, battery)
    readers = [subscription(rt) for rt in runtimes]

    found = await records.check(settings, sent, readers)

    assert judged(found).passed, judged(found).table()
    expected = records.expected_letters(sent, readers)
    assert found.letters == sum(expected.values()) == 2 * len(battery)  # both groups, each
    # A reader that leaves one service's dead-letter topic out misses exactly its letters.
    monkeypatch.setattr(dlq, "DLQ_SERVICES", ("booking", "meetings", "consent", "alerts"))
    dropped = await records.check(settings, sent, readers, within_s=3)
    report = judged(dropped)
    assert report.failures == ["inputs without their dead letter"]
    assert {letter[3] for letter in dropped.missing_letters} == {topics.group("notifications")}
    assert len(dropped.missing_letters) == len(battery)


async def test_a_consumer_that_lets_a_recursion_error_through_fails_the_check(
    kafka_bootstrap: str, caplog: pytest.LogCaptureFixture
) -> None:
    settings = settings_for(kafka_bootstrap)
    rt = reader("meetings", settings)
    # Subscribed as every service was before: FastStream parses and decodes each record
    # before the consumer sees it, and nacks what raised — the same record, again and again.
    rt.broker.subscriber(
        rt.topics.appointments,
        group_id=rt.topics.group("meetings"),
        auto_offset_reset="earliest",
        ack_policy=AckPolicy.NACK_ON_ERROR,
    )(rt.consumer.consume)
    caplog.set_level(logging.CRITICAL, logger="visio.visio-rdv-meetings.kafka")  # the loop's
    topics = Topics(settings.topic_prefix)
    async with running(rt):
        sent = await records.send(
            settings, records.battery(topics, [topics.appointments], tag="broken")
        )
        found = await records.check(settings, sent, [subscription(rt)], within_s=15)

    report = judged(found)
    assert not report.passed
    assert {"partitions with lag", "inputs without their dead letter"} <= set(report.failures)
    assert found.lagging and all(row.group == topics.group("meetings") for row in found.lagging)
