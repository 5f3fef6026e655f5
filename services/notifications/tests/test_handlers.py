"""The handlers on a real PostgreSQL (the service's own migrations and role), with a fake
relay and a fake Kafka: whichever half arrives first, one email; redeliveries, none more."""

from __future__ import annotations

import asyncio

import pytest
from visio_notifications.handlers import (
    on_appointment_requested,
    on_meeting_ready,
    publish_outcomes,
)
from visio_notifications.mailer import MailRejected
from visio_runtime.errors import Transient
from visio_shared import Headers, NotificationFailed, NotificationSent


async def _dispatch(deps, appointment_id):
    return await deps.pool.fetchrow(
        "SELECT * FROM dispatches WHERE appointment_id = $1", appointment_id
    )


async def test_meeting_first_then_appointment_sends_one_email(
    deps, mailer, publisher, new_appointment, new_meeting
) -> None:
    appointment = new_appointment()
    meeting = new_meeting(appointment)

    await on_meeting_ready(deps, meeting)
    assert mailer.to(appointment.appointment_id) == []
    assert publisher.events(appointment.appointment_id) == []

    await on_appointment_requested(deps, appointment)
    [message] = mailer.to(appointment.appointment_id)
    assert (
        message["Message-ID"] == f"<{appointment.appointment_id}.r1.confirmation@visio-rdv.caf.fr>"
    )
    assert meeting.join_url in message.get_body(preferencelist=("plain",)).get_content()

    [sent] = publisher.events(appointment.appointment_id)
    assert isinstance(sent, NotificationSent)
    assert sent.kind == "confirmation"
    assert sent.message_id == message["Message-ID"]
    assert sent.revision == 1
    assert sent.correlation_id == appointment.correlation_id
    assert sent.causation_id == appointment.event_id  # the event that completed the pair
    [record] = [item for item in publisher.published if item["topic"] == deps.topics.notifications]
    assert record["key"] == str(appointment.appointment_id).encode()
    assert record["headers"][Headers.EVENT_TYPE] == "NotificationSent"

    row = await _dispatch(deps, appointment.appointment_id)
    assert row["status"] == "sent" and row["kind"] == "confirmation"
    assert row["published_at"] is not None
    assert "@example.org" not in row["recipient_sha256"]


async def test_appointment_first_then_meeting_sends_one_email(
    deps, mailer, publisher, new_appointment, new_meeting
) -> None:
    appointment = new_appointment()
    meeting = new_meeting(appointment)

    await on_appointment_requested(deps, appointment)
    assert mailer.to(appointment.appointment_id) == []

    await on_meeting_ready(deps, meeting)
    assert len(mailer.to(appointment.appointment_id)) == 1
    [sent] = publisher.events(appointment.appointment_id)
    assert sent.causation_id == meeting.event_id


async def test_redelivered_events_send_nothing_more(
    deps, mailer, publisher, new_appointment, new_meeting
) -> None:
    appointment = new_appointment()
    meeting = new_meeting(appointment)
    await on_appointment_requested(deps, appointment)
    await on_meeting_ready(deps, meeting)

    for event in (meeting, appointment, meeting):
        handler = on_meeting_ready if event is meeting else on_appointment_requested
        await handler(deps, event)

    assert len(mailer.to(appointment.appointment_id)) == 1
    assert len(publisher.events(appointment.appointment_id)) == 1
    processed = await deps.pool.fetchval(
        "SELECT count(*) FROM processed_events WHERE event_id = ANY($1::uuid[])",
        [appointment.event_id, meeting.event_id],
    )
    assert processed == 2


async def test_a_new_event_id_for_the_same_revision_sends_nothing_more(
    deps, mailer, new_appointment, new_meeting
) -> None:
    appointment = new_appointment()
    await on_appointment_requested(deps, appointment)
    await on_meeting_ready(deps, new_meeting(appointment))
    # Meetings re-emits its MeetingReady (a new event id) after a restart.
    await on_meeting_ready(deps, new_meeting(appointment))
    assert len(mailer.to(appointment.appointment_id)) == 1


async def test_both_halves_at_once_still_send_one_email(
    deps, mailer, publisher, new_appointment, new_meeting
) -> None:
    pairs = [
        (appointment, new_meeting(appointment))
        for appointment in (new_appointment() for _ in range(10))
    ]
    await asyncio.gather(
        *(on_appointment_requested(deps, appointment) for appointment, _ in pairs),
        *(on_meeting_ready(deps, meeting) for _, meeting in pairs),
    )
    for appointment, _ in pairs:
        assert len(mailer.to(appointment.appointment_id)) == 1
        assert len(publisher.events(appointment.appointment_id)) == 1


async def test_a_meeting_older_than_the_appointment_waits_for_its_own_revision(
    deps, mailer, publisher, new_appointment, new_meeting
) -> None:
    first = new_appointment()
    second = new_appointment(
        appointment_id=first.appointment_id, correlation_id=first.correlation_id, revision=2
    )
    await on_meeting_ready(deps, new_meeting(first))
    await on_appointment_requested(deps, second)
    await on_appointment_requested(deps, first)  # late and older: kept out
    assert mailer.to(first.appointment_id) == []

    await on_meeting_ready(deps, new_meeting(second))
    [message] = mailer.to(first.appointment_id)
    assert message["Message-ID"] == f"<{first.appointment_id}.r2.confirmation@visio-rdv.caf.fr>"
    [sent] = publisher.events(first.appointment_id)
    assert sent.revision == 2


