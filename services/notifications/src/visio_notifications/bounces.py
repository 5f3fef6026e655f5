"""Bounces: an email the relay accepted that could not be delivered after all (a mailbox that
does not exist, a full one, a domain mistyped), reported later by a delivery status
notification (DSN, RFC 3464) sent to the email's envelope sender.

Why it matters: a mistyped address used to end `confirmed` with nobody told. Each email leaves
with the envelope sender `bounce+<tag>@<NOTIFICATIONS_BOUNCE_DOMAIN>` (VERP, « variable
envelope return path »), `tag` derived from its Message-ID, so the DSN names the dispatch by
the very address it comes back to, whatever the reporting server copies of the original (some
return its headers, some nothing). The relay hands each DSN to `POST /v1/bounces/{token}`
(docs/sms.md says how, for Postfix). A DSN that reports a recipient `failed` (`Action: failed`,
a 5.x.x status) fails the dispatch as a refusal at sending does: the dispatch log says
`failed` (reason `bounced`), a NotificationFailed goes out (booking shows it, the alerts
service tells the Caf), and the confirmation goes by text when there is a mobile
(`sms.plan`'s fallback). A `delayed` DSN is only recorded: the relay is still trying.

Every DSN is kept (table `bounces`), read or not, with its outcome; one that cannot be read or
tied to a dispatch keeps its bytes for ops, for the retention period.
"""

from __future__ import annotations

import logging
import re
import uuid
from dataclasses import dataclass
from datetime import datetime
from email import message_from_bytes
from email.message import Message
from email.parser import BytesHeaderParser
from email.policy import compat32
from typing import Any

import asyncpg
from visio_runtime.metrics import Metrics
from visio_shared import NotificationFailed

from visio_notifications import outbox, sms, store
from visio_notifications.deps import NotificationsDeps
from visio_notifications.mailer import redact

log = logging.getLogger(__name__)

OUTCOMES = ("failed", "duplicate", "delayed", "unknown_dispatch", "unreadable")


def tag_of(address: str, domain: str | None) -> str | None:
    """The tag in `bounce+<tag>@<domain>`, or None if the address is not one of ours. A `+`
    read from a query string unencoded arrives as a space: taken too."""
    found = re.fullmatch(r"<?\s*bounce[+ ]([a-z2-7]{16})@([^>\s]+)\s*>?", address.strip(), re.I)
    if found is None or (domain is not None and found.group(2).lower() != domain.lower()):
        return None
    return found.group(1).lower()


@dataclass(frozen=True)
class Dsn:
    """What a DSN says, as far as we need it."""

    tag: str | None  # from the address it came back to (VERP)
    message_id: str | None  # from the original's headers, when the DSN returns them
    action: str  # 'failed', 'delayed', 'delivered', 'relayed', 'expanded'
    status: str  # e.g. 5.1.1
    diagnostic: str  # the remote server's words, addresses redacted
    smtp_code: int | None


class Unreadable(ValueError):
    """Not a DSN this service can read; the reason says why."""


def read_dsn(raw: bytes, envelope_recipient: str | None, domain: str | None) -> Dsn:
    """Parse a DSN (RFC 3464: multipart/report; report-type=delivery-status). The worst
    recipient's fields are kept: `failed` before `delayed` before the rest."""
    message = message_from_bytes(raw, policy=compat32)
    if message.get_content_type() != "multipart/report":
        raise Unreadable(f"not a delivery report ({message.get_content_type()})")
    if str(message.get_param("report-type") or "").lower() != "delivery-status":
        raise Unreadable("a report, but not of delivery status")
    status_part = next(
        (p for p in message.walk() if p.get_content_type() == "message/delivery-status"), None
    )
    if status_part is None:
        raise Unreadable("no message/delivery-status part")
    blocks = _status_blocks(status_part)
    recipients = [block for block in blocks[1:] if block.get("Action")]
    if not recipients:
        raise Unreadable("no recipient in the delivery status")
    rank = {"failed": 0, "delayed": 1}
    worst = min(recipients, key=lambda b: rank.get(str(b.get("Action", "")).strip().lower(), 2))
    diagnostic = " ".join(str(worst.get("Diagnostic-Code", "")).split())
    code = re.search(r"\b([245]\d\d)\b", diagnostic.partition(";")[2])
    tag = None
    for address in (envelope_recipient, message.get("To"), message.get("Delivered-To")):
        if address and (tag := tag_of(str(address), domain)) is not None:
            break
    return Dsn(
        tag=tag,
        message_id=_original_message_id(message),
        action=str(worst.get("Action", "")).strip().lower(),
        status=str(worst.get("Status", "")).strip(),
        diagnostic=redact(diagnostic)[:500],
        smtp_code=int(code.group(1)) if code else None,
    )


