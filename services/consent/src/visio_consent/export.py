"""The export of everything Visio RDV holds about a person (RGPD article 15, CGU article 8),
assembled by consent from every service's own answer: booking (the appointments and their
history), notifications (every email sent), meetings (the Teams meetings), and consent's own
ledger records with their proof elements.

Each service answers for its part on its admin port (`visio_runtime.personal_data`), never on a
topic. Each is given `export_deadline_s`; one that has not answered by then, or answered an
error, is named in the export — « incomplet : le service X n'a pas répondu » — never a silent
gap. The request itself is chained in the ledger (`access_exported`: who asked, through which
channel, which services answered), pseudonymous like every record: that record is the proof
that the export was made. Like every export of consent's records, it is also listed in
`consent.access_requests` (visio_consent.access), the « who asked » list shown to the person.
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from datetime import UTC, datetime
from typing import Any

import asyncpg
import httpx
from pydantic import BaseModel
from visio_runtime.personal_data import PATH
from visio_shared import ConsentRecorded, LedgerEntry, Topics, publish_event
from visio_shared.checkpoints import Checkpoint
from visio_shared.publishing import Publisher

from visio_consent import store
from visio_consent.access import AccessExport, Asker, access_export
from visio_consent.ledger import append, iso_utc
from visio_consent.settings import ConsentSettings

NO_APPOINTMENT = uuid.UUID(int=0)  # the ledger's appointment id of an export with none
_ANNOUNCED = uuid.uuid5(uuid.NAMESPACE_URL, "urn:visio-rdv:consent:export-recorded")
log = logging.getLogger(__name__)
SERVICE_NAMES = {
    "booking": "les rendez-vous (booking)",
    "notifications": "les courriels (notifications)",
    "meetings": "les réunions Teams (meetings)",
}


class ServicePart(BaseModel):
    service: str
    answered: bool
    problem: str | None = None  # why not, when it did not answer
    data: dict[str, Any] | None = None


class PersonalDataExport(BaseModel):
    export_id: uuid.UUID
    generated_at: datetime
    requested_by: str
    channel: str
    appointment_ids: list[uuid.UUID]
    complete: bool
    incomplete: list[str]  # one French sentence per service that did not answer
    services: list[ServicePart]
    consent: AccessExport
    recorded: LedgerEntry | None = None  # the ledger record of this export


def _sources(settings: ConsentSettings) -> dict[str, str | None]:
    return {
        "booking": settings.booking_internal_url,
        "notifications": settings.notifications_internal_url,
        "meetings": settings.meetings_internal_url,
    }


async def _ask(
    client: httpx.AsyncClient, service: str, base: str | None, ids: list[uuid.UUID], deadline: float
) -> ServicePart:
    if base is None:
        return ServicePart(service=service, answered=False, problem="not configured")
    try:
        async with asyncio.timeout(deadline):
            answer = await client.post(
                base.rstrip("/") + PATH, json={"appointment_ids": [str(i) for i in ids]}
            )
    except TimeoutError:
        return ServicePart(service=service, answered=False, problem=f"no answer in {deadline} s")
    except httpx.HTTPError as exc:
        return ServicePart(service=service, answered=False, problem=type(exc).__name__)
    if answer.status_code != 200:
        return ServicePart(service=service, answered=False, problem=f"HTTP {answer.status_code}")
    return ServicePart(service=service, answered=True, data=answer.json())


async def assemble(
    pool: asyncpg.Pool,
    publisher: Publisher,
    topics: Topics,
    settings: ConsentSettings,
    ref: str,
    asker: Asker,
    *,
    checkpoint: Checkpoint | None = None,
    linked: uuid.UUID | None = None,
) -> PersonalDataExport:
    """The whole export of the person `ref`, asked by `asker`: listed among the person's
    access requests, then chained in the ledger and announced (`ConsentRecorded`, carrying the
    record) like every record, so a ledger restored from a backup can get it back
    (visio_consent.rebuild)."""
    async with pool.acquire() as conn:
        consent = await access_export(conn, ref, asker, checkpoint)
        known = await conn.fetch(
            "SELECT appointment_id FROM appointments WHERE subject_ref = $1", ref
        )
    ids = sorted(
        {record.appointment_id for record in consent.records}
        | {row["appointment_id"] for row in known}
        | ({linked} if linked else set()),
        key=str,
    )
    deadline = settings.export_deadline_s
    async with httpx.AsyncClient(trust_env=False, timeout=deadline) as client:
        parts = await asyncio.gather(
            *(
                _ask(client, service, base, ids, deadline)
                for service, base in _sources(settings).items()
            )
        )
    missing = [part for part in parts if not part.answered]
    export = PersonalDataExport(
        export_id=uuid.uuid4(),
        generated_at=datetime.now(UTC),
        requested_by=asker.requested_by,
        channel=asker.channel,
        appointment_ids=ids,
        complete=not missing,
        incomplete=[
            f"Incomplet : le service qui garde {SERVICE_NAMES[part.service]} n'a pas répondu "
            f"({part.problem})."
            for part in missing
        ],
        services=list(parts),
        consent=consent,
    )
    appointment = linked or (export.appointment_ids[0] if export.appointment_ids else None)
    async with pool.acquire() as conn, conn.transaction():
        context = await store.lock_appointment(conn, appointment) if appointment else None
        (entry,) = await append(conn, [_record(export, ref, appointment)])
    try:
        await publish_event(publisher, topics.consents, _announcement(export, ref, context, entry))
    except Exception:  # the export was made and chained: the next checkpoint signs it anyway
        log.exception("consent: the announcement of export %s was not published", export.export_id)
    return export.model_copy(update={"recorded": entry})


def _announcement(
    export: PersonalDataExport, ref: str, context: store.Appointment | None, entry: LedgerEntry
) -> ConsentRecorded:
    """The export's record on the consents topic. Its appointment's lineage when it has one;
    an export of a person consent knows no appointment of stands alone (its own correlation)."""
    return ConsentRecorded(
        event_id=uuid.uuid5(_ANNOUNCED, str(export.export_id)),
        occurred_at=export.generated_at,
        correlation_id=context.correlation_id if context else export.export_id,
        appointment_id=context.appointment_id if context else NO_APPOINTMENT,
        revision=context.revision if context else 1,
        subject_ref=ref,
        cgu_version=context.cgu_version if context else "",
        entries=[entry],
    )


def _record(export: PersonalDataExport, ref: str, appointment: uuid.UUID | None) -> dict[str, Any]:
    return {
        "kind": "access_exported",
        "subject_ref": ref,
        "appointment_id": str(appointment or NO_APPOINTMENT),
        "source_event_id": str(export.export_id),
        "requested_by": export.requested_by,
        "channel": export.channel,
        "requested_at": iso_utc(export.generated_at),
        "services_answered": [part.service for part in export.services if part.answered],
        "services_missing": [part.service for part in export.services if not part.answered],
    }
