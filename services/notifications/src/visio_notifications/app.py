"""The notifications service: follows appointments and meetings, sends the emails a person
needs (confirmation, changes, cancellation, reminders, and the email again when they ask for
it), and says what it sent."""

from __future__ import annotations

from fastapi import FastAPI
from visio_runtime.service import Runtime, build_runtime, create_service_app
from visio_shared import AppointmentEvent, PersonalDataErasureRequested

from visio_notifications import erasure, handlers, personal_data, self_service
from visio_notifications.deps import Clock, Deps, utc_now
from visio_notifications.mailer import SmtpMailer
from visio_notifications.poller import poll_once
from visio_notifications.settings import NotificationsSettings


def create_app(settings: NotificationsSettings | None = None, *, clock: Clock = utc_now) -> FastAPI:
    """`clock` is for tests that move time to fire reminders."""
    settings = settings or NotificationsSettings()
    runtime = build_runtime("notifications", settings)
    mailer = SmtpMailer(settings, runtime.metrics, runtime.tracer)

    def deps() -> Deps:
        # The pool opens in the lifespan, so the dependencies are gathered per use.
        return Deps(
            pool=runtime.db,
            publisher=runtime.broker,
            settings=settings,
            topics=runtime.topics,
            send_mail=mailer.send,
            clock=clock,
        )

    # One appointment's events stay in order across both handlers (the consumer's lanes): an
    # erasure is handled after what came before it, and what comes after finds it erased.
    @runtime.consumer.on(PersonalDataErasureRequested)
    async def erasure_requested(event: PersonalDataErasureRequested) -> None:
        await erasure.on_erasure_requested(deps(), event)

    # MeetingRescheduled and MeetingCancelled are not followed (skipped and counted): the link
    # does not change on a reschedule, and the cancellation email follows booking's own
    # AppointmentCancelled, which says by whom and why.
    @runtime.consumer.on_batch(*handlers.HANDLED)
    async def follow(events: list[AppointmentEvent]) -> None:
        await handlers.on_events(deps(), events)

    # Separately: a backlog of appointments (a replay, a campaign) must not hold back the
    # MeetingReady that confirmations wait for; the handlers take the two in any order.
    runtime.consumer.subscribe(
        runtime.topics.appointments, runtime.topics.meetings, separately=True
    )

    async def publish_leftovers(_: Runtime) -> None:
        # Outcomes recorded before a crash but never published go out at start.
        await handlers.publish_outcomes(deps())

    async def warn_without_link_keys(_: Runtime) -> None:
        self_service.warn_if_off(settings)

    async def close_smtp_connections(_: Runtime) -> None:
        await mailer.close()

    runtime.on_start.append(warn_without_link_keys)
    runtime.on_start.append(publish_leftovers)
    runtime.on_stop.append(close_smtp_connections)
    runtime.run_every("notifications-poller", settings.poll_interval_s, lambda: poll_once(deps()))
    runtime.personal_data = personal_data.collect
    return create_service_app(runtime, title="Visio RDV notifications")
