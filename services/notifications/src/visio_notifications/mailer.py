"""The confirmation email: built from the appointment and its meeting with `EmailMessage` only
(text and HTML alternatives plus the .ics invitation), and sent with aiosmtplib.

SMTP answers are classified here, once: 4xx and lost connections are `Transient` (the shared
consumer retries, then dead-letters), 5xx is `MailRejected` (the handler records a failure).
"""

from __future__ import annotations

import re
from datetime import UTC, datetime
from email.headerregistry import Address
from email.message import EmailMessage
from email.policy import EmailPolicy
from email.utils import format_datetime, parseaddr
from functools import cache
from typing import Any
from urllib.parse import urlsplit

import aiosmtplib
from jinja2 import Environment, PackageLoader, StrictUndefined, select_autoescape
from visio_runtime.errors import Transient
from visio_shared import AppointmentRequested, MeetingReady

from visio_notifications import wording
from visio_notifications.invitation import build_invitation
from visio_notifications.settings import NotificationsSettings

# --- Identity -----------------------------------------------------------------------------


def message_id(appointment_id: object, revision: int, kind: str, domain: str) -> str:
    """Deterministic, so a resend after an ambiguous SMTP failure carries the same id and the
    mailbox can tell it is the same message."""
    return f"<{appointment_id}.r{revision}.{kind}@{domain}>"


_URL_CHARACTERS = re.compile(r"[A-Za-z0-9\-._~:/?#\[\]@!$&'()*+,;=%]+")


def join_url_allowed(url: str, allowlist: list[str]) -> bool:
    """Only a Teams join URL goes into a link: https, a listed prefix on the same host, no
    credentials, no character that would need escaping."""
    if not _URL_CHARACTERS.fullmatch(url):
        return False
    try:
        parts = urlsplit(url)
        if parts.scheme != "https" or parts.username or parts.password or parts.port:
            return False
    except ValueError:
        return False
    return any(
        url.startswith(prefix)
        and len(url) > len(prefix)
        and urlsplit(prefix).netloc.lower() == parts.netloc.lower()
        for prefix in allowlist
    )


class _MailPolicy(EmailPolicy):
    """The default policy, except that Message-ID stays on one line (85 characters, far below
    the 998 limit): folded, Python and some clients read it back with a leading space."""

    def fold(self, name: str, value: str) -> str:
        if name.lower() == "message-id":
            return f"{name}: {str(value).strip()}{self.linesep}"
        folded: str = super().fold(name, value)
        return folded

    def fold_binary(self, name: str, value: str) -> bytes:
        if name.lower() == "message-id":
            return self.fold(name, value).encode("ascii")
        return super().fold_binary(name, value)


MAIL_POLICY = _MailPolicy()


# --- Content ------------------------------------------------------------------------------

_CONTROL = re.compile(r"[\x00-\x1f\x7f]+")


def _clean(text: str) -> str:
    """No control character (a newline in a name must never become a header)."""
    return _CONTROL.sub(" ", text).strip()


_NBSP = "\u00a0"


def french_spacing(text: str) -> str:
    """Non-breaking spaces inside « » and before ! ? so a browser never wraps a lone sign."""
    return (
        text.replace("« ", "«" + _NBSP)
        .replace(" »", _NBSP + "»")
        .replace(" !", _NBSP + "!")
        .replace(" ?", _NBSP + "?")
    )


@cache
def _templates() -> Environment:
    env = Environment(
        loader=PackageLoader("visio_notifications", "templates"),
        autoescape=select_autoescape(["html"]),
        undefined=StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
        keep_trailing_newline=True,
    )
    env.filters["french_spacing"] = french_spacing
    return env


def confirmation_context(
    appointment: AppointmentRequested, meeting: MeetingReady, settings: NotificationsSettings
) -> dict[str, Any]:
    """What the confirmation templates show, already in words."""
    zone = wording.appointment_zone(appointment.timezone, appointment.caf_code)
    start = appointment.start.astimezone(zone)
    zone_name = wording.zone_label(zone)
    advisor = _clean(appointment.advisor.display_name)
    return {
        "w": wording,
        "subject": wording.CONFIRMATION_SUBJECT.format(when=wording.french_datetime(start)),
        "preheader": wording.CONFIRMATION_PREHEADER.format(
            when=wording.french_datetime(start), zone=zone_name, advisor=advisor
        ),
        "greeting": wording.GREETING.format(first_name=_clean(appointment.user.first_name)),
        "when_line": wording.WHEN_LINE.format(
            date=wording.french_date(start.date(), with_year=True),
            time=wording.french_time(start),
            zone=zone_name,
        ),
        "date": wording.french_date(start.date(), with_year=True),
        "time": wording.french_time(start),
        "zone": zone_name,
        "duration": wording.duration_text(appointment.duration_minutes),
        "advisor": advisor,
        "appointment_subject": _clean(appointment.subject),
        "join_url": meeting.join_url,
        "device_note": wording.DEVICE_NOTE[appointment.user.device],
        "guide_paths": wording.guide_paths(
            appointment.user.device, settings.app_store_url, settings.google_play_url
        ),
        "cgu_line": wording.CGU_LINE.format(version=appointment.consent.cgu_version),
        "cgu_url": settings.cgu_url,
        "recording": wording.RECORDING[appointment.consent.recording_authorised],
        "start": start,
    }


