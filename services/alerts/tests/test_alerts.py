"""The Caf hears of failures, on the real broker, PostgreSQL and SMTP sink: a failed meeting
(told twice, and before the appointment itself arrives) gives exactly one email to that Caf's
team, with the appointment, the advisor, the time and the reason — and a person left waiting
for an email past the threshold gives one too, once per email they wait for."""

from __future__ import annotations

import email
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from email import policy
from pathlib import Path
from typing import Any, cast
from zoneinfo import ZoneInfo

import pytest
from aiosmtpd.controller import Controller
from asyncpg.connection import LoggedQuery
from fastapi import FastAPI
from visio_alerts import store
from visio_alerts.app import Alerts, create_app, keep
from visio_alerts.main import prepare
from visio_alerts.settings import AlertsSettings
from visio_fakes.smtp_sink import start_sink
from visio_runtime.service import Runtime
from visio_runtime.testing import wait_until
from visio_shared import (
    Advisor,
    AppointmentCancelled,
    AppointmentLinkRequested,
    AppointmentRequested,
    AppointmentRescheduled,
    ConsentGiven,
    Device,
    MeetingFailed,
    NotificationSent,
    Person,
    publish_event,
)


@pytest.fixture
def sink(tmp_path: Path) -> Iterator[Controller]:
    controller = start_sink(tmp_path / "mail", port=0)
    try:
        yield controller
    finally:
        controller.stop()


async def _alerts(
    kafka_bootstrap: str, fresh_database: str, sink: Controller, **settings: Any
) -> tuple[FastAPI, Runtime]:
    """The alerts service on the test's broker, database and sink, its schema migrated."""
    prepared = await prepare(
        AlertsSettings(
            kafka_bootstrap_servers=kafka_bootstrap,
            topic_prefix=f"alerts-{uuid.uuid4().hex[:8]}",
            owner_database_url=fresh_database,
            smtp_port=sink.port,
            **settings,
        )
    )
    app = create_app(prepared)
    return app, app.state.runtime


def stored(mail_dir: Path) -> list[Path]:
    return sorted(mail_dir.glob("*.eml"))


def requested(occurred_at: datetime) -> AppointmentRequested:
    return AppointmentRequested(
        appointment_id=uuid.uuid4(),
        revision=1,
        correlation_id=uuid.uuid4(),
        occurred_at=occurred_at,
        caf_code="974",
        advisor=Advisor(id="7a1e2b3c-4d5e-4f60-8a9b-0c1d2e3f4a57", display_name="Claire Martin"),
        start=datetime(2030, 3, 4, 6, 30, tzinfo=UTC),  # 10:30 in La Réunion
        duration_minutes=30,
        timezone="Indian/Reunion",
        subject="Prime d'activité",
        user=Person(
            first_name="Jeanne",
            last_name="Dupont",
            email="jeanne.dupont@example.fr",
            device=Device.COMPUTER,
        ),
        consent=ConsentGiven(
            cgu_version="1",
            cgu_sha256="0" * 64,
            accepted_at=occurred_at,
            recording_authorised=False,
            channel="api",
        ),
        calling_system="test",
    )


async def test_each_failure_tells_its_caf_once(
    kafka_bootstrap: str, fresh_database: str, sink: Controller
) -> None:
    app, rt = await _alerts(
        kafka_bootstrap,
        fresh_database,
        sink,
        team_addresses={"974": "visio@caf974.fr"},
        email_late_after_minutes=60,
        scan_interval_s=0.1,
    )
    mail_dir: Path = sink.handler.mail_dir
    failing = requested(occurred_at=datetime.now(UTC))
    forgotten = requested(occurred_at=datetime.now(UTC) - timedelta(hours=2))
    async with app.router.lifespan_context(app):
        await wait_until(lambda: rt.consumer.state()["state"] == "assigned", what="assignment")
        for _ in range(2):  # the same failure told twice (two events, one cause)
            meeting_failed = MeetingFailed(
                **failing.caused(appointment_id=failing.appointment_id, revision=1),
                reason="graph_forbidden",
                detail="the advisor's mailbox refuses the application",
            )
            await publish_event(rt.broker, rt.topics.meetings, meeting_failed)
        for appointment in (failing, forgotten):
            await publish_event(rt.broker, rt.topics.appointments, appointment)

        await wait_until(lambda: rt.metrics.value("events_handled_total") == 4, what="4 events")
        await wait_until(lambda: len(stored(mail_dir)) == 2, what="two emails")
        # Counted once the row is marked sent, just after the relay took the email.
        await wait_until(lambda: rt.metrics.value("alerts_sent_total") == 2, what="counted")

    mails = stored(mail_dir)
    assert len(mails) == 2  # and no more, once every event was handled and the scans ran

    received = {
        message["Message-ID"].strip(): message
        for message in (
            email.message_from_bytes(path.read_bytes(), policy=policy.default) for path in mails
        )
    }
    assert set(received) == {
        f"<alert.{failing.appointment_id}.meeting_failed@visio-rdv.caf.fr>",
        f"<alert.{forgotten.appointment_id}.email_late.r1@visio-rdv.caf.fr>",
    }
    alert = received[f"<alert.{failing.appointment_id}.meeting_failed@visio-rdv.caf.fr>"]
    assert alert["To"] == "visio@caf974.fr"
    body = alert.get_content()
    assert str(failing.appointment_id) in body
    assert "Claire Martin (7a1e2b3c-4d5e-4f60-8a9b-0c1d2e3f4a57)" in body
    assert "04/03/2030 10:30 (Indian/Reunion)" in body
    assert "graph_forbidden" in body and "refuses the application" in body
    assert "Dupont" not in alert.as_string() and "jeanne" not in alert.as_string()
    assert rt.metrics.value("alerts_sent_total", cause="meeting_failed") == 1
    assert rt.metrics.value("alerts_sent_total", cause="email_late") == 1


