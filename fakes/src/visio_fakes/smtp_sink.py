"""A local SMTP sink: accepts every message and stores it as `<mail_dir>/<id>.eml`, where id is
a safe form of its Message-ID (a uuid when it has none). Nothing is ever overwritten: the same
Message-ID twice gives `<id>.eml` and `<id>.2.eml`, so tests can count duplicates.

Faults on demand, for the tests of retries: answer 451 to the next n messages, to every
message whose Message-ID matches a pattern, or to a share of them; drop the connection
mid-message (after the data, before any answer: the client cannot tell whether the message was
taken — optionally it was); and 550 to chosen recipients. For the tests of secure sending it
can also speak STARTTLS or TLS and require a login.

Bounces later, as a real relay's do (issue 26): a message to a recipient matching one of
`bounce_later` (regular expressions) is accepted (250) and stored, then, `bounce_delay_s`
later, a delivery status notification (RFC 3464: multipart/report, delivery-status, the
original's headers) is written for its envelope sender — into `<mail_dir>/bounces/`, the bounce
mailbox, and, with `bounce_url` set, posted there as the relay's pipe to the service would
(`?recipient=` the envelope sender, tried again while the service does not take it).

The shares are decided so that a seed replays them (`visio_fakes.fault_draws`): each message's
fate is drawn from (seed, its appointment, the rest of its Message-ID, the how-manieth time
that Message-ID came), so `<appointment>.r1.confirmation`'s third try meets the same fault in
every run with that seed, whatever arrived before it.

It must cost little, or the bench would measure it instead of us (issue 20): DATA is read in
one piece, not line by line as aiosmtpd reads it, and a plain `<local@domain>` of MAIL FROM and
RCPT TO without aiosmtpd's address parser (`visio_fakes.smtp_server`); the bytes received are
written as they are (a `write`, no Python file object), the Message-ID found by one search of
the header block (no parse of the message); no log line per message unless asked
(`SMTP_SINK_LOG_MESSAGES`), and no fsync: the file appears whole (written aside, then linked in)
for any reader, which is what a fake relay owes; surviving a power cut is not. It counts what
tests of connection reuse look at: connections opened, messages per connection, RSETs.

`visio-rdv-smtp-sink` runs it until SIGTERM/SIGINT; `start_sink()` runs it in-process.
"""

from __future__ import annotations

import asyncio
import logging
import os
import re
import signal
import socket
import ssl
import threading
import time
import uuid
from pathlib import Path
from typing import Any, Literal

from aiosmtpd.controller import Controller
from aiosmtpd.smtp import SMTP, Envelope, Session
from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

from visio_fakes.fault_draws import Attempts, draw, fresh_seed, pick
from visio_fakes.smtp_messages import (
    delivery_status_notification,
    fault_subject,
    find_message_id,
    post_dsn,
    safe_id,
    write_new,
)
from visio_fakes.smtp_server import SinkController, abort, authenticator, hang_up_silently

# Used from here by the tests, the bench and the proofs (they are the sink's).
__all__ = [
    "MailSink",
    "SmtpSinkSettings",
    "delivery_status_notification",
    "fault_subject",
    "free_port",
    "main",
    "safe_id",
    "start_sink",
]

log = logging.getLogger(__name__)

TEMPORARY_FAILURE = "451 4.3.0 Temporary failure, please try again later"
RECIPIENT_REFUSED = "550 5.1.1 Recipient address rejected"


class SmtpSinkSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="SMTP_SINK_", extra="ignore")

    host: str = "127.0.0.1"
    port: int = 1025
    mail_dir: Path = Path("var/mail")
    # Fault injection (off by default)
    temp_fail_share: float = 0.0
    drop_share: float = 0.0
    refuse_recipients: list[str] = []
    # Every message whose Message-ID matches this regular expression is answered 451.
    defer_matching: str | None = None
    # What the shares are drawn from; unset, a fresh one, logged at start.
    fault_seed: int | None = None
    # The first messages' faults, in order ("drop", "451"), before any share is drawn: a run
    # that plans a class of fault sees it fire however few messages it sends.
    first_faults: list[Literal["drop", "451"]] = []
    # Recipients (regular expressions) whose messages are accepted, then bounce later: a DSN
    # goes to the bounce mailbox (<mail_dir>/bounces) and to `bounce_url` if set.
    bounce_later: list[str] = []
    bounce_url: str | None = Field(
        default=None,
        description="Where each DSN is posted (?recipient= the bounce address), as a relay's "
        "pipe to notifications' POST /v1/bounces/<token> would; tried again on 5xx.",
    )
    bounce_delay_s: float = Field(
        default=0.5, ge=0, description="How long after accepting a message its DSN comes."
    )
    # Mail holds personal data: stored messages older than this are deleted (0 keeps them).
    retention_days: float = 7.0
    # A log line per stored message (faults are always logged).
    log_messages: bool = False
    tls_certfile: Path | None = Field(
        default=None,
        description="A server certificate (PEM): the sink then offers STARTTLS and refuses mail "
        "without it, as a relay in production does (`visio-rdv up --production` gives the "
        "development CA's).",
    )
    tls_keyfile: Path | None = Field(default=None, description="Its private key (PEM).")

    def tls_context(self) -> ssl.SSLContext | None:
        if self.tls_certfile is None:
            return None
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        context.load_cert_chain(self.tls_certfile, self.tls_keyfile)
        return context


