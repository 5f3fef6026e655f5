"""One owed email, turned into an outcome: built, checked, sent, and described by the
NotificationSent or NotificationFailed that goes into the dispatch log.

A permanent failure (the relay refuses, the link is not a Teams link, the appointment is over,
no link key to sign the one link a fresh link after the appointment carries) is an outcome, not
an exception. `Transient` passes through: the caller keeps the email owed and tries again later.
"""

from __future__ import annotations

import logging
import uuid
from dataclasses import replace
from datetime import datetime, timedelta
from typing import Any
from urllib.parse import urlsplit

from visio_runtime import defects
from visio_runtime.teams import join_url_allowed
from visio_shared import MeetingFailed, NotificationFailed, NotificationSent

from visio_notifications.compose import Letter, compose_mail, message_id
from visio_notifications.decide import (
    LINK_KINDS,
    Owed,
    State,
    Told,
    appointment_over,
    consents_only,
    recipient_sha256,
)
from visio_notifications.deps import NotificationsDeps
from visio_notifications.dispatches import Dispatch
from visio_notifications.mailer import MailRejected

log = logging.getLogger(__name__)

# Emails that show the join link: the link emails, reminders, and the email asked for again.
_SHOWS_LINK = LINK_KINDS | {"reminder", "link_resent"}


def retry_delay(deps: NotificationsDeps, failures: int) -> timedelta:
    """How long an email the relay could not take waits before the next try."""
    settings = deps.settings
    seconds = min(settings.mail_retry_initial_s * 2**failures, settings.mail_retry_max_s)
    return timedelta(seconds=seconds)


class Delivery:
    """One owed email of one appointment: what it will tell, under which key and Message-ID."""

    def __init__(
        self,
        deps: NotificationsDeps,
        state: State,
        owed: Owed,
        *,
        cause: uuid.UUID,
        offset: int | None = None,
    ) -> None:
        appointment = state.appointment
        assert appointment is not None
        self.deps, self.state, self.owed, self.offset = deps, state, owed, offset
        self.appointment = appointment
        link = state.link if owed.kind in _SHOWS_LINK else None
        self.told = Told(
            kind=owed.kind,
            revision=owed.revision,
            status="sent",
            recipient_sha256=recipient_sha256(str(appointment.user.email)),
            reminder_offset_minutes=offset,
            device=str(appointment.user.device),
            start_at=appointment.start,
            duration_minutes=appointment.duration_minutes,
            join_url=link.join_url if link is not None else None,
            request_id=owed.request.event_id if owed.request is not None else None,
        )
        self.message_id = message_id(
            appointment.appointment_id,
            owed.revision,
            owed.kind,
            deps.settings.message_id_domain,
            offset,
            self.told.request_id,
        )
        self.lineage: dict[str, Any] = {
            "appointment_id": appointment.appointment_id,
            "revision": owed.revision,
            "correlation_id": appointment.correlation_id,
            "causation_id": cause,
            "kind": owed.kind,
            "reminder_offset_minutes": offset,
        }

    def _log(self, text: str, *args: object, warning: bool = False) -> None:
        prefix = (self.owed.kind, self.appointment.appointment_id, self.owed.revision)
        extra = {"correlation_id": str(self.appointment.correlation_id)}
        level = logging.WARNING if warning else logging.INFO
        log.log(level, "%s of %s r%d " + text, *prefix, *args, extra=extra)

    def failed(self, reason: str, detail: str, code: int | None = None) -> Dispatch:
        """The outcome of an email that will not be sent."""
        self._log("not sent: %s (%s)", reason, detail, warning=True)
        event = NotificationFailed(reason=reason, detail=detail, smtp_code=code, **self.lineage)
        return Dispatch(
            self.appointment.appointment_id,
            self.message_id,
            replace(self.told, status="failed"),
            event,
            reason,
            detail,
            smtp_code=code,
        )

    async def send(self, now: datetime) -> Dispatch:
        """Send it. Raises `Transient` when the relay may take it later."""
        settings = self.deps.settings
        ended = consents_only(self.state, self.owed.request, now)
        if ended is not None:
            # After the appointment: « Mes consentements » alone, and the log says no link.
            self.told = replace(self.told, join_url=None)
            if settings.link_ring() is None:
                return self.failed("no_link_keys", "NOTIFICATIONS_LINK_KEYS is not set")
        join_url = self.told.join_url
        if join_url is not None and not join_url_allowed(join_url, settings.teams_url_allowlist):
            host = urlsplit(join_url).hostname or "?"
            detail = f"join URL on host {host!r} is not in the allow-list"
            return self.failed("join_url_not_allowed", detail)
        if ended is None and appointment_over(self.appointment, now):
            return self.failed("appointment_over", "the appointment has ended; nothing was mailed")
        kept = self.deps.unrecorded.get(self.message_id)
        if kept is not None:
            # The relay took it on an earlier try whose record was lost (visio_notifications.
            # unrecorded): recorded now, not sent again.
            self._log("taken by the relay before as %s: recorded now", self.message_id)
            return kept
        letter = Letter(
            kind=self.owed.kind,
            revision=self.owed.revision,
            appointment=self.appointment,
            join_url=join_url,
            previous=self.owed.previous,
            cancellation=self.state.cancellation,
            reminder_offset_minutes=self.offset,
            link_sent_before=self.state.last_link_email(sent_only=True) is not None,
            request=self.owed.request,
            meeting_failed=isinstance(self.state.current_meeting, MeetingFailed),
            ended=ended,
            number_failed=self.state.number_failed,
            meeting=self.state.link,
        )
        try:
            mail = compose_mail(letter, settings, now=now)
            await self.deps.send_mail(mail)
            if defects.once("EMAIL_TWICE", self.owed.kind):  # tests of the proofs only
                again = mail.message_id.replace("@", ".again@", 1)
                raw = mail.raw.replace(mail.message_id.encode(), again.encode(), 1)
                await self.deps.send_mail(replace(mail, message_id=again, raw=raw))
        except MailRejected as exc:
            return self.failed("smtp_rejected", str(exc), exc.code)
        self._log("sent as %s", self.message_id)
        event = NotificationSent(message_id=self.message_id, **self.lineage)
        dispatch = Dispatch(
            self.appointment.appointment_id, self.message_id, self.told, event, sent_at=now
        )
        self.deps.unrecorded.keep(dispatch)  # until its record is committed
        return dispatch
