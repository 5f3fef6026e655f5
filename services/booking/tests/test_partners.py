"""Partner systems on Kafka, on the real broker, as one with bad intentions would try them: the
topic names the caller (another partner's name on it is refused, and reaches nothing of that
partner's), a partner's replies and outcomes reach its own topic only, it is told what became of
its appointments without asking, a Kafka caller is never an API key's holder, and the shared
topic of old is read only when an operator asks for it."""

from __future__ import annotations

import json
import uuid
from typing import Any

import asyncpg
import pytest
from visio_booking.handlers import follow_statuses
from visio_booking.keys import API_KEYS
from visio_shared import publish_event
from visio_shared.booking_replies import KNOWN_OUTCOMES, AppointmentOutcome

SCHEDULER, PORTAL = "national-scheduler", "caf-portal"


def request(request_type: str, payload: dict[str, Any], **fields: Any) -> dict[str, Any]:
    return {
        "request_id": f"req-{uuid.uuid4()}",
        "request_type": request_type,
        "payload": payload,
        **fields,
    }


async def send(booking: Any, partner: str, message: dict[str, Any]) -> None:
    """As the partner would: on its own topic (its principal may write no other)."""
    key = message.get("appointment_id") or message["request_id"]
    await booking.runtime.broker.publish(
        json.dumps(message).encode(),
        booking.runtime.topics.partner_requests(partner),
        key=str(key).encode(),
    )


async def read_replies(
    booking: Any, partner: str, enough: Any = lambda found: True
) -> list[dict[str, Any]]:
    """Everything on the partner's reply topic so far (replies and outcomes), once `enough`."""
    records = await booking.records(
        booking.runtime.topics.partner_replies(partner),
        lambda got: enough([json.loads(r.value) for r in got]),
        seconds=60,
    )
    return [json.loads(r.value) for r in records]


async def answer(booking: Any, partner: str, request_id: str) -> dict[str, Any]:
    found = await read_replies(
        booking, partner, lambda got: any(m.get("request_id") == request_id for m in got)
    )
    return next(m for m in found if m.get("request_id") == request_id)


async def book_over_kafka(booking: Any, partner: str, **overrides: Any) -> str:
    book = request("BookAppointment", booking.body(**overrides))
    await send(booking, partner, book)
    accepted = await answer(booking, partner, book["request_id"])
    assert accepted["event_type"] == "BookingAccepted", accepted
    appointment_id: str = accepted["appointment_id"]
    return appointment_id


async def test_a_partner_writing_anothers_name_is_refused_and_touches_nothing_of_it(
    booking: Any,
) -> None:
    theirs = await book_over_kafka(booking, SCHEDULER)
    attempts = [
        request(
            "CancelAppointment",
            {"reason": "administrative"},
            appointment_id=theirs,
            calling_system=SCHEDULER,
        ),
        request(
            "CorrectContact",
            {"email": "attacker@example.fr"},
            appointment_id=theirs,
            calling_system=SCHEDULER,
        ),
        # Booking in the other's name, to have an appointment counted as theirs.
        request("BookAppointment", booking.body(), calling_system=SCHEDULER),
    ]
    for attempt in attempts:
        await send(booking, PORTAL, attempt)
    for attempt in attempts:
        refused = await answer(booking, PORTAL, attempt["request_id"])
        assert refused["event_type"] == "BookingRejected"
        assert (refused["status"], refused["type"]) == (
            403,
            "https://visio-rdv.caf.fr/problems/forbidden",
        )
        assert refused["calling_system"] == PORTAL  # the topic's system, not the claim
        assert refused["detail"] == (
            f"this topic is {PORTAL}'s: a request on it cannot speak for '{SCHEDULER}'"
        )
        assert refused["errors"] == [
            {
                "field": "calling_system",
                "message": f"must be '{PORTAL}' (the system whose topic this is) or left out",
            }
        ]

    # Without the name, the partner is itself: the other's appointment does not exist for it.
    plain = request("CancelAppointment", {"reason": "user"}, appointment_id=theirs)
    await send(booking, PORTAL, plain)
    not_theirs = await answer(booking, PORTAL, plain["request_id"])
    assert (not_theirs["status"], not_theirs["detail"]) == (404, f"no appointment {theirs}")

    view = await booking.view(theirs, "ops")
    assert view["status"] == "requested" and view["revision"] == 1
    assert [entry["status"] for entry in view["history"]] == ["requested"]
    owners = await booking.sql(
        "SELECT DISTINCT calling_system FROM appointments WHERE appointment_id = $1 "
        "OR calling_system = $2",
        uuid.UUID(theirs),
        f"kafka:{PORTAL}",
    )
    assert {row["calling_system"] for row in owners} == {f"kafka:{SCHEDULER}"}


