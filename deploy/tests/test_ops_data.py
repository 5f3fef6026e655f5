"""`ops purge` and `ops appointments` on the services' real schemas (migrated as `visio-rdv
migrate` does): the purge removes what expired and nothing else, in the tables, the mail sink
and the broker's retention; the appointment reports find the stuck and the failed, with why."""

from __future__ import annotations

import json
import os
import time
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

import asyncpg
import pytest
from visio_alerts.store import SCHEMA as ALERTS
from visio_deploy.migrate import migrate_all
from visio_deploy.ops import appointments
from visio_deploy.ops.purge import check_topic_retention, purge_mail, purge_tables
from visio_deploy.ops.settings import OpsSettings
from visio_deploy.ops.whereabouts import NOWHERE, _notifications
from visio_runtime.db import migrate
from visio_runtime.kafka import ensure_topics
from visio_shared import Topics

NOW = datetime.now(UTC)
LONG_AGO = NOW - timedelta(days=200)  # past the 90 days of retention
RECENTLY = NOW - timedelta(days=10)
SOON = NOW + timedelta(days=10)


@pytest.fixture
async def db(fresh_database: str) -> str:
    await migrate_all(fresh_database)
    await migrate(fresh_database, ALERTS, "visio_alerts")
    return fresh_database


async def book(
    conn: asyncpg.Connection,
    start: datetime,
    status: str = "confirmed",
    created: datetime = NOW,
    reason: str | None = None,
) -> uuid.UUID:
    appointment_id = uuid.uuid4()
    await conn.execute(
        """
        INSERT INTO booking.appointments (appointment_id, correlation_id, status, caf_code,
            advisor_id, advisor_name, start_at, duration_minutes, timezone, subject, first_name,
            last_name, email, device, cgu_version, cgu_accepted_at, recording_authorised,
            calling_system, status_reason, created_at, updated_at)
        VALUES ($1, $2, $3, '974', $7, 'Claire Martin', $4,
            30, 'Indian/Reunion', 'Prime', 'Jeanne', 'Dupont', 'jeanne@example.fr', 'computer',
            '1', $5, true, 'test', $6, $5, $5)
        """,
        appointment_id,
        uuid.uuid4(),
        status,
        start,
        created,
        reason,
        str(uuid.uuid4()),  # an advisor of its own: one advisor's live appointments never overlap
    )
    await step(conn, appointment_id, status, 1, "booked", created)
    return appointment_id


async def step(
    conn: asyncpg.Connection,
    appointment_id: uuid.UUID,
    name: str,
    revision: int = 1,
    detail: str | None = None,
    at: datetime = NOW,
) -> None:
    """One line of the appointment's history, as booking writes them."""
    await conn.execute(
        "INSERT INTO booking.appointment_history (appointment_id, status, revision, detail, at) "
        "VALUES ($1, $2, $3, $4, $5)",
        appointment_id,
        name,
        revision,
        detail,
        at,
    )


async def copy_to_notifications(conn: asyncpg.Connection, start: datetime) -> uuid.UUID:
    appointment_id = uuid.uuid4()
    payload = json.dumps({"user": {"email": "jeanne@example.fr"}})
    await conn.execute(
        "INSERT INTO notifications.appointments (appointment_id, revision, start_at, payload,"
        " correlation_id, event_id) VALUES ($1, 1, $2, $3, $4, $4)",
        appointment_id,
        start,
        payload,
        uuid.uuid4(),
    )
    await conn.execute(
        "INSERT INTO notifications.meetings (appointment_id, revision, join_url, payload, event_id)"
        " VALUES ($1, 1, 'https://teams.microsoft.com/l/meetup-join/x', '{}', $2)",
        appointment_id,
        uuid.uuid4(),
    )
    await conn.execute(
        "INSERT INTO notifications.dispatches (appointment_id, revision, kind, message_id,"
        " recipient_sha256, status, event) VALUES ($1, 1, 'confirmation', 'm', 'h', 'sent', '{}')",
        appointment_id,
    )
    await conn.execute(
        "INSERT INTO notifications.reminders (appointment_id, offset_minutes, revision, start_at,"
        " due_at, status) VALUES ($1, 1440, 1, $2, $2, 'sent')",
        appointment_id,
        start,
    )
    await ask_link_again(conn, appointment_id, start + timedelta(days=5))
    return appointment_id


async def ask_link_again(
    conn: asyncpg.Connection, appointment_id: uuid.UUID, requested_at: datetime
) -> None:
    await conn.execute(
        "INSERT INTO notifications.link_requests (event_id, appointment_id, revision, reason,"
        " requested_at, outcome, decided_at) VALUES ($1, $2, 1, 'fresh_link', $3, 'sent', $3)",
        uuid.uuid4(),
        appointment_id,
        requested_at,
    )


async def ids(conn: asyncpg.Connection, table: str) -> set[uuid.UUID]:
    return {row[0] for row in await conn.fetch(f"SELECT appointment_id FROM {table}")}


