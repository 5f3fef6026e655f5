"""The verifier: walks the chain in seq order, recomputes every hash, checks the chain against
signed checkpoints, and names the first break.

How a break is named (`problem`):

- `altered`: a record no longer matches its hash; its columns disagree with what was chained;
  or it was rewritten and its hash recomputed, which shows because the record after it (or a
  signed checkpoint) still holds the old hash.
- `missing`: records are gone: a gap in seq, or a chain that ends before its head or before
  a seq that a checkpoint signed.
- `reordered`: an intact record is stored at another seq than the one it was chained at.
- `bad_checkpoint`: a checkpoint whose signature does not verify with a trusted key.

`visio_consent.audit` adds what `consent verify` requires on top of an intact chain (a trusted
checkpoint, a recent unsigned tail that matches its announcements, agreeing checkpoint copies)
and its own problems: `no_checkpoint`, `stale_tail`, `checkpoint_conflict`.

Without checkpoints, a superuser who rewrites records and recomputes every hash after them
leaves a chain that verifies: only the signed checkpoints (kept off the database) catch that.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import asyncpg
import rfc8785
from pydantic import BaseModel, ConfigDict
from visio_shared.checkpoints import Checkpoint

from visio_consent.ledger import GENESIS_HASH, record_hash
from visio_consent.signing import signature_ok

Problem = Literal[
    "altered",
    "missing",
    "reordered",
    "bad_checkpoint",
    "no_checkpoint",
    "stale_tail",
    "checkpoint_conflict",
]


class VerifyReport(BaseModel):
    """The outcome of a walk.

    `count`, `head_seq` and `head_hash` describe the records that verified (all of them when
    `ok`); `checkpoints` is how many signed checkpoints the chain matched. When broken,
    `broken_seq` is the first broken record, `problem` how it is broken, and `expected` /
    `stored` what the verifier expected there and what it found.
    """

    model_config = ConfigDict(frozen=True)

    ok: bool
    count: int
    head_seq: int
    head_hash: str
    checkpoints: int = 0
    broken_seq: int | None = None
    problem: Problem | None = None
    reason: str | None = None
    expected: str | None = None
    stored: str | None = None
    # Filled by `visio_consent.audit`: the newest signed seq, the records after it (the unsigned
    # tail), when the oldest of them was appended, how many of them a ConsentRecorded event
    # vouched for, and what was seen but does not break the ledger.
    signed_seq: int | None = None
    unsigned: int = 0
    unsigned_since: str | None = None
    announced_checked: int = 0
    notes: list[str] = []

    def describe(self) -> str:
        notes = "".join(f"\n  note: {note}" for note in self.notes)
        if self.ok:
            signed = (
                f"matches {self.checkpoints} signed checkpoint(s)"
                if self.checkpoints
                else "no signed checkpoint checked: a rewrite with recomputed hashes would not show"
            )
            tail = ""
            if self.signed_seq is not None:
                tail = f"\n  signed up to seq {self.signed_seq}; " + (
                    f"{self.unsigned} record(s) after it, appended since {self.unsigned_since}, "
                    f"{self.announced_checked} of them matching their ConsentRecorded hash"
                    if self.unsigned
                    else "nothing after it"
                )
            return f"OK {self.count} records, head {self.head_hash}\n  {signed}{tail}{notes}"
        return (
            f"BROKEN at seq {self.broken_seq}: {self.problem} — {self.reason}\n"
            f"  expected: {self.expected}\n"
            f"  stored:   {self.stored}\n"
            f"  verified before it: {self.count} records, up to seq {self.head_seq} "
            f"(hash {self.head_hash}){notes}"
        )


async def verify(
    conn: asyncpg.Connection,
    checkpoints: Sequence[Checkpoint] = (),
    trusted: frozenset[str] = frozenset(),
    *,
    since: Checkpoint | None = None,
    prefetch: int = 1000,
) -> VerifyReport:
    """Walk the chain from genesis (or from `since`, a checkpoint already trusted, to check only
    what came after it) and check it against `checkpoints`, whose signatures must verify with
    one of the `trusted` public keys. Reads one snapshot: appends running meanwhile do not
    disturb it.
    """
    for checkpoint in checkpoints:
        if not signature_ok(checkpoint, trusted):
            why = "a bad signature" if checkpoint.public_key in trusted else "an untrusted key"
            return VerifyReport(
                ok=False,
                count=0,
                head_seq=0,
                head_hash=GENESIS_HASH,
                broken_seq=checkpoint.seq,
                problem="bad_checkpoint",
                reason=f"the checkpoint of {checkpoint.signed_at} for seq {checkpoint.seq} has "
                f"{why}: the checkpoint file or topic was tampered with, or a key is missing "
                "from CONSENT_CHECKPOINT_TRUSTED_KEYS",
                expected="a signature by one of " + ", ".join(sorted(trusted)),
                stored=checkpoint.public_key,
            )
    walk = _Walk(conn, checkpoints, since)
    if conn.is_in_transaction():
        return await walk.run(prefetch)
    async with conn.transaction(isolation="repeatable_read", readonly=True):
        return await walk.run(prefetch)


def unreadable_checkpoints(reason: str) -> VerifyReport:
    """The report when the checkpoints themselves cannot be read: no proof, so no OK."""
    return VerifyReport(
        ok=False,
        count=0,
        head_seq=0,
        head_hash=GENESIS_HASH,
        problem="bad_checkpoint",
        reason=reason,
        expected="one signed checkpoint per line",
        stored="an unreadable line",
    )


_WALK = """
SELECT seq, prev_hash, hash, kind, appointment_id, source_event_id, payload
FROM ledger WHERE seq > $1 ORDER BY seq
"""


@dataclass
class _Position:
    count: int
    seq: int
    hash: str


@dataclass
class _Walk:
    conn: asyncpg.Connection
    checkpoints: Sequence[Checkpoint]
    since: Checkpoint | None
    signed: dict[int, list[Checkpoint]] = field(default_factory=dict)
    matched: int = 0

    def __post_init__(self) -> None:
        start = (self.since.seq, self.since.head_hash) if self.since else (0, GENESIS_HASH)
        self.last = _Position(0, *start)
        self.before = self.last  # one record back: where a rehashed predecessor is reported from
        self.proven = self.last  # the last position a signed checkpoint (or `since`) vouches for
        for checkpoint in self.checkpoints:
            self.signed.setdefault(checkpoint.seq, []).append(checkpoint)

    def broken(
        self,
        seq: int,
        problem: Problem,
        reason: str,
        expected: str,
        stored: str,
        at: _Position | None = None,
    ) -> VerifyReport:
        good = at or self.last
        return VerifyReport(
            ok=False,
            count=good.count,
            head_seq=good.seq,
            head_hash=good.hash,
            checkpoints=self.matched,
            broken_seq=seq,
            problem=problem,
            reason=reason,
            expected=expected,
            stored=stored,
        )

    async def run(self, prefetch: int) -> VerifyReport:
        if self.since is not None and self.since.seq > 0:
            stored = await self.conn.fetchval(
                "SELECT hash FROM ledger WHERE seq = $1", self.since.seq
            )
            if stored != self.since.head_hash:
                return self.broken(
                    self.since.seq,
                    "altered" if stored else "missing",
                    f"seq {self.since.seq} no longer has the hash its last checkpoint signed",
                    self.since.head_hash,
                    str(stored),
                )
        async for row in self.conn.cursor(_WALK, self.last.seq, prefetch=prefetch):
            report = await self.step(row)
            if report is not None:
                return report
        return await self.finish()

    async def step(self, row: asyncpg.Record) -> VerifyReport | None:
        """Check one row; a report if the chain breaks here, else None (and move on)."""
        position: int = row["seq"]
        wanted = self.last.seq + 1
        payload, computed = _recompute(row)
        intact = computed == row["hash"]
        linked = row["prev_hash"] == self.last.hash
        if position != wanted or not linked or not intact:
            return await self.classify(row, position, payload, computed)

        assert payload is not None
        columns = {
            "seq": position,
            "kind": row["kind"],
            "appointment_id": str(row["appointment_id"]),
            "source_event_id": str(row["source_event_id"]),
        }
        chained = {key: payload.get(key) for key in columns}
        if chained != columns:
            return self.broken(
                position,
                "altered",
                "its columns disagree with the chained record",
                _show(chained),
                _show(columns),
            )
        for checkpoint in self.signed.get(position, ()):
            if checkpoint.head_hash != row["hash"]:
                return self.broken(
                    position,
                    "altered",
                    f"its hash is not the one the checkpoint of {checkpoint.signed_at} signed: "
                    f"records between seq {self.proven.seq + 1} and seq {position} were "
                    "rewritten and their hashes recomputed",
                    checkpoint.head_hash,
                    row["hash"],
                    at=self.proven,
                )
            self.matched += 1
        self.before = self.last
        self.last = _Position(self.last.count + 1, position, row["hash"])
        if position in self.signed:
            self.proven = self.last
        return None

    async def classify(
        self,
        row: asyncpg.Record,
        position: int,
        payload: dict[str, Any] | None,
        computed: str,
    ) -> VerifyReport:
        """Name a break found at `row`, where the chain wanted seq `last.seq + 1`."""
        wanted = self.last.seq + 1
        # prev_hash is UNIQUE, so at most one record claims to follow the last good one.
        successor = await self.conn.fetchval(
            "SELECT seq FROM ledger WHERE prev_hash = $1", self.last.hash
        )
        chained_seq = payload.get("seq") if payload else None
        if successor is not None and successor != position:
            return self.broken(
                wanted,
                "reordered",
                f"the record chained as seq {wanted} is stored at seq {successor}, and seq "
                f"{position} holds "
                + (f"the record chained as seq {chained_seq}" if payload else "another record"),
                f"seq {wanted} stored at seq {wanted}",
                f"seq {wanted} stored at seq {successor}",
            )
        if position > wanted:
            if successor == position:
                return self.broken(
                    wanted,
                    "altered",
                    f"the record chained as seq {wanted} has had its seq changed to {position}",
                    str(wanted),
                    str(position),
                )
            return self.broken(
                wanted,
                "missing",
                f"{_span(wanted, position - 1)} missing: the next record present is seq {position}",
                f"seq {wanted}",
                f"seq {position}",
            )
        if row["hash"] != computed:
            return self.broken(
                position, "altered", "the record does not match its hash", computed, row["hash"]
            )
        if isinstance(chained_seq, int) and chained_seq > wanted:
            # An intact later record renumbered into the hole a deletion left.
            return self.broken(
                wanted,
                "missing",
                f"{_span(wanted, chained_seq - 1)} missing: the record stored at seq {position} "
                f"was chained as seq {chained_seq}",
                f"seq {wanted}",
                f"seq {chained_seq}",
            )
        if self.last.seq == self.proven.seq:
            # Its predecessor is the genesis or vouched for by a signed checkpoint: this record
            # is the one whose prev_hash was rewritten (and its hash recomputed).
            return self.broken(
                wanted,
                "altered",
                f"it does not chain to seq {self.last.seq}, which a signed checkpoint vouches for"
                if self.last.seq
                else "the first record does not chain to the genesis hash",
                self.last.hash,
                row["prev_hash"],
            )
        # Intact and in place, but chained to another hash than its predecessor's now: the
        # predecessor was rewritten and its hash recomputed.
        return self.broken(
            wanted - 1,
            "altered",
            f"it was rewritten and its hash recomputed: seq {wanted} was chained to another hash",
            row["prev_hash"],
            self.last.hash,
            at=self.before,
        )

    async def finish(self) -> VerifyReport:
        beyond = [checkpoint for checkpoint in self.checkpoints if checkpoint.seq > self.last.seq]
        if beyond:
            signed = max(beyond, key=lambda checkpoint: checkpoint.seq)
            return self.broken(
                self.last.seq + 1,
                "missing",
                f"{_span(self.last.seq + 1, signed.seq)} missing: the ledger ends at seq "
                f"{self.last.seq} but the checkpoint of {signed.signed_at} signed seq {signed.seq}",
                f"{signed.seq} {signed.head_hash}",
                f"{self.last.seq} {self.last.hash}",
            )
        head = await self.conn.fetchrow("SELECT seq, hash FROM chain_head")
        assert head is not None, "chain_head is seeded by the migration"
        if head["seq"] > self.last.seq:
            return self.broken(
                self.last.seq + 1,
                "missing",
                f"{_span(self.last.seq + 1, head['seq'])} missing: the chain head names seq "
                f"{head['seq']} but the ledger ends at seq {self.last.seq}",
                f"{head['seq']} {head['hash']}",
                f"{self.last.seq} {self.last.hash}",
            )
        if (head["seq"], head["hash"]) != (self.last.seq, self.last.hash):
            # A head rewound to seq k is ready to overwrite what follows k: name k + 1.
            return self.broken(
                min(head["seq"] + 1, self.last.seq),
                "altered",
                "the chain head does not name the last record",
                f"{self.last.seq} {self.last.hash}",
                f"{head['seq']} {head['hash']}",
            )
        return VerifyReport(
            ok=True,
            count=self.last.count,
            head_seq=self.last.seq,
            head_hash=self.last.hash,
            checkpoints=self.matched,
        )


def _recompute(row: asyncpg.Record) -> tuple[dict[str, Any] | None, str]:
    """The stored record and the hash it should have ("" if it cannot have one)."""
    payload = json.loads(row["payload"])
    if not isinstance(payload, dict):
        return None, "a JSON object"
    try:
        return payload, record_hash(row["prev_hash"], payload)
    except rfc8785.CanonicalizationError as exc:
        return payload, f"RFC 8785 JSON ({exc})"


def _span(first: int, last: int) -> str:
    return f"seq {first} is" if first == last else f"seq {first} to {last} are"


def _show(values: Mapping[str, Any]) -> str:
    return json.dumps(values, sort_keys=True)
