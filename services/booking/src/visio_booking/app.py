"""Booking: validates, stores, and publishes `AppointmentRequested` through the outbox."""

from __future__ import annotations

from fastapi import FastAPI
from visio_runtime.service import build_runtime, create_service_app
from visio_shared import (
    AppointmentEvent,
    MeetingFailed,
    MeetingReady,
    NotificationFailed,
    NotificationSent,
)

from visio_booking import api, problems
from visio_booking.handlers import follow_status
from visio_booking.outbox import OutboxRelay
from visio_booking.settings import BookingSettings


def create_app(settings: BookingSettings | None = None) -> FastAPI:
    settings = settings or BookingSettings()
    runtime = build_runtime("booking", settings)

    async def on_status_event(event: AppointmentEvent) -> None:
        await follow_status(runtime.db, event)

    for model in (MeetingReady, MeetingFailed, NotificationSent, NotificationFailed):
        runtime.consumer.on(model)(on_status_event)
    runtime.consumer.subscribe(runtime.topics.meetings, runtime.topics.notifications)

    relay = OutboxRelay(
        lambda: runtime.db,
        runtime.broker,
        settings.outbox_batch_size,
        settings.outbox_poll_interval_s,
    )
    runtime.run_in_background(relay.run, "outbox-relay")
    app = create_service_app(
        runtime,
        title="Visio RDV — booking",
        version="1.0.0",
        description=(
            "Book, follow and change video appointments with a Caf advisor. "
            "Every call carries `Authorization: Bearer <api key>`; errors are "
            "`application/problem+json` (RFC 9457) naming each invalid field."
        ),
    )
    app.state.outbox = relay
    problems.install(app)
    app.include_router(api.router)
    return app
