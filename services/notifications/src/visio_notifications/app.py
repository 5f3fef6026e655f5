"""The notifications service: follows appointments and meetings, sends the emails a person
needs (confirmation, changes, cancellation, reminders, and the email again when they ask for
it), and says what it sent."""

from __future__ import annotations

import hmac
import logging
from collections.abc import Callable
from datetime import UTC, datetime

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse
from visio_runtime.service import Runtime, build_runtime, create_service_app
from visio_shared import (
    AppointmentEvent,
    ContactCorrectionRequested,
    PersonalDataErasureRequested,
    RescheduleRequested,
)

from visio_notifications import (
    address_confirmation,
    bounces,
    brevo,
    compose,
    erasure,
    handlers,
    personal_data,
    self_service,
    sms_receipts,
    team_requests,
)
from visio_notifications.deps import Clock, NotificationsDeps, utc_now
from visio_notifications.mailer import SmtpMailer
from visio_notifications.poller import poll_once
from visio_notifications.settings import NotificationsSettings
from visio_notifications.sms_metrics import SmsMetrics
from visio_notifications.sms_provider import SmsProvider
from visio_notifications.unrecorded import Unrecorded

log = logging.getLogger("visio_notifications")


def sms_provider_of(settings: NotificationsSettings, runtime: Runtime) -> SmsProvider | None:
    """The provider the settings name, or None for `none`."""
    if settings.sms_provider == "none":
        return None
    assert settings.sms_api_key is not None  # the settings refuse a provider without a key
    return brevo.BrevoSms(
        settings.sms_api_url,
        settings.sms_api_key.get_secret_value(),
        settings.sms_sender,
        settings.sms_timeout_s,
        runtime.metrics,
        str(settings.sms_ca_file) if settings.sms_ca_file else None,
    )


_DepsFactory = Callable[[], NotificationsDeps]


def create_app(settings: NotificationsSettings | None = None, *, clock: Clock = utc_now) -> FastAPI:
    """`clock` is for tests that move time to fire reminders."""
    settings = settings or NotificationsSettings()
    runtime = build_runtime("notifications", settings)
    mailer = SmtpMailer(settings, runtime.metrics, runtime.tracer)
    sms_provider = sms_provider_of(settings, runtime)
    sms_metrics = SmsMetrics(runtime.metrics)
    bounce_metrics = bounces.BounceMetrics(runtime.metrics)
    team_metrics = team_requests.TeamMetrics(runtime.metrics)

    unrecorded = Unrecorded()  # the process's, shared by every use of the dependencies

    def deps() -> NotificationsDeps:
        # The pool opens in the lifespan, so the dependencies are gathered per use.
        return NotificationsDeps(
            pool=runtime.db,
            publisher=runtime.broker,
            settings=settings,
            topics=runtime.topics,
            send_mail=mailer.send,
            clock=clock,
            sms=sms_provider,
            sms_metrics=sms_metrics,
            unrecorded=unrecorded,
        )

    _follow_requests(runtime, deps, team_metrics)
    _follow_appointments(runtime, deps)
    _start_and_stop(runtime, settings, deps, mailer, sms_provider)
    runtime.run_every("notifications-poller", settings.poll_interval_s, lambda: poll_once(deps()))
    runtime.personal_data = personal_data.collect
    app = create_service_app(runtime, title="Visio RDV notifications")
    _sms_receipt_route(app, runtime, settings, sms_metrics)
    _bounce_route(app, settings, deps, bounce_metrics)
    return app


