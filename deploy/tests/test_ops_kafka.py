"""`visio-rdv ops` on the real test broker: the lag of a stopped consumer as it really is, the
topics with their end offsets and an undeclared one flagged (a running group left undisturbed),
every dead letter of every service listed and replayed whichever topic and partition holds it,
and a dead letter replayed to its source topic and reprocessed exactly once, however many times
the replay is asked for."""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import AsyncIterator

import pytest
from aiokafka.admin import NewTopic
from visio_deploy.cli import build_parser
from visio_deploy.ops import dlq
from visio_deploy.ops.produce import produce
from visio_deploy.ops.settings import OpsSettings
from visio_deploy.ops.tail import tail
from visio_deploy.ops.topics import lag_report, topics_report
from visio_deploy.ops.topology import groups, partners_on
from visio_runtime.dead_letters import DeadLetter
from visio_runtime.kafka import admin_client, ensure_topics
from visio_runtime.service import Runtime, build_runtime
from visio_runtime.testing import record_of, running, wait_until
from visio_shared import Headers, MeetingFailed, Topics, publish_event


@pytest.fixture
def settings(kafka_bootstrap: str) -> OpsSettings:
    return OpsSettings(
        kafka_bootstrap_servers=kafka_bootstrap,
        topic_prefix=f"ops-{uuid.uuid4().hex[:8]}",
        retry_attempts=1,  # a failing handler dead-letters at once
    )


def failed(reason: str = "graph_forbidden") -> MeetingFailed:
    return MeetingFailed(
        appointment_id=uuid.uuid4(), revision=1, correlation_id=uuid.uuid4(), reason=reason
    )


Booking = tuple[Runtime, list[MeetingFailed], dict[str, bool]]


@pytest.fixture
async def booking(settings: OpsSettings) -> AsyncIterator[Booking]:
    """A consumer in booking's group, on meetings.v1, that fails while it is not `fixed`."""
    rt = build_runtime("booking", settings)
    handled: list[MeetingFailed] = []
    state = {"fixed": True}

    @rt.consumer.on(MeetingFailed)
    async def on_failed(event: MeetingFailed) -> None:
        if not state["fixed"]:
            raise RuntimeError("a bug in the handler")
        handled.append(event)

    # As booking subscribes: one client per topic, each in a group of its own.
    rt.consumer.subscribe(rt.topics.meetings, separately=True)
    async with running(rt):
        yield rt, handled, state


async def test_lag_of_a_stopped_consumer_is_what_it_has_not_read(
    settings: OpsSettings, booking: Booking
) -> None:
    rt, handled, _ = booking
    for _ in range(3):
        await publish_event(rt.broker, rt.topics.meetings, failed())
    await wait_until(lambda: len(handled) == 3, what="three events handled")
    # The consumer stops as a service does (its records in flight finished and committed);
    # three more come while it is away.
    await rt.consumer.drain()
    await rt.broker.stop()
    rt.broker = build_runtime("booking", settings).broker
    await rt.broker.start()
    for _ in range(3):
        await publish_event(rt.broker, rt.topics.meetings, failed())

    rows = await lag_report(settings, groups(settings.topic_prefix))

    mine = [
        row
        for row in rows
        if row.group == rt.topics.group("booking") + ".meetings.v1"
        and row.topic == rt.topics.meetings
    ]
    assert len(mine) == settings.topic_partitions
    assert sum(row.lag for row in mine) == 3
    assert sum(row.committed or 0 for row in mine) == 3
    assert all(row.lag == row.end - (row.committed or 0) for row in mine)
    # The declared groups are all there, read from the services' own code.
    notifications, booking = rt.topics.group("notifications"), rt.topics.group("booking")
    assert {row.group for row in rows} >= {
        *(rt.topics.group(name) for name in ("meetings", "consent")),
        f"{notifications}.appointments.v1",  # a group per client (EventConsumer.subscribe)
        f"{notifications}.meetings.v1",
        f"{booking}.meetings.v1",
        f"{booking}.notifications.v1",
    }
    await rt.broker.stop()


async def test_topics_and_lag_read_a_running_system_without_disturbing_it(
    settings: OpsSettings, booking: Booking
) -> None:
    rt, _, _ = booking
    group = rt.topics.group("booking") + ".meetings.v1"
    await publish_event(rt.broker, rt.topics.meetings, failed())
    misspelt = f"{settings.topic_prefix}.meeting.v1"
    admin = admin_client(settings)
    await admin.start()
    try:
        await admin.create_topics([NewTopic(misspelt, 1, 1)])
    finally:
        await admin.close()

    rows = {row.topic: row for row in await topics_report(settings, sample_s=0.2)}
    lag = await lag_report(settings, {group: [rt.topics.meetings]})

    meetings = rows[rt.topics.meetings]
    assert meetings.partitions == settings.topic_partitions
    assert sum(meetings.end_offsets.values()) == meetings.messages == 1
    assert meetings.declared and meetings.rate is not None
    assert rows[rt.topics.dlq("booking")].declared
    assert not rows[misspelt].declared

    # Reading the running group's lag did not join it: one member, no rebalance under way.
    assert sum(row.lag for row in lag) == 0
    admin = admin_client(settings)
    await admin.start()
    try:
        [described] = await admin.describe_consumer_groups([group])
    finally:
        await admin.close()
    [(_, _, state, _, _, members)] = described.groups
    assert state == "Stable" and len(members) == 1


