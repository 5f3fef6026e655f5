"""« Mon rendez-vous »: what a person holding a signed link may see and do — read where the
appointment stands, have the email with the links sent again, cancel — and the fresh links asked
for with an expired link or an email address.

A link opens the appointment as it stood when its email was sent. A change that sends new links
(a new time, corrected contact details, another advisor) replaces every older link: after a
contact correction, the old address's links no longer open anything. A cancellation does not
replace them: the person's link still says the appointment was cancelled.
"""

from __future__ import annotations

import enum
import hashlib
import hmac
import uuid
from datetime import datetime, timedelta
from typing import Any, Literal

import asyncpg
from visio_runtime.problems import Problem
from visio_shared import AppointmentLinkRequested, Topics
from visio_shared.links import KeyPurpose, LinkKeys

from visio_booking import store
from visio_booking.appointments import Caller, Command, Context
from visio_booking.idempotency import Outcome
from visio_booking.intake import execute
from visio_booking.outbox import enqueue

# The person, cancelling from their page: the API's cancel, under this caller's name. Admin,
# since the signed link, not an API key, is what says whose appointment it is.
SELF_SERVICE = Caller(name="self-service", admin=True, channel="self-service")

LinkReason = Literal["resend", "fresh_link"]


class Standing(enum.StrEnum):
    CURRENT = "current"
    REPLACED = "replaced"  # a later change sent newer links
    UNKNOWN = "unknown"  # no such appointment (or not as the link says): as good as invalid


class Phase(enum.StrEnum):
    UPCOMING = "upcoming"
    STARTED = "started"  # under way: the link still matters, cancelling no longer does
    PAST = "past"
    CANCELLED = "cancelled"


class Sent(enum.StrEnum):
    SENT = "sent"
    TOO_SOON = "too_soon"  # one went out less than `resend_interval_s` ago
    UNKNOWN = "unknown"


class LinkReplaced(Exception):
    """The appointment changed between the page's check and the cancel: nothing was done."""


def standing(row: asyncpg.Record | dict[str, Any] | None, link_revision: int) -> Standing:
    if row is None or link_revision > row["revision"]:
        return Standing.UNKNOWN
    # Cancelling is always the last change, and raises the revision by one.
    oldest = row["revision"] - 1 if row["status"] == "cancelled" else row["revision"]
    return Standing.REPLACED if link_revision < oldest else Standing.CURRENT


def phase(row: asyncpg.Record | dict[str, Any], now: datetime) -> Phase:
    if row["status"] == "cancelled":
        return Phase.CANCELLED
    end = row["start_at"] + timedelta(minutes=row["duration_minutes"])
    if end <= now or row["status"] in ("held", "no_show"):
        return Phase.PAST
    return Phase.STARTED if row["start_at"] <= now else Phase.UPCOMING


def ended(row: asyncpg.Record | dict[str, Any], now: datetime) -> Phase | None:
    """CANCELLED or PAST once the appointment is cancelled or past its end, as notifications
    decides it (by the time alone, not by `held`): a fresh link then brings the « Mes
    consentements » link alone, which the page sending it must say."""
    if row["status"] == "cancelled":
        return Phase.CANCELLED
    end = row["start_at"] + timedelta(minutes=row["duration_minutes"])
    return Phase.PAST if end <= now else None


async def find(pool: asyncpg.Pool, appointment_id: uuid.UUID) -> asyncpg.Record | None:
    row: asyncpg.Record | None = await pool.fetchrow(
        "SELECT * FROM appointments WHERE appointment_id = $1", appointment_id
    )
    return row


async def request_link(
    pool: asyncpg.Pool,
    topics: Topics,
    appointment_id: uuid.UUID,
    reason: LinkReason,
    interval_s: int,
) -> Sent:
    """Leave one AppointmentLinkRequested in the outbox, unless one went out for this
    appointment less than `interval_s` ago (decided with its row locked: two clicks at once
    send one email)."""
    async with pool.acquire() as conn, conn.transaction():
        row = await conn.fetchrow(
            "SELECT revision, correlation_id, "
            "coalesce(link_requested_at > now() - make_interval(secs => $2), false) AS too_soon "
            "FROM appointments WHERE appointment_id = $1 FOR UPDATE",
            appointment_id,
            float(interval_s),
        )
        if row is None:
            return Sent.UNKNOWN
        if row["too_soon"]:
            return Sent.TOO_SOON
        await conn.execute(
            "UPDATE appointments SET link_requested_at = now() WHERE appointment_id = $1",
            appointment_id,
        )
        event = AppointmentLinkRequested(
            appointment_id=appointment_id,
            revision=row["revision"],
            correlation_id=row["correlation_id"],
            reason=reason,
        )
        await store.add_history(
            conn, appointment_id, "link_requested", event.revision, reason, event.event_id
        )
        await enqueue(conn, topics.appointments, event)
    return Sent.SENT


async def request_links_for_address(
    pool: asyncpg.Pool, topics: Topics, email: str, interval_s: int
) -> int:
    """A fresh link for each upcoming, not cancelled appointment of this address; how many
    emails were asked for (never shown: the answer is the same whoever asks)."""
    rows = await pool.fetch(
        "SELECT appointment_id FROM appointments "
        "WHERE lower(email) = $1 AND status <> 'cancelled' "
        "AND start_at + make_interval(mins => duration_minutes) > now() "
        "ORDER BY start_at",
        normalised_address(email),
    )
    sent = 0
    for row in rows:
        outcome = await request_link(pool, topics, row["appointment_id"], "fresh_link", interval_s)
        sent += outcome is Sent.SENT
    return sent


async def cancel(
    pool: asyncpg.Pool, ctx: Context, appointment_id: uuid.UUID, link_revision: int
) -> bool:
    """Cancel as the API does (reason 'user'); False when there was nothing left to cancel
    (already cancelled — a second click —, started or gone). LinkReplaced if the appointment
    changed since the link was sent."""

    async def link_still_current(_: asyncpg.Connection, outcome: Outcome) -> None:
        # Runs in the cancel's transaction, the row locked: raising rolls the cancel back.
        if outcome.body["revision"] - 1 != link_revision:
            raise LinkReplaced

    command = Command("CancelAppointment", {"reason": "user"}, appointment_id)
    try:
        await execute(pool, ctx, SELF_SERVICE, command, also=link_still_current)
    except Problem as problem:
        if problem.kind in ("appointment-cancelled", "appointment-past", "not-found"):
            return False
        raise
    return True


def normalised_address(email: str) -> str:
    return email.strip().lower()


def address_bucket(keys: LinkKeys, email: str) -> str:
    """The rate-limit bucket of an address: a keyed hash, so the table never holds the address
    and nobody without the key can tell which address a bucket counts."""
    _, secret = keys.signing(KeyPurpose.ADDRESS_FORM)
    digest = hmac.new(
        secret, b"address\x00" + normalised_address(email).encode(), hashlib.sha256
    ).hexdigest()
    return f"fresh-link:address:{digest[:32]}"


def link_bucket(fingerprint: str) -> str:
    return f"link:{fingerprint}"