async def test_purge_removes_what_expired_and_nothing_else(
    db: str, kafka_bootstrap: str, tmp_path: Path
) -> None:
    conn = await asyncpg.connect(db)
    try:
        old = await book(conn, LONG_AGO)
        recent, future = await book(conn, RECENTLY), await book(conn, SOON)
        await conn.execute(
            "INSERT INTO booking.outbox (event_id, topic, key, payload, headers, published_at)"
            " VALUES ($1, 't', 'k', '{}', '{}', $2), ($3, 't', 'k', '{}', '{}', $4),"
            " ($5, 't', 'k', '{}', '{}', NULL)",
            uuid.uuid4(),
            NOW - timedelta(days=30),
            uuid.uuid4(),
            NOW - timedelta(hours=1),
            uuid.uuid4(),
        )
        await conn.execute(
            "INSERT INTO booking.api_keys (key_hash, name, scopes) VALUES ('h', 'n', '{}')"
        )
        notified_old = await copy_to_notifications(conn, LONG_AGO)
        notified_recent = await copy_to_notifications(conn, RECENTLY)
        # Requests for appointments notifications never knew (or forgot): by their age.
        unknown_old, unknown_recent = uuid.uuid4(), uuid.uuid4()
        await ask_link_again(conn, unknown_old, LONG_AGO)
        await ask_link_again(conn, unknown_recent, RECENTLY)
    finally:
        await conn.close()
    mail = tmp_path / "mail"
    mail.mkdir()
    (mail / "old.eml").write_text("old")
    (mail / "new.eml").write_text("new")
    month_ago = time.time() - 30 * 86400
    os.utime(mail / "old.eml", (month_ago, month_ago))
    settings = OpsSettings(
        database_url=db,
        mail_dir=mail,
        kafka_bootstrap_servers=kafka_bootstrap,
        topic_prefix=f"purge-{uuid.uuid4().hex[:8]}",
    )

    assert (await purge_tables(settings, dry_run=True))["booking.appointments"] == 1
    removed = await purge_tables(settings)
    assert await purge_tables(settings) == dict.fromkeys(removed, 0)  # safe to run again

    assert removed["booking.appointments"] == removed["booking.appointment_history"] == 1
    assert removed["booking.outbox"] == 1
    for table in ("appointments", "meetings", "dispatches", "reminders"):
        assert removed[f"notifications.{table}"] == 1
    assert removed["notifications.link_requests"] == 2
    conn = await asyncpg.connect(db)
    try:
        assert await ids(conn, "booking.appointments") == {recent, future}
        assert await ids(conn, "booking.appointment_history") == {recent, future}
        assert await conn.fetchval("SELECT count(*) FROM booking.outbox") == 2
        assert await conn.fetchval("SELECT count(*) FROM booking.api_keys") == 1
        for table in ("appointments", "meetings", "dispatches", "reminders"):
            assert await ids(conn, f"notifications.{table}") == {notified_recent}
        assert await ids(conn, "notifications.link_requests") == {notified_recent, unknown_recent}
        assert notified_old not in await ids(conn, "notifications.appointments")
        assert old not in await ids(conn, "booking.appointments")
    finally:
        await conn.close()

    assert purge_mail(settings) == 1
    assert [path.name for path in mail.iterdir()] == ["new.eml"]

    # Dead letters end with their topic's retention, set when the topic is created.
    await ensure_topics(settings, Topics(settings.topic_prefix).all())
    retention = await check_topic_retention(settings)
    dlq = Topics(settings.topic_prefix).dlq("meetings")
    assert retention[dlq] == "ok" and set(retention.values()) == {"ok"}


