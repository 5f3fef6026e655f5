"""What the SMTP sink (visio_fakes.smtp_sink) reads of a message and what it writes of one:
the Message-ID (found without parsing the message), a file-name-safe form of it, the file of its
bytes, the subject of its fault draws, and the delivery status notification of a message that
bounces later, posted to the service as a relay's pipe would."""

from __future__ import annotations

import asyncio
import email.utils
import logging
import os
import re
import uuid
from pathlib import Path

import httpx

# The sink's logger: these lines are the sink's, as they were before this module.
log = logging.getLogger("visio_fakes.smtp_sink")

_UNSAFE = re.compile(r"[^A-Za-z0-9._@+=-]+")
_UUID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")


def write_new(path: Path, raw: bytes) -> None:
    """A new file of exactly these bytes, written with `os.write` (no Python file object: the
    sink writes one per message)."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
    try:
        view = memoryview(raw)
        while view:
            view = view[os.write(fd, view) :]
    finally:
        os.close(fd)


def fault_subject(message_id: str | None) -> tuple[str, str]:
    """(appointment, operation) of a message, as fault draws take them: the appointment id in
    its Message-ID and the rest of it (`<a.r1.confirmation@d>` → `a`, `.r1.confirmation@d`).
    Without an appointment id, the whole Message-ID is the operation."""
    text = (message_id or "").strip().strip("<>")
    found = _UUID.search(text)
    if found is None:
        return "", text
    return found.group(0), text[: found.start()] + text[found.end() :]


def safe_id(message_id: str | None) -> str:
    """A file-name-safe form of a Message-ID: `<a.r1.confirmation@x>` → `a.r1.confirmation@x`."""
    if message_id:
        cleaned = _UNSAFE.sub("_", message_id.strip().strip("<>")).strip("._")[:200]
        if cleaned:
            return cleaned
    return str(uuid.uuid4())


_MESSAGE_ID = re.compile(rb"^message-id:[ \t]*(.*(?:\r?\n[ \t].*)*)", re.IGNORECASE | re.MULTILINE)


def find_message_id(raw: bytes) -> str | None:
    """The Message-ID header's value, found in the header block by one search (a folded one
    unfolded); the message itself is never parsed."""
    end = raw.find(b"\r\n\r\n")
    found = _MESSAGE_ID.search(raw if end < 0 else raw[: end + 2])
    if found is None:
        return None
    value = re.sub(rb"\r?\n[ \t]", b" ", found.group(1)).strip()
    return value.decode("utf-8", "replace") or None


REPORTING_MTA = "visio-rdv-smtp-sink.localhost"


def delivery_status_notification(sender: str, failed: list[str], original: bytes) -> bytes:
    """A DSN as a relay writes one (RFC 3464, RFC 6522): addressed to the envelope sender, a
    human-readable part, the delivery status (Action: failed, 5.1.1 per recipient), and the
    original's headers."""
    now = email.utils.formatdate(localtime=False)
    boundary = f"dsn-{uuid.uuid4().hex}"
    end = original.find(b"\r\n\r\n")
    headers = original if end < 0 else original[: end + 2]
    per_recipient = b"".join(
        (
            f"Final-Recipient: rfc822; {address}\r\n"
            "Action: failed\r\n"
            "Status: 5.1.1\r\n"
            f"Remote-MTA: dns; mx.{address.rpartition('@')[2]}\r\n"
            f"Diagnostic-Code: smtp; 550 5.1.1 <{address}>: Recipient address rejected: "
            "User unknown in virtual mailbox table\r\n"
            f"Last-Attempt-Date: {now}\r\n\r\n"
        ).encode()
        for address in failed
    )
    parts = [
        (
            f"From: Mail Delivery System <MAILER-DAEMON@{REPORTING_MTA}>\r\n"
            f"To: {sender}\r\n"
            "Subject: Undelivered Mail Returned to Sender\r\n"
            f"Date: {now}\r\n"
            f"Message-ID: <{uuid.uuid4().hex}@{REPORTING_MTA}>\r\n"
            "Auto-Submitted: auto-replied\r\n"
            "MIME-Version: 1.0\r\n"
            f'Content-Type: multipart/report; report-type=delivery-status; boundary="{boundary}"'
            "\r\n\r\n"
            "This is a MIME-encapsulated message.\r\n\r\n"
            f"--{boundary}\r\n"
            "Content-Type: text/plain; charset=us-ascii\r\n\r\n"
            "Your message could not be delivered to one or more recipients.\r\n\r\n"
            f"--{boundary}\r\n"
            "Content-Type: message/delivery-status\r\n\r\n"
            f"Reporting-MTA: dns; {REPORTING_MTA}\r\n"
            f"Arrival-Date: {now}\r\n\r\n"
        ).encode(),
        per_recipient,
        f"--{boundary}\r\nContent-Type: text/rfc822-headers\r\n\r\n".encode(),
        headers,
        f"\r\n--{boundary}--\r\n".encode(),
    ]
    return b"".join(parts)


async def post_dsn(url: str, sender: str, dsn: bytes, tries: int = 20) -> None:
    """Post a DSN to the service, as a relay's pipe transport would; while the service does not
    take it (down, 5xx), it is tried again, as the relay defers a delivery."""
    for attempt in range(tries):
        try:
            async with httpx.AsyncClient(timeout=10, trust_env=False) as client:
                answer = await client.post(
                    url,
                    params={"recipient": sender},
                    content=dsn,
                    headers={"Content-Type": "message/rfc822"},
                )
            if answer.status_code < 500:
                if answer.status_code >= 300:
                    log.warning("DSN refused by %s: %d %s", url, answer.status_code, answer.text)
                return
        except httpx.HTTPError as exc:
            log.info("DSN not posted yet (%s), try %d", exc, attempt + 1)
        await asyncio.sleep(min(2**attempt * 0.5, 10))
    log.warning("DSN given up after %d tries: %s", tries, url)