def _follow_requests(
    runtime: Runtime, deps: _DepsFactory, team_metrics: team_requests.TeamMetrics
) -> None:
    """The requests a person makes about their data, their address or their appointment."""

    # One appointment's events stay in order across both handlers (the consumer's lanes): an
    # erasure is handled after what came before it, and what comes after finds it erased.
    @runtime.consumer.on(PersonalDataErasureRequested)
    async def erasure_requested(event: PersonalDataErasureRequested) -> None:
        await erasure.on_erasure_requested(deps(), event)

    # A new address to confirm: one email to that address, outside the appointment's state.
    @runtime.consumer.on(ContactCorrectionRequested)
    async def correction_requested(event: ContactCorrectionRequested) -> None:
        await address_confirmation.on_correction_requested(deps(), event)

    # A person asks to move an appointment booked over HTTP: one email to the Caf's team.
    @runtime.consumer.on(RescheduleRequested)
    async def reschedule_requested(event: RescheduleRequested) -> None:
        await team_requests.on_reschedule_requested(deps(), event, team_metrics)


def _follow_appointments(runtime: Runtime, deps: _DepsFactory) -> None:
    """The appointments and their meetings, each appointment's in one batch handler."""

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


def _start_and_stop(
    runtime: Runtime,
    settings: NotificationsSettings,
    deps: _DepsFactory,
    mailer: SmtpMailer,
    sms_provider: SmsProvider | None,
) -> None:
    """What the service does as it starts (warn, publish what a crash left) and as it stops."""

    async def publish_leftovers(_: Runtime) -> None:
        # Outcomes recorded before a crash but never published go out at start.
        await handlers.publish_outcomes(deps())

    async def warn_without_link_keys(_: Runtime) -> None:
        compose.load_templates()  # a template the CSS inliner refuses stops the start here
        self_service.warn_if_off(settings)
        settings.warn_missing_contacts(log)

    async def close_smtp_connections(_: Runtime) -> None:
        await mailer.close()
        if sms_provider is not None:
            await sms_provider.close()

    runtime.on_start.append(warn_without_link_keys)
    runtime.on_start.append(publish_leftovers)
    runtime.on_stop.append(close_smtp_connections)


def _sms_receipt_route(
    app: FastAPI, runtime: Runtime, settings: NotificationsSettings, sms_metrics: SmsMetrics
) -> None:
    @app.post("/v1/sms/receipts/{token}", include_in_schema=False)
    async def sms_receipt(token: str, request: Request) -> JSONResponse:
        """The provider's delivery receipts (Brevo's `webUrl`); the token in the path is the
        secret only the provider was told."""
        expected = settings.sms_receipt_token.get_secret_value()
        if not hmac.compare_digest(token.encode(), expected.encode()):
            return JSONResponse({"detail": "not found"}, status_code=404)
        try:
            receipt = brevo.parse_receipt(await request.json())
        except ValueError as exc:
            return JSONResponse({"detail": str(exc)}, status_code=400)
        known = await sms_receipts.on_receipt(
            runtime.db,
            receipt.provider_id,
            receipt.status,
            receipt.detail,
            datetime.now(UTC),
            sms_metrics,
        )
        # Unknown ids are acknowledged too: a retry from the provider would not change that.
        return JSONResponse({"recorded": known})


def _bounce_route(
    app: FastAPI,
    settings: NotificationsSettings,
    deps: _DepsFactory,
    metrics: bounces.BounceMetrics,
) -> None:
    @app.post("/v1/bounces/{token}", include_in_schema=False)
    async def bounce(token: str, request: Request, recipient: str | None = None) -> JSONResponse:
        """A DSN the relay received for one of our bounce addresses (`bounces`): the raw
        message as the body, the address it came to as `recipient` when the relay says it.
        Whatever it says is kept and acknowledged (202): a retry would not change it."""
        expected = settings.bounce_token.get_secret_value()
        if not hmac.compare_digest(token.encode(), expected.encode()):
            return JSONResponse({"detail": "not found"}, status_code=404)
        raw = await request.body()
        if len(raw) > MAX_DSN_BYTES:
            return JSONResponse({"detail": "a DSN is not that large"}, status_code=413)
        outcome = await bounces.receive(deps(), raw, recipient, metrics)
        return JSONResponse({"outcome": outcome}, status_code=202)


# A DSN returns the original's headers, at most the message: emails here are far smaller.
MAX_DSN_BYTES = 2 * 1024 * 1024