async def test_stuck_lists_who_waits_for_an_email_and_where_it_stands(db: str) -> None:
    """Waiting: a confirmation whose meeting never came, one notifications keeps retrying, a
    reschedule nobody was told of. Not waiting: a booking of a minute ago, a confirmed
    appointment whose link request was answered, a resend asked of a cancelled one."""
    two_hours_ago, three_hours_ago = NOW - timedelta(hours=2), NOW - timedelta(hours=3)
    conn = await asyncpg.connect(db)
    try:
        no_meeting = await book(conn, SOON, "requested", created=three_hours_ago)
        retrying = await book(conn, SOON, "requested", created=NOW - timedelta(minutes=90))
        await step(conn, retrying, "meeting_ready", 1, None, NOW - timedelta(minutes=89))
        await conn.execute(
            "INSERT INTO meetings.meetings (appointment_id, revision, advisor_id, transaction_id,"
            " join_url, status) VALUES ($1, 1, 'advisor-7', 't', 'https://teams/x', 'ready')",
            retrying,
        )
        copied = await copy_to_notifications(conn, SOON)
        await conn.execute(
            "UPDATE notifications.appointments SET appointment_id = $1, settle_after = $2,"
            " settle_attempts = 3, settle_error = 'SMTP 451: 4.3.0 Temporary failure'"
            " WHERE appointment_id = $3",
            retrying,
            NOW + timedelta(seconds=40),
            copied,
        )
        await conn.execute(
            "UPDATE notifications.meetings SET appointment_id = $1 WHERE appointment_id = $2",
            retrying,
            copied,
        )
        await conn.execute("DELETE FROM notifications.dispatches WHERE appointment_id = $1", copied)
        moved = await book(conn, SOON, "requested", created=three_hours_ago)
        await step(conn, moved, "confirmed", 1, None, three_hours_ago)
        await step(conn, moved, "rescheduled", 2, "to next week", two_hours_ago)

        on_its_way = await book(conn, SOON, "meeting_ready", created=NOW - timedelta(minutes=80))
        await step(conn, on_its_way, "requested", 1, None, NOW - timedelta(minutes=80))
        sent = await copy_to_notifications(conn, SOON)
        for table in ("appointments", "meetings", "dispatches"):
            await conn.execute(
                f"UPDATE notifications.{table} SET appointment_id = $1 WHERE appointment_id = $2",
                on_its_way,
                sent,
            )
        await conn.execute(
            "UPDATE notifications.dispatches SET sent_at = $2, published_at = $2"
            " WHERE appointment_id = $1",
            on_its_way,
            NOW - timedelta(minutes=79),
        )

        await book(conn, SOON, "requested")  # booked just now: not late yet
        answered = await book(conn, SOON, "requested", created=three_hours_ago)
        await step(conn, answered, "confirmed", 1, None, three_hours_ago)
        await step(conn, answered, "link_requested", 1, "resend", two_hours_ago)
        await step(conn, answered, "notification_sent", 1, "link_resent", two_hours_ago)
        cancelled = await book(conn, SOON, "requested", created=three_hours_ago)
        await step(conn, cancelled, "confirmed", 1, None, three_hours_ago)
        await step(conn, cancelled, "cancelled", 2, "user", three_hours_ago)
        await step(conn, cancelled, "notification_sent", 2, "cancellation", three_hours_ago)
        await step(conn, cancelled, "link_requested", 2, "resend", two_hours_ago)
        await conn.execute(
            "UPDATE booking.appointments SET status = 'cancelled' WHERE appointment_id = $1",
            cancelled,
        )
    finally:
        await conn.close()

    found = await appointments.stuck(db, after_minutes=30)
    assert [a.appointment_id for a in found] == [
        str(no_meeting),
        str(moved),
        str(retrying),
        str(on_its_way),
    ]
    by_id = {a.appointment_id: a for a in found}
    first = by_id[str(no_meeting)]
    assert first.caf_code == "974" and first.advisor == "Claire Martin"
    assert first.why.startswith("waiting for the confirmation email since")
    assert "meetings: waiting for a meeting, none made yet" in first.why
    assert "notifications: has not heard of it" in first.why
    assert first.why.endswith(NOWHERE)
    assert by_id[str(moved)].why.startswith("waiting for the rescheduled email since")
    retried = by_id[str(retrying)].why
    assert "meetings: meeting ready at revision 1" in retried
    assert "notifications: waiting for a retry until" in retried
    assert "after 3 failed attempt(s); last: SMTP 451: 4.3.0 Temporary failure" in retried
    assert NOWHERE not in retried
    in_flight = by_id[str(on_its_way)].why
    assert "notifications: last email confirmation r1 sent at" in in_flight
    assert "booking: has not applied the outcome published at" in in_flight
    assert NOWHERE not in in_flight
    assert "jeanne" not in " ".join(a.why for a in found).lower()
    assert await appointments.stuck(db, after_minutes=150) == found[:1]


async def test_failed_appointments_with_why(db: str) -> None:
    conn = await asyncpg.connect(db)
    try:
        failed = await book(conn, SOON, "meeting_failed", reason="graph_forbidden")
        await book(conn, SOON, "confirmed", created=NOW - timedelta(hours=2))
    finally:
        await conn.close()

    [broken] = await appointments.failed(db)
    assert broken.appointment_id == str(failed)
    assert broken.why == "graph_forbidden"


def test_an_email_being_settled_is_due_with_its_handler_on_it_until_the_poller_takes_over() -> None:
    """A handled event asks for its email for the poller only after the handover: until then
    the handler is on it, and after, it is due for the poller."""
    row = {"meeting_revision": 1, "revision": 1, "settle_attempts": 0, "settle_error": None}
    handed = {**row, "settle_after": NOW + timedelta(seconds=20)}
    [said] = _notifications(handed, False, None, NOW)  # type: ignore[arg-type]
    assert said == "notifications: email due, its handler on it (the poller takes over in 20 s)"
    overdue = {**row, "settle_after": NOW - timedelta(seconds=5)}
    [said] = _notifications(overdue, False, None, NOW)  # type: ignore[arg-type]
    assert said.startswith("notifications: email due since ")
