"""`visio-rdv ops …`: the subcommands and how they print. Settings come from `VISIO_*` (the same
Kafka settings as the services: VISIO_KAFKA_BOOTSTRAP_SERVERS, VISIO_KAFKA_SECURITY_PROTOCOL,
VISIO_KAFKA_SASL_*, VISIO_KAFKA_SSL_CAFILE; VISIO_TOPIC_PREFIX; VISIO_DATABASE_URL), and what
they leave unset from the stack `visio-rdv up` runs in this checkout."""

from __future__ import annotations

import argparse
import asyncio
import getpass
import sys
import uuid
from collections.abc import Callable, Coroutine, Sequence
from pathlib import Path
from typing import Any

import asyncpg
from aiokafka.errors import KafkaConnectionError

from visio_deploy.ops.handlers import (
    _acls,
    _alerts,
    _appointments,
    _check_monitoring,
    _dlq_list,
    _dlq_replay,
    _dlq_show,
    _erasure_request,
    _erasure_status,
    _heal,
    _lag,
    _produce,
    _purge,
    _tail,
    _topics,
)
from visio_deploy.ops.settings import OpsSettings, ops_settings


def register(subparsers: Any) -> None:
    ops = subparsers.add_parser("ops", help="operations: topics, lag, dead letters, purge, alerts")
    commands = ops.add_subparsers(dest="ops_command", required=True)
    _add_kafka_commands(commands)
    _add_produce(commands)
    _add_data_commands(commands)
    _add_checks(commands)


def _add_kafka_commands(commands: Any) -> None:
    """topics, lag, dead letters, tail: what the broker holds."""
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


def _add_produce(commands: Any) -> None:
    """`ops produce`: one record onto a topic."""
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


def _add_data_commands(commands: Any) -> None:
    """appointments, purge, ACLs, erasures: what the databases hold."""
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


def _add_checks(commands: Any) -> None:
    """heal, alerts, the monitoring's check."""
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
