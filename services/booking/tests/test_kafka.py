"""Booking's Kafka side on the real broker: requests on a partner's booking-requests.<system>.v1
take effect once and each gets its reply on that partner's booking-replies.<system>.v1 (the
same problems as over HTTP); only a message that names no request is dead-lettered; the status
follows meetings' and notifications' events, the meeting's outcome included. (Who may speak for
whom, outcomes and fairness: test_partners.py.)"""

from __future__ import annotations

import json
import uuid
from datetime import UTC, datetime
from typing import Any

import pytest
from visio_booking import inbound
from visio_shared import publish_event
from visio_shared.booking_requests import (
    BookAppointment,
    BookingRequest,
    CancelAppointment,
    CancelRequest,
    request_key,
)
from visio_shared.events import MeetingAttendanceRecorded

SYSTEM = "national-scheduler"
PROBLEMS = "https://visio-rdv.caf.fr/problems/"


async def send(booking: Any, message: dict[str, Any] | bytes, **headers: str) -> None:
    value = message if isinstance(message, bytes) else json.dumps(message).encode()
    key = (
        message.get("appointment_id") or message.get("request_id")
        if isinstance(message, dict)
        else None
    )
    await booking.runtime.broker.publish(
        value,
        booking.runtime.topics.partner_requests(SYSTEM),
        key=str(key).encode() if key else None,
        headers=headers or None,
    )


async def replies(booking: Any, request_id: str, count: int = 1) -> list[dict[str, Any]]:
    """The replies to one request on the partner's own topic, in order, once there are `count`
    of them; each keyed by its appointment (else its request id) and naming the partner."""

    def mine(records: list[Any]) -> list[Any]:
        return [r for r in records if json.loads(r.value).get("request_id") == request_id]

    records = await booking.records(
        booking.runtime.topics.partner_replies(SYSTEM),
        lambda got: len(mine(got)) >= count,
        seconds=60,
    )
    # In the order they were written: a reply keyed by its request id (a refusal naming no
    # appointment) is on another partition than its appointment's, and partitions are read
    # in no particular order.
    ordered = sorted(mine(records), key=lambda record: record.timestamp)
    found = [json.loads(r.value) for r in ordered]
    for record, reply in zip(ordered, found, strict=True):
        assert record.key == (reply["appointment_id"] or request_id).encode()
        assert reply["calling_system"] == SYSTEM
    return found


def request(request_type: str, payload: dict[str, Any], **fields: Any) -> dict[str, Any]:
    return {
        "request_id": f"req-{uuid.uuid4()}",
        "calling_system": SYSTEM,
        "request_type": request_type,
        "payload": payload,
        **fields,
    }


async def test_a_booking_request_takes_effect_once_and_is_answered_each_time(booking: Any) -> None:
    body = booking.body(subject=f"Kafka {uuid.uuid4()}")
    book = request("BookAppointment", body)
    await send(booking, book)
    await send(booking, book)  # the system retries: same id, same payload
    first, again = await replies(booking, book["request_id"], count=2)
    assert first["event_type"] == again["event_type"] == "BookingAccepted"
    assert first["appointment_id"] == again["appointment_id"]
    assert (first["replayed"], again["replayed"]) == (False, True)
    assert first["status"] == "requested" and first["revision"] == 1
    assert first["calling_system"] == SYSTEM and first["request_type"] == "BookAppointment"

    rows = await booking.sql(
        "SELECT appointment_id, calling_system FROM appointments WHERE subject = $1",
        body["subject"],
    )
    # Owned under the Kafka name: no API key can be that caller.
    assert [(str(r["appointment_id"]), r["calling_system"]) for r in rows] == [
        (first["appointment_id"], f"kafka:{SYSTEM}")
    ]
    # Published like any booking, its consent marked as arriving by Kafka.
    key = first["appointment_id"].encode()
    records = await booking.records(
        booking.runtime.topics.appointments, lambda got: any(r.key == key for r in got)
    )
    event = json.loads(next(r for r in records if r.key == key).value)
    assert event["consent"]["channel"] == "kafka" and event["calling_system"] == f"kafka:{SYSTEM}"

    # The same request id for another payload is refused, as over HTTP.
    await send(booking, {**book, "payload": {**body, "duration_minutes": 45}})
    reused = (await replies(booking, book["request_id"], count=3))[2]
    assert reused["event_type"] == "BookingRejected" and reused["status"] == 422
    assert reused["type"] == "https://visio-rdv.caf.fr/problems/idempotency-key-reused"
    assert reused["errors"] == [
        {"field": "request_id", "message": "already used for a different request"}
    ]


