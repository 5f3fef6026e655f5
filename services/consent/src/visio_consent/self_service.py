"""What the self-service pages decide, apart from HTML: whether a link opens its page, what the
recording choice of its appointment is, and withdrawing it from the page.

A link opens its page when we signed it for that page, it has not expired, it is within its
rate limit, consent knows its appointment, and the appointment's address has not been
corrected since it was signed: a link older than the last correction of the address went to
the old address, which must not read the person's records nor withdraw their consent.

A link newer than the latest revision consent knows means consent has not yet read that
change (consent follows every change that raises the revision). The recording page shows only
the appointment's own choice, so it opens. The consents page does not: if the pending change
is a correction of the address, the person consent knows is still the old address's.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from enum import StrEnum

import asyncpg
from visio_runtime.ratelimit import Limit, allow
from visio_shared import Topics
from visio_shared.links import (
    ExpiredLink,
    InvalidLink,
    LinkClaims,
    LinkKeys,
    LinkPurpose,
    link_fingerprint,
    read_link,
)
from visio_shared.publishing import Publisher

from visio_consent.access import SELF_SERVICE_CHANNEL
from visio_consent.withdrawal import withdraw_recording

WITHDRAW_ACTION = "withdraw-recording"  # what the form token of the withdrawal is bound to
# Who recorded what the person did from a page: consent itself (the ledger's calling_system).
CALLING_SYSTEM = "visio-rdv-consent"


class Refusal(StrEnum):
    """Why a page does not show: each has its own French page and status."""

    INVALID = "invalid"  # not ours, another page's, revoked key, unknown appointment
    EXPIRED = "expired"
    REPLACED = "replaced"  # the address was corrected since the link was signed
    UPDATING = "updating"  # consent has not read the appointment's latest change yet
    TOO_MANY = "too-many"
    FORBIDDEN = "forbidden"  # a form without its token
    UNAVAILABLE = "unavailable"  # the withdrawal could not be completed now


class LinkRefused(Exception):
    def __init__(self, refusal: Refusal) -> None:
        super().__init__(refusal.value)
        self.refusal = refusal


@dataclass(frozen=True)
class LinkedAppointment:
    """The appointment a link opens, as consent knows it."""

    claims: LinkClaims
    subject_ref: str
    revision: int
    timezone: str
    starts_at: datetime | None
    cancelled_at: datetime | None
    withdrawal_pending: bool
    caf_code: str | None  # None: recorded before consent kept the appointment's Caf

    @property
    def appointment_id(self) -> uuid.UUID:
        return self.claims.appointment_id

    @property
    def ahead(self) -> bool:
        """The link names a revision consent has not read yet."""
        return self.claims.revision > self.revision


async def open_link(
    conn: asyncpg.Connection,
    keys: LinkKeys,
    token: str,
    purpose: LinkPurpose,
    limit: Limit,
    now: datetime | None = None,
) -> LinkedAppointment:
    """The appointment behind a link, counting the attempt; LinkRefused says why not."""
    try:
        claims = read_link(keys, token, purpose, now)
    except ExpiredLink:
        # Ours all the same: counted, so an expired link cannot be hammered either.
        await _count(conn, token, limit, now)
        raise LinkRefused(Refusal.EXPIRED) from None
    except InvalidLink:
        raise LinkRefused(Refusal.INVALID) from None
    await _count(conn, token, limit, now)
    row = await conn.fetchrow(
        "SELECT subject_ref, revision, timezone, starts_at, cancelled_at, "
        "withdrawal_pending_since IS NOT NULL AS withdrawal_pending, caf_code "
        "FROM appointments WHERE appointment_id = $1",
        claims.appointment_id,
    )
    if row is None:
        raise LinkRefused(Refusal.INVALID)
    corrected: int | None = await conn.fetchval(
        "SELECT max((payload ->> 'revision')::int) FROM ledger "
        "WHERE appointment_id = $1 AND kind = 'contact_corrected'",
        claims.appointment_id,
    )
    if corrected is not None and claims.revision < corrected:
        raise LinkRefused(Refusal.REPLACED)
    return LinkedAppointment(claims=claims, **dict(row))


async def _count(conn: asyncpg.Connection, token: str, limit: Limit, now: datetime | None) -> None:
    if not await allow(conn, f"link:{link_fingerprint(token)}", limit, now):
        raise LinkRefused(Refusal.TOO_MANY)


class Choice(StrEnum):
    AUTHORISED = "recording_authorised"
    REFUSED = "recording_refused"
    WITHDRAWN = "recording_withdrawn"


@dataclass(frozen=True)
class RecordingState:
    appointment: LinkedAppointment
    choice: Choice
    decided_at: datetime  # when the person authorised, refused or withdrew
    now: datetime

    @property
    def started(self) -> bool:
        starts_at = self.appointment.starts_at
        return starts_at is not None and self.now >= starts_at

    @property
    def withdrawable(self) -> bool:
        """Withdrawable from the page: authorised, and the appointment still to come. An
        appointment whose start consent does not know is not: the page sends to the Caf."""
        return (
            self.choice is Choice.AUTHORISED
            and self.appointment.cancelled_at is None
            and self.appointment.starts_at is not None
            and not self.started
        )


async def recording_state(
    conn: asyncpg.Connection, appointment: LinkedAppointment, now: datetime | None = None
) -> RecordingState:
    row = await conn.fetchrow(
        "SELECT kind, coalesce(payload ->> 'withdrawn_at', payload ->> 'decided_at', "
        "payload ->> 'recorded_at') AS decided_at "
        "FROM ledger WHERE appointment_id = $1 AND kind = ANY($2::text[]) "
        "ORDER BY seq DESC LIMIT 1",
        appointment.appointment_id,
        [choice.value for choice in Choice],
    )
    assert row is not None, "every recorded appointment has its recording choice"
    return RecordingState(
        appointment=appointment,
        choice=Choice(row["kind"]),
        decided_at=datetime.fromisoformat(row["decided_at"]),
        now=now or datetime.now(UTC),
    )


async def withdraw_from_page(
    pool: asyncpg.Pool, publisher: Publisher, topics: Topics, state: RecordingState
) -> bool:
    """Withdraw if the page may; True if this call withdrew (or finished announcing a
    withdrawal whose publication had failed). A second submit finds it withdrawn and announced,
    and does nothing: one record, one announcement."""
    pending = state.choice is Choice.WITHDRAWN and state.appointment.withdrawal_pending
    if not (state.withdrawable or pending):
        return False
    await withdraw_recording(
        pool,
        publisher,
        topics,
        state.appointment.appointment_id,
        calling_system=CALLING_SYSTEM,
        channel=SELF_SERVICE_CHANNEL,
    )
    return True