async def test_a_transient_smtp_failure_rolls_back_and_the_retry_sends_once(
    deps, mailer, publisher, new_appointment, new_meeting
) -> None:
    appointment = new_appointment()
    meeting = new_meeting(appointment)
    await on_appointment_requested(deps, appointment)
    mailer.failures.append(Transient("SMTP 451: try again later"))

    with pytest.raises(Transient):
        await on_meeting_ready(deps, meeting)
    assert mailer.to(appointment.appointment_id) == []
    assert await _dispatch(deps, appointment.appointment_id) is None
    assert not await deps.pool.fetchval(
        "SELECT EXISTS (SELECT 1 FROM processed_events WHERE event_id = $1)", meeting.event_id
    )

    await on_meeting_ready(deps, meeting)  # the consumer's retry
    attempts = [m for m in mailer.attempts if str(appointment.appointment_id) in m["Message-ID"]]
    assert len(attempts) == 2
    assert attempts[0]["Message-ID"] == attempts[1]["Message-ID"]
    assert len(mailer.to(appointment.appointment_id)) == 1
    assert len(publisher.events(appointment.appointment_id)) == 1


async def test_a_refused_address_is_a_failure_event_not_a_retry(
    deps, mailer, publisher, new_appointment, new_meeting
) -> None:
    appointment = new_appointment()
    await on_appointment_requested(deps, appointment)
    mailer.failures.append(MailRejected(550, "5.1.1 <[adresse]>: Recipient address rejected"))

    await on_meeting_ready(deps, new_meeting(appointment))

    [failed] = publisher.events(appointment.appointment_id)
    assert isinstance(failed, NotificationFailed)
    assert failed.kind == "confirmation"
    assert failed.reason == "smtp_rejected"
    assert "550" in failed.detail
    row = await _dispatch(deps, appointment.appointment_id)
    assert row["status"] == "failed" and row["reason"] == "smtp_rejected"
    assert row["sent_at"] is None
    # Redelivered: decided already, nothing more.
    await on_appointment_requested(deps, appointment)
    assert len(publisher.events(appointment.appointment_id)) == 1


async def test_a_join_url_off_the_allow_list_is_never_mailed(
    deps, mailer, publisher, new_appointment, new_meeting
) -> None:
    appointment = new_appointment()
    await on_appointment_requested(deps, appointment)
    await on_meeting_ready(
        deps, new_meeting(appointment, join_url="https://teams.evil.example/l/meetup-join/x")
    )

    assert mailer.attempts == []
    [failed] = publisher.events(appointment.appointment_id)
    assert isinstance(failed, NotificationFailed)
    assert failed.reason == "join_url_not_allowed"
    assert "teams.evil.example" in failed.detail


async def test_an_outcome_kafka_did_not_take_is_published_on_the_retry(
    deps, mailer, publisher, new_appointment, new_meeting
) -> None:
    appointment = new_appointment()
    meeting = new_meeting(appointment)
    await on_appointment_requested(deps, appointment)
    publisher.fail_next = 1

    with pytest.raises(ConnectionError):
        await on_meeting_ready(deps, meeting)
    assert len(mailer.to(appointment.appointment_id)) == 1  # the email is out and recorded
    assert publisher.events(appointment.appointment_id) == []

    await on_meeting_ready(deps, meeting)  # the consumer's retry: already processed
    assert len(mailer.to(appointment.appointment_id)) == 1
    [sent] = publisher.events(appointment.appointment_id)
    assert isinstance(sent, NotificationSent)
    assert (await _dispatch(deps, appointment.appointment_id))["published_at"] is not None


async def test_the_service_role_cannot_reach_beyond_its_grants(deps) -> None:
    import asyncpg

    with pytest.raises(asyncpg.InsufficientPrivilegeError):
        await deps.pool.execute("DELETE FROM dispatches")
    with pytest.raises(asyncpg.InsufficientPrivilegeError):
        await deps.pool.execute("CREATE TABLE notifications.intruder (id int)")


async def test_leftover_outcomes_are_published_once_even_by_two_at_once(
    deps, mailer, publisher, new_appointment, new_meeting
) -> None:
    appointment = new_appointment()
    await on_appointment_requested(deps, appointment)
    publisher.fail_next = 1
    with pytest.raises(ConnectionError):
        await on_meeting_ready(deps, new_meeting(appointment))
    assert publisher.events(appointment.appointment_id) == []

    # Two replicas starting at once both flush what is left.
    await asyncio.gather(publish_outcomes(deps), publish_outcomes(deps))
    [sent] = publisher.events(appointment.appointment_id)
    assert isinstance(sent, NotificationSent)
    assert len(mailer.to(appointment.appointment_id)) == 1
