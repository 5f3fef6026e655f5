"""Sending, with aiosmtplib: TLS or STARTTLS and credentials from settings, a timeout, and at
most `smtp_max_connections` messages in flight at once.

SMTP answers are classified here, once: 4xx and lost connections are `Transient` (tried again
later with the same Message-ID); 5xx and refused recipients are `MailRejected`, with the code
(a failure event, never a retry). A relay that accepts the message for some recipients and
refuses others answers 250 overall: that partial refusal is caught too, not taken as success.
"""

from __future__ import annotations

import asyncio
import re
import ssl
from collections.abc import Mapping
from email.message import EmailMessage

import aiosmtplib
from visio_runtime.errors import Transient
from visio_runtime.metrics import Metrics

from visio_notifications.mail_policy import MAIL_POLICY
from visio_notifications.settings import NotificationsSettings


class MailRejected(Exception):
    """The relay refused the message for good (5xx): resending will not help."""

    def __init__(self, code: int, detail: str, *, partial: bool = False) -> None:
        super().__init__(f"{code} {detail}")
        self.code = code
        self.detail = detail
        self.partial = partial


_ADDRESS = re.compile(r"[^\s<>@\"']+@[^\s<>@\"']+")


def redact(text: str) -> str:
    """Server answers often echo the address; logs, events and dead letters must not."""
    return _ADDRESS.sub("[adresse]", text)


def _refusal(refusals: Mapping[str, aiosmtplib.SMTPResponse], total: int) -> Exception:
    """One refused recipient or more: permanent if any refusal is, else worth a retry."""
    partial = len(refusals) < total
    codes = ",".join(str(response.code) for response in refusals.values())
    permanent = [response for response in refusals.values() if response.code >= 500]
    if permanent:
        first = permanent[0]
        detail = redact(first.message)
        if partial:
            detail = f"{len(refusals)} of {total} recipients refused: {detail}"
        return MailRejected(first.code, detail, partial=partial)
    return Transient(f"SMTP recipient deferred ({codes})")


class SmtpMailer:
    def __init__(self, settings: NotificationsSettings, metrics: Metrics | None = None) -> None:
        self.settings = settings
        self._sends = (metrics or Metrics("notifications")).counter(
            "smtp_sends_total",
            "Messages handed to the SMTP relay, by outcome: sent, deferred (4xx, connection: "
            "retried) or rejected (5xx, refused recipients: permanent).",
            ["outcome"],
        )
        for outcome in ("sent", "deferred", "rejected"):  # at 0 from the start, for rate()
            self._sends.labels(outcome)
        self._slots = asyncio.Semaphore(settings.smtp_max_connections)
        self._tls: ssl.SSLContext | None = None

    def _tls_context(self) -> ssl.SSLContext | None:
        # Built on first use: no file is read while the app is only being assembled.
        settings = self.settings
        if not (settings.smtp_tls or settings.smtp_starttls):
            return None
        if self._tls is None:
            ca_file = str(settings.smtp_ca_file) if settings.smtp_ca_file else None
            self._tls = ssl.create_default_context(cafile=ca_file)
        return self._tls

    async def send(self, message: EmailMessage) -> None:
        try:
            await self._send(message)
        except MailRejected:
            self._sends.labels("rejected").inc()
            raise
        except Transient:
            self._sends.labels("deferred").inc()
            raise
        self._sends.labels("sent").inc()

    async def _send(self, message: EmailMessage) -> None:
        settings = self.settings
        sender = message["From"].addresses[0].addr_spec
        recipients = [address.addr_spec for address in message["To"].addresses]
        utf8 = not all(address.isascii() for address in [sender, *recipients])
        # Our own bytes: aiosmtplib would flatten with its own policy and fold the Message-ID.
        raw = message.as_bytes(policy=MAIL_POLICY.clone(linesep="\r\n", utf8=utf8))
        password = settings.smtp_password.get_secret_value() if settings.smtp_password else None
        async with self._slots:
            try:
                refused, _ = await aiosmtplib.send(
                    raw,
                    sender=sender,
                    recipients=recipients,
                    mail_options=["SMTPUTF8"] if utf8 else None,
                    hostname=settings.smtp_host,
                    port=settings.smtp_port,
                    username=settings.smtp_username,
                    password=password,
                    use_tls=settings.smtp_tls,
                    start_tls=settings.smtp_starttls,
                    tls_context=self._tls_context(),
                    timeout=settings.smtp_timeout_s,
                )
            except aiosmtplib.SMTPRecipientsRefused as exc:
                refusals = {refusal.recipient: refusal for refusal in exc.recipients}
                raise _refusal(
                    {
                        address: aiosmtplib.SMTPResponse(refusal.code, refusal.message)
                        for address, refusal in refusals.items()
                    },
                    len(recipients),
                ) from None
            except aiosmtplib.SMTPAuthenticationError as exc:
                # Our credentials, not this message: retried until ops fix them.
                raise Transient(f"SMTP authentication failed ({exc.code})") from None
            except aiosmtplib.SMTPResponseException as exc:
                if exc.code >= 500 and not isinstance(exc, aiosmtplib.SMTPConnectResponseError):
                    raise MailRejected(exc.code, redact(exc.message)) from None
                raise Transient(f"SMTP {exc.code}: {redact(exc.message)}") from None
            except (aiosmtplib.SMTPException, OSError, TimeoutError) as exc:
                raise Transient(f"SMTP {type(exc).__name__}: {redact(str(exc))}") from None
        if refused:
            raise _refusal(refused, len(recipients))
