"""Sending, with aiosmtplib: TLS or STARTTLS and credentials from settings, a timeout, and at
most `smtp_max_connections` messages in flight at once, over connections kept open and reused.

SMTP answers are classified here, once: 4xx and lost connections are `Transient` (tried again
later with the same Message-ID); 5xx and refused recipients are `MailRejected`, with the code
(a failure event, never a retry). A relay that accepts the message for some recipients and
refuses others answers 250 overall: that partial refusal is caught too, not taken as success.

Connections are kept (issue 20): opening one costs a TCP handshake, a greeting, EHLO and, in
production, a TLS handshake and a login, which is more than the message itself. Kept
connections are reused newest first, closed (QUIT) after `smtp_idle_timeout_s` unused or
`smtp_messages_per_connection` messages, and left at once if the relay hangs up. After an
answer that is not 250 the envelope is reset (RSET) before the connection serves again; a
connection whose RSET fails is dropped. Exactly-once is unchanged: a message whose DATA went
out without an answer is `Transient` (the caller tries again later, with the same Message-ID,
and the dispatch log records it once). The one retry made here is safe by construction: a
*reused* connection found dead before DATA (the relay dropped it while idle) carried nothing
of this message, so it goes at once on a new connection.
"""

from __future__ import annotations

import asyncio
import re
import ssl
from collections.abc import Mapping
from dataclasses import dataclass
from email.message import EmailMessage

import aiosmtplib
from opentelemetry.trace import SpanKind, Tracer
from visio_runtime.errors import Transient
from visio_runtime.metrics import Metrics
from visio_runtime.tracing import NO_TRACER

from visio_notifications.mime import Mail, wire_policy
from visio_notifications.settings import NotificationsSettings
from visio_notifications.smtp_data import send_data


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
    return Transient(f"SMTP recipient deferred ({codes})", dependency="smtp")


def mail_of(message: EmailMessage) -> Mail:
    """An `EmailMessage` made elsewhere (a test's own), flattened as the relay will get it."""
    sender = message["From"].addresses[0].addr_spec
    recipients = tuple(address.addr_spec for address in message["To"].addresses)
    utf8 = not all(address.isascii() for address in [sender, *recipients])
    # Our own bytes: aiosmtplib would flatten with its own policy and fold the Message-ID.
    raw = message.as_bytes(policy=wire_policy(utf8))
    return Mail(str(message["Message-ID"]), sender, recipients, raw, utf8)


def _classified(exc: Exception) -> Exception:
    """What an aiosmtplib failure means for the message (see the module's docstring)."""
    if isinstance(exc, aiosmtplib.SMTPAuthenticationError):
        # Our credentials, not this message: retried until ops fix them.
        return Transient(f"SMTP authentication failed ({exc.code})")
    if isinstance(exc, aiosmtplib.SMTPResponseException):
        if exc.code >= 500 and not isinstance(exc, aiosmtplib.SMTPConnectResponseError):
            return MailRejected(exc.code, redact(exc.message))
        return Transient(f"SMTP {exc.code}: {redact(exc.message)}", dependency="smtp")
    return Transient(f"SMTP {type(exc).__name__}: {redact(str(exc))}", dependency="smtp")


class _Stale(Exception):
    """A reused connection was found dead before DATA: nothing of the message went out."""


@dataclass(eq=False)
class _Connection:
    client: aiosmtplib.SMTP
    transactions: int = 0
    idle_since: float = 0.0
    usable: bool = True
    expiry: asyncio.TimerHandle | None = None


