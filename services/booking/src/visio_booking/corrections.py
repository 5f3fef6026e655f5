"""The person's own correction of their details, from « Mon rendez-vous » (RGPD article 16).

A corrected name is applied at once: the signed link already says whose appointment it is. A
new address is not, since nobody has shown yet that they read it: booking keeps the corrected
details in `contact_corrections` under the SHA-256 of a code (never the code), and leaves a
`ContactCorrectionRequested` in the outbox; notifications mails the link to the new address,
computing the same code from the event's id (`visio_shared.links.address_confirmation_code`).
Following it applies the correction. Either way the correction is the API's and the partners'
`CorrectContact`, under the self-service caller: it raises the revision, publishes
`ContactCorrected` and so reaches every service (notifications' next email goes to the new
address, with new links; consent chains `contact_corrected`; meetings updates the invitation).

A correction asked for an older revision, or confirmed after the appointment changed, does
nothing: the person's page, or their newest email, shows the appointment as it now stands.
"""

from __future__ import annotations

import enum
import hashlib
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg
from pydantic import BaseModel, EmailStr, Field, ValidationError
from visio_runtime.problems import Problem
from visio_shared import ContactCorrectionRequested, Person
from visio_shared.links import LinkKeys, address_confirmation_code

from visio_booking import store
from visio_booking.appointments import Command, Context
from visio_booking.idempotency import Outcome
from visio_booking.intake import execute
from visio_booking.outbox import enqueue
from visio_booking.selfservice import SELF_SERVICE, LinkReplaced, normalised_address


class Typed(BaseModel):
    """What the person typed in the form, checked as an API request's user would be."""

    first_name: str = Field(min_length=1, max_length=100)
    last_name: str = Field(min_length=1, max_length=100)
    email: EmailStr


class Asked(enum.StrEnum):
    APPLIED = "applied"  # the name, corrected at once
    TO_CONFIRM = "to_confirm"  # a new address: the link is on its way to it
    UNCHANGED = "unchanged"


class Confirmation(enum.StrEnum):
    APPLIED = "applied"
    UNKNOWN = "unknown"  # no such code, already used, expired or erased since
    STALE = "stale"  # the appointment changed since it was asked


@dataclass(frozen=True)
class Confirmed:
    outcome: Confirmation
    appointment_id: uuid.UUID | None = None
    revision: int | None = None


def typed(form: dict[str, str]) -> Typed | list[str]:
    """The form's fields, trimmed and checked; or the names of the fields that are not right."""
    try:
        return Typed.model_validate(
            {name: form.get(name, "").strip() for name in Typed.model_fields}
        )
    except ValidationError as exc:
        return sorted({str(error["loc"][0]) for error in exc.errors()})


def code_sha256(code: str) -> str:
    return hashlib.sha256(code.encode()).hexdigest()


async def ask(
    pool: asyncpg.Pool,
    ctx: Context,
    keys: LinkKeys,
    appointment_id: uuid.UUID,
    link_revision: int,
    wanted: Typed,
    valid: timedelta,
) -> Asked:
    """Correct the name now, or ask the new address to confirm. LinkReplaced if the appointment
    changed since the link was sent."""
    row = await pool.fetchrow(
        "SELECT * FROM appointments WHERE appointment_id = $1", appointment_id
    )
    if row is None or row["revision"] != link_revision:
        raise LinkReplaced
    names = {"first_name": wanted.first_name, "last_name": wanted.last_name}
    new_address = normalised_address(wanted.email) != normalised_address(row["email"])
    if new_address:
        await _ask_new_address(pool, ctx, keys, appointment_id, link_revision, wanted, valid)
        return Asked.TO_CONFIRM
    changed = {name: value for name, value in names.items() if value != row[name]}
    if not changed:
        return Asked.UNCHANGED
    await _correct(pool, ctx, appointment_id, changed, link_revision)
    return Asked.APPLIED