async def test_a_kafka_partner_and_the_api_key_of_the_same_name_are_two_callers(
    booking: Any,
) -> None:
    over_http = await booking.book(PORTAL)  # the API key named caf-portal
    attempt = request("CancelAppointment", {"reason": "user"}, appointment_id=over_http)
    await send(booking, PORTAL, attempt)  # the Kafka partner named caf-portal
    refused = await answer(booking, PORTAL, attempt["request_id"])
    assert refused["status"] == 404
    over_kafka = await book_over_kafka(booking, PORTAL)
    answer_ = await booking.client.get(
        f"/v1/appointments/{over_kafka}", headers=booking.auth(PORTAL)
    )
    assert answer_.status_code == 404
    assert (await booking.view(over_http, PORTAL))["status"] == "requested"

    # And no key can ever be given the Kafka name.
    conn = await asyncpg.connect(booking.owner_dsn)
    try:
        with pytest.raises(ValueError, match="namespace is the Kafka partners'"):
            await API_KEYS.create(conn, f"kafka:{PORTAL}", ["appointments:read"])
        with pytest.raises(asyncpg.CheckViolationError):
            await conn.execute(
                "INSERT INTO booking.api_keys (key_hash, name, scopes) VALUES ($1, $2, $3)",
                uuid.uuid4().hex,
                f"kafka:{PORTAL}",
                ["appointments:admin"],
            )
    finally:
        await conn.close()


async def test_a_partners_replies_and_outcomes_reach_its_own_topic_only(booking: Any) -> None:
    mine = request("BookAppointment", booking.body())
    theirs = request("BookAppointment", booking.body())
    await send(booking, SCHEDULER, mine)
    await send(booking, PORTAL, theirs)
    scheduler_s = await answer(booking, SCHEDULER, mine["request_id"])
    portal_s = await answer(booking, PORTAL, theirs["request_id"])
    for partner, own, other in (
        (SCHEDULER, scheduler_s, portal_s),
        (PORTAL, portal_s, scheduler_s),
    ):
        found = await read_replies(booking, partner)
        assert all(message["calling_system"] == partner for message in found)
        ids = {message.get("request_id") for message in found}
        appointments = {message.get("appointment_id") for message in found}
        assert own["request_id"] in ids and other["request_id"] not in ids
        assert other["appointment_id"] not in appointments
    # Where booking sent every message about them: the owner's own topic, and nowhere else
    # (not the shared reply topic of old either) but the services' own appointments.v1.
    rows = await booking.sql(
        "SELECT topic, payload::jsonb->>'calling_system' AS partner FROM outbox "
        "WHERE payload::jsonb->>'request_id' = ANY($1::text[]) "
        "OR payload::jsonb->>'appointment_id' = ANY($2::text[])",
        [mine["request_id"], theirs["request_id"]],
        [scheduler_s["appointment_id"], portal_s["appointment_id"]],
    )
    topics = booking.runtime.topics
    replies_sent = {(r["topic"], r["partner"]) for r in rows if r["topic"] != topics.appointments}
    assert replies_sent == {
        (topics.partner_replies(SCHEDULER), SCHEDULER),
        (topics.partner_replies(PORTAL), PORTAL),
    }


async def test_a_partner_is_told_its_appointment_is_confirmed_then_cancelled(
    booking: Any,
) -> None:
    appointment_id = await book_over_kafka(booking, SCHEDULER)
    http_s = await booking.book(PORTAL)  # an API key's appointment has no feed
    topics, broker = booking.runtime.topics, booking.runtime.broker
    for each in (appointment_id, http_s):
        ready, sent = booking.confirmation(each)
        await publish_event(broker, topics.meetings, ready)
        await publish_event(broker, topics.notifications, sent)
        await publish_event(broker, topics.notifications, sent)  # redelivered: told once

    def outcomes(found: list[dict[str, Any]], of: str) -> list[dict[str, Any]]:
        return [
            m
            for m in found
            if m["event_type"] == "AppointmentOutcome" and m["appointment_id"] == of
        ]

    found = await read_replies(booking, SCHEDULER, lambda got: outcomes(got, appointment_id))
    (confirmed,) = outcomes(found, appointment_id)
    outcome = AppointmentOutcome.model_validate(confirmed)  # the published contract
    assert (outcome.outcome, outcome.revision, outcome.calling_system) == (
        "confirmed",
        1,
        SCHEDULER,
    )
    assert outcome.outcome in KNOWN_OUTCOMES

    cancel = request("CancelAppointment", {"reason": "user"}, appointment_id=appointment_id)
    await send(booking, SCHEDULER, cancel)
    found = await read_replies(
        booking, SCHEDULER, lambda got: len(outcomes(got, appointment_id)) >= 2
    )
    told = outcomes(found, appointment_id)
    assert [(m["outcome"], m["revision"], m["detail"]) for m in told] == [
        ("confirmed", 1, None),
        ("cancelled", 2, "user"),
    ]
    replies = [m for m in found if m.get("request_id") == cancel["request_id"]]
    assert replies[0]["status"] == "cancelled" and replies[0]["revision"] == 2
    # The API key's appointment was confirmed too, and its story stays off every partner topic.
    assert (await booking.view(http_s, PORTAL))["status"] == "confirmed"
    for partner in (SCHEDULER, PORTAL):
        assert not outcomes(await read_replies(booking, partner), http_s)