class MailSink:
    """aiosmtpd handler writing each message it accepts to `mail_dir`."""

    def __init__(
        self,
        mail_dir: Path | str,
        *,
        temp_fail_share: float = 0.0,
        drop_share: float = 0.0,
        refuse_recipients: list[str] | tuple[str, ...] = (),
        defer_matching: str | None = None,
        seed: int | None = None,
        log_messages: bool = True,
        bounce_later: list[str] | tuple[str, ...] = (),
        bounce_url: str | None = None,
        bounce_delay_s: float = 0.5,
    ) -> None:
        self.mail_dir = Path(mail_dir)
        self.log_messages = log_messages
        self.mail_dir.mkdir(parents=True, exist_ok=True)
        self.temp_fail_share = temp_fail_share
        self.drop_share = drop_share
        self.refuse_recipients = {address.lower() for address in refuse_recipients}
        self.defer_matching = re.compile(defer_matching) if defer_matching else None
        self.seed = fresh_seed() if seed is None else seed
        self._attempts = Attempts()
        self._lock = threading.Lock()
        self._fail_next = 0
        self._drop_next: list[bool] = []  # one entry per connection to drop: store first?
        self.received = 0
        self.deferred = 0
        self.dropped = 0
        self.connections = 0  # opened by clients, ever
        self.resets = 0  # RSET commands
        self.open_sessions: set[SMTP] = set()
        self._hang_up_at_mail = 0
        self.bounce_later = [re.compile(pattern, re.IGNORECASE) for pattern in bounce_later]
        self.bounce_url = bounce_url
        self.bounce_delay_s = bounce_delay_s
        self.bounces_sent = 0  # DSNs delivered (to the bounce mailbox, and posted if asked)
        self._bouncing: set[asyncio.Task[None]] = set()

    def hang_up_at_next_mail(self, count: int = 1) -> None:
        """Cut the connection of the next `count` MAIL commands before answering: a relay that
        dropped an idle client, found out by the client's next command."""
        with self._lock:
            self._hang_up_at_mail += count

    async def handle_MAIL(
        self,
        server: SMTP,
        session: Session,
        envelope: Envelope,
        address: str,
        mail_options: list[str],
    ) -> str:
        with self._lock:
            hang_up = self._hang_up_at_mail > 0
            self._hang_up_at_mail -= hang_up
        if hang_up:
            await hang_up_silently(server)
        envelope.mail_from = address
        envelope.mail_options.extend(mail_options)
        return "250 OK"

    def hang_up_all(self) -> int:
        """Cut every open connection now, as a relay does with idle clients; returns how many.
        Called from any thread: the cuts happen in the sink's own loop."""
        sessions = list(self.open_sessions)
        for server in sessions:
            server.loop.call_soon_threadsafe(abort, server)
        return len(sessions)

    async def handle_RSET(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        with self._lock:
            self.resets += 1
        return "250 OK"

    def fail_next(self, count: int) -> None:
        """Answer 451 to the next `count` messages (at DATA)."""
        with self._lock:
            self._fail_next += count

    def drop_next(self, count: int, *, after_storing: bool = False) -> None:
        """Cut the connection of the next `count` messages once their data is in, without an
        answer. `after_storing`: the message is kept first, as when a relay takes a message
        and the network fails before its 250 arrives."""
        with self._lock:
            self._drop_next.extend([after_storing] * count)

    async def handle_RCPT(
        self,
        server: SMTP,
        session: Session,
        envelope: Envelope,
        address: str,
        rcpt_options: list[str],
    ) -> str:
        if address.lower() in self.refuse_recipients:
            return RECIPIENT_REFUSED
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        raw = envelope.original_content or envelope.content or b""
        if isinstance(raw, str):
            raw = raw.encode("utf-8", "surrogateescape")
        message_id = find_message_id(raw)
        fault, attempt = self._fault(message_id)
        # The proof counts faults from these lines; a Message-ID names no one.
        if fault == "451":
            self.deferred += 1
            log.info("fault: answered 451 to %s (attempt %d)", message_id, attempt)
            return TEMPORARY_FAILURE
        if fault != "drop":  # dropped before storing: the message is lost with the line
            path = self.store(raw, message_id)
            self.received += 1
            if self.log_messages:
                log.info("stored %s", path.name)
            self._bounce_later(envelope, raw, message_id)
        if fault is not None:
            self.dropped += 1
            log.info("fault: dropped the connection of %s (attempt %d)", message_id, attempt)
            await hang_up_silently(server)
        return "250 Message accepted for delivery"

    def _bounce_later(self, envelope: Envelope, raw: bytes, message_id: str | None) -> None:
        """Schedule the DSN of a message to a `bounce_later` recipient (none for a message
        without an envelope sender: a DSN is never answered by another)."""
        failed = [r for r in envelope.rcpt_tos if any(p.search(r) for p in self.bounce_later)]
        sender = envelope.mail_from or ""
        if not failed or sender in ("", "<>"):
            return
        task = asyncio.get_running_loop().create_task(
            self._deliver_dsn(sender, failed, raw, message_id)
        )
        self._bouncing.add(task)
        task.add_done_callback(self._bouncing.discard)

    async def _deliver_dsn(
        self, sender: str, failed: list[str], raw: bytes, message_id: str | None
    ) -> None:
        await asyncio.sleep(self.bounce_delay_s)
        dsn = delivery_status_notification(sender, failed, raw)
        (self.mail_dir / "bounces").mkdir(exist_ok=True)
        stem = f"dsn-{safe_id(message_id)}"
        target = self.mail_dir / "bounces" / f"{stem}.{uuid.uuid4().hex[:8]}.eml"
        target.write_bytes(dsn)
        log.info("bounced later: %s (DSN to the bounce mailbox)", message_id)
        if self.bounce_url is not None:
            await post_dsn(self.bounce_url, sender, dsn)
        with self._lock:
            self.bounces_sent += 1

    def _fault(self, message_id: str | None) -> tuple[str | None, int]:
        """None (answer normally), '451', 'drop' (before storing) or 'drop_after_storing'; and
        which try of this Message-ID it is (0 for faults asked for on demand)."""
        with self._lock:
            if self._drop_next:
                return ("drop_after_storing" if self._drop_next.pop(0) else "drop"), 0
            if self._fail_next > 0:
                self._fail_next -= 1
                return "451", 0
        if self.defer_matching and message_id and self.defer_matching.search(message_id):
            return "451", 0
        if self.drop_share <= 0 and self.temp_fail_share <= 0:
            return None, 0
        subject, operation = fault_subject(message_id)
        attempt = self._attempts.next(subject, operation)
        value = draw(self.seed, subject, operation, attempt)
        return pick(value, [(self.drop_share, "drop"), (self.temp_fail_share, "451")]), attempt

    def store(self, raw: bytes, message_id: str | None = None) -> Path:
        """Write atomically (temp file, then a hard link that fails rather than overwrite)."""
        stem = safe_id(message_id if message_id is not None else find_message_id(raw))
        temp = self.mail_dir / f".tmp-{uuid.uuid4().hex}"
        write_new(temp, raw)
        try:
            copy = 1
            while True:
                target = self.mail_dir / (f"{stem}.eml" if copy == 1 else f"{stem}.{copy}.eml")
                try:
                    os.link(temp, target)
                    return target
                except FileExistsError:
                    copy += 1
        finally:
            temp.unlink(missing_ok=True)

    def purge(self, older_than_s: float) -> int:
        """Delete stored messages older than `older_than_s` seconds; returns how many."""
        limit = time.time() - older_than_s
        removed = 0
        for path in self.mail_dir.glob("*.eml"):
            try:
                if path.stat().st_mtime < limit:
                    path.unlink()
                    removed += 1
            except FileNotFoundError:
                continue
        return removed


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind((host, 0))
        port: int = probe.getsockname()[1]
        return port


def start_sink(
    mail_dir: Path | str,
    host: str = "127.0.0.1",
    port: int = 0,
    *,
    tls_context: ssl.SSLContext | None = None,
    implicit_tls: bool = False,
    credentials: dict[str, str] | None = None,
    data_size_limit: int = 50 * 1024 * 1024,
    **sink_options: Any,
) -> Controller:
    """Run a sink in a background thread; port 0 picks a free one. The handler is
    `controller.handler`, the port `controller.port`; stop it with `controller.stop()`.

    With `tls_context` it offers STARTTLS and refuses mail without it, or with `implicit_tls`
    speaks TLS from the first byte; with `credentials` (login → password) it requires AUTH.
    """
    sink = MailSink(mail_dir, **sink_options)
    secure: dict[str, Any] = {}
    if tls_context is not None and implicit_tls:
        secure["ssl_context"] = tls_context
    elif tls_context is not None:
        secure |= {"tls_context": tls_context, "require_starttls": True}
    if credentials is not None:
        secure |= {
            "authenticator": authenticator(credentials),
            "auth_required": True,
            # aiosmtpd only knows of STARTTLS here; with implicit TLS every byte is encrypted.
            "auth_require_tls": tls_context is not None and not implicit_tls,
        }
    controller = SinkController(
        sink,
        hostname=host,
        port=port or free_port(host),
        server_hostname="visio-rdv-smtp-sink",
        data_size_limit=data_size_limit,
        **secure,
    )
    controller.start()
    sink.connections = 0  # not the one `start` made to see the server answer
    return controller


def main() -> None:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s %(message)s")
    # aiosmtpd logs every SMTP line at INFO, `RCPT TO:<address>` included: a log must never
    # hold an address (an erasure could not reach it). Its warnings still show.
    logging.getLogger("mail.log").setLevel(logging.WARNING)
    settings = SmtpSinkSettings()
    controller = start_sink(
        settings.mail_dir,
        settings.host,
        settings.port,
        tls_context=settings.tls_context(),
        temp_fail_share=settings.temp_fail_share,
        drop_share=settings.drop_share,
        refuse_recipients=settings.refuse_recipients,
        defer_matching=settings.defer_matching,
        seed=settings.fault_seed,
        log_messages=settings.log_messages,
        bounce_later=settings.bounce_later,
        bounce_url=settings.bounce_url,
        bounce_delay_s=settings.bounce_delay_s,
    )
    sink: MailSink = controller.handler
    for fault in settings.first_faults:
        if fault == "drop":
            sink.drop_next(1)
        else:
            sink.fail_next(1)
    stop = threading.Event()

    def request_stop(signum: int, _frame: object) -> None:
        stop.set()

    signal.signal(signal.SIGTERM, request_stop)
    signal.signal(signal.SIGINT, request_stop)
    log.info(
        "SMTP sink on %s:%d%s, storing into %s",
        settings.host,
        settings.port,
        " (STARTTLS required)" if settings.tls_certfile else "",
        settings.mail_dir,
    )
    if sink.temp_fail_share or sink.drop_share:
        log.info(
            "faults: 451 to %.3g, dropped %.3g of tries, seed %d",
            sink.temp_fail_share,
            sink.drop_share,
            sink.seed,
        )
    try:
        while True:
            if settings.retention_days > 0:
                sink.purge(settings.retention_days * 86400)
            if stop.wait(timeout=3600):
                break
    finally:
        controller.stop()
        log.info("SMTP sink stopped")


if __name__ == "__main__":
    main()
