"""The strict verdict of the chaos run, appointment by appointment: from what the run did to each
(`story.Story`) it knows what must be true at the end, and checks it one by one —

- booking's status: `confirmed`, `cancelled` for those it cancelled, `meeting_failed` for those
  it booked with a calendar Graph refuses (a failed ending anywhere else fails the run);
- the Graph emulator: exactly one live Teams event (none once cancelled or refused), at the
  latest times, its meeting allowing recording as the latest consent says;
- the sink: exactly the emails the person must have received, each once (a resend under the
  same Message-ID is counted apart: mail clients merge it), each calendar email carrying its
  revision as SEQUENCE; the Caf's alert for a meeting refused on purpose; and no email in the
  sink that belongs to no appointment of the run;
- for a partner's requests over Kafka: one acceptance each, read from the partner's reply topic;
- the consent ledger: the records the appointment calls for, kind by kind.

Each difference names its appointment; the report shows the first ones."""

from __future__ import annotations

import re
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg

from visio_deploy.proof.observe import Mail
from visio_deploy.proof.partners import ReplyReader
from visio_deploy.proof.report import Report
from visio_deploy.proof.story import REMINDER_MARGIN_S, Story

# <appointment>.r<revision>.<kind>[-<offset>][-<request>][anything a broken build adds]@domain
_PERSON = re.compile(
    r"<(?P<a>[0-9a-f-]{36})\.r(?P<rev>\d+)\.(?P<kind>[a-z_]+)(?:-(?P<offset>\d{1,6})(?![0-9a-f]))?"
    r"(?:-(?P<request>[0-9a-f]{32}))?(?P<rest>[^@]*)@[^>]+>"
)
_ALERT = re.compile(r"<alert\.(?P<a>[0-9a-f-]{36})\.(?P<cause>[a-z_]+)(?:\.[^@]*)?@[^>]+>")
_SEQUENCE = re.compile(r"SEQUENCE:(\d+)")
CALENDAR_KINDS = ("confirmation", "rescheduled", "cancellation")

# The checks, by name: what the report (and the tests of broken builds) call each.
STATUS = "appointments: status not as expected"
FAILED_ENDING = "appointments: failed without a fault on purpose"
MEETING = "appointments: not exactly one live meeting, as last set"
EMAILS = "appointments: emails not exactly as owed"
UNATTRIBUTED = "emails attributed to no appointment of the run"
REPLIES = "partner requests without their one reply on the partner's topic"
LEDGER = "appointments: ledger records not as expected"
STORY = "appointments whose story could not be played"
CHECKS = (STATUS, FAILED_ENDING, MEETING, EMAILS, UNATTRIBUTED, REPLIES, LEDGER, STORY)
_SHOWN = 20


@dataclass
class Differences:
    by_check: defaultdict[str, list[str]] = field(default_factory=lambda: defaultdict(list))

    def add(self, check: str, appointment: str, text: str) -> None:
        self.by_check[check].append(f"{appointment}: {text}")

    def judge(self, report: Report) -> None:
        for check in CHECKS:
            report.zero(check, len(self.by_check[check]))
        shown = {c: lines[:_SHOWN] for c, lines in self.by_check.items() if lines}
        if shown:
            report.details["first differences"] = shown


@dataclass(frozen=True)
class Seen:
    """What the run finds at the end, read once for every appointment."""

    statuses: dict[str, str]
    events: list[dict[str, Any]]  # the emulator's, deleted ones included
    meetings: dict[str, dict[str, Any]]  # online meeting id → rendered meeting
    mails: list[Mail]
    ledger: dict[str, Counter[str]]  # appointment → kinds


async def ledger_kinds(dsn: str) -> dict[str, Counter[str]]:
    conn = await asyncpg.connect(dsn)
    try:
        rows = await conn.fetch("SELECT appointment_id::text AS a, kind FROM consent.ledger")
    finally:
        await conn.close()
    kinds: dict[str, Counter[str]] = defaultdict(Counter)
    for row in rows:
        kinds[row["a"]][row["kind"]] += 1
    return kinds