def render_confirmation(context: dict[str, Any]) -> tuple[str, str]:
    """(text, html)."""
    env = _templates()
    return (
        env.get_template("confirmation.txt").render(context),
        env.get_template("confirmation.html").render(context),
    )


def sender_address(settings: NotificationsSettings) -> Address:
    display_name, addr_spec = parseaddr(settings.mail_from)
    return Address(display_name=display_name, addr_spec=addr_spec)


def recipient_address(appointment: AppointmentRequested) -> Address:
    user = appointment.user
    return Address(
        display_name=_clean(f"{user.first_name} {user.last_name}"), addr_spec=str(user.email)
    )


def build_confirmation(
    appointment: AppointmentRequested,
    meeting: MeetingReady,
    settings: NotificationsSettings,
    *,
    now: datetime | None = None,
) -> EmailMessage:
    """The whole message. The join URL must have passed `join_url_allowed` before."""
    now = now or datetime.now(UTC)
    context = confirmation_context(appointment, meeting, settings)
    text, html = render_confirmation(context)
    sender = sender_address(settings)
    recipient = recipient_address(appointment)

    message = EmailMessage(policy=MAIL_POLICY)
    message["From"] = sender
    message["To"] = recipient
    message["Subject"] = context["subject"]
    message["Date"] = format_datetime(now)
    message["Message-ID"] = message_id(
        appointment.appointment_id, appointment.revision, "confirmation", settings.message_id_domain
    )
    message["Auto-Submitted"] = "auto-generated"
    message["X-Auto-Response-Suppress"] = "All"
    message["Content-Language"] = "fr"
    message.set_content(text)
    message.add_alternative(html, subtype="html")
    invitation = build_invitation(
        appointment,
        meeting.join_url,
        start=context["start"],
        organizer=sender,
        attendee=recipient,
        domain=settings.message_id_domain,
        now=now,
    )
    message.add_attachment(
        invitation,
        maintype="text",
        subtype="calendar",
        filename=wording.ICS_FILENAME,
        params={"method": "REQUEST", "charset": "utf-8"},
    )
    return message


# --- Sending ------------------------------------------------------------------------------


class MailRejected(Exception):
    """The relay refused the message for good (5xx): resending will not help."""

    def __init__(self, code: int, detail: str) -> None:
        super().__init__(f"{code} {detail}")
        self.code = code
        self.detail = detail


_ADDRESS = re.compile(r"[^\s<>@\"']+@[^\s<>@\"']+")


def redact(text: str) -> str:
    """Server answers often echo the address; logs, events and dead letters must not."""
    return _ADDRESS.sub("[adresse]", text)


class SmtpMailer:
    def __init__(self, settings: NotificationsSettings) -> None:
        self.settings = settings

    async def send(self, message: EmailMessage) -> None:
        settings = self.settings
        sender = message["From"].addresses[0].addr_spec
        recipients = [address.addr_spec for address in message["To"].addresses]
        utf8 = not all(address.isascii() for address in [sender, *recipients])
        # Our own bytes: aiosmtplib would flatten with its own policy and fold the Message-ID.
        raw = message.as_bytes(policy=MAIL_POLICY.clone(linesep="\r\n", utf8=utf8))
        try:
            await aiosmtplib.send(
                raw,
                sender=sender,
                recipients=recipients,
                mail_options=["SMTPUTF8"] if utf8 else None,
                hostname=settings.smtp_host,
                port=settings.smtp_port,
                username=settings.smtp_username,
                password=(
                    settings.smtp_password.get_secret_value() if settings.smtp_password else None
                ),
                start_tls=settings.smtp_starttls,
                timeout=settings.smtp_timeout_s,
            )
        except aiosmtplib.SMTPRecipientsRefused as exc:
            refusals = exc.recipients
            if refusals and all(refusal.code >= 500 for refusal in refusals):
                first = refusals[0]
                raise MailRejected(first.code, redact(first.message)) from None
            codes = ",".join(str(refusal.code) for refusal in refusals)
            raise Transient(f"SMTP recipient deferred ({codes})") from None
        except aiosmtplib.SMTPAuthenticationError as exc:
            # Our credentials, not this message: retry, then dead-letter for ops to replay.
            raise Transient(f"SMTP authentication failed ({exc.code})") from None
        except aiosmtplib.SMTPResponseException as exc:
            if exc.code >= 500 and not isinstance(exc, aiosmtplib.SMTPConnectResponseError):
                raise MailRejected(exc.code, redact(exc.message)) from None
            raise Transient(f"SMTP {exc.code}: {redact(exc.message)}") from None
        except (aiosmtplib.SMTPException, OSError, TimeoutError) as exc:
            raise Transient(f"SMTP {type(exc).__name__}: {redact(str(exc))}") from None
