"""What happened in the meeting, into the ledger: meetings' events become `connection` and
`recording_reference` records under the person's subject_ref, once each, the chain still
verifies, and the right of access tells the person in French, with each record's proof."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING

import asyncpg
import pytest
from pydantic import SecretStr
from visio_consent.access import Asker, access_export
from visio_consent.connections import record_meeting_outcome
from visio_consent.handlers import record_consent
from visio_consent.ledger import subject_ref
from visio_consent.settings import ConsentSettings
from visio_consent.verify import verify
from visio_runtime.errors import Transient
from visio_shared import AppointmentRequested, Topics, parse_event
from visio_shared.events import (
    AttendanceInterval,
    MeetingAttendanceRecorded,
    MeetingAttendanceUnavailable,
    MeetingRecordingAvailable,
    ParticipantAttendance,
)

if TYPE_CHECKING:
    from conftest import FakePublisher

SETTINGS = ConsentSettings(subject_key=SecretStr("test-subject-key"))
TOPICS = Topics("visio-rdv-test")
MEETING = "MSo1YTQ5ZjNhNi1tZWV0aW5n"
START = datetime(2025, 3, 8, 9, 15, tzinfo=UTC)  # 13 h 15 at La Réunion

ASKER = Asker.command("dpo")


def _stay(joined_min: int, left_min: int) -> AttendanceInterval:
    return AttendanceInterval(
        joined_at=START + timedelta(minutes=joined_min),
        left_at=START + timedelta(minutes=left_min),
        duration_seconds=(left_min - joined_min) * 60,
    )


def held(of: AppointmentRequested, *, public: bool = True) -> MeetingAttendanceRecorded:
    participants = [ParticipantAttendance(role="organizer", total_attendance_seconds=1800,
                                          intervals=[_stay(0, 30)])]  # fmt: skip
    if public:
        participants.append(
            ParticipantAttendance(
                role="public",
                total_attendance_seconds=1200,
                intervals=[_stay(5, 10), _stay(12, 27)],
            )
        )
    return MeetingAttendanceRecorded(
        **of.caused(appointment_id=of.appointment_id, revision=1),
        online_meeting_id=MEETING,
        report_id="c9b6db1c-report",
        meeting_start=START,
        meeting_end=START + timedelta(minutes=30),
        participants=participants,
        public_attended=public,
    )


async def test_what_happened_joins_what_was_accepted_in_the_proof(
    pool: asyncpg.Pool,
    publisher: FakePublisher,
    make_event: Callable[..., AppointmentRequested],
) -> None:
    booked = make_event(recording_authorised=True)
    await record_consent(booked, pool, publisher, SETTINGS, TOPICS)
    attendance = held(booked)
    recording = MeetingRecordingAvailable(
        **booked.caused(appointment_id=booked.appointment_id, revision=1),
        online_meeting_id=MEETING,
        recording_id="rec-42",
        created_at=START + timedelta(minutes=1),
        content_correlation_id="corr-7",
    )

    [connection] = await record_meeting_outcome(attendance, pool, publisher, TOPICS)
    [reference] = await record_meeting_outcome(recording, pool, publisher, TOPICS)
    assert (
        await record_meeting_outcome(attendance, pool, publisher, TOPICS) == []
    )  # redelivered: nothing new
    assert (connection.seq, connection.kind, reference.kind) == (
        3,
        "connection",
        "recording_reference",
    )
    # Each append is announced; the redelivery announces the same event again (same id).
    announced = [
        parse_event(call.message) for call in publisher.calls if call.topic == TOPICS.consents
    ]
    entries = [(event.entries[0].seq, event.entries[0].kind) for event in announced[1:]]
    assert entries == [(3, "connection"), (4, "recording_reference"), (3, "connection")]
    assert announced[1].event_id == announced[3].event_id

    ref = subject_ref("test-subject-key", booked.user.email)
    async with pool.acquire() as conn:
        assert (await verify(conn)).ok
        export = await access_export(conn, ref, ASKER)
    stored = export.records[2].record
    assert stored["subject_ref"] == ref and stored["source_event_id"] == str(attendance.event_id)
    assert [p["role"] for p in stored["participants"]] == ["organizer", "public"]
    assert export.records[3].record["recording_id"] == "rec-42"

    text = export.text()
    assert "Ce que vous avez accepté, et ce qui s'est passé" in text
    assert (
        "3. Connexions à l'entretien\n   Le samedi 8 mars 2025 à 13 h 15 (heure de La Réunion)"
        in text
    )
    assert "Vous vous êtes connecté(e) à l'entretien." in text
    assert "Vous : connecté(e) de 13 h 20 à 13 h 25, puis de 13 h 27 à 13 h 42, 20 min 00 s" in text
    assert "Votre conseiller ou conseillère Caf : connecté(e) de 13 h 15 à 13 h 45" in text
    assert "4. Enregistrement de l'entretien conservé\n   Le samedi 8 mars 2025 à 13 h 16" in text
    assert "Identifiant de l'enregistrement : rec-42" in text
    assert f"Preuve : enregistrement n° 3, empreinte {connection.hash}" in text
    assert f"Preuve : enregistrement n° 4, empreinte {reference.hash}" in text


async def test_a_no_show_and_an_unavailable_report_are_said_too(
    pool: asyncpg.Pool,
    publisher: FakePublisher,
    make_event: Callable[..., AppointmentRequested],
) -> None:
    missed, unknown = make_event(), make_event()
    for booked in (missed, unknown):
        await record_consent(booked, pool, publisher, SETTINGS, TOPICS)
    await record_meeting_outcome(held(missed, public=False), pool, publisher, TOPICS)
    gone = MeetingAttendanceUnavailable(
        **unknown.caused(appointment_id=unknown.appointment_id, revision=1),
        online_meeting_id=MEETING,
        reason="no_report: Graph lists no attendance report (after 12 attempts)",
    )
    [entry] = await record_meeting_outcome(gone, pool, publisher, TOPICS)
    assert entry.kind == "connection"

    async with pool.acquire() as conn:
        assert (await verify(conn)).ok
        export = await access_export(
            conn, subject_ref("test-subject-key", missed.user.email), ASKER
        )
    text = export.text()
    assert "Vous ne vous êtes pas connecté(e) à l'entretien." in text
    assert "Connexions à l'entretien : relevé indisponible" in text
    assert "n'a pas pu être obtenu de Teams (no_report: Graph lists no attendance report" in text


async def test_an_outcome_before_its_consent_is_retried_not_dropped(
    pool: asyncpg.Pool,
    publisher: FakePublisher,
    make_event: Callable[..., AppointmentRequested],
) -> None:
    early = held(make_event())
    with pytest.raises(Transient):
        await record_meeting_outcome(early, pool, publisher, TOPICS)
    assert await pool.fetchval("SELECT count(*) FROM ledger") == 0
    assert publisher.calls == []
    assert (
        await pool.fetchval(
            "SELECT count(*) FROM processed_events WHERE event_id = $1", early.event_id
        )
        == 0
    )