def _status_blocks(part: Message) -> list[Message]:
    """The delivery-status fields: the per-message block, then one per recipient. The email
    package reads a message/delivery-status part as a list of header blocks."""
    payload = part.get_payload()
    if isinstance(payload, list):
        return [block for block in payload if isinstance(block, Message)]
    text = payload if isinstance(payload, str) else ""
    parser = BytesHeaderParser(policy=compat32)
    chunks = re.split(r"\r?\n\r?\n", text.strip())
    return [parser.parsebytes(chunk.encode() + b"\n") for chunk in chunks]


def _original_message_id(message: Message) -> str | None:
    for part in message.walk():
        kind = part.get_content_type()
        if kind == "text/rfc822-headers":
            payload = part.get_payload(decode=True)
            if isinstance(payload, bytes):
                headers = BytesHeaderParser(policy=compat32).parsebytes(payload)
                if headers.get("Message-ID"):
                    return str(headers["Message-ID"]).strip()
        elif kind == "message/rfc822":
            inner = part.get_payload()
            first = inner[0] if isinstance(inner, list) and inner else None
            if isinstance(first, Message) and first.get("Message-ID"):
                return str(first["Message-ID"]).strip()
    return None


class BounceMetrics:
    def __init__(self, metrics: Metrics) -> None:
        self.received = metrics.outcomes(
            "email_bounces_total",
            "Delivery status notifications received, by outcome: failed (the dispatch failed "
            "for good), duplicate, delayed, unknown_dispatch, unreadable.",
            OUTCOMES,
        )


async def receive(
    deps: NotificationsDeps,
    raw: bytes,
    envelope_recipient: str | None,
    counters: BounceMetrics | None = None,
) -> str:
    """Read and record one DSN; returns its outcome (one of OUTCOMES)."""
    settings = deps.settings
    now = deps.clock()
    try:
        dsn = read_dsn(raw, envelope_recipient, settings.bounce_domain)
    except Unreadable as exc:
        await _keep(deps.pool, "unreadable", str(exc), raw=raw)
        return _counted(counters, "unreadable", str(exc))
    async with deps.pool.acquire() as conn, conn.transaction():
        dispatch = await _find_dispatch(conn, dsn)
        if dispatch is None:
            why = "no dispatch has this bounce address or Message-ID"
            await _keep(conn, "unknown_dispatch", why, dsn=dsn, raw=raw)
            return _counted(counters, "unknown_dispatch", why)
        if dsn.action != "failed":
            await _keep(conn, "delayed", dsn.action, dsn=dsn, dispatch=dispatch)
            return _counted(counters, "delayed", dsn.action)
        await store.LOCKS.hold(conn, dispatch["appointment_id"])
        status = await conn.fetchval(
            "SELECT status FROM dispatches WHERE id = $1 FOR UPDATE", dispatch["id"]
        )
        if status != "sent":
            await _keep(conn, "duplicate", "the dispatch had already failed", dsn=dsn,
                        dispatch=dispatch)  # fmt: skip
            return _counted(counters, "duplicate", "already failed")
        detail = f"bounced later ({dsn.status}): {dsn.diagnostic}".rstrip(": ")
        event = _failure(dispatch, dsn, detail)
        await conn.execute(
            "UPDATE dispatches SET status = 'failed', reason = 'bounced', detail = $2, "
            "smtp_code = $3 WHERE id = $1",
            dispatch["id"],
            detail,
            dsn.smtp_code,
        )
        await _keep(conn, "failed", "", dsn=dsn, dispatch=dispatch, event=event)
        # The dispatch log now says the email failed: texts follow (the fallback).
        state = await store.load_state(conn, dispatch["appointment_id"])
        await sms.plan(conn, state, settings, now)
    log.warning(
        "%s of %s: %s",
        dispatch["kind"],
        dispatch["appointment_id"],
        detail,
        extra={"correlation_id": str(event.correlation_id)},
    )
    await outbox.publish_pending(deps, "bounces.event")
    return _counted(counters, "failed", detail)


