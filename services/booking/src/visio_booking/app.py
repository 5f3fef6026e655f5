"""Booking: takes requests (HTTP, and each partner's `booking-requests.<system>.v1`), stores
them with their events in one transaction, publishes through the outbox, and follows the other
services' events (pushing each partner's appointments' outcomes to it)."""

from __future__ import annotations

import logging

from fastapi import FastAPI
from visio_runtime import problems
from visio_runtime.api_keys import KeptHolders
from visio_runtime.pages import accessibility_router
from visio_runtime.service import Runtime, build_runtime, create_service_app
from visio_shared import AppointmentEvent, PersonalDataErased

from visio_booking import (
    advisor_pages,
    api,
    erasure,
    erasure_api,
    fresh_link_api,
    openapi,
    pages_api,
    personal_data,
    short_links,
)
from visio_booking.advisor_signin import AdvisorSignIn
from visio_booking.appointments import Context
from visio_booking.handlers import STATUS_EVENTS, follow_statuses
from visio_booking.inbound import InboundRequests, subscribe
from visio_booking.outbox import OutboxRelay
from visio_booking.replies import Site
from visio_booking.settings import BookingSettings

log = logging.getLogger("visio_booking")


def create_app(settings: BookingSettings | None = None) -> FastAPI:
    settings = settings or BookingSettings()
    runtime = build_runtime("booking", settings)
    ctx = Context(
        topics=runtime.topics,
        horizon_days=settings.booking_horizon_days,
        duration_bounds=(settings.min_duration_minutes, settings.max_duration_minutes),
        partners=frozenset(settings.partners),
    )

    no_shows = runtime.metrics.counter(
        "appointments_no_show_total", "Meetings the member of the public never joined."
    )

    @runtime.consumer.on_batch(*STATUS_EVENTS)
    async def on_status_events(events: list[AppointmentEvent]) -> None:
        steps = await follow_statuses(runtime.db, ctx, events)
        no_shows.inc(sum(1 for step in steps.values() if step.status == "no_show"))

    @runtime.consumer.on(PersonalDataErased)
    async def on_erased(event: PersonalDataErased) -> None:
        await erasure.on_erased(runtime.db, event)

    runtime.extra_topics += runtime.topics.partner_topics(settings.partners)

    subscribe(runtime, InboundRequests(runtime, ctx, settings))

    relay = OutboxRelay(
        settings.database_url.get_secret_value(), runtime.broker, settings.relay(), runtime.metrics
    )
    runtime.run_in_background(relay.run, "outbox-relay")
    runtime.personal_data = personal_data.collect

    async def warn_missing_contacts(_: Runtime) -> None:
        settings.warn_missing_contacts(log)

    runtime.on_start.append(warn_missing_contacts)
    app = create_service_app(
        runtime,
        title="Visio RDV — booking",
        version="1.0.0",
        description=(
            "Book, follow and change video appointments with a Caf advisor. "
            "Every call carries `Authorization: Bearer <api key>`; a caller sees and changes "
            "only the appointments it booked (unless its key has `appointments:admin`). "
            "Changes accept an `Idempotency-Key`. Errors are `application/problem+json` "
            "(RFC 9457) naming each invalid field. Partner systems can send the same requests "
            "on their own Kafka topic `visio-rdv.booking-requests.<system>.v1`; see "
            "docs/partners.md."
        ),
    )
    app.state.context = ctx
    app.state.outbox = relay
    app.state.api_key_holders = KeptHolders()  # a booking's key: checked by its statement
    problems.install(app)
    app.include_router(api.router)
    app.include_router(erasure_api.router)
    app.state.advisor_sign_in = AdvisorSignIn(settings)
    app.include_router(advisor_pages.router)
    link_keys = settings.link_ring()
    if link_keys is not None:  # without keys no link can be read: the pages do not exist
        app.state.self_service = Site(settings, link_keys, ctx, runtime)
        app.include_router(pages_api.router)
        app.include_router(fresh_link_api.router)
        app.include_router(short_links.router)
        app.include_router(accessibility_router())
    openapi.install(app)
    return app
