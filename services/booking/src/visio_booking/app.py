"""Booking: takes requests (HTTP and `booking-requests.v1`), stores them with their events in
one transaction, publishes through the outbox, and follows the other services' events."""

from __future__ import annotations

from fastapi import FastAPI
from visio_runtime import problems
from visio_runtime.service import build_runtime, create_service_app
from visio_shared import AppointmentEvent, PersonalDataErased

from visio_booking import (
    api,
    erasure,
    erasure_api,
    fresh_link_api,
    openapi,
    pages_api,
    personal_data,
)
from visio_booking.appointments import Context
from visio_booking.handlers import STATUS_EVENTS, follow_status
from visio_booking.inbound import InboundRequests, subscribe
from visio_booking.outbox import OutboxRelay
from visio_booking.replies import Site
from visio_booking.settings import BookingSettings


def create_app(settings: BookingSettings | None = None) -> FastAPI:
    settings = settings or BookingSettings()
    runtime = build_runtime("booking", settings)
    ctx = Context(
        topics=runtime.topics,
        horizon_days=settings.booking_horizon_days,
        duration_bounds=(settings.min_duration_minutes, settings.max_duration_minutes),
    )

    no_shows = runtime.metrics.counter(
        "appointments_no_show_total", "Meetings the member of the public never joined."
    )

    async def on_status_event(event: AppointmentEvent) -> None:
        step = await follow_status(runtime.db, event)
        if step is not None and step.status == "no_show":
            no_shows.inc()

    for model in STATUS_EVENTS:
        runtime.consumer.on(model)(on_status_event)

    @runtime.consumer.on(PersonalDataErased)
    async def on_erased(event: PersonalDataErased) -> None:
        await erasure.on_erased(runtime.db, event)

    subscribe(runtime, InboundRequests(runtime, ctx, settings))

    relay = OutboxRelay(
        settings.database_url.get_secret_value(), runtime.broker, settings.relay(), runtime.metrics
    )
    runtime.run_in_background(relay.run, "outbox-relay")
    runtime.personal_data = personal_data.collect
    app = create_service_app(
        runtime,
        title="Visio RDV — booking",
        version="1.0.0",
        description=(
            "Book, follow and change video appointments with a Caf advisor. "
            "Every call carries `Authorization: Bearer <api key>`; a caller sees and changes "
            "only the appointments it booked (unless its key has `appointments:admin`). "
            "Changes accept an `Idempotency-Key`. Errors are `application/problem+json` "
            "(RFC 9457) naming each invalid field. The same requests can be sent on the Kafka "
            "topic `visio-rdv.booking-requests.v1`; see the README."
        ),
    )
    app.state.context = ctx
    app.state.outbox = relay
    problems.install(app)
    app.include_router(api.router)
    app.include_router(erasure_api.router)
    link_keys = settings.link_ring()
    if link_keys is not None:  # without keys no link can be read: the pages do not exist
        app.state.self_service = Site(settings, link_keys, ctx, runtime)
        app.include_router(pages_api.router)
        app.include_router(fresh_link_api.router)
    openapi.install(app)
    return app