async def test_every_dead_letter_of_every_service_is_listed_and_replayed(
    settings: OpsSettings, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    # One letter per service and partition, each written by the service's own writer.
    await ensure_topics(
        settings, [dlq.Topics(settings.topic_prefix).dlq(s) for s in dlq.DLQ_SERVICES]
    )
    written: dict[str, str] = {}  # the failed event's id → the service that gave up on it
    for service in dlq.DLQ_SERVICES:
        rt = build_runtime(service, settings)
        await rt.broker.start()
        try:
            for partition in range(settings.topic_partitions):
                event = failed(f"{service} {partition}")
                record = record_of(event, rt.topics.meetings, offset=partition)
                letter = DeadLetter("a bug", "RuntimeError", 1, event.occurred_at)
                await rt.consumer.dead_letters.write(
                    record, Headers.decode(record.headers), letter, label="x", summary="a bug"
                )
                written[str(event.event_id)] = service
        finally:
            await rt.broker.stop()

    found = await dlq.letters(settings)
    assert len(found) == len(written) == len(dlq.DLQ_SERVICES) * settings.topic_partitions
    assert {letter.header("event_id"): letter.header("dlq.consumer_group") for letter in found} == {
        event_id: f"{settings.topic_prefix}.{service}" for event_id, service in written.items()
    }

    monkeypatch.setenv("VISIO_KAFKA_BOOTSTRAP_SERVERS", settings.kafka_bootstrap_servers)
    monkeypatch.setenv("VISIO_TOPIC_PREFIX", settings.topic_prefix)
    printed = []
    for argv in (["ops", "dlq", "list"], ["ops", "dlq", "replay", "--all"]):
        args = build_parser().parse_args(argv)
        assert await asyncio.to_thread(args.handler, args) == 0
        printed.append(capsys.readouterr().out)
    listed, replayed = printed
    assert all(letter.id in listed for letter in found)
    assert all(f"replayed {letter.id} " in replayed for letter in found)
    assert f"{len(found)} replayed, 0 skipped" in replayed


async def test_a_dead_letter_is_replayed_and_reprocessed_exactly_once(
    settings: OpsSettings,
    booking: Booking,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    rt, handled, state = booking
    state["fixed"] = False
    event = failed()
    await publish_event(rt.broker, rt.topics.meetings, event)
    [letter] = await wait_until(lambda: dlq.letters(settings, "booking"), what="a dead letter")
    assert letter.source_topic == rt.topics.meetings
    assert letter.error_class == "RuntimeError"
    assert "a bug in the handler" in letter.reason

    state["fixed"] = True  # the fix is deployed: replay
    done, skipped = await dlq.replay(settings, lambda candidate: candidate.id == letter.id)
    assert [item.letter.id for item in done] == [letter.id] and skipped == []
    await wait_until(lambda: len(handled) == 1, what="the replayed event handled")

    # Asked again (say, by another operator): the ledger says it was done.
    again, skipped = await dlq.replay(settings, lambda candidate: True)
    assert again == [] and [item.id for item in skipped] == [letter.id]
    assert [item.event_id for item in handled] == [event.event_id]
    consumed = rt.metrics.value("messages_consumed_total", topic=rt.topics.meetings)
    assert consumed == 2  # the original and its one replay

    # The replay is visible on the source topic, and `ops` commands print it all.
    out: list[str] = []
    assert await tail(settings, "meetings", out.append)
    assert f"dlq.replay_of: {letter.id}" in out[-1]
    monkeypatch.setenv("VISIO_KAFKA_BOOTSTRAP_SERVERS", settings.kafka_bootstrap_servers)
    monkeypatch.setenv("VISIO_TOPIC_PREFIX", settings.topic_prefix)
    for argv in (["ops", "dlq", "list"], ["ops", "dlq", "show", letter.id]):
        args = build_parser().parse_args(argv)
        assert await asyncio.to_thread(args.handler, args) == 0
    printed = capsys.readouterr().out
    assert letter.id in printed and "RuntimeError" in printed and "replayed" in printed


async def test_each_partners_topics_count_in_the_topics_and_lag_views(
    settings: OpsSettings,
) -> None:
    """A partner is booking's configuration: ops knows it by its topics on the broker."""
    topics = Topics(settings.topic_prefix)
    await ensure_topics(settings, topics.all() + topics.partner_topics(["caf-portal"]))
    request = {"request_id": "portal-1", "request_type": "CancelAppointment"}
    await produce(settings, "booking-requests.caf-portal", json.dumps(request).encode())

    rows = {row.topic: row for row in await topics_report(settings, sample_s=0)}
    for topic in topics.partner_topics(["caf-portal"]):
        assert rows[topic].declared, topic
    partners = partners_on(settings.topic_prefix, rows)
    assert partners == ["caf-portal"]

    lag = await lag_report(settings, groups(settings.topic_prefix, partners))
    waiting = [row for row in lag if row.topic == topics.partner_requests("caf-portal")]
    assert len(waiting) == settings.topic_partitions
    assert {row.group for row in waiting} == {
        topics.group("booking") + ".booking-requests.caf-portal.v1"
    }
    assert sum(row.lag for row in waiting) == 1
