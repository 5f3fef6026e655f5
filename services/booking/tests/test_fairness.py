"""One partner's flood cannot hold back another's request, on the real broker: with 10,000
bookings queued on one partner's topic, another partner's request is answered while the flood
is still being worked through — its reply is on its topic before the flooder's backlog is
drained. Ordering is what is asserted; the time it took is printed, never asserted (a shared
machine's timing is no verdict)."""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from typing import Any

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from visio_runtime.kafka import ensure_topics
from visio_runtime.settings import ServiceSettings
from visio_shared import Topics

FLOOD = 10_000
FLOODER, OTHER = "national-scheduler", "caf-portal"  # the harness's partners (conftest)
# The flood is being worked through when the other partner sends: its answer then measures
# the wait behind a backlog, not the consumer group's first join.
WARMED_UP = 200


async def queue_flood(bootstrap: str, topic: str, body: dict[str, Any]) -> None:
    """10,000 valid bookings on the flooder's topic, each with its own request id (and key) and
    its own advisor (one advisor's overlapping bookings would be refused, not booked)."""
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, linger_ms=20, acks="all")
    await producer.start()
    try:
        sent = []
        for n in range(FLOOD):
            request_id = f"flood-{n}-{uuid.uuid4()}"
            value = {
                "request_id": request_id,
                "request_type": "BookAppointment",
                "payload": body | {"advisor": {**body["advisor"], "id": str(uuid.uuid4())}},
            }
            sent.append(
                await producer.send(topic, json.dumps(value).encode(), key=request_id.encode())
            )
        await asyncio.gather(*sent)
    finally:
        await producer.stop()


async def test_a_partners_backlog_does_not_hold_back_another_partners_request(
    start_booking: Any, booking_body: Any, postgres_url: str, kafka_bootstrap: str
) -> None:
    prefix = f"booking-fair-{uuid.uuid4().hex[:8]}"
    topics = Topics(prefix)
    kafka = ServiceSettings(kafka_bootstrap_servers=kafka_bootstrap, topic_prefix=prefix)
    await ensure_topics(kafka, topics.partner_topics([FLOODER, OTHER]))
    booking, close = await start_booking(postgres_url, kafka_bootstrap, topic_prefix=prefix)
    flood_replies = topics.partner_replies(FLOODER)

    async def answered() -> int:
        """Flood requests answered so far: their replies, committed with their effect."""
        rows = await booking.sql("SELECT count(*) AS n FROM outbox WHERE topic = $1", flood_replies)
        return int(rows[0]["n"])

    replies = AIOKafkaConsumer(bootstrap_servers=kafka_bootstrap, enable_auto_commit=False)
    await replies.start()
    try:
        # Both partners' groups hold their topics before the flood is queued: the other's
        # answer then measures the wait behind the flood, not a group still joining on a loaded
        # machine (while it joined, a fast booking worked the whole flood through).
        partitions = booking.runtime.settings.topic_partitions

        async def both_topics_held() -> bool:
            held = booking.runtime.consumer.assignment()
            wanted = {topics.partner_requests(FLOODER), topics.partner_requests(OTHER)}
            return bool(sum(tp.topic in wanted for tp in held) == 2 * partitions)

        await booking.until(both_topics_held, 120, "booking to hold both partners' topics")
        queued_at = time.monotonic()
        await queue_flood(kafka_bootstrap, topics.partner_requests(FLOODER), booking_body())
        print(f"\n{FLOOD} bookings queued by {FLOODER} in {time.monotonic() - queued_at:.1f} s")
        await booking.until(
            lambda: _at_least(answered, WARMED_UP), 120, "the flood to be worked through"
        )
        replies.assign(
            [
                TopicPartition(topics.partner_replies(OTHER), partition)
                for partition in range(booking.runtime.settings.topic_partitions)
            ]
        )
        await replies.seek_to_beginning()
        request_id = f"other-{uuid.uuid4()}"
        other = {
            "request_id": request_id,
            "request_type": "BookAppointment",
            "payload": booking_body(),
        }
        before = await answered()
        unpublished = await booking.sql(
            "SELECT count(*) AS n FROM outbox WHERE published_at IS NULL"
        )
        print(f"\noutbox rows not yet published when {OTHER} sends: {unpublished[0]['n']}")
        sent_at = time.monotonic()
        await booking.runtime.broker.publish(
            json.dumps(other).encode(), topics.partner_requests(OTHER), key=request_id.encode()
        )

        async def its_reply() -> dict[str, Any] | None:
            for batch in (await replies.getmany(timeout_ms=50)).values():
                for record in batch:
                    reply = json.loads(record.value)
                    if reply.get("request_id") == request_id:
                        return dict(reply)
            return None

        reply = await booking.until(its_reply, 120, "the other partner's reply")
        waited = time.monotonic() - sent_at
        after = await answered()
        print(
            f"{OTHER}'s booking answered in {waited:.3f} s (send to reply on its topic), while "
            f"{FLOOD - before} of {FLOODER}'s requests were still queued; {after - before} of "
            f"them were answered meanwhile, {FLOOD - after} still waiting"
        )
        assert reply["event_type"] == "BookingAccepted" and reply["calling_system"] == OTHER
        # The ordering: the other partner was answered before the flooder's backlog drained.
        assert after < FLOOD, f"{OTHER} waited for the whole of {FLOODER}'s backlog"
    finally:
        await replies.stop()
        await close()


async def _at_least(count: Any, wanted: int) -> bool:
    return bool(await count() >= wanted)
