"""What the chaos run checks once the system settles: nothing lost, nothing doubled, the ledger
whole, no unexpected dead letter, every person emailed within the promise — and, when it times
out, where each appointment not settled stands (`visio_deploy.ops.whereabouts`), with the SMTP
faults the seed draws for its confirmation and the consumers' lag at the deadline."""

from __future__ import annotations

import statistics
from collections import Counter
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from visio_fakes.fault_draws import draw, pick
from visio_fakes.smtp_sink import fault_subject
from visio_runtime.settings import ServiceSettings

from visio_deploy.ops.topics import lag_report
from visio_deploy.ops.topology import groups
from visio_deploy.ops.whereabouts import whereabouts
from visio_deploy.proof import bookings, observe
from visio_deploy.proof.report import Report
from visio_deploy.proof.stack import ProofStack
from visio_deploy.stack import LOCAL_PARTNERS

if TYPE_CHECKING:
    from visio_deploy.proof.chaos import ChaosOptions

# The check that waiting cannot mend: once someone waited too long, they did.
PROMISE = "every confirmation within the promise"
# How many tries of an unsettled appointment's confirmation the report replays from the seed.
_REPLAYED_TRIES = 8
_SHOWN = 50  # unsettled appointments detailed in the report (all of them in the evidence)


@dataclass
class Booked:
    http: dict[str, str | None]  # idempotency key → appointment id (None: never accepted)
    http_refused: dict[str, str]
    kafka_sent: list[str]  # request ids the broker acknowledged
    kafka_unsent: list[str]


@dataclass(frozen=True)
class Expected:
    """What booking answered: request key → appointment id (None: no answer)."""

    by_key: dict[str, str | None]

    @property
    def ids(self) -> set[str]:
        return {a for a in self.by_key.values() if a is not None}


async def expected(proof: ProofStack, booked: Booked) -> Expected:
    from_kafka = await observe.kafka_appointments(proof.owner_dsn, bookings.KAFKA_OWNER)
    by_key: dict[str, str | None] = dict(booked.http)
    by_key |= {key: from_kafka.get(key) for key in booked.kafka_sent}
    by_key |= {key: None for key in booked.kafka_unsent}
    return Expected(by_key)


def settled(report: Report) -> bool:
    """Every check holds but, perhaps, the promise: a wait too long cannot be waited away."""
    return all(name == PROMISE for name in report.failures)


async def check(proof: ProofStack, booked: Booked, email_within_s: float) -> Report:
    report = Report("chaos")
    rows = await observe.appointments(proof.owner_dsn)
    answered = await expected(proof, booked)
    ids = answered.ids
    statuses = Counter(rows[a]["status"] if a in rows else "missing" for a in ids)
    unanswered = [key for key, a in answered.by_key.items() if a is None]
    not_terminal = [a for a in ids if a not in rows or rows[a]["status"] not in observe.TERMINAL]
    failed_without_reason = [
        a
        for a in ids
        if a in rows and "failed" in rows[a]["status"] and not rows[a]["status_reason"]
    ]
    confirmed = {a for a in ids if a in rows and rows[a]["status"] == "confirmed"}
    live = Counter(proof.emulator("GET", "/stats")["live_events_per_external_id"])
    found = observe.mails(proof.var / "mail")
    emails = observe.email_figures(found)
    ledger = await observe.ledger_counts(proof.owner_dsn)
    verdict = observe.consent_verify(proof)
    letters = await observe.dead_letters(proof)

    report.figures["statuses"] = dict(statuses)
    report.zero("lost (no answer or not settled)", len(unanswered) + len(not_terminal))
    report.zero("failed without a reason", len(failed_without_reason))
    report.zero("appointments that are not ours", len(set(rows) - ids))
    report.zero("duplicate meetings", sum(max(0, live[a] - 1) for a in ids))
    report.zero("confirmed without a meeting", sum(1 for a in confirmed if live[a] == 0))
    report.zero("meetings of unknown appointments", len(set(live) - ids))
    report.zero("duplicate emails", sum(max(0, emails.confirmations[a] - 1) for a in ids))
    report.zero("confirmed without an email", len(confirmed - set(emails.confirmations)))
    report.figures["resends with the same Message-ID"] = emails.resends_same_message_id
    report.zero("ledger records not 2 per appointment", sum(1 for a in ids if ledger[a] != 2))
    report.holds("ledger verifies", bool(verdict.get("ok")) and verdict["exit_status"] == 0)
    report.figures["ledger records"] = verdict.get("count")
    report.zero("unexpected dead letters", len(letters))
    _waits(report, rows, ids, found, email_within_s)
    report.details = {
        "unanswered": {k: booked.http_refused.get(k, "no reply") for k in unanswered[:20]},
        "not_terminal": {
            a: rows[a]["status"] if a in rows else "missing" for a in not_terminal[:20]
        },
        "dead_letters": [
            {"id": x.id, "event_type": x.event_type, "reason": x.reason[:300]} for x in letters[:20]
        ],
        "ledger": {k: v for k, v in verdict.items() if k != "output"}
        | {"output": str(verdict.get("output", ""))[:500]},
        **report.details,
    }
    return report


