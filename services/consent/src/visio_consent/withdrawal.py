"""Withdrawing the recording authorisation of one appointment: a new record (the authorisation
stays in the chain, as history), then RecordingConsentWithdrawn, on which meetings turns the
recording off, and ConsentRecorded.

The record and a "to announce" mark commit together; the mark is cleared once both events are
published. A withdrawal whose publication failed after commit is published again by
`announce_pending_withdrawals`, so meetings learns of it even when nobody asks again.
"""

from __future__ import annotations

import json
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import asyncpg
from visio_shared import (
    ConsentRecorded,
    LedgerEntry,
    RecordingConsentWithdrawn,
    Topics,
    publish_event,
)
from visio_shared.publishing import Publisher

from visio_consent import store
from visio_consent.handlers import announcement
from visio_consent.ledger import append, iso_utc

# One withdrawal per appointment: its event id (and the record's source_event_id) derive from
# the appointment id, so a repeated request finds it and announces the very same event again.
_WITHDRAWAL_NAMESPACE = uuid.uuid5(uuid.NAMESPACE_URL, "urn:visio-rdv:consent:recording-withdrawn")
_RECORDING_KINDS = ["recording_authorised", "recording_refused", "recording_withdrawn"]


class UnknownAppointment(LookupError):
    """No consent was ever recorded for this appointment."""


class NothingToWithdraw(Exception):
    """The person refused the recording: there is no authorisation to withdraw."""


@dataclass(frozen=True)
class Withdrawal:
    event: RecordingConsentWithdrawn
    recorded: ConsentRecorded
    entry: LedgerEntry
    appended: bool  # False when it had already been withdrawn


async def withdraw_recording(
    pool: asyncpg.Pool,
    publisher: Publisher,
    topics: Topics,
    appointment_id: uuid.UUID,
    *,
    calling_system: str,
    channel: str = "api",
) -> Withdrawal:
    """Append `recording_withdrawn` (once: withdrawing again appends nothing) and announce it.

    The announcement is published after commit, and again on every repeated request: a client
    that saw an error retries, and the events reach Kafka with the same event ids.
    """
    event_id = _event_id(appointment_id)
    async with pool.acquire() as conn, conn.transaction():
        appointment = await store.lock_appointment(conn, appointment_id)
        if appointment is None:
            raise UnknownAppointment(f"no consent is recorded for appointment {appointment_id}")
        latest = await conn.fetchval(
            "SELECT kind FROM ledger WHERE appointment_id = $1 AND kind = ANY($2::text[]) "
            "ORDER BY seq DESC LIMIT 1",
            appointment_id,
            _RECORDING_KINDS,
        )
        if latest in (None, "recording_refused"):
            raise NothingToWithdraw(f"the recording of appointment {appointment_id} was refused")
        appended = latest != "recording_withdrawn"
        if appended:
            await conn.execute(
                "UPDATE appointments SET withdrawal_pending_since = now() "
                "WHERE appointment_id = $1",
                appointment_id,
            )
            await append(
                conn,
                [
                    {
                        "kind": "recording_withdrawn",
                        "subject_ref": appointment.subject_ref,
                        "appointment_id": str(appointment_id),
                        "revision": appointment.revision,
                        "source_event_id": str(event_id),
                        "cgu_version": appointment.cgu_version,
                        "channel": channel,
                        "calling_system": calling_system,
                        "withdrawn_at": iso_utc(datetime.now(UTC)),
                    }
                ],
            )
        withdrawal = await _stored(conn, appointment, appended)
    await _announce(pool, publisher, topics, withdrawal)
    return withdrawal


async def announce_pending_withdrawals(
    pool: asyncpg.Pool, publisher: Publisher, topics: Topics, older_than: timedelta
) -> int:
    """Publish again the withdrawals committed at least `older_than` ago and never announced
    (the publish after commit failed); returns how many were."""
    pending = await pool.fetch(
        "SELECT appointment_id FROM appointments WHERE withdrawal_pending_since < $1 "
        "ORDER BY withdrawal_pending_since",
        datetime.now(UTC) - older_than,
    )
    for row in pending:
        async with pool.acquire() as conn, conn.transaction():
            appointment = await store.lock_appointment(conn, row["appointment_id"])
            assert appointment is not None, "a pending withdrawal names a known appointment"
            withdrawal = await _stored(conn, appointment, appended=False)
        await _announce(pool, publisher, topics, withdrawal)
    return len(pending)


def _event_id(appointment_id: uuid.UUID) -> uuid.UUID:
    return uuid.uuid5(_WITHDRAWAL_NAMESPACE, str(appointment_id))


async def _stored(
    conn: asyncpg.Connection, appointment: store.Appointment, appended: bool
) -> Withdrawal:
    """The withdrawal of this appointment as the chain holds it, with its two announcements."""
    event_id = _event_id(appointment.appointment_id)
    row = await conn.fetchrow(
        "SELECT seq, kind, hash, recorded_at, payload FROM ledger "
        "WHERE source_event_id = $1 AND kind = 'recording_withdrawn'",
        event_id,
    )
    assert row is not None, "the appointment's recording was withdrawn"
    record = json.loads(row["payload"])
    event = RecordingConsentWithdrawn(
        event_id=event_id,
        occurred_at=row["recorded_at"],
        correlation_id=appointment.correlation_id,
        appointment_id=appointment.appointment_id,
        revision=record["revision"],
        subject_ref=record["subject_ref"],
        withdrawn_at=record["withdrawn_at"],
        channel=record["channel"],
    )
    recorded = await announcement(conn, event)
    assert recorded is not None
    entry = LedgerEntry(seq=row["seq"], kind=row["kind"], hash=row["hash"])
    return Withdrawal(event=event, recorded=recorded, entry=entry, appended=appended)


async def _announce(
    pool: asyncpg.Pool, publisher: Publisher, topics: Topics, withdrawal: Withdrawal
) -> None:
    await publish_event(publisher, topics.consents, withdrawal.event)
    await publish_event(publisher, topics.consents, withdrawal.recorded)
    await pool.execute(
        "UPDATE appointments SET withdrawal_pending_since = NULL WHERE appointment_id = $1",
        withdrawal.event.appointment_id,
    )
