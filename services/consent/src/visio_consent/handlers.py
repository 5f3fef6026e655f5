"""What consent does with the events it reads: plain async functions, called by the consumer
with the parsed event and driven directly by tests."""

from __future__ import annotations

import json
import logging
import uuid
from collections.abc import Sequence
from typing import Any

import asyncpg
from visio_runtime import defects
from visio_runtime.db import mark_processed, mark_processed_many
from visio_runtime.erasure import erased_among, is_erased
from visio_runtime.errors import Poison
from visio_shared import (
    CGU_VERSIONS,
    AdvisorReassigned,
    AppointmentCancelled,
    AppointmentEvent,
    AppointmentRequested,
    AppointmentRescheduled,
    ConsentGiven,
    ConsentRecorded,
    ContactCorrected,
    Topics,
    publish_event,
    publish_events,
)
from visio_shared.publishing import Publisher

from visio_consent import store
from visio_consent.ledger import append, iso_utc, stored_entry, subject_ref
from visio_consent.settings import ConsentSettings

log = logging.getLogger(__name__)

# ConsentRecorded's event_id is derived from the event that caused it, so publishing it again
# after a redelivery repeats the same event, which consumers already skip by event_id.
_CONSENT_RECORDED_NAMESPACE = uuid.uuid5(uuid.NAMESPACE_URL, "urn:visio-rdv:consent:recorded")


async def record_consent(
    event: AppointmentRequested,
    pool: asyncpg.Pool,
    publisher: Publisher,
    settings: ConsentSettings,
    topics: Topics,
) -> ConsentRecorded | None:
    """`record_consents` for one appointment request; None if its person was erased."""
    recorded = await record_consents([event], pool, publisher, settings, topics)
    return recorded[0] if recorded else None


async def record_consents(
    events: Sequence[AppointmentRequested],
    pool: asyncpg.Pool,
    publisher: Publisher,
    settings: ConsentSettings,
    topics: Topics,
) -> list[ConsentRecorded]:
    """Append the CGU acceptance and the recording choice of appointment requests to the
    ledger, keep each person's details beside it until retention ends, announce each
    ConsentRecorded. A batch (the consumer's `on_batch`) is one group commit: one transaction,
    one chain append of all its records in the batch's order, one produce batch after it.

    A redelivered event appends nothing (the processed-event marker commits with the records)
    but announces the same ConsentRecorded again, in case the first publish was lost after
    commit. Raises Poison for a CGU version or text digest this system never published.
    The request of an appointment whose person was erased (a replay, a consumer reset) keeps
    nothing, chains nothing and announces nothing: it is left out of the list returned.
    """
    for event in events:
        _check_cgu(event.consent)
    key = settings.subject_key.get_secret_value()
    async with pool.acquire() as conn, conn.transaction():
        fresh = await mark_processed_many(conn, events)
        erased = await erased_among(conn, [event.appointment_id for event in events])
        kept = [event for event in events if event.appointment_id not in erased]
        new = [
            (event, subject_ref(key, event.user.email)) for event in kept if event.event_id in fresh
        ]
        if new:
            days = settings.subject_retention_days
            await store.keep_subjects(
                conn,
                [
                    (ref, event.appointment_id, event.user, store.retain_until(event, days))
                    for event, ref in new
                ],
            )
            await store.remember_appointments(conn, new)
            records = [record for event, ref in new for record in consent_records(event, ref)]
            if defects.once("SKIP_LEDGER_RECORD"):  # tests of the proofs only: one record lost
                del records[1]  # the first appointment's recording choice
            await append(conn, records, batch_size=settings.append_batch_size)
        for event in events:
            if event.appointment_id in erased:
                log.info("consent: %s of an erased appointment skipped", event.event_type)
            elif event.event_id not in fresh:
                log.info("consent: event %s already recorded, announcing again", event.event_id)
        announced = await announcements(conn, kept)
    recorded = [announced[event.event_id] for event in kept]
    await publish_events(publisher, topics.consents, recorded)
    for each in recorded:
        log.info(
            "consent: appointment %s revision %s recorded at seq %s",
            each.appointment_id,
            each.revision,
            ",".join(str(entry.seq) for entry in each.entries),
        )
    return recorded


def consent_records(event: AppointmentRequested, ref: str) -> list[dict[str, Any]]:
    """The chained records of one appointment request: pseudonymous, never a name or an email."""
    consent = event.consent
    common: dict[str, Any] = {
        "subject_ref": ref,
        "appointment_id": str(event.appointment_id),
        "revision": event.revision,
        "source_event_id": str(event.event_id),
        "cgu_version": consent.cgu_version,
        "channel": consent.channel,
        "calling_system": event.calling_system,
    }
    recording = "recording_authorised" if consent.recording_authorised else "recording_refused"
    return [
        {
            **common,
            "kind": "cgu_accepted",
            "cgu_sha256": consent.cgu_sha256,
            "accepted_at": iso_utc(consent.accepted_at),
        },
        {**common, "kind": recording, "decided_at": iso_utc(consent.accepted_at)},
    ]


