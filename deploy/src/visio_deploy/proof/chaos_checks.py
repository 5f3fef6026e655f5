"""What the chaos run checks once the system settles: nothing lost, each appointment as the run
left it (`verdict`), the ledger verifying, no unexpected dead letter, every person emailed within
the promise — and, when it times
out, where each appointment not settled stands (`visio_deploy.ops.whereabouts`), with the SMTP
faults the seed draws for its confirmation and the consumers' lag at the deadline."""

from __future__ import annotations

import statistics
from collections import Counter
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from visio_fakes.fault_draws import draw, pick
from visio_fakes.smtp_sink import fault_subject
from visio_runtime.settings import ServiceSettings

from visio_deploy.ops.topics import lag_report
from visio_deploy.ops.topology import groups
from visio_deploy.ops.whereabouts import whereabouts
from visio_deploy.proof import bookings, observe, verdict
from visio_deploy.proof.partners import ReplyReader
from visio_deploy.proof.report import Report
from visio_deploy.proof.stack import ProofStack
from visio_deploy.proof.story import Story
from visio_deploy.stack import LOCAL_PARTNERS

if TYPE_CHECKING:
    from visio_deploy.proof.chaos import ChaosOptions

# The check that waiting cannot mend: once someone waited too long, they did.
PROMISE = "every confirmation within the promise"
# How many tries of an unsettled appointment's confirmation the report replays from the seed.
_REPLAYED_TRIES = 8
_SHOWN = 50  # unsettled appointments detailed in the report (all of them in the evidence)


def settled(report: Report) -> bool:
    """Every check holds but, perhaps, the promise: a wait too long cannot be waited away."""
    return all(name == PROMISE for name in report.failures)


async def check(
    proof: ProofStack, stories: list[Story], replies: ReplyReader, options: ChaosOptions
) -> Report:
    report = Report("chaos")
    # A Kafka booking whose reply never reached the partner fails the replies check (read from
    # the partner's topic); its appointment, taken from what booking recorded, is still judged
    # on everything else — else a lost reply would hide whatever else went wrong with it.
    answered = await observe.kafka_appointments(proof.owner_dsn, bookings.KAFKA_OWNER)
    recovered = [s for s in stories if s.appointment_id is None and s.plan.key in answered]
    for story in recovered:
        story.appointment_id = answered[story.plan.key]
    report.figures["appointments known only from booking's records (reply not read)"] = len(
        recovered
    )
    rows = await observe.appointments(proof.owner_dsn)
    ids = {s.appointment_id for s in stories if s.appointment_id is not None}
    statuses = Counter(rows[a]["status"] if a in rows else "missing" for a in ids)
    unanswered = [s.plan.key for s in stories if s.appointment_id is None]
    not_terminal = [a for a in ids if a not in rows or rows[a]["status"] not in observe.TERMINAL]
    failed_without_reason = [
        a
        for a in ids
        if a in rows and "failed" in rows[a]["status"] and not rows[a]["status_reason"]
    ]
    events = proof.emulator("GET", "/events")["value"]
    meetings = {
        m["meeting"]["id"]: m["meeting"] for m in proof.emulator("GET", "/online-meetings")["value"]
    }
    live = Counter(e["external_id"] for e in events if not e["is_deleted"])
    found = observe.mails(proof.var / "mail")
    emails = observe.email_figures(found)
    verdict_ = observe.consent_verify(proof)
    letters = await observe.dead_letters(proof)

    report.figures["statuses"] = dict(statuses)
    report.zero("lost (no answer or not settled)", len(unanswered) + len(not_terminal))
    report.zero("failed without a reason", len(failed_without_reason))
    report.zero("appointments that are not ours", len(set(rows) - ids))
    report.zero("meetings of unknown appointments", len(set(live) - ids))
    seen = verdict.Seen(
        statuses={a: row["status"] for a, row in rows.items()},
        events=events,
        meetings=meetings,
        mails=found,
        ledger=await verdict.ledger_kinds(proof.owner_dsn),
    )
    verdict.judge(report, stories, seen, replies, min(options.reminder_offsets_minutes))
    report.figures["emails in the sink"] = len(found)
    report.figures["resends with the same Message-ID"] = emails.resends_same_message_id
    report.holds("ledger verifies", bool(verdict_.get("ok")) and verdict_["exit_status"] == 0)
    report.figures["ledger records"] = verdict_.get("count")
    report.zero("unexpected dead letters", len(letters))
    _waits(report, rows, ids, found, options.email_within_s)
    report.details = {
        "unanswered": {
            s.plan.key: s.stopped or s.refused_why for s in stories if s.appointment_id is None
        }
        if unanswered
        else {},
        "not_terminal": {
            a: rows[a]["status"] if a in rows else "missing" for a in not_terminal[:20]
        },
        "dead_letters": [
            {"id": x.id, "event_type": x.event_type, "reason": x.reason[:300]} for x in letters[:20]
        ],
        "ledger": {k: v for k, v in verdict_.items() if k != "output"}
        | {"output": str(verdict_.get("output", ""))[:500]},
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
    proof: ProofStack, stories: list[Story], report: Report, options: ChaosOptions
) -> None:
    """Where each appointment not settled at the deadline stands, service by service; the SMTP
    faults the seed draws for its confirmation; and each consumer group's lag then."""
    rows = await observe.appointments(proof.owner_dsn)
    ids = {s.appointment_id for s in stories if s.appointment_id is not None}
    unsettled = sorted(a for a in ids if a not in rows or rows[a]["status"] not in observe.TERMINAL)
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
    for one in stories:
        if one.appointment_id is None:
            key = one.plan.key
            keyed = [x.id for x in letters if x.record.key and x.record.key.decode() == key]
            said = one.stopped or one.refused_why or "no reply"
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