async def test_an_invalid_request_is_rejected_with_the_http_field_errors(booking: Any) -> None:
    body = booking.body(caf_code="974", duration_minutes=500)
    body["user"]["email"] = "jeanne@"
    over_http = await booking.client.post("/v1/appointments", json=body, headers=booking.auth())
    assert over_http.status_code == 422

    book = request("BookAppointment", body)
    await send(booking, book)
    (rejected,) = await replies(booking, book["request_id"])
    assert rejected["event_type"] == "BookingRejected"
    assert rejected["status"] == 422 and rejected["title"] == "The request is not valid"
    assert rejected["errors"] == over_http.json()["errors"]
    assert rejected["detail"] == over_http.json()["detail"]


async def test_every_change_over_kafka_takes_effect_once_with_a_reply_each_time(
    booking: Any,
) -> None:
    book = BookAppointment(
        request_id=f"req-{uuid.uuid4()}",
        calling_system=SYSTEM,
        payload=BookingRequest.model_validate(booking.body()),
    )
    await booking.runtime.broker.publish(
        book.model_dump_json().encode(),
        booking.runtime.topics.partner_requests(SYSTEM),
        key=request_key(book),
    )
    appointment_id = (await replies(booking, book.request_id))[0]["appointment_id"]

    changes = [
        request("RescheduleAppointment", {"duration_minutes": 40}, appointment_id=appointment_id),
        request("CorrectContact", {"email": "j.dupont@example.fr"}, appointment_id=appointment_id),
        request(
            "ReassignAdvisor",
            {
                "advisor": {
                    "id": "7a1e2b3c-4d5e-4f60-8a9b-0c1d2e3f4a57",
                    "display_name": "Marie Grondin",
                }
            },
            appointment_id=appointment_id,
        ),
    ]
    cancel = CancelAppointment(
        request_id=f"req-{uuid.uuid4()}",
        calling_system=SYSTEM,
        appointment_id=uuid.UUID(appointment_id),
        payload=CancelRequest(reason="administrative"),
    )
    changes.append(json.loads(cancel.model_dump_json()))
    for change in changes:
        await send(booking, change)
        await send(booking, change)
    answers = [await replies(booking, change["request_id"], count=2) for change in changes]
    assert [
        [(a["event_type"], a["revision"], a["replayed"]) for a in pair] for pair in answers
    ] == [
        [("BookingAccepted", revision, False), ("BookingAccepted", revision, True)]
        for revision in (2, 3, 4, 5)
    ]
    assert answers[-1][0]["status"] == "cancelled"

    view = await booking.view(appointment_id, "ops")
    assert view["revision"] == 5 and view["status"] == "cancelled"
    assert view["history"][-1]["detail"] == f"administrative, by kafka:{SYSTEM}"

    # Now past changing: refused, with the reason, as over HTTP.
    late = request("RescheduleAppointment", {"duration_minutes": 20}, appointment_id=appointment_id)
    await send(booking, late)
    (refused,) = await replies(booking, late["request_id"])
    assert refused["status"] == 409
    assert refused["type"] == "https://visio-rdv.caf.fr/problems/appointment-cancelled"
    assert (
        refused["appointment_id"] == appointment_id
        and refused["request_type"] == "RescheduleAppointment"
    )


async def test_a_system_changes_only_its_own_appointments(booking: Any) -> None:
    portal_s = await booking.book("caf-portal")
    change = request("CancelAppointment", {"reason": "user"}, appointment_id=portal_s)
    await send(booking, change)
    (refused,) = await replies(booking, change["request_id"])
    assert refused["status"] == 404 and refused["detail"] == f"no appointment {portal_s}"
    assert (await booking.view(portal_s))["status"] == "requested"


async def test_broken_requests_with_an_id_are_answered_and_without_one_dead_lettered(
    booking: Any,
) -> None:
    not_json = f"req-{uuid.uuid4()}"
    await send(booking, b"\x00not json", request_id=not_json, calling_system=SYSTEM)
    (answer,) = await replies(booking, not_json)
    assert (answer["status"], answer["calling_system"]) == (400, SYSTEM)

    no_type = request("BookAppointment", booking.body())
    del no_type["request_type"]
    no_target = request("CancelAppointment", {"reason": "user"})
    await send(booking, no_type)
    await send(booking, no_target)
    (untyped,) = await replies(booking, no_type["request_id"])
    assert untyped["status"] == 422 and untyped["errors"] == [
        {"field": "request_type", "message": "Field required"}
    ]
    (untargeted,) = await replies(booking, no_target["request_id"])
    assert untargeted["errors"] == [
        {"field": "appointment_id", "message": "CancelAppointment needs appointment_id"}
    ]

    # Nobody to answer: kept for operators, with why.
    marker = str(uuid.uuid4())
    await send(booking, {"calling_system": SYSTEM, "note": marker})
    letters = await booking.records(
        booking.runtime.topics.dlq("booking"),
        lambda got: any(marker.encode() in r.value for r in got),
    )
    letter = next(r for r in letters if marker.encode() in r.value)
    headers = {name: value.decode() for name, value in letter.headers}
    assert headers["dlq.reason"] == "no request_id: nobody to answer"
    assert headers["dlq.source_topic"] == booking.runtime.topics.partner_requests(SYSTEM)