def _counted(counters: BounceMetrics | None, outcome: str, why: str) -> str:
    if counters is not None:
        counters.received.labels(outcome).inc()
    if outcome != "failed":
        log.info("DSN received: %s (%s)", outcome, why)
    return outcome


async def _find_dispatch(conn: asyncpg.Connection, dsn: Dsn) -> asyncpg.Record | None:
    query = """
        SELECT d.id, d.appointment_id, d.revision, d.kind, d.reminder_offset_minutes,
               d.event->>'event_id' AS event_id, a.correlation_id
        FROM dispatches d LEFT JOIN appointments a USING (appointment_id)
        WHERE {} ORDER BY d.id DESC LIMIT 1
    """
    if dsn.tag is not None:
        found = await conn.fetchrow(query.format("d.bounce_tag = $1"), dsn.tag)
        if found is not None:
            return found
    if dsn.message_id is not None:
        return await conn.fetchrow(query.format("d.message_id = $1"), dsn.message_id)
    return None


def _failure(dispatch: asyncpg.Record, dsn: Dsn, detail: str) -> NotificationFailed:
    return NotificationFailed(
        appointment_id=dispatch["appointment_id"],
        revision=dispatch["revision"],
        correlation_id=dispatch["correlation_id"] or dispatch["appointment_id"],
        causation_id=uuid.UUID(dispatch["event_id"]) if dispatch["event_id"] else None,
        kind=dispatch["kind"],
        reminder_offset_minutes=dispatch["reminder_offset_minutes"],
        reason="bounced",
        detail=detail,
        smtp_code=dsn.smtp_code,
    )


async def _keep(
    conn: asyncpg.Connection | asyncpg.Pool,
    outcome: str,
    why: str,
    *,
    dsn: Dsn | None = None,
    dispatch: asyncpg.Record | None = None,
    raw: bytes | None = None,
    event: NotificationFailed | None = None,
) -> None:
    values: dict[str, Any] = {
        "outcome": outcome,
        "why": why[:500],
        "bounce_tag": dsn.tag if dsn else None,
        "dispatch_id": dispatch["id"] if dispatch else None,
        "appointment_id": dispatch["appointment_id"] if dispatch else None,
        "status": dsn.status if dsn else None,
        "diagnostic": dsn.diagnostic if dsn else None,
        "raw": raw,
        "event": event.model_dump_json() if event else None,
    }
    await conn.execute(
        f"INSERT INTO bounces ({', '.join(values)}) "
        f"VALUES ({', '.join(f'${i}' for i in range(1, len(values) + 1))})",
        *values.values(),
    )


async def forget_before(conn: asyncpg.Connection, before: datetime) -> int:
    """Clear the bytes kept of DSNs received before `before` (they hold an address)."""
    status: str = await conn.execute(
        "UPDATE bounces SET raw = NULL WHERE raw IS NOT NULL AND received_at < $1", before
    )
    return int(status.split()[-1])