def _lineage(appointment: AppointmentRequested, revision: int, at: datetime) -> dict[str, Any]:
    return {
        "appointment_id": appointment.appointment_id,
        "revision": revision,
        "correlation_id": appointment.correlation_id,
        "occurred_at": at,
    }


def _sent(
    appointment: AppointmentRequested,
    kind: str,
    revision: int = 1,
    cause: uuid.UUID | None = None,
) -> NotificationSent:
    at = datetime.now(UTC)
    return NotificationSent(
        **_lineage(appointment, revision, at),
        causation_id=cause,
        kind=cast(Any, kind),
        message_id=f"<{appointment.appointment_id}.r{revision}.{kind}@visio-rdv.caf.fr>",
    )


async def test_an_email_waited_for_past_the_threshold_tells_the_caf_once_per_occasion(
    kafka_bootstrap: str, fresh_database: str, sink: Controller
) -> None:
    """Only the emails nobody sent: a reschedule's, and one of two requests for the link
    again. A confirmation told before its appointment arrived, a cancellation that tells the
    unsent confirmation too, an answered request, a resend asked of a cancelled appointment
    and a booking of a minute ago are not late."""
    app, rt = await _alerts(
        kafka_bootstrap,
        fresh_database,
        sink,
        email_late_after_minutes=60,
        scan_interval_s=0.1,
    )
    two_hours_ago = datetime.now(UTC) - timedelta(hours=2)
    told_first, rescheduled, asked, cancelled, cancelled_asked = (
        requested(occurred_at=two_hours_ago) for _ in range(5)
    )
    just_booked = requested(occurred_at=datetime.now(UTC))
    move = AppointmentRescheduled(
        **_lineage(rescheduled, 2, two_hours_ago),
        start=rescheduled.start + timedelta(days=1),
        duration_minutes=30,
        timezone=rescheduled.timezone,
        previous_start=rescheduled.start,
        previous_duration_minutes=30,
    )
    answered, unanswered = (
        AppointmentLinkRequested(**_lineage(asked, 1, two_hours_ago), reason="resend")
        for _ in range(2)
    )
    cancellation = AppointmentCancelled(
        **_lineage(cancelled, 2, two_hours_ago), reason="user", cancelled_by="test"
    )
    cancelled_before = AppointmentCancelled(
        **_lineage(cancelled_asked, 2, two_hours_ago), reason="user", cancelled_by="test"
    )
    resend_after = AppointmentLinkRequested(
        **_lineage(cancelled_asked, 2, two_hours_ago), reason="resend"
    )
    notifications = [
        _sent(told_first, "confirmation"),  # before its AppointmentRequested, on another topic
        _sent(rescheduled, "confirmation"),
        _sent(asked, "confirmation"),
        _sent(asked, "link_resent", cause=answered.event_id),
        _sent(cancelled, "cancellation", revision=2),
        _sent(cancelled_asked, "confirmation"),
        _sent(cancelled_asked, "cancellation", revision=2),
    ]
    appointment_events = [
        told_first,
        rescheduled,
        move,
        asked,
        answered,
        unanswered,
        cancelled,
        cancellation,
        cancelled_asked,
        cancelled_before,
        resend_after,
        just_booked,
    ]
    async with app.router.lifespan_context(app):
        await wait_until(lambda: rt.consumer.state()["state"] == "assigned", what="assignment")
        for sent in notifications:
            await publish_event(rt.broker, rt.topics.notifications, sent)
        # The emails told are kept before the events that owe them are published: the two
        # topics keep no order between them, and a scan between an appointment's events and its
        # email's (both two hours old here) would rightly find that email late.
        await wait_until(
            lambda: rt.metrics.value("events_handled_total") == len(notifications),
            what="the emails told",
        )
        for event in appointment_events:
            await publish_event(rt.broker, rt.topics.appointments, event)
        total = len(notifications) + len(appointment_events)
        await wait_until(lambda: rt.metrics.value("events_handled_total") == total, what="all")
        await wait_until(
            lambda: len(stored(sink.handler.mail_dir)) >= 2,
            within=120,
            what=f"two alerts (in the sink: {[p.name for p in stored(sink.handler.mail_dir)]})",
        )
        await wait_until(lambda: rt.metrics.value("alerts_sent_total") == 2, what="counted")
        alerts: Alerts = app.state.alerts
        await alerts.scan_once()  # the gauges, after every event was handled

    received = {
        message["Message-ID"].strip(): message
        for message in (
            email.message_from_bytes(path.read_bytes(), policy=policy.default)
            for path in stored(sink.handler.mail_dir)
        )
    }
    late_move = f"<alert.{rescheduled.appointment_id}.email_late.r2@visio-rdv.caf.fr>"
    late_link = (
        f"<alert.{asked.appointment_id}.email_late.request-{unanswered.event_id}@visio-rdv.caf.fr>"
    )
    assert set(received) == {late_move, late_link}
    body = received[late_move].get_content()
    assert "email en retard" in received[late_move]["Subject"]
    local = two_hours_ago.astimezone(ZoneInfo("Indian/Reunion"))
    assert f"l'email du nouvel horaire, en attente depuis le {local:%d/%m/%Y %H:%M}" in body
    assert "le lien qu'elle a redemandé" in received[late_link].get_content()
    assert rt.metrics.value("alerts_sent_total", cause="email_late") == 2
    assert rt.metrics.value("people_waiting_for_an_email") == 3  # with the one just booked
    assert rt.metrics.value("people_waiting_for_an_email_past_threshold") == 2
    assert rt.metrics.value("email_late_threshold_seconds") == 3600