async def test_a_request_giving_a_key_twice_is_rejected_naming_it(booking: Any) -> None:
    subject = f"Twice {uuid.uuid4()}"
    twice = request("BookAppointment", booking.body(subject=subject))
    value = json.dumps(twice)[:-1] + ', "calling_system": "another-system"}'
    value = value.replace('"email": ', '"email": "x@example.fr", "email": ', 1)
    await send(booking, value.encode())
    (rejected,) = await replies(booking, twice["request_id"])
    assert rejected["status"] == 422
    assert rejected["errors"] == [
        {"field": "calling_system", "message": "given more than once"},
        {"field": "user.email", "message": "given more than once"},
    ]
    assert await booking.sql("SELECT 1 FROM appointments WHERE subject = $1", subject) == []


async def test_a_request_booking_cannot_handle_now_is_kept_and_answered_503(
    booking: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    async def away(*args: Any, **kwargs: Any) -> None:
        raise OSError("booking's database is away")

    monkeypatch.setattr(inbound, "execute", away)
    book = request("BookAppointment", booking.body())
    await send(booking, book)
    (answer,) = await replies(booking, book["request_id"])
    assert (answer["status"], answer["type"]) == (503, PROBLEMS + "unavailable")
    marker = book["request_id"].encode()
    letters = await booking.records(
        booking.runtime.topics.dlq("booking"), lambda got: any(marker in r.value for r in got)
    )
    headers = {
        name: value.decode()
        for name, value in next(r for r in letters if marker in r.value).headers
    }
    attempts = booking.runtime.settings.retry_attempts
    assert headers["dlq.attempts"] == str(attempts)
    assert headers["dlq.reason"] == (
        f"gave up after {attempts} attempts: OSError: booking's database is away"
    )

    # Back: sent again with the same request_id, it takes effect.
    monkeypatch.undo()
    await send(booking, book)
    _, accepted = await replies(booking, book["request_id"], count=2)
    assert accepted["event_type"] == "BookingAccepted" and not accepted["replayed"]


async def test_status_follows_meetings_and_notifications_on_the_broker(booking: Any) -> None:
    appointment_id = await booking.book()
    ready, sent = booking.confirmation(appointment_id)
    topics = booking.runtime.topics
    await publish_event(booking.runtime.broker, topics.notifications, sent)
    await publish_event(booking.runtime.broker, topics.meetings, ready)
    await publish_event(booking.runtime.broker, topics.meetings, ready)

    async def followed() -> dict[str, Any] | None:
        view = await booking.view(appointment_id)
        return view if view["join_url"] and len(view["history"]) == 3 else None

    view = await booking.until(followed, 60, "booking to follow both events")
    assert view["status"] == "confirmed"
    assert view["join_url"] == "https://teams.microsoft.com/l/meetup-join/abc"


async def test_the_meetings_outcome_is_held_or_no_show_and_no_shows_are_counted(
    booking: Any,
) -> None:
    topics, broker = booking.runtime.topics, booking.runtime.broker
    counted = booking.runtime.metrics.value("appointments_no_show_total")
    outcomes = {}
    for attended in (True, False):
        appointment_id = await booking.book()
        lineage = {
            "appointment_id": uuid.UUID(appointment_id),
            "revision": 1,
            "correlation_id": uuid.UUID(appointment_id),
        }
        now = datetime.now(UTC)
        attendance = MeetingAttendanceRecorded(
            **lineage,
            online_meeting_id="meeting-1",
            report_id="report-1",
            meeting_start=now,
            meeting_end=now,
            participants=[],
            public_attended=attended,
        )
        for _ in range(2):  # redelivered: one step, counted once
            await publish_event(broker, topics.meetings, attendance)
        outcomes[appointment_id] = "held" if attended else "no_show"

    async def settled() -> bool:
        statuses = {a: (await booking.view(a))["status"] for a in outcomes}
        return statuses == outcomes

    await booking.until(settled, 60, "booking to follow the outcomes")
    for appointment_id, status in outcomes.items():
        history = (await booking.view(appointment_id))["history"]
        assert [entry["status"] for entry in history] == ["requested", status]
    assert booking.runtime.metrics.value("appointments_no_show_total") == counted + 1