class SmtpMailer:
    def __init__(
        self,
        settings: NotificationsSettings,
        metrics: Metrics | None = None,
        tracer: Tracer = NO_TRACER,
    ) -> None:
        self.settings = settings
        self._tracer = tracer
        metrics = metrics or Metrics("notifications")
        self._sends = metrics.counter(
            "smtp_sends_total",
            "Messages handed to the SMTP relay, by outcome: sent, deferred (4xx, connection: "
            "retried) or rejected (5xx, refused recipients: permanent).",
            ["outcome"],
        )
        for outcome in ("sent", "deferred", "rejected"):  # at 0 from the start, for rate()
            self._sends.labels(outcome)
        self._opened = metrics.counter(
            "smtp_connections_opened_total",
            "SMTP connections opened; each carries many messages while traffic flows.",
        )
        self._slots = asyncio.Semaphore(settings.smtp_max_connections)
        self._tls: ssl.SSLContext | None = None
        self._idle: list[_Connection] = []  # newest last
        self._closing: set[asyncio.Task[None]] = set()

    def _tls_context(self) -> ssl.SSLContext | None:
        # Built on first use: no file is read while the app is only being assembled.
        settings = self.settings
        if not (settings.smtp_tls or settings.smtp_starttls):
            return None
        if self._tls is None:
            ca_file = str(settings.smtp_ca_file) if settings.smtp_ca_file else None
            self._tls = ssl.create_default_context(cafile=ca_file)
        return self._tls

    async def send(self, message: Mail | EmailMessage) -> None:
        mail = message if isinstance(message, Mail) else mail_of(message)
        # A span per message handed over (no library instruments aiosmtplib): the end of an
        # appointment's trace. Addresses stay out of it, as out of the logs.
        with self._tracer.start_as_current_span(
            "smtp send",
            kind=SpanKind.CLIENT,
            attributes={
                "server.address": self.settings.smtp_host,
                "server.port": self.settings.smtp_port,
                "smtp.recipients": len(mail.recipients),
            },
        ) as span:
            try:
                await self._send(mail)
            except MailRejected:
                self._sends.labels("rejected").inc()
                span.set_attribute("smtp.outcome", "rejected")
                raise
            except Transient:
                self._sends.labels("deferred").inc()
                span.set_attribute("smtp.outcome", "deferred")
                raise
            self._sends.labels("sent").inc()
            span.set_attribute("smtp.outcome", "sent")

    async def close(self) -> None:
        """QUIT every kept connection (at shutdown)."""
        while self._idle:
            self._retire(self._idle.pop())
        if self._closing:
            await asyncio.gather(*self._closing, return_exceptions=True)

    async def _send(self, mail: Mail) -> None:
        async with self._slots:
            connection = await self._checkout()
            try:
                await self._transaction(connection, mail)
                return
            except _Stale:
                pass  # the relay had closed it while it waited: nothing went out
            finally:
                self._checkin(connection)
            fresh = await self._connect()
            try:
                await self._transaction(fresh, mail)  # a new connection is never stale
            finally:
                self._checkin(fresh)

    async def _transaction(self, connection: _Connection, mail: Mail) -> None:
        """MAIL, RCPT, DATA on this connection, each failure classified."""
        client = connection.client
        reused = connection.transactions > 0
        connection.transactions += 1
        encoding = "utf-8" if mail.utf8 else "ascii"
        options = [f"size={len(mail.raw)}"] if client.supports_extension("size") else []
        if mail.utf8:
            if not client.supports_extension("smtputf8"):
                raise Transient("SMTP relay does not support SMTPUTF8")
            options.append("SMTPUTF8")
        data_sent = False
        refusals: dict[str, aiosmtplib.SMTPResponse] = {}
        try:
            await client.mail(mail.sender, options=options, encoding=encoding)
            for recipient in mail.recipients:
                try:
                    await client.rcpt(recipient, encoding=encoding)
                except aiosmtplib.SMTPRecipientRefused as refused:
                    refusals[recipient] = aiosmtplib.SMTPResponse(refused.code, refused.message)
            if len(refusals) == len(mail.recipients):
                await self._reset(connection)
                raise _refusal(refusals, len(mail.recipients))
            data_sent = True
            await send_data(client, mail.raw)  # aiosmtplib's DATA, cheaper
        except (MailRejected, Transient):
            raise
        except aiosmtplib.SMTPResponseException as exc:
            if exc.code == 421:  # the relay is closing this connection
                connection.usable = False
                if reused and not data_sent:
                    raise _Stale from None
            else:
                await self._reset(connection)
            raise _classified(exc) from None
        except (aiosmtplib.SMTPException, OSError) as exc:
            # Timeouts, lost connections: in what state the relay is, nobody knows.
            connection.usable = False
            if reused and not data_sent and isinstance(exc, ConnectionError):
                raise _Stale from None
            raise _classified(exc) from None
        except BaseException:
            connection.usable = False  # cancelled mid-transaction: never reused
            raise
        if refusals:
            raise _refusal(refusals, len(mail.recipients))

    async def _reset(self, connection: _Connection) -> None:
        """Back to a clean envelope after a refusal; a connection that cannot is dropped."""
        try:
            await connection.client.rset()
        except (aiosmtplib.SMTPException, OSError):
            connection.usable = False

    async def _checkout(self) -> _Connection:
        loop = asyncio.get_running_loop()
        while self._idle:
            connection = self._idle.pop()
            if connection.expiry is not None:
                connection.expiry.cancel()
            idle = loop.time() - connection.idle_since
            if connection.client.is_connected and idle < self.settings.smtp_idle_timeout_s:
                return connection
            self._retire(connection)
        return await self._connect()

    async def _connect(self) -> _Connection:
        settings = self.settings
        password = settings.smtp_password.get_secret_value() if settings.smtp_password else None
        client = aiosmtplib.SMTP(
            hostname=settings.smtp_host,
            port=settings.smtp_port,
            username=settings.smtp_username,
            password=password,
            use_tls=settings.smtp_tls,
            start_tls=settings.smtp_starttls,
            tls_context=self._tls_context(),
            timeout=settings.smtp_timeout_s,
        )
        try:
            await client.connect()
        except (aiosmtplib.SMTPException, OSError) as exc:
            raise _classified(exc) from None
        self._opened.inc()
        return _Connection(client)

    def _checkin(self, connection: _Connection) -> None:
        """Keep a sound connection for the next message, or close it."""
        if connection in self._idle:
            return
        limit = self.settings.smtp_messages_per_connection
        if (
            not connection.usable
            or not connection.client.is_connected
            or connection.transactions >= limit
        ):
            self._retire(connection)
            return
        loop = asyncio.get_running_loop()
        connection.idle_since = loop.time()
        connection.expiry = loop.call_later(
            self.settings.smtp_idle_timeout_s, self._expire, connection
        )
        self._idle.append(connection)

    def _expire(self, connection: _Connection) -> None:
        if connection in self._idle:
            self._idle.remove(connection)
            self._retire(connection)

    def _retire(self, connection: _Connection) -> None:
        if connection.expiry is not None:
            connection.expiry.cancel()
        client = connection.client
        if not (connection.usable and client.is_connected):
            client.close()
            return
        task = asyncio.get_running_loop().create_task(self._quit(client))
        self._closing.add(task)
        task.add_done_callback(self._closing.discard)

    async def _quit(self, client: aiosmtplib.SMTP) -> None:
        try:
            await client.quit(timeout=5)
        except (aiosmtplib.SMTPException, OSError):
            client.close()
