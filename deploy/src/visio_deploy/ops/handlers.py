"""What each `visio-rdv ops …` subcommand does and how it prints (the parser is
`visio_deploy.ops.commands`)."""

from __future__ import annotations

import argparse
import asyncio
import logging
import sys
from collections.abc import Callable, Sequence
from pathlib import Path

from visio_booking.erasure import NothingToErase
from visio_runtime.topic_reader import topic_partitions
from visio_shared import Topics

from visio_deploy.ops import (
    appointments,
    dlq,
    erasure,
    lag_exporter,
    produce,
    purge,
    tail,
    topics,
)
from visio_deploy.ops.reading import describe
from visio_deploy.ops.settings import OpsSettings
from visio_deploy.ops.topology import groups, partners_on


def table(rows: Sequence[Sequence[object]], headers: Sequence[str]) -> str:
    cells = [[str(cell) for cell in row] for row in [headers, *rows]]
    widths = [max(len(row[i]) for row in cells) for i in range(len(headers))]
    return "\n".join(
        "  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip()
        for row in cells
    )


async def _topics(args: argparse.Namespace, settings: OpsSettings) -> int:
    rows = await topics.topics_report(settings, args.sample)
    print(
        table(
            [
                (
                    row.topic,
                    row.partitions,
                    row.messages,
                    " ".join(f"{p}:{o}" for p, o in sorted(row.end_offsets.items())),
                    "-" if row.rate is None else f"{row.rate:.1f}",
                    "" if row.declared else "UNDECLARED",
                )
                for row in rows
            ],
            ("topic", "partitions", "messages", "end offsets", "msg/s", ""),
        )
    )
    return 0


async def _lag(args: argparse.Namespace, settings: OpsSettings) -> int:
    wanted: dict[str, list[str]] = {}
    for group, topic in args.group or ():
        wanted.setdefault(group, []).append(topic)
    if not wanted:
        # Booking reads each partner's topic: the partners are the broker's to tell.
        partners = partners_on(settings.topic_prefix, await topic_partitions(settings))
        wanted = groups(settings.topic_prefix, partners)
    if args.serve_metrics:
        return await lag_exporter.serve(settings, wanted, args.serve_metrics, args.interval)
    rows = await topics.lag_report(settings, wanted)
    shown = [r for r in rows if args.all or r.lag > 0]
    print(
        table(
            [
                (
                    r.group,
                    r.topic,
                    r.partition,
                    "-" if r.committed is None else r.committed,
                    r.end,
                    r.lag,
                )
                for r in shown
            ],
            ("group", "topic", "partition", "committed", "end", "lag"),
        )
    )
    totals: dict[str, int] = {}
    for row in rows:
        totals[row.group] = totals.get(row.group, 0) + row.lag
    for group, lag in totals.items():
        print(f"{group}: lag {lag}")
    return 0


async def _dlq_list(args: argparse.Namespace, settings: OpsSettings) -> int:
    found = await dlq.letters(settings, args.service)
    done = await dlq.replayed(settings)
    print(
        table(
            [
                (
                    letter.id,
                    letter.event_type,
                    f"{letter.source_topic}/{letter.header('dlq.source_partition')}"
                    f"/{letter.header('dlq.source_offset')}",
                    letter.error_class,
                    letter.header("dlq.attempts"),
                    letter.header("dlq.dead_lettered_at")[:19],
                    "yes" if letter.id in done else "",
                    letter.reason[:100],
                )
                for letter in found
            ],
            ("letter", "event", "source", "error", "tries", "dead-lettered", "replayed", "why"),
        )
    )
    return 0


async def _dlq_show(args: argparse.Namespace, settings: OpsSettings) -> int:
    letter = await dlq.find(settings, args.letter)
    if letter is None:
        print(f"no dead letter {args.letter}")
        return 1
    replay = (await dlq.replayed(settings)).get(letter.id)
    print(f"reason: {letter.reason}")
    print(f"replayed: {replay or 'no'}")
    print(describe(letter.record))
    return 0


async def _dlq_replay(args: argparse.Namespace, settings: OpsSettings) -> int:
    dlq_topic = Topics(settings.topic_prefix).dlq(args.service) if args.service else None
    wanted: list[tuple[str | None, Callable[[dlq.Letter], str]]] = [
        (dlq_topic, lambda letter: letter.record.topic),
        (args.event_type, lambda letter: letter.event_type),
        (args.error_class, lambda letter: letter.error_class),
        (args.source_topic, lambda letter: letter.source_topic),
    ]
    if not (args.letter or args.all or any(value for value, _ in wanted)):
        print("say which: --letter ID, a filter (--service, --event-type, …), or --all")
        return 2

    def select(letter: dlq.Letter) -> bool:
        if args.letter and letter.id not in args.letter:
            return False
        return all(value is None or field(letter) == value for value, field in wanted)

    done, skipped = await dlq.replay(settings, select, dry_run=args.dry_run)
    for item in done:
        print(f"replayed {item.letter.id} ({item.letter.event_type}) -> {item.to}")
    for letter in skipped:
        why = "cut to fit on the broker, not replayable" if letter.truncated else "already replayed"
        print(f"{why}, skipped: {letter.id}")
    print(f"{len(done)} replayed, {len(skipped)} skipped")
    return 0


async def _tail(args: argparse.Namespace, settings: OpsSettings) -> int:
    def out(text: str) -> None:
        print(text, flush=True)

    if not await tail.tail(settings, args.topic, out, last=args.last, follow=args.follow):
        print(f"no topic {args.topic}")
        return 1
    return 0