async def test_a_text_that_can_never_arrive_tells_the_caf_once(
    kafka_bootstrap: str, fresh_database: str, sink: Controller
) -> None:
    from visio_shared import SmsFailed

    app, rt = await _alerts(
        kafka_bootstrap,
        fresh_database,
        sink,
        team_addresses={"974": "visio@caf974.fr"},
        scan_interval_s=0.1,
    )
    appointment = requested(occurred_at=datetime.now(UTC))
    async with app.router.lifespan_context(app):
        await wait_until(lambda: rt.consumer.state()["state"] == "assigned", what="assignment")
        await publish_event(rt.broker, rt.topics.appointments, appointment)
        await publish_event(rt.broker, rt.topics.notifications, _sent(appointment, "confirmation"))
        for _ in range(2):  # a rejection, then the receipt of another text: one alert
            failed = SmsFailed(
                **appointment.caused(appointment_id=appointment.appointment_id, revision=1),
                kind="confirmation",
                reason="hard_bounce",
                detail="unknown number",
            )
            await publish_event(rt.broker, rt.topics.notifications, failed)
        await wait_until(lambda: rt.metrics.value("alerts_sent_total") == 1, what="one alert")
        await wait_until(lambda: rt.metrics.value("events_handled_total") == 4, what="4 events")
    mails = stored(sink.handler.mail_dir)
    assert len(mails) == 1
    alert = email.message_from_bytes(mails[0].read_bytes(), policy=policy.default)
    assert alert["To"] == "visio@caf974.fr"
    assert "SMS non remis" in alert["Subject"] and "hard_bounce" in alert.get_content()
    assert rt.metrics.value("alerts_sent_total", cause="sms_failed") == 1


async def test_a_batch_is_kept_in_three_statements_whatever_its_size(
    kafka_bootstrap: str, fresh_database: str, sink: Controller
) -> None:
    """The bookkeeping of a batch — the appointments' copies, the emails they owe, the emails
    told and which owed ones they answer — is one statement per kind of write, not one per
    event (a backlog of 50,000 requests made 150,000 round trips)."""
    app, rt = await _alerts(kafka_bootstrap, fresh_database, sink)
    statements: list[str] = []

    def note(record: LoggedQuery) -> None:
        # Not asyncpg's look-ups of the array types (once per connection, with its jit off).
        if "jit" not in record.query and "pg_catalog" not in record.query:
            statements.append(record.query)

    async def kept(events: list[Any]) -> int:
        statements.clear()
        async with rt.db.acquire() as conn, conn.transaction():
            conn.add_query_logger(note)
            try:
                await keep(conn, events)
            finally:
                conn.remove_query_logger(note)
        return len(statements)

    async with app.router.lifespan_context(app):
        for size in (3, 60):
            booked = [requested(occurred_at=datetime.now(UTC)) for _ in range(size)]
            assert await kept(list(booked)) == 3, statements
            async with rt.db.acquire() as conn:
                assert await store.waiting_counts(conn, 60) == (size, 0)
                assert (
                    await conn.fetchval(
                        "SELECT count(*) FROM appointments WHERE appointment_id = ANY($1::uuid[])",
                        [b.appointment_id for b in booked],
                    )
                    == size
                )
            assert await kept([_sent(b, "confirmation") for b in booked]) == 3
            async with rt.db.acquire() as conn:
                assert await store.waiting_counts(conn, 60) == (0, 0)
                rows = await conn.fetch(
                    "SELECT a.confirmed_at, o.told_at FROM appointments a "
                    "JOIN emails_owed o USING (appointment_id) "
                    "WHERE appointment_id = ANY($1::uuid[])",
                    [b.appointment_id for b in booked],
                )
            assert len(rows) == size
            assert all(r["confirmed_at"] is not None and r["told_at"] is not None for r in rows)
