"""The notifications service: reads appointments and meetings, sends the confirmation email."""

from __future__ import annotations

from fastapi import FastAPI
from visio_runtime.service import Runtime, build_runtime, create_service_app
from visio_shared import AppointmentRequested, MeetingReady

from visio_notifications import handlers
from visio_notifications.mailer import SmtpMailer
from visio_notifications.settings import NotificationsSettings


def create_app(settings: NotificationsSettings | None = None) -> FastAPI:
    settings = settings or NotificationsSettings()
    runtime = build_runtime("notifications", settings)
    mailer = SmtpMailer(settings)

    def deps() -> handlers.Deps:
        # The pool opens in the lifespan, so the dependencies are gathered per event.
        return handlers.Deps(
            pool=runtime.db,
            publisher=runtime.broker,
            settings=settings,
            topics=runtime.topics,
            send_mail=mailer.send,
        )

    @runtime.consumer.on(AppointmentRequested)
    async def appointment_requested(event: AppointmentRequested) -> None:
        await handlers.on_appointment_requested(deps(), event)

    @runtime.consumer.on(MeetingReady)
    async def meeting_ready(event: MeetingReady) -> None:
        await handlers.on_meeting_ready(deps(), event)

    runtime.consumer.subscribe(runtime.topics.appointments, runtime.topics.meetings)

    async def publish_leftovers(_: Runtime) -> None:
        # Outcomes recorded before a crash but never published go out at start.
        await handlers.publish_outcomes(deps())

    runtime.on_start.append(publish_leftovers)
    return create_service_app(runtime, title="Visio RDV notifications")
