"""The consent service: reads appointment requests, appends consent to the ledger."""

from __future__ import annotations

import logging

from fastapi import FastAPI
from visio_runtime.service import Runtime, build_runtime, create_service_app
from visio_shared import AppointmentRequested

from visio_consent.handlers import record_consent
from visio_consent.ledger import VerifyReport, verify
from visio_consent.settings import ConsentSettings

log = logging.getLogger(__name__)


def create_app(settings: ConsentSettings | None = None) -> FastAPI:
    settings = settings or ConsentSettings()
    runtime = build_runtime("consent", settings)

    @runtime.consumer.on(AppointmentRequested)
    async def on_appointment_requested(event: AppointmentRequested) -> None:
        await record_consent(event, runtime.db, runtime.broker, settings, runtime.topics)

    runtime.consumer.subscribe(runtime.topics.appointments)

    if settings.uses_dev_subject_key:
        runtime.on_start.append(_warn_dev_subject_key)

    app = create_service_app(
        runtime,
        title="Visio RDV consent",
        description="Tamper-evident ledger of CGU acceptance and recording authorisation.",
    )

    @app.get(
        "/v1/ledger/verify",
        tags=["ledger"],
        summary="Walk the hash chain from genesis and report the first broken link",
    )
    async def verify_ledger() -> VerifyReport:
        async with runtime.db.acquire() as conn:
            return await verify(conn)

    return app


async def _warn_dev_subject_key(_: Runtime) -> None:
    log.warning(
        "consent: CONSENT_SUBJECT_KEY is the development default; subject_refs are not "
        "pseudonymous with it. Set a secret key before recording anyone's consent."
    )