async def test_the_shared_topic_is_read_only_when_asked_and_each_message_counted(
    booking: Any, start_booking: Any, postgres_url: str, kafka_bootstrap: str
) -> None:
    read_by_default = {
        topic
        for subscriber in booking.runtime.broker.subscribers
        for topic in subscriber.topic_names
    }
    assert booking.runtime.topics.booking_requests not in read_by_default
    assert booking.runtime.topics.partner_requests(SCHEDULER) in read_by_default

    legacy, close = await start_booking(postgres_url, kafka_bootstrap, shared_requests_topic=True)
    try:
        topics = legacy.runtime.topics
        book = request("BookAppointment", legacy.body(), calling_system=SCHEDULER)
        await legacy.runtime.broker.publish(
            json.dumps(book).encode(), topics.booking_requests, key=book["request_id"].encode()
        )
        unnamed = request("BookAppointment", legacy.body())
        await legacy.runtime.broker.publish(
            json.dumps(unnamed).encode(),
            topics.booking_requests,
            key=unnamed["request_id"].encode(),
        )
        wanted = {book["request_id"], unnamed["request_id"]}
        records = await legacy.records(
            topics.booking_replies,
            lambda got: wanted <= {json.loads(r.value)["request_id"] for r in got},
        )
        by_id = {json.loads(r.value)["request_id"]: json.loads(r.value) for r in records}
        accepted = by_id[book["request_id"]]
        assert accepted["event_type"] == "BookingAccepted"
        assert by_id[unnamed["request_id"]]["errors"] == [
            {"field": "calling_system", "message": "Field required"}
        ]
        # The same owner as on the partner's own topic, so a partner moves without losing
        # sight of its appointments; never an admin.
        rows = await legacy.sql(
            "SELECT calling_system FROM appointments WHERE appointment_id = $1",
            uuid.UUID(accepted["appointment_id"]),
        )
        assert rows[0]["calling_system"] == f"kafka:{SCHEDULER}"
        metrics = legacy.runtime.metrics
        assert metrics.value("booking_shared_topic_requests_total", calling_system=SCHEDULER) == 1
        assert metrics.value("booking_shared_topic_requests_total", calling_system="undeclared")
    finally:
        await close()


async def test_a_batch_of_confirmations_tells_each_partner_in_two_statements(
    booking: Any,
) -> None:
    """The status follower's batch reads the appointments it moved in one statement and writes
    their outcomes in another, however many there are: each partner's to its own topic, in the
    batch's order, none for an API key's appointment, none for a status that is no outcome."""
    ids = [await book_over_kafka(booking, partner) for partner in (SCHEDULER, PORTAL, SCHEDULER)]
    ids.append(await booking.book(PORTAL))  # an API key's: no feed
    confirmations = [booking.confirmation(each) for each in ids]
    ctx, db = booking.app.state.context, booking.runtime.db
    statements: list[str] = []

    def note(record: asyncpg.connection.LoggedQuery) -> None:
        if "calling_system" in record.query or "INSERT INTO outbox" in record.query:
            statements.append(record.query)

    async with db.acquire() as conn:
        conn.add_query_logger(note)
    try:
        ready = await follow_statuses(db, ctx, [ready for ready, _ in confirmations])
        statements.clear()  # meeting_ready is no outcome: nothing written
        confirmed = await follow_statuses(db, ctx, [sent for _, sent in confirmations])
    finally:
        async with db.acquire() as conn:
            conn.remove_query_logger(note)
    assert len(ready) == len(confirmed) == 4
    assert len(statements) == 2, statements
    rows = await booking.sql(
        "SELECT topic, payload::jsonb ->> 'appointment_id' AS appointment_id, "
        "payload::jsonb ->> 'outcome' AS outcome FROM outbox "
        "WHERE payload::jsonb ->> 'event_type' = 'AppointmentOutcome' "
        "AND payload::jsonb ->> 'appointment_id' = ANY($1::text[]) ORDER BY id",
        ids,
    )
    topics = booking.runtime.topics
    expected = sorted(zip(ids[:3], (SCHEDULER, PORTAL, SCHEDULER), strict=True))
    assert [(r["appointment_id"], r["topic"], r["outcome"]) for r in rows] == [
        (each, topics.partner_replies(partner), "confirmed") for each, partner in expected
    ]
