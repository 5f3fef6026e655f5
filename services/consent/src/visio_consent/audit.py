"""`consent verify`'s verdict: the chain walk (`visio_consent.verify`) stands on signatures.

An intact chain proves little alone: a superuser who rewrites a record and recomputes every
hash after it leaves one. So verification also requires, in this order:

1. `checkpoint_conflict`: the checkpoint file and the checkpoint topic (and each on its own)
   never sign two different hashes for one seq. Lines present in one and not the other are
   reported in the notes, not failed: a broker restart empties a topic (tansu's memory
   storage), a publish can fail after the file was written, a file can be restored from an
   older copy — none of these says two different things about the ledger.
2. The walk itself, against every checkpoint of both (`altered`, `missing`, `reordered`,
   `bad_checkpoint`).
3. `no_checkpoint`: a ledger that holds records is signed by at least one trusted checkpoint
   (an empty ledger needs none).
4. The unsigned tail, the records after the newest checkpoint, is cross-checked against the
   hashes the `ConsentRecorded` events announced: a tail record with another hash than its
   announcement was rewritten (`altered`); an announced seq the ledger no longer holds was cut
   (`missing`). A tail record no announcement names yet is a note (the event is published
   after commit, and again on redelivery).
5. `stale_tail`: the oldest unsigned record is no older than the bound
   (`CONSENT_MAX_UNSIGNED_AGE_S`): past it, the checkpoint schedule is not doing its work and
   the tail is protected by nothing but the announcements.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import asyncpg
from visio_shared.checkpoints import Checkpoint

from visio_consent.checkpoints import NotACheckpoint
from visio_consent.ledger import iso_utc
from visio_consent.settings import ConsentSettings
from visio_consent.signing import signature_ok
from visio_consent.verify import Problem, VerifyReport, unreadable_checkpoints, verify
from visio_consent.witnesses import Announced, Witnesses, gather

_TAIL = """
SELECT seq, hash, recorded_at FROM ledger WHERE seq > $1 AND seq <= $2 ORDER BY seq
"""


@dataclass(frozen=True)
class _Tail:
    rows: list[asyncpg.Record]
    now: datetime


async def audit(
    conn: asyncpg.Connection,
    witnesses: Witnesses,
    trusted: frozenset[str],
    *,
    max_unsigned_age: timedelta,
) -> VerifyReport:
    """The full verdict on the ledger `conn` reads, from what `witnesses` holds (read first)."""
    notes = _coverage(witnesses)
    merged = _unique([*witnesses.file, *(witnesses.topic or ())])
    conflict = _conflict(witnesses, trusted)
    if conflict is not None:
        return conflict.model_copy(update={"notes": notes})
    report = await verify(conn, merged, trusted)
    if not report.ok:
        return report.model_copy(update={"notes": notes})
    newest = max(merged, key=lambda checkpoint: checkpoint.seq, default=None)
    if newest is None:
        if report.count == 0:
            return report.model_copy(update={"notes": [*notes, "the ledger is empty"]})
        return _broken(
            report.model_copy(update={"notes": notes}),
            seq=1,
            problem="no_checkpoint",
            reason=f"no trusted checkpoint signs this ledger of {report.count} records: a "
            "rewrite with every hash recomputed would verify. Sign one (`visio-rdv consent "
            "checkpoint`) once you trust the ledger, or find the checkpoint file",
            expected=f"a checkpoint signed by one of {len(trusted)} trusted key(s), "
            f"in {witnesses.file_path} or on {witnesses.topic_name}",
            stored="none",
        )
    tail = await _tail(conn, newest.seq, report.head_seq)
    checked = _cross_check(report, newest.seq, tail, witnesses)
    signed = report.model_copy(
        update={
            "signed_seq": newest.seq,
            "unsigned": len(tail.rows),
            "unsigned_since": iso_utc(tail.rows[0]["recorded_at"]) if tail.rows else None,
            "announced_checked": checked.count,
            "notes": [*notes, *checked.notes],
        }
    )
    if checked.broken is not None:
        return _broken(signed, **checked.broken)
    return _age(signed, tail, newest, max_unsigned_age)


async def _tail(conn: asyncpg.Connection, signed_seq: int, head_seq: int) -> _Tail:
    rows = await conn.fetch(_TAIL, signed_seq, head_seq)
    now: datetime = await conn.fetchval("SELECT now()")
    return _Tail(list(rows), now)


@dataclass
class _Checked:
    """What the cross-check found: tail records matching their announcement, notes, and the
    break (the fields of the broken report) if the tail contradicts an announcement."""

    count: int = 0
    notes: list[str] = field(default_factory=list)
    broken: dict[str, Any] | None = None


def _cross_check(
    report: VerifyReport, signed_seq: int, tail: _Tail, witnesses: Witnesses
) -> _Checked:
    found = _Checked()
    if witnesses.announced is None:
        found.notes.append(
            "the topics were not read: the unsigned tail is not cross-checked against the "
            "ConsentRecorded events"
        )
        return found
    by_seq: dict[int, list[Announced]] = defaultdict(list)
    for entry in witnesses.announced:
        if entry.seq > signed_seq:
            by_seq[entry.seq].append(entry)
    unannounced: list[int] = []
    for row in tail.rows:
        said = by_seq.get(row["seq"])
        if not said:
            unannounced.append(row["seq"])
            continue
        other = next((entry for entry in said if entry.hash != row["hash"]), None)
        if other is not None:
            found.broken = {
                "seq": row["seq"],
                "problem": "altered",
                "reason": f"after the newest checkpoint (seq {signed_seq}), seq {row['seq']} "
                f"does not have the hash ConsentRecorded {other.event_id} announced: it was "
                "rewritten after it was recorded (every hash after it recomputed, if the chain "
                "still verifies)",
                "expected": other.hash,
                "stored": row["hash"],
            }
            return found
        found.count += 1
    beyond = sorted(seq for seq in by_seq if seq > report.head_seq)
    if beyond:
        first = by_seq[beyond[0]][0]
        found.broken = {
            "seq": report.head_seq + 1,
            "problem": "missing",
            "reason": f"ConsentRecorded events announced seq {_span(beyond)} (first: "
            f"{first.event_id}) but the ledger ends at seq {report.head_seq}: records "
            f"appended after the newest checkpoint (seq {signed_seq}) were removed",
            "expected": f"seq {beyond[-1]} {by_seq[beyond[-1]][0].hash}",
            "stored": f"seq {report.head_seq} {report.head_hash}",
        }
        return found
    if unannounced:
        found.notes.append(
            f"{len(unannounced)} unsigned record(s) not yet announced by a ConsentRecorded "
            f"event (seq {_seqs(unannounced)}): not cross-checked"
        )
    if witnesses.unreadable_events:
        found.notes.append(
            f"{witnesses.unreadable_events} ConsentRecorded message(s) on the consents topic "
            "did not parse: not used"
        )
    return found


def _span(seqs: Sequence[int]) -> str:
    return str(seqs[0]) if seqs[0] == seqs[-1] else f"{seqs[0]} to {seqs[-1]}"


def _age(report: VerifyReport, tail: _Tail, newest: Checkpoint, bound: timedelta) -> VerifyReport:
    if not tail.rows:
        return report
    oldest: datetime = tail.rows[0]["recorded_at"]
    age = tail.now - oldest
    if age <= bound:
        return report
    return _broken(
        report,
        seq=tail.rows[0]["seq"],
        problem="stale_tail",
        reason=f"{len(tail.rows)} record(s) after the newest checkpoint (seq {newest.seq}, "
        f"signed at {newest.signed_at}) are unsigned since {iso_utc(oldest)}, "
        f"{age.total_seconds():.0f} s ago, beyond the bound of "
        f"{bound.total_seconds():g} s: the checkpoint schedule is not signing "
        "(see the consent service's log), or the bound is shorter than its interval",
        expected=f"unsigned for at most {bound.total_seconds():g} s",
        stored=f"unsigned for {age.total_seconds():.0f} s",
    )


def _conflict(witnesses: Witnesses, trusted: frozenset[str]) -> VerifyReport | None:
    """Two checkpoints that sign different hashes for one seq, wherever they are."""
    said: dict[int, dict[str, list[str]]] = defaultdict(lambda: defaultdict(list))
    sources = [("file", witnesses.file), ("topic", witnesses.topic or ())]
    for source, checkpoints in sources:
        for checkpoint in checkpoints:
            trust = "" if signature_ok(checkpoint, trusted) else ", not validly signed"
            said[checkpoint.seq][checkpoint.head_hash].append(
                f"the {source}, signed at {checkpoint.signed_at}{trust}"
            )
    for seq in sorted(said):
        hashes = said[seq]
        if len(hashes) > 1:
            (first, where_first), (second, where_second) = list(hashes.items())[:2]
            return VerifyReport(
                ok=False,
                count=0,
                head_seq=0,
                head_hash="0" * 64,
                broken_seq=seq,
                problem="checkpoint_conflict",
                reason=f"the checkpoints sign two different heads for seq {seq}: "
                f"{first[:12]}… ({'; '.join(where_first)}) and {second[:12]}… "
                f"({'; '.join(where_second)}). One of them was forged, or belongs to another "
                f"ledger ({witnesses.file_path}, {witnesses.topic_name})",
                expected=f"{first} ({where_first[0]})",
                stored=f"{second} ({where_second[0]})",
            )
    return None


def _coverage(witnesses: Witnesses) -> list[str]:
    """What the file and the topic hold that the other does not: said, never failed."""
    if witnesses.topic is None:
        return [
            f"only {witnesses.file_path} was read (--no-topic): {witnesses.topic_name} "
            "does not back it up here"
        ]
    in_file = {checkpoint.line(): checkpoint for checkpoint in witnesses.file}
    on_topic = {checkpoint.line(): checkpoint for checkpoint in witnesses.topic}
    notes = []
    if in_file and not on_topic:
        notes.append(
            f"{witnesses.topic_name} holds no checkpoint, {witnesses.file_path} holds "
            f"{len(in_file)}: the topic was emptied (a broker restart on memory storage, or a "
            "new broker) — verified against the file alone; the next checkpoint goes to both"
        )
    elif not in_file and on_topic:
        notes.append(
            f"{witnesses.file_path} holds no checkpoint, {witnesses.topic_name} holds "
            f"{len(on_topic)}: verified against the topic alone; restore the file from a copy"
        )
    else:
        only_file = [cp.seq for line, cp in in_file.items() if line not in on_topic]
        only_topic = [cp.seq for line, cp in on_topic.items() if line not in in_file]
        if only_file:
            notes.append(
                f"{len(only_file)} checkpoint(s) of the file are not on the topic (seq "
                f"{_seqs(only_file)}): published before the topic was emptied, or their "
                "publish failed"
            )
        if only_topic:
            notes.append(
                f"{len(only_topic)} checkpoint(s) on the topic are not in the file (seq "
                f"{_seqs(only_topic)}): the file was restored from an older copy, or lines "
                "were removed from it"
            )
    return notes


def _unique(checkpoints: Sequence[Checkpoint]) -> list[Checkpoint]:
    return list({checkpoint.line(): checkpoint for checkpoint in checkpoints}.values())


def _seqs(seqs: Sequence[int], shown: int = 5) -> str:
    ordered = sorted(seqs)
    more = f" and {len(ordered) - shown} more" if len(ordered) > shown else ""
    return ", ".join(str(seq) for seq in ordered[:shown]) + more


def _broken(
    report: VerifyReport,
    *,
    seq: int,
    problem: Problem,
    reason: str,
    expected: str,
    stored: str,
) -> VerifyReport:
    return report.model_copy(
        update={
            "ok": False,
            "broken_seq": seq,
            "problem": problem,
            "reason": reason,
            "expected": expected,
            "stored": stored,
        }
    )


async def verify_with_witnesses(
    conn: asyncpg.Connection,
    settings: ConsentSettings,
    trusted: frozenset[str],
    *,
    checkpoint_file: Path | None = None,
    read_topic: bool = True,
) -> VerifyReport:
    """What `consent verify` and `GET /v1/ledger/verify` answer: the witnesses read (the file,
    and unless `read_topic` is False the topics), then the ledger audited against them. The
    broker's errors propagate: a verification that could not read the topic is no verdict."""
    try:
        witnesses = await gather(
            settings, checkpoint_file or settings.checkpoints_path, read_topic=read_topic
        )
    except NotACheckpoint as exc:
        return unreadable_checkpoints(str(exc))
    return await audit(
        conn,
        witnesses,
        trusted,
        max_unsigned_age=timedelta(seconds=settings.max_unsigned_age_s),
    )
