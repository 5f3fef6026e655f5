"""How far a phase is, read from the services' own tables and the SMTP sink's folder: per
service (what the drain rates are made of), and per appointment. An appointment is done only
when it has, itself, its meeting ready, its confirmation email in the sink, its `confirmed`
status and both its ledger records (the CGU acceptance and the recording choice): totals that
agree could hide one appointment without a meeting behind another with two."""

from __future__ import annotations

import math
import os
import re
import time
import uuid
from collections.abc import Collection
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import asyncpg

# The sink names a file after the Message-ID, notifications' `<appointment>.r<n>.confirmation@…>`
_CONFIRMATION = re.compile(r"([0-9a-f]{8}(?:-[0-9a-f]{4}){3}-[0-9a-f]{12})\.r\d+\.confirmation@")

_COUNTS = """
SELECT
  (SELECT count(*) FROM meetings.meetings
     WHERE status = 'ready' AND created_at >= $1) AS meetings,
  (SELECT count(*) FROM booking.appointments
     WHERE status = 'confirmed' AND created_at >= $1) AS confirmed,
  (SELECT count(*) FROM consent.ledger
     WHERE kind = 'cgu_accepted' AND recorded_at >= $1) AS consent
"""
# What an appointment `a` needs in the database besides its status.
_MEETING_AND_LEDGER = """
  AND EXISTS (SELECT 1 FROM meetings.meetings m
              WHERE m.appointment_id = a.appointment_id AND m.status = 'ready')
  AND EXISTS (SELECT 1 FROM consent.ledger l
              WHERE l.appointment_id = a.appointment_id AND l.kind = 'cgu_accepted')
  AND EXISTS (SELECT 1 FROM consent.ledger l
              WHERE l.appointment_id = a.appointment_id
                AND l.kind IN ('recording_authorised', 'recording_refused'))
"""
_NOT_DONE_YET = """
  AND NOT EXISTS (SELECT 1 FROM pg_temp.bench_done d WHERE d.appointment_id = a.appointment_id)
"""
# Booked through booking: confirmed too. Those already found done are not looked at again.
_DONE_BOOKED = f"""
SELECT a.appointment_id::text AS id FROM booking.appointments a
WHERE a.status = 'confirmed' AND a.created_at >= $1 {_NOT_DONE_YET} {_MEETING_AND_LEDGER}
"""
# Written straight onto the appointments topic (the backlog): booking never sees them.
_DONE_EXPECTED = f"""
SELECT a.appointment_id::text AS id FROM pg_temp.bench_expected a
WHERE true {_NOT_DONE_YET} {_MEETING_AND_LEDGER}
"""


@dataclass(frozen=True)
class Progress:
    """What a phase has finished since it began."""

    meetings: int  # meetings ready
    emails: int  # appointments with a confirmation email in the sink
    confirmed: int  # appointments booking calls confirmed
    consent: int  # appointments whose CGU acceptance is in the ledger
    done: int  # appointments with all of it, each checked on its own


def confirmations(mail_dir: Path) -> set[str]:
    """The appointments with a confirmation email in the sink (a second copy adds none)."""
    with os.scandir(mail_dir) as entries:
        return {m.group(1) for entry in entries if (m := _CONFIRMATION.match(entry.name))}


class ProgressProbe:
    """Reads progress over one connection of its own (its backend is the load generator's).

    `expected`: the phase's appointments when booking is bypassed (the backlog); otherwise
    every appointment booking created since `begin()`, which must also be `confirmed`."""

    def __init__(self, dsn: str, mail_dir: Path, expected: Collection[str] | None = None) -> None:
        self.dsn = dsn
        self.mail_dir = mail_dir
        self.expected = expected
        self.since = time.time()
        self.emailed_before: set[str] = set()
        self.done: set[str] = set()
        self.conn: asyncpg.Connection | None = None

    async def __aenter__(self) -> ProgressProbe:
        self.conn = await asyncpg.connect(self.dsn)
        await self.conn.execute("CREATE TEMP TABLE bench_done (appointment_id uuid PRIMARY KEY)")
        if self.expected is not None:
            await self.conn.execute(
                "CREATE TEMP TABLE bench_expected (appointment_id uuid PRIMARY KEY)"
            )
            await self.conn.copy_records_to_table(
                "bench_expected", records=[(uuid.UUID(a),) for a in self.expected]
            )
        return self

    async def __aexit__(self, *_: object) -> None:
        if self.conn is not None:
            await self.conn.close()

    @property
    def backend_pid(self) -> int:
        assert self.conn is not None
        pid: int = self.conn.get_server_pid()
        return pid

    def begin(self) -> None:
        self.since = time.time()
        self.emailed_before = confirmations(self.mail_dir)

    async def read(self, *, per_appointment: bool = True) -> Progress:
        """`per_appointment=False`: the totals only, `done` as last found (the backlog's
        polls, whose drain rates are per service; it checks each appointment at its end)."""
        assert self.conn is not None
        since = datetime.fromtimestamp(self.since, UTC)
        row = await self.conn.fetchrow(_COUNTS, since)
        assert row is not None
        emailed = confirmations(self.mail_dir) - self.emailed_before
        if per_appointment:
            if self.expected is None:
                candidates = await self.conn.fetch(_DONE_BOOKED, since)
            else:
                candidates = await self.conn.fetch(_DONE_EXPECTED)
            found = [r["id"] for r in candidates if r["id"] in emailed]
            await self.conn.execute(
                "INSERT INTO pg_temp.bench_done SELECT unnest($1::uuid[])", found
            )
            self.done.update(found)
        return Progress(
            meetings=row["meetings"],
            emails=len(emailed),
            confirmed=row["confirmed"],
            consent=row["consent"],
            done=len(self.done),
        )


def percentile(values: list[float], share: float) -> float | None:
    """Nearest-rank percentile (p50: share=0.5); None without values."""
    if not values:
        return None
    ordered = sorted(values)
    rank = max(0, min(len(ordered), math.ceil(share * len(ordered))) - 1)
    return ordered[rank]