def judge(
    report: Report,
    stories: list[Story],
    seen: Seen,
    replies: ReplyReader,
    reminder_lead_minutes: int,
) -> None:
    found = Differences()
    ours = {s.appointment_id: s for s in stories if s.appointment_id is not None}
    mails = _mails_by_appointment(seen.mails, set(ours), found)
    for appointment, story in ours.items():
        _status(found, appointment, story, seen)
        _meeting(found, appointment, story, seen)
        _emails(found, appointment, story, mails.get(appointment, []), reminder_lead_minutes)
        _ledger(found, appointment, story, seen)
        if story.stopped:
            found.add(STORY, appointment, f"{story.plan.role}: {story.stopped}")
    for story in stories:
        _replies(found, story, replies)
        if story.appointment_id is None:
            found.add(STORY, story.plan.key, f"never booked: {story.stopped or story.refused_why}")
    report.figures["story"] = dict(Counter(s.plan.role for s in stories))
    report.figures["story: reschedules, cancellations, withdrawals, links again"] = [
        sum(len(s.rescheduled) for s in stories),
        sum(s.cancelled_at is not None for s in stories),
        sum(s.withdrawn for s in stories),
        sum(s.link_asked for s in stories),
    ]
    found.judge(report)


def _expected_status(story: Story) -> str:
    if story.plan.role == "refused":
        return "meeting_failed"
    return "cancelled" if story.cancelled_at is not None else "confirmed"


def _status(found: Differences, appointment: str, story: Story, seen: Seen) -> None:
    status = seen.statuses.get(appointment, "missing")
    expected = _expected_status(story)
    if status != expected:
        found.add(STATUS, appointment, f"{story.plan.role}: status {status}, not {expected}")
    if status in ("meeting_failed", "notification_failed") and story.plan.role != "refused":
        found.add(FAILED_ENDING, appointment, f"{status}, though every fault was transient")


def _meeting(found: Differences, appointment: str, story: Story, seen: Seen) -> None:
    live = [e for e in seen.events if e["external_id"] == appointment and not e["is_deleted"]]
    gone = story.cancelled_at is not None or story.plan.role == "refused"
    if gone:
        if live:
            found.add(MEETING, appointment, f"{len(live)} live event(s), expected none")
        return
    if len(live) != 1:
        found.add(MEETING, appointment, f"{len(live)} live events, expected exactly one")
        return
    [event] = live
    start = story.start.astimezone(UTC)
    end = start + timedelta(minutes=story.duration_minutes)
    if (_utc(event["start_utc"]), _utc(event["end_utc"])) != (start, end):
        found.add(
            MEETING,
            appointment,
            f"event at {event['start_utc']}–{event['end_utc']}, expected {start:%Y-%m-%dT%H:%M}Z"
            f"–{end:%H:%M}Z",
        )
    meeting = seen.meetings.get(event.get("online_meeting_id") or "")
    allowed = None if meeting is None else meeting.get("allowRecording")
    if allowed is not story.recording:
        found.add(
            MEETING,
            appointment,
            f"recording allowed: {allowed}, the consent says {story.recording}",
        )


def _utc(text: str) -> datetime:
    return datetime.fromisoformat(text.replace("Z", "+00:00")).astimezone(UTC)


@dataclass(frozen=True)
class _Sent:
    key: tuple[str, int, int | None]  # kind, revision, reminder offset
    message_id: str
    mail: Mail | None
    alert: str | None = None


def _mails_by_appointment(
    mails: list[Mail], ours: set[str | None], found: Differences
) -> dict[str, list[_Sent]]:
    by: dict[str, list[_Sent]] = defaultdict(list)
    for mail in mails:
        message_id = mail.message_id.strip()
        person = _PERSON.fullmatch(message_id)
        alert = _ALERT.fullmatch(message_id)
        appointment = person["a"] if person else alert["a"] if alert else None
        if appointment is None or appointment not in ours:
            found.add(UNATTRIBUTED, mail.path.name, f"Message-ID {message_id or '(none)'}")
            continue
        if person is not None:
            offset = int(person["offset"]) if person["offset"] else None
            key = (person["kind"], int(person["rev"]), offset)
            by[appointment].append(_Sent(key, message_id, mail))
        else:
            assert alert is not None
            by[appointment].append(_Sent(("alert", 0, None), message_id, mail, alert["cause"]))
    return by