async def confirm(pool: asyncpg.Pool, ctx: Context, code: str) -> Confirmed:
    """Apply the correction the code was sent for, once."""
    pending = await pool.fetchrow(
        "SELECT c.appointment_id, c.revision, c.first_name, c.last_name, c.email, "
        "a.revision AS current, a.first_name AS current_first_name, "
        "a.last_name AS current_last_name "
        "FROM contact_corrections c JOIN appointments a USING (appointment_id) "
        "WHERE c.code_sha256 = $1 AND c.confirmed_at IS NULL AND c.expires_at > now() "
        "AND a.erased_at IS NULL",
        code_sha256(code),
    )
    if pending is None:
        return Confirmed(Confirmation.UNKNOWN)
    if pending["current"] != pending["revision"]:
        return Confirmed(Confirmation.STALE, pending["appointment_id"])
    payload = {"email": pending["email"]}
    for name in ("first_name", "last_name"):
        if pending[name] != pending[f"current_{name}"]:
            payload[name] = pending[name]

    async def mark_confirmed(conn: asyncpg.Connection, outcome: Outcome) -> None:
        # In the correction's transaction: both or neither (a second click finds it used).
        status = await conn.execute(
            "UPDATE contact_corrections SET confirmed_at = now() "
            "WHERE code_sha256 = $1 AND confirmed_at IS NULL",
            code_sha256(code),
        )
        if status != "UPDATE 1":
            raise LinkReplaced
        _check_revision(outcome, pending["revision"])

    try:
        outcome = await _run(pool, ctx, pending["appointment_id"], payload, mark_confirmed)
    except LinkReplaced:
        return Confirmed(Confirmation.UNKNOWN)
    except Problem as problem:
        if problem.kind in ("appointment-cancelled", "appointment-past", "personal-data-erased"):
            return Confirmed(Confirmation.STALE, pending["appointment_id"])
        raise
    return Confirmed(Confirmation.APPLIED, pending["appointment_id"], outcome.body["revision"])


async def _ask_new_address(
    pool: asyncpg.Pool,
    ctx: Context,
    keys: LinkKeys,
    appointment_id: uuid.UUID,
    link_revision: int,
    wanted: Typed,
    valid: timedelta,
) -> None:
    async with pool.acquire() as conn, conn.transaction():
        row = await store.lock_appointment(conn, appointment_id)
        if row is None or row["revision"] != link_revision:
            raise LinkReplaced
        person = Person(
            first_name=wanted.first_name,
            last_name=wanted.last_name,
            email=wanted.email,
            device=row["device"],
            mobile=row["mobile"],
            sms_opt_in=row["sms_opt_in"],
        )
        now = datetime.now(UTC)
        event = ContactCorrectionRequested(
            appointment_id=appointment_id,
            revision=row["revision"],
            correlation_id=row["correlation_id"],
            occurred_at=now,
            user=person,
            expires_at=now + valid,
        )
        # One pending request per appointment: a new one replaces the previous.
        await conn.execute(
            "DELETE FROM contact_corrections WHERE appointment_id = $1 AND confirmed_at IS NULL",
            appointment_id,
        )
        await conn.execute(
            "INSERT INTO contact_corrections (code_sha256, appointment_id, revision, first_name, "
            "last_name, email, requested_at, expires_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
            code_sha256(address_confirmation_code(keys, event.event_id)),
            appointment_id,
            row["revision"],
            person.first_name,
            person.last_name,
            str(person.email),
            now,
            event.expires_at,
        )
        # The history says that it was asked, never the values.
        await store.add_history(
            conn, appointment_id, "contact_correction_requested", row["revision"], None,
            event.event_id,
        )  # fmt: skip
        await enqueue(conn, ctx.topics.appointments, event)


async def _correct(
    pool: asyncpg.Pool,
    ctx: Context,
    appointment_id: uuid.UUID,
    payload: dict[str, Any],
    link_revision: int,
) -> None:
    async def link_still_current(_: asyncpg.Connection, outcome: Outcome) -> None:
        _check_revision(outcome, link_revision)

    await _run(pool, ctx, appointment_id, payload, link_still_current)


def _check_revision(outcome: Outcome, asked_at: int) -> None:
    # Runs in the correction's transaction, the row locked: raising rolls it back.
    if outcome.body["revision"] - 1 != asked_at:
        raise LinkReplaced


async def _run(
    pool: asyncpg.Pool,
    ctx: Context,
    appointment_id: uuid.UUID,
    payload: dict[str, Any],
    also: Any,
) -> Outcome:
    command = Command("CorrectContact", payload, appointment_id)
    return await execute(pool, ctx, SELF_SERVICE, command, also=also)