def _waits(
    report: Report,
    rows: dict[str, Any],
    ids: set[str],
    found: list[observe.Mail],
    email_within_s: float,
) -> None:
    """Booking to email, per person: from booking's row to the sink's first copy of their
    confirmation (the moment the relay took it); those still without one count from now."""
    emailed: dict[str, float] = {}
    for mail in found:
        if mail.kind == "confirmation" and mail.appointment_id in ids:
            at = mail.path.stat().st_mtime
            emailed[mail.appointment_id] = min(emailed.get(mail.appointment_id, at), at)
    now = datetime.now(UTC).timestamp()
    waits = {
        a: emailed[a] - rows[a]["created_at"].timestamp() for a in ids if a in rows and a in emailed
    }
    # A failed meeting or email is reported as such (and its person told otherwise).
    waiting = {
        a: now - rows[a]["created_at"].timestamp()
        for a in ids
        if a in rows and a not in emailed and "failed" not in rows[a]["status"]
    }
    if waits:
        report.figures["booking to email, median (s)"] = round(statistics.median(waits.values()))
        longest = max(waits, key=waits.__getitem__)
        report.figures["booking to email, longest (s)"] = round(waits[longest])
        report.details["longest booking to email"] = {longest: round(waits[longest], 1)}
    late = [a for a, s in {**waits, **waiting}.items() if s > email_within_s]
    report.figures[f"people emailed after {email_within_s / 60:.3g} min or not yet"] = len(late)
    report.holds(PROMISE, not late)
    message_ids = [mail.message_id.strip() for mail in found]  # folded: a leading space
    report.figures["late-email alerts to Cafs"] = sum(
        1 for m in message_ids if m.startswith("<alert.") and ".email_late" in m
    )


async def explain_unsettled(
    proof: ProofStack, booked: Booked, report: Report, options: ChaosOptions
) -> None:
    """Where each appointment not settled at the deadline stands, service by service; the SMTP
    faults the seed draws for its confirmation; and each consumer group's lag then."""
    rows = await observe.appointments(proof.owner_dsn)
    answered = await expected(proof, booked)
    unsettled = sorted(
        a for a in answered.ids if a not in rows or rows[a]["status"] not in observe.TERMINAL
    )
    letters = await observe.dead_letters(proof)
    where = await whereabouts(proof.owner_dsn, unsettled, letters)
    shares = [(options.smtp_drop_share, "drop"), (options.smtp_fail_share, "451")]
    for appointment in unsettled:
        subject, operation = fault_subject(f"<{appointment}.r1.confirmation@visio-rdv.caf.fr>")
        fates = [
            pick(draw(options.seed, subject, operation, n), shares) or "ok"
            for n in range(1, _REPLAYED_TRIES + 1)
        ]
        where[appointment].append(
            f"sink: tries 1-{_REPLAYED_TRIES} of its confirmation meet {', '.join(fates)}"
            " (drawn from the seed)"
        )
    unanswered = {}
    for key, appointment_id in answered.by_key.items():
        if appointment_id is None:
            keyed = [x.id for x in letters if x.record.key and x.record.key.decode() == key]
            said = booked.http_refused.get(key, "no reply")
            unanswered[key] = f"{said}; dead-lettered: {', '.join(keyed)}" if keyed else said
    report.details["unsettled"] = dict(list(where.items())[:_SHOWN])
    report.details["unanswered requests"] = dict(list(unanswered.items())[:_SHOWN])
    report.figures["unsettled: nowhere"] = sum(
        1 for lines in where.values() if any(line.startswith("nowhere") for line in lines)
    )
    settings = ServiceSettings(
        kafka_bootstrap_servers=proof.bootstrap, topic_prefix=proof.settings.topic_prefix
    )
    lag = await lag_report(settings, groups(proof.settings.topic_prefix, LOCAL_PARTNERS))
    report.details["consumer lag at the deadline"] = {
        f"{row.group} {row.topic}/{row.partition}": row.lag for row in lag if row.lag
    }
    # Every one of them, beside the report, when there are more than it shows.
    if len(where) > _SHOWN:
        full = proof.var / "unsettled.txt"
        full.write_text("\n".join(f"{a}: {' | '.join(lines)}" for a, lines in where.items()) + "\n")
        report.notes.append(f"{len(where)} unsettled appointments: all in {full.name}")


def sink_faults(log: Path) -> dict[str, int]:
    text = log.read_text(errors="replace") if log.exists() else ""
    return {"451": text.count("fault: answered 451"), "dropped": text.count("fault: dropped")}