def _emails(
    found: Differences, appointment: str, story: Story, sent: list[_Sent], lead: int
) -> None:
    owed: Counter[tuple[str, int, int | None]] = Counter()
    optional: set[tuple[str, int, int | None]] = set()
    alerts_owed: Counter[str] = Counter()
    if story.plan.role == "refused":
        owed[("meeting_unavailable", 1, None)] += 1
        alerts_owed["meeting_failed"] += 1
    else:
        owed[("confirmation", 1, None)] += 1
    for revision in story.rescheduled:
        owed[("rescheduled", revision, None)] += 1
    if story.cancelled_at is not None:
        owed[("cancellation", story.cancelled_at, None)] += 1
    if story.link_asked:
        owed[("link_resent", story.revision, None)] += 1
    if story.plan.role == "reminder":
        reminder = ("reminder", 1, lead)
        due = story.start - timedelta(minutes=lead)
        confirmed = _first_copy(sent, ("confirmation", 1, None))
        if confirmed is not None and confirmed < due.timestamp() - REMINDER_MARGIN_S:
            owed[reminder] += 1  # the person held the link before it fell due: it goes
        elif confirmed is None or confirmed <= due.timestamp() + REMINDER_MARGIN_S:
            optional.add(reminder)  # a matter of a second either way
    # Distinct Message-IDs per key: a resend under the same id is the same email.
    distinct: defaultdict[tuple[str, int, int | None], set[str]] = defaultdict(set)
    alerts: Counter[str] = Counter()
    for mail in sent:
        if mail.alert is not None:
            alerts[mail.alert] += 1 if mail.message_id not in distinct[("alert", 0, None)] else 0
            distinct[("alert", 0, None)].add(mail.message_id)
            continue
        distinct[mail.key].add(mail.message_id)
        _sequence(found, appointment, mail)
    got = Counter({key: len(ids) for key, ids in distinct.items() if key[0] != "alert"})
    for key in sorted(set(owed) | set(got), key=str):
        if key in optional and got[key] <= 1:
            continue
        if got[key] != owed[key]:
            kind, revision, offset = key
            name = f"{kind} r{revision}" + (f" -{offset} min" if offset else "")
            found.add(EMAILS, appointment, f"{name}: {got[key]} distinct, owed {owed[key]}")
    if alerts != alerts_owed:
        found.add(EMAILS, appointment, f"Caf alerts {dict(alerts)}, owed {dict(alerts_owed)}")


def _first_copy(sent: list[_Sent], key: tuple[str, int, int | None]) -> float | None:
    times = [s.mail.path.stat().st_mtime for s in sent if s.key == key and s.mail is not None]
    return min(times) if times else None


def _sequence(found: Differences, appointment: str, sent: _Sent) -> None:
    kind, revision, _ = sent.key
    if kind not in CALENDAR_KINDS or sent.mail is None:
        return
    sequences = {
        int(n)
        for part in sent.mail.message.walk()
        if part.get_content_type() == "text/calendar"
        for n in _SEQUENCE.findall(str(part.get_content()))
    }
    if sequences != {revision}:
        found.add(EMAILS, appointment, f"{kind} r{revision}: SEQUENCE {sorted(sequences)}")


def _ledger(found: Differences, appointment: str, story: Story, seen: Seen) -> None:
    consent = story.plan.body["consent"]
    owed = Counter({"cgu_accepted": 1})
    owed["recording_authorised" if consent["recording_authorised"] else "recording_refused"] += 1
    kinds = seen.ledger.get(appointment, Counter())
    # What the run did, not what it planned: a withdrawal consent acknowledged is owed once. One
    # that never got its answer (the story stopped: named by the story check) may or may not
    # have been recorded, but never twice.
    if story.withdrawn:
        owed["recording_withdrawn"] += 1
    elif story.plan.role == "withdraw":
        owed["recording_withdrawn"] = min(kinds["recording_withdrawn"], 1)
    if kinds != owed:
        found.add(LEDGER, appointment, f"records {dict(kinds)}, owed {dict(owed)}")


def _replies(found: Differences, story: Story, replies: ReplyReader) -> None:
    for request_id in story.requests:
        answers = replies.answers(request_id)
        first = [
            r for r in answers if r.get("event_type") == "BookingAccepted" and not r.get("replayed")
        ]
        others = [r for r in answers if r.get("event_type") not in ("BookingAccepted",)]
        label = story.appointment_id or story.plan.key
        if len(first) != 1 or others:
            found.add(
                REPLIES,
                label,
                f"request {request_id}: {len(first)} acceptance(s), {len(others)} other "
                f"repl(ies) on {replies.topic}",
            )
        elif str(first[0].get("appointment_id")) != story.appointment_id:
            found.add(REPLIES, label, f"request {request_id}: answered for another appointment")
