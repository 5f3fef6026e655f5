"""`visio-rdv ops …`: the subcommands and how they print. Settings come from `VISIO_*` (the same
Kafka settings as the services: VISIO_KAFKA_BOOTSTRAP_SERVERS, VISIO_KAFKA_SECURITY_PROTOCOL,
VISIO_KAFKA_SASL_*, VISIO_KAFKA_SSL_CAFILE; VISIO_TOPIC_PREFIX; VISIO_DATABASE_URL), and what
they leave unset from the stack `visio-rdv up` runs in this checkout."""

from __future__ import annotations

import argparse
import asyncio
import getpass
import logging
import sys
import uuid
from collections.abc import Callable, Coroutine, Sequence
from pathlib import Path
from typing import Any

import asyncpg
from aiokafka.errors import KafkaConnectionError
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
from visio_deploy.ops.settings import OpsSettings, ops_settings
from visio_deploy.ops.topology import groups, partners_on


def register(subparsers: Any) -> None:
    ops = subparsers.add_parser("ops", help="operations: topics, lag, dead letters, purge, alerts")
    commands = ops.add_subparsers(dest="ops_command", required=True)

    cmd = commands.add_parser("topics", help="each topic: partitions, end offsets, message rate")
    cmd.add_argument("--sample", type=float, default=2.0, help="seconds to measure the rate over")
    cmd.set_defaults(handler=_run(_topics))

    cmd = commands.add_parser("lag", help="consumer lag per group and partition")
    cmd.add_argument(
        "--group",
        nargs=2,
        action="append",
        metavar=("GROUP", "TOPIC"),
        help="a group and a topic it reads, instead of the system's own groups (repeatable)",
    )
    cmd.add_argument("--all", action="store_true", help="also the partitions with no lag")
    cmd.add_argument(
        "--serve-metrics",
        metavar="[HOST:]PORT",
        help="keep running and export the lag on http://HOST:PORT/metrics for Prometheus, "
        "measured from outside the consumers (a dead consumer shows as growing lag)",
    )
    cmd.add_argument(
        "--interval",
        type=float,
        default=15.0,
        help="with --serve-metrics: seconds between two measurements (default 15)",
    )
    cmd.set_defaults(handler=_run(_lag))

    letters = commands.add_parser("dlq", help="dead letters").add_subparsers(
        dest="dlq_command", required=True
    )
    cmd = letters.add_parser("list", help="every dead letter, with its reason")
    cmd.add_argument("--service", help="only this service's dead-letter topic")
    cmd.set_defaults(handler=_run(_dlq_list))
    cmd = letters.add_parser("show", help="one dead letter, decoded")
    cmd.add_argument("letter", help="<dlq topic>/<partition>/<offset>, as `dlq list` shows it")
    cmd.set_defaults(handler=_run(_dlq_show))
    cmd = letters.add_parser("replay", help="back to the source topic, once")
    cmd.add_argument("--letter", action="append", help="one letter by id (repeatable)")
    cmd.add_argument("--service", help="letters of this service's dead-letter topic")
    cmd.add_argument("--event-type", help="letters of this event type (AppointmentRequested…)")
    cmd.add_argument("--error-class", help="letters of this error class, as `dlq list` shows it")
    cmd.add_argument("--source-topic", help="letters that came from this topic")
    cmd.add_argument("--all", action="store_true", help="every letter not replayed yet")
    cmd.add_argument(
        "--dry-run", action="store_true", help="say what would be replayed, replay nothing"
    )
    cmd.set_defaults(handler=_run(_dlq_replay))

    cmd = commands.add_parser("tail", help="the last messages of a topic, decoded")
    cmd.add_argument("topic", help="a topic, or a stream's short name (appointments, meetings…)")
    cmd.add_argument("--last", type=int, default=10, help="per partition")
    cmd.add_argument("--follow", "-f", action="store_true", help="keep printing what comes")
    cmd.set_defaults(handler=_run(_tail))

    cmd = commands.add_parser(
        "produce",
        help="write one record to a topic: key, headers, value from a file or stdin",
        description=PRODUCE_DESCRIPTION,
        epilog=PRODUCE_EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    cmd.add_argument(
        "topic",
        help="a topic, or a stream's short name (booking-requests.national-scheduler…); it "
        "must exist",
    )
    cmd.add_argument(
        "--key", "-k", help="the record's key: an appointment's id keeps its events in order"
    )
    cmd.add_argument(
        "--header",
        "-H",
        action="append",
        metavar="NAME=VALUE",
        help="a header, e.g. request_id=sched-2026-000451 (repeatable)",
    )
    cmd.add_argument(
        "--file", type=Path, help="read the value from this file (default, or '-': stdin)"
    )
    cmd.add_argument("--partition", "-p", type=int, help="this partition, not the key's")
    cmd.add_argument(
        "--raw",
        action="store_true",
        help="send the value as it is, even if it is not JSON (to see a consumer dead-letter it)",
    )
    cmd.set_defaults(handler=_run(_produce))

    cmd = commands.add_parser("appointments", help="stuck or failed appointments, with why")
    which = cmd.add_mutually_exclusive_group(required=True)
    which.add_argument(
        "--stuck", action="store_true", help="a person still waiting for an email past a threshold"
    )
    which.add_argument("--failed", action="store_true", help="meeting or email failed for good")
    cmd.add_argument(
        "--after-minutes", type=float, help="the threshold (VISIO_EMAIL_LATE_AFTER_MINUTES)"
    )
    # Kafka too: --stuck says which dead letters carry a waiting appointment.
    cmd.set_defaults(handler=_run(_appointments, uses=("database", "kafka")))

    cmd = commands.add_parser("purge", help="remove personal data past its retention period")
    cmd.add_argument("--dry-run", action="store_true", help="count, remove nothing")
    cmd.set_defaults(handler=_run(_purge, uses=("database", "kafka", "mail")))

    cmd = commands.add_parser(
        "acls",
        help="the Kafka ACLs of every process and partner, as kafka-acls invocations, made from "
        "the AsyncAPI document (partners: VISIO_KAFKA_PARTNERS or BOOKING_PARTNERS)",
    )
    cmd.add_argument("--bootstrap-server", default="kafka:9093", help="the brokers' SASL_SSL port")
    cmd.add_argument(
        "--command-config",
        default="/etc/kafka/admin.properties",
        help="the admin principal's client properties, as kafka-acls reads them",
    )
    cmd.add_argument(
        "--partner",
        action="append",
        help="a partner system (repeatable); replaces the settings' list",
    )
    cmd.set_defaults(handler=_acls)

    erasures = commands.add_parser(
        "erasure", help="erase a person's data in every service; who has confirmed"
    ).add_subparsers(dest="erasure_command", required=True, metavar="{request,status}")
    cmd = erasures.add_parser(
        "request", help="erase the person of an address (or of one appointment) everywhere"
    )
    target = cmd.add_mutually_exclusive_group(required=True)
    target.add_argument("--email", help="the person's address: all their appointments")
    target.add_argument("--appointment", type=uuid.UUID, help="or one appointment's id")
    cmd.add_argument(
        "--reason", required=True, help="why (the request, a decision…), without their details"
    )
    cmd.add_argument(
        "--operator",
        default=getpass.getuser(),
        help="who asks (default: your login), kept with the request",
    )
    cmd.set_defaults(handler=_run(_erasure_request, uses=("database",)))
    cmd = erasures.add_parser("status", help="which services have confirmed an erasure")
    cmd.add_argument("erasure_id", type=uuid.UUID, help="the id `ops erasure request` printed")
    cmd.set_defaults(handler=_run(_erasure_status, uses=("database",)))

    cmd = commands.add_parser(
        "heal",
        help="replay the dead letters an outage caused once the dependency answers again "
        "(bounded: VISIO_HEAL_*)",
    )
    cmd.add_argument("--once", action="store_true", help="one round, then exit")
    cmd.set_defaults(handler=_run(_heal))

    cmd = commands.add_parser(
        "alerts", help="run the alerts service (as visio-rdv-alerts does; group visio-rdv.alerts)"
    )
    cmd.set_defaults(handler=_alerts)

    cmd = commands.add_parser(
        "check-monitoring",
        help="do the alert rules and the dashboard name only metrics the running stack exports?",
    )
    cmd.set_defaults(handler=_check_monitoring)


PRODUCE_DESCRIPTION = """\
Write one record to a topic, as kcat -P does on Apache Kafka, on any broker the system runs on
(the embedded tansu included, which kcat cannot talk to). The value is read whole, as one
record, from --file or stdin, without its last line end; it must be JSON unless --raw. The topic
must exist: the broker could create a misspelt one silently. Prints where the record landed:
topic [partition] @offset, as `visio-rdv ops tail` shows it."""

PRODUCE_EXAMPLES = """\
examples:
  # a partner's cancellation, as the national scheduler emits it on its own topic
  visio-rdv ops produce booking-requests.national-scheduler \
      --key 5712816e-11e1-430e-ba78-9d51167f37f8 <<'EOF'
  {"request_id": "sched-2026-000451", "request_type": "CancelAppointment",
   "appointment_id": "5712816e-11e1-430e-ba78-9d51167f37f8",
   "payload": {"reason": "administrative"}}
  EOF
  visio-rdv ops tail booking-replies.national-scheduler --last 1

  # an event from a file, with its headers
  visio-rdv ops produce appointments --file event.json --key <appointment id> \\
      -H event_type=AppointmentCancelled -H event_id=<uuid> -H correlation_id=<uuid>"""

Command = Callable[[argparse.Namespace, OpsSettings], Coroutine[Any, Any, int]]
# A broker or a database that does not answer, or a database that is not there.
UNREACHABLE = (KafkaConnectionError, OSError, asyncpg.PostgresError, asyncpg.InterfaceError)


def _run(command: Command, uses: Sequence[str] = ("kafka",)) -> Callable[[argparse.Namespace], int]:
    """The command's handler: settings from the environment and the running stack (which it
    names on stderr, with the parts it `uses`), then the command."""

    def handler(args: argparse.Namespace) -> int:
        try:
            return asyncio.run(command(args, ops_settings(uses)))
        except KeyboardInterrupt:
            return 130
        except UNREACHABLE as exc:
            # The line above it said where it looked; a traceback would add nothing.
            print(f"visio-rdv ops: cannot reach it: {type(exc).__name__}: {exc}", file=sys.stderr)
            return 2

    return handler


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
        return await asyncio.wait_for(dlq.letters(settings), timeout=30)
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