async def record_contact_correction(
    event: ContactCorrected,
    pool: asyncpg.Pool,
    publisher: Publisher,
    settings: ConsentSettings,
    topics: Topics,
) -> ConsentRecorded | None:
    """A corrected contact: the corrected details replace the old ones beside the chain, and if
    the address changed (so the subject_ref did), a `contact_corrected` record ties the new
    subject_ref to the appointment. Without it, later records of the appointment (a withdrawal,
    its connections) would carry a pseudonym nothing in the chain links to the consent given.

    A name-only correction changes nothing in the chain: returns None and announces nothing.
    """
    ref = subject_ref(settings.subject_key.get_secret_value(), event.user.email)
    async with pool.acquire() as conn, conn.transaction():
        if await is_erased(conn, event.appointment_id):
            # Erased: a partner's late correction must not write the person back.
            await mark_processed(conn, event.event_id, event.event_type)
            log.info("consent: %s of an erased appointment skipped", event.event_type)
            return None
        appointment = await store.lock_appointment(conn, event.appointment_id)
        if appointment is None:
            # Same topic, same key: its AppointmentRequested came first and was not recorded
            # (dead-lettered). Replayable once that one is, so it is dead-lettered too.
            raise Poison(
                f"appointment {event.appointment_id} has no recorded consent; replay its "
                "AppointmentRequested from the dead-letter topic first, then this event"
            )
        if await mark_processed(conn, event.event_id, event.event_type):
            until = await store.retention_of(conn, event.appointment_id)
            if until is not None:  # none once the data was erased: nothing to correct then
                await store.keep_subject(conn, ref, event.appointment_id, event.user, until)
            if ref != appointment.subject_ref:
                await append(conn, [_contact_corrected(event, ref, appointment)])
            await store.move_appointment(conn, event.appointment_id, event.revision, ref)
        recorded = await announcement(conn, event)
    if recorded is not None:
        await publish_event(publisher, topics.consents, recorded)
    return recorded


# The appointment's other changes: nothing for the chain, but the recording page needs its start
# (withdrawable until then) and whether it was cancelled, and the pages compare a link's
# revision with the latest one consent knows, so consent follows every change that raises it.
AppointmentChange = AppointmentRescheduled | AppointmentCancelled | AdvisorReassigned
APPOINTMENT_CHANGES = (AppointmentRescheduled, AppointmentCancelled, AdvisorReassigned)


async def follow_appointment_change(event: AppointmentChange, pool: asyncpg.Pool) -> None:
    """Keep the appointment's start, cancellation and latest revision; a redelivery, or a change
    older than one already taken, changes nothing."""
    moved = event if isinstance(event, AppointmentRescheduled) else None
    async with pool.acquire() as conn:
        known = await store.follow_change(
            conn,
            event.appointment_id,
            event.revision,
            starts_at=moved.start if moved else None,
            timezone=moved.timezone if moved else None,
            cancelled_at=event.occurred_at if isinstance(event, AppointmentCancelled) else None,
        )
    if not known:
        # As for a contact correction: its AppointmentRequested waits in the dead-letter topic.
        raise Poison(
            f"appointment {event.appointment_id} has no recorded consent; replay its "
            f"AppointmentRequested from the dead-letter topic first, then this {event.event_type}"
        )


def _contact_corrected(
    event: ContactCorrected, ref: str, appointment: store.Appointment
) -> dict[str, Any]:
    return {
        "kind": "contact_corrected",
        "subject_ref": ref,
        "previous_subject_ref": appointment.subject_ref,
        "appointment_id": str(event.appointment_id),
        "revision": event.revision,
        "source_event_id": str(event.event_id),
        "cgu_version": appointment.cgu_version,
        "corrected_at": iso_utc(event.occurred_at),
    }


def _check_cgu(consent: ConsentGiven) -> None:
    # Booking validates the same table, so a mismatch here means a bypassed or broken producer:
    # recording it would put an unprovable acceptance in the proof file.
    version = CGU_VERSIONS.get(consent.cgu_version)
    if version is None:
        raise Poison(f"unknown CGU version {consent.cgu_version!r}; booking should have refused it")
    if consent.cgu_sha256 != version.sha256:
        raise Poison(
            f"cgu_sha256 {consent.cgu_sha256} is not the digest of CGU version "
            f"{version.version} ({version.sha256}); booking should have refused it"
        )


async def announcement(
    conn: asyncpg.Connection, source: AppointmentEvent
) -> ConsentRecorded | None:
    """The ConsentRecorded of what `source` appended, or None if it appended nothing.

    Built from the stored records, so announcing again (after a redelivery, or a repeated
    withdrawal) publishes exactly the same event, with the same event_id.
    """
    return (await announcements(conn, [source])).get(source.event_id)


async def announcements(
    conn: asyncpg.Connection, sources: Sequence[AppointmentEvent]
) -> dict[uuid.UUID, ConsentRecorded]:
    """`announcement` for many sources in one query: by source event id, those that appended."""
    rows = await conn.fetch(
        "SELECT source_event_id, seq, kind, hash, recorded_at, payload FROM ledger "
        "WHERE source_event_id = ANY($1::uuid[]) ORDER BY seq",
        [source.event_id for source in sources],
    )
    by_source: dict[uuid.UUID, list[asyncpg.Record]] = {}
    for row in rows:
        by_source.setdefault(row["source_event_id"], []).append(row)
    found: dict[uuid.UUID, ConsentRecorded] = {}
    for source in sources:
        appended = by_source.get(source.event_id)
        if not appended:
            continue
        first = json.loads(appended[0]["payload"])
        found[source.event_id] = ConsentRecorded(
            **source.caused(appointment_id=source.appointment_id, revision=first["revision"]),
            event_id=uuid.uuid5(_CONSENT_RECORDED_NAMESPACE, str(source.event_id)),
            occurred_at=appended[0]["recorded_at"],
            subject_ref=first["subject_ref"],
            cgu_version=first["cgu_version"],
            entries=[stored_entry(row) for row in appended],
        )
    return found
