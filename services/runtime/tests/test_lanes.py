"""Lanes on the real test broker: appointments sharing one partition overtake each other, one
appointment's events never overtake each other, and the partition's committed offset never
passes a record still in the making — nor, at shutdown, one left waiting to retry, which is then
tried no more."""

from __future__ import annotations

import asyncio
import random
import uuid

from visio_runtime.errors import Transient
from visio_runtime.service import build_runtime
from visio_runtime.testing import running, wait_until
from visio_shared import AppointmentEvent, AppointmentRescheduled, Headers

from .test_consumer import committed, rescheduled, settings_for


async def test_appointments_overtake_each_other_on_one_partition_never_themselves(
    kafka_bootstrap: str,
) -> None:
    settings = settings_for(kafka_bootstrap, topic_partitions=1, consumer_concurrency=8)
    rt = build_runtime("meetings", settings)
    slow, others = uuid.uuid4(), [uuid.uuid4() for _ in range(5)]
    release = asyncio.Event()
    handled: list[tuple[uuid.UUID, int]] = []
    rng = random.Random(7)  # jitter, so lanes finish out of their arrival order

    async def handle(event: AppointmentEvent) -> None:
        if event.appointment_id == slow and event.revision == 2:
            await release.wait()
        await asyncio.sleep(rng.uniform(0, 0.01))  # handling time, not synchronisation
        handled.append((event.appointment_id, event.revision))

    rt.consumer.on(AppointmentRescheduled)(handle)
    rt.consumer.subscribe(rt.topics.appointments)
    topic = rt.topics.appointments
    async with running(rt):
        # The slow appointment's first change comes first on the partition; everyone's four
        # changes follow, interleaved.
        events = [rescheduled(slow, 2)]
        for revision in (3, 4, 5):
            events += [rescheduled(slow, revision)]
            events += [rescheduled(other, revision - 1) for other in others]
        events += [rescheduled(other, 5) for other in others]
        for event in events:
            await rt.broker.publish(
                event.to_json_bytes(),
                topic,
                key=str(event.appointment_id).encode(),
                partition=0,
                headers=Headers.for_event(event),
            )
        # Everyone else is done while the slow one's first change is still in the making...
        await wait_until(
            lambda: sum(1 for seen in handled if seen[0] != slow) == 4 * len(others),
            what="the other appointments' changes",
        )
        assert [seen for seen in handled if seen[0] == slow] == []
        # ...and the partition's commit has not passed it: a crash now would redeliver it.
        await rt.consumer.commit_now()
        assert await committed(settings, rt.topics.group("meetings"), topic) == {0: None}
        release.set()
        await wait_until(lambda: len(handled) == len(events), what="every change")

    for appointment in [slow, *others]:
        revisions = [revision for seen, revision in handled if seen == appointment]
        assert revisions == sorted(revisions) and len(revisions) == 4
    assert await committed(settings, rt.topics.group("meetings"), topic) == {0: len(events)}


async def test_a_record_waiting_to_retry_at_shutdown_is_left_uncommitted_and_tried_no_more(
    kafka_bootstrap: str,
) -> None:
    settings = settings_for(
        kafka_bootstrap,
        topic_partitions=1,
        consumer_concurrency=4,
        retry_attempts=1_000_000,
        retry_initial_delay_s=0.01,
        retry_max_delay_s=0.01,
    )
    rt = build_runtime("meetings", settings)
    tries: list[int] = []

    async def never(event: AppointmentEvent) -> None:
        tries.append(event.revision)
        raise Transient("Graph answers 503")

    rt.consumer.on(AppointmentRescheduled)(never)
    rt.consumer.subscribe(rt.topics.appointments)
    topic = rt.topics.appointments
    async with running(rt):
        event = rescheduled(uuid.uuid4(), 2)
        await rt.broker.publish(
            event.to_json_bytes(),
            topic,
            key=str(event.appointment_id).encode(),
            headers=Headers.for_event(event),
        )
        await wait_until(lambda: len(tries) >= 20, what="twenty tries")
    # Stopped: the lane gave the record up (its next owner gets it) and is gone.
    assert rt.consumer.in_flight == 0
    assert await committed(settings, rt.topics.group("meetings"), topic) == {0: None}
