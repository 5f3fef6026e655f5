"""The consent service: records consent from appointment events and what happened in the
meeting from meetings' events, signs checkpoints on a schedule, and serves verification, the
right of access and withdrawals over HTTP, and, with link keys, the self-service pages."""

from __future__ import annotations

import logging
from datetime import timedelta

from fastapi import FastAPI
from visio_runtime import problems, ratelimit
from visio_runtime.local_stack import path_base
from visio_runtime.pages import accessibility_router
from visio_runtime.service import Runtime, build_runtime, create_service_app
from visio_shared import (
    AppointmentEvent,
    AppointmentRequested,
    ContactCorrected,
    PersonalDataErasureRequested,
)

from visio_consent import api, cgu_pages, self_service_routes
from visio_consent.checkpoints import Checkpointer, CheckpointGauges
from visio_consent.connections import MEETING_EVENTS, record_meeting_outcome
from visio_consent.erasure import erase_subject
from visio_consent.handlers import (
    APPOINTMENT_CHANGES,
    follow_appointment_change,
    record_consents,
    record_contact_correction,
)
from visio_consent.settings import ConsentSettings
from visio_consent.store import purge_expired_subjects
from visio_consent.withdrawal import announce_pending_withdrawals

log = logging.getLogger(__name__)

# A withdrawal committed but not announced this long after is announced again, and the sweep
# looks this often: meetings must learn of it before the appointment starts.
PENDING_GRACE = timedelta(seconds=30)
ANNOUNCE_SWEEP_S = 15.0
# Rate-limit windows are an hour at most; older rows count for nothing.
RATE_LIMITS_KEPT = timedelta(days=1)


def create_app(settings: ConsentSettings | None = None) -> FastAPI:
    # Relative paths from the checkout, not the working directory: the commands read the same
    # checkpoint file whatever directory each was started in.
    settings = (settings or ConsentSettings()).anchored(path_base())
    runtime = build_runtime("consent", settings)
    checkpointer = Checkpointer(settings, runtime.topics)

    _consume(runtime, settings)

    if settings.uses_dev_subject_key:
        runtime.on_start.append(_warn_dev_subject_key)

    async def load_key(_: Runtime) -> None:
        # At start, so a missing or unreadable key stops the service instead of its proofs.
        checkpointer.load_key()

    runtime.on_start.append(load_key)

    async def warn_missing_contacts(_: Runtime) -> None:
        settings.warn_missing_contacts(log)

    runtime.on_start.append(warn_missing_contacts)

    head_seq = runtime.metrics.gauge(
        "ledger_head_seq", "Records in the consent ledger (the sequence number of its head)."
    )
    signed = CheckpointGauges(runtime.metrics, settings.checkpoint_interval_s)

    async def measure_head(rt: Runtime) -> None:
        head_seq.set(await rt.db.fetchval("SELECT seq FROM chain_head"))
        signed.measure(checkpointer.last)

    runtime.on_scrape.append(measure_head)
    runtime.run_every(
        "checkpoints",
        settings.checkpoint_interval_s,
        lambda: checkpointer.take_on(runtime.db, runtime.broker),
    )
    runtime.run_every("retention", settings.checkpoint_interval_s, lambda: _purge_expired(runtime))
    runtime.run_every(
        "withdrawal-announcements", ANNOUNCE_SWEEP_S, lambda: _announce_pending(runtime)
    )

    app = create_service_app(
        runtime,
        title="Visio RDV consent",
        version="1.0.0",
        description=(
            "Tamper-evident ledger of CGU acceptance and recording authorisation: verification "
            "against signed checkpoints, the right of access, withdrawal of the recording "
            "authorisation. Every call carries `Authorization: Bearer <api key>`."
        ),
    )
    app.state.checkpointer = checkpointer
    problems.install(app)
    app.include_router(api.router)
    app.include_router(cgu_pages.router())  # public: the CGU versions' texts
    app.include_router(accessibility_router())
    link_keys = settings.link_ring()
    if link_keys is not None:  # no keys, no pages: their paths answer 404
        app.state.pages_deps = self_service_routes.pages_deps(settings, link_keys)
        app.include_router(self_service_routes.router)
    return app


def _consume(runtime: Runtime, settings: ConsentSettings) -> None:
    """What consent reads: appointments (consents, corrections, changes, erasures) and, from
    meetings.v1, what happened in the meeting (attendance, recordings), which joins the proof
    file."""

    # A batch of requests is one group commit into the chain (one transaction, one append).
    @runtime.consumer.on_batch(AppointmentRequested)
    async def on_appointment_requested(events: list[AppointmentRequested]) -> None:
        await record_consents(events, runtime.db, runtime.broker, settings, runtime.topics)

    @runtime.consumer.on(ContactCorrected)
    async def on_contact_corrected(event: ContactCorrected) -> None:
        await record_contact_correction(event, runtime.db, runtime.broker, settings, runtime.topics)

    @runtime.consumer.on(PersonalDataErasureRequested)
    async def on_erasure_requested(event: PersonalDataErasureRequested) -> None:
        await erase_subject(event, runtime.db, runtime.broker, runtime.topics)

    async def on_appointment_change(event: AppointmentEvent) -> None:
        assert isinstance(event, APPOINTMENT_CHANGES), "registered for these alone"
        await follow_appointment_change(event, runtime.db)

    for change_type in APPOINTMENT_CHANGES:
        runtime.consumer.on(change_type)(on_appointment_change)

    async def on_meeting_outcome(event: AppointmentEvent) -> None:
        assert isinstance(event, MEETING_EVENTS), "registered for these alone"
        await record_meeting_outcome(event, runtime.db, runtime.broker, runtime.topics)

    for model in MEETING_EVENTS:
        runtime.consumer.on(model)(on_meeting_outcome)
    # meetings.v1: what happened in the meeting (attendance, recordings) joins the proof file.
    runtime.consumer.subscribe(runtime.topics.appointments, runtime.topics.meetings)


async def _purge_expired(runtime: Runtime) -> None:
    """Erase personal data kept beside the chain once its retention has ended."""
    async with runtime.db.acquire() as conn:
        erased = await purge_expired_subjects(conn)
        await ratelimit.purge(conn, RATE_LIMITS_KEPT)
    if erased:
        log.info("consent: erased the personal data of %d expired subjects", erased)


async def _announce_pending(runtime: Runtime) -> None:
    """Announce again the withdrawals whose publication failed after they were recorded."""
    announced = await announce_pending_withdrawals(
        runtime.db, runtime.broker, runtime.topics, PENDING_GRACE
    )
    if announced:
        log.warning("consent: announced %d withdrawals again after a failure", announced)


async def _warn_dev_subject_key(_: Runtime) -> None:
    log.warning(
        "consent: CONSENT_SUBJECT_KEY is the development default; subject_refs are not "
        "pseudonymous with it. Set a secret key before recording anyone's consent."
    )