async def _produce(args: argparse.Namespace, settings: OpsSettings) -> int:
    try:
        headers = produce.parse_headers(args.header)
        value = produce.check_value(_read_value(args.file), args.raw)
        written = await produce.produce(
            settings, args.topic, value, args.key, headers, args.partition
        )
    except produce.Refused as refused:
        print(f"visio-rdv ops produce: {refused}", file=sys.stderr)
        return 1
    key = "-" if args.key is None else args.key
    print(
        f"written: {written.topic} [{written.partition}] @{written.offset}  key={key}, "
        f"{len(headers)} header(s), {len(value)} bytes"
    )
    return 0


def _read_value(path: Path | None) -> bytes:
    if path is not None and str(path) != "-":
        try:
            return path.read_bytes()
        except OSError as exc:
            raise produce.Refused(f"cannot read {path}: {exc.strerror}") from exc
    if sys.stdin.isatty():
        print("reading the value from stdin; end it with Ctrl-D", file=sys.stderr)
    return sys.stdin.buffer.read()


async def _appointments(args: argparse.Namespace, settings: OpsSettings) -> int:
    owner = settings.database_url.get_secret_value()
    if args.stuck:
        minutes = args.after_minutes
        if minutes is None:
            minutes = settings.email_late_after_minutes
        found = await appointments.stuck(owner, minutes, await _letters_if_any(settings))
    else:
        found = await appointments.failed(owner)
    print(
        table(
            [
                (
                    a.appointment_id,
                    a.caf_code,
                    a.advisor,
                    f"{a.start_at:%Y-%m-%d %H:%M} UTC",
                    a.status,
                    f"{a.booked_at:%Y-%m-%d %H:%M}",
                    a.why,
                )
                for a in found
            ],
            ("appointment", "caf", "advisor", "start", "status", "booked", "why"),
        )
    )
    print(f"{len(found)} appointment(s)")
    return 0


async def _letters_if_any(settings: OpsSettings) -> list[dlq.Letter]:
    """The dead letters, for `--stuck` to say which carry a waiting appointment; without them
    (the broker away) the list still comes, and says so."""
    try:
        async with asyncio.timeout(30):
            return await dlq.letters(settings)
    except Exception as exc:
        print(f"(dead letters not read: {type(exc).__name__}; `ops dlq list` when Kafka answers)")
        return []


async def _purge(args: argparse.Namespace, settings: OpsSettings) -> int:
    verb = "would remove" if args.dry_run else "removed"
    for name, count in (await purge.purge_tables(settings, args.dry_run)).items():
        print(f"{name}: {verb} {count}")
    print(f"mail sink {settings.mail_dir}: {verb} {purge.purge_mail(settings, args.dry_run)}")
    for name, state in (await purge.check_topic_retention(settings, args.dry_run)).items():
        print(f"topic {name}: {state}")
    return 0


def _check_monitoring(_: argparse.Namespace) -> int:
    """Scrape every process of the stack `up` runs here, on its admin port, and hold every rule
    and dashboard panel to what the pages show (visio_deploy.monitoring)."""
    import httpx
    from visio_runtime.local_stack import find_local_stack

    from visio_deploy.monitoring import check_monitoring

    stack = find_local_stack().stack
    if stack is None or not stack.admin:
        print("no running stack with admin ports here: `uv run visio-rdv up` starts one")
        return 2
    with httpx.Client(timeout=10, trust_env=False) as client:
        pages = [client.get(f"{url}/metrics").text for url in stack.admin.values()]
    problems = check_monitoring(pages)
    for problem in problems:
        print(problem)
    print(f"{len(problems)} problem(s) in the rules and dashboards against {len(pages)} processes")
    return 1 if problems else 0


def _acls(args: argparse.Namespace) -> int:
    from visio_deploy.acls import AclSettings, render, system_acls

    settings = AclSettings()
    if args.partner is not None:
        settings = settings.model_copy(update={"kafka_partners": args.partner})
    print(render(system_acls(settings), args.bootstrap_server, args.command_config), end="")
    return 0


async def _erasure_request(args: argparse.Namespace, settings: OpsSettings) -> int:
    try:
        done = await erasure.request(
            settings,
            reason=args.reason,
            operator=args.operator,
            email=args.email,
            appointment_id=args.appointment,
        )
    except (NothingToErase, ValueError) as exc:
        print(f"visio-rdv ops erasure: {exc}", file=sys.stderr)
        return 1
    print(f"erasure {done.erasure_id}: {len(done.appointment_ids)} appointment(s)")
    for appointment_id in done.appointment_ids:
        print(f"  {appointment_id}")
    print(f"follow it with: visio-rdv ops erasure status {done.erasure_id}")
    return 0


async def _erasure_status(args: argparse.Namespace, settings: OpsSettings) -> int:
    found = await erasure.status(settings, args.erasure_id)
    if found is None:
        print(f"visio-rdv ops erasure: no erasure {args.erasure_id}", file=sys.stderr)
        return 1
    print("\n".join(erasure.describe(found)))
    return 0 if found.complete else 3


async def _heal(args: argparse.Namespace, settings: OpsSettings) -> int:
    from visio_deploy.ops import heal

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    return await heal.serve(settings, once=args.once)


def _alerts(_: argparse.Namespace) -> int:
    """Kept as an alias of the service's own `visio-rdv-alerts`."""
    from visio_alerts.main import main

    return main()
