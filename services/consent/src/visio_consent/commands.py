"""`visio-rdv consent …`: the ledger's commands for people (operators, auditors, the DPO).

They work on the stack `visio-rdv up` runs in this checkout (its database, checkpoint file and
broker) unless a flag or setting says otherwise, and say on stderr which one that is.

Exit statuses: 0 done / the ledger verifies; 1 the ledger does not verify (the report names the
first broken record and why: docs/consent-ledger.md) or nothing to do; 2 the database or the
broker cannot be reached.

Relative paths in settings (CONSENT_VAR_DIR, CONSENT_CHECKPOINT_FILE) are taken from the
checkout the running stack records, else the checkout around the working directory
(`visio_runtime.local_stack.path_base`): a command finds the same files from any directory.
A flag's path (`--checkpoints`) is the working directory's, as for any command.
"""

from __future__ import annotations

import argparse
import asyncio
import getpass
import os
import sys
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any

import asyncpg
from aiokafka.errors import KafkaError
from visio_runtime.api_key_commands import register_api_key_commands
from visio_runtime.kafka import ensure_topics, make_broker
from visio_runtime.local_stack import (
    Lookup,
    Part,
    announce,
    command_owner_url,
    database_part,
    fill_from_stack,
    find_local_stack,
    kafka_part,
    owner_database_url,
    owner_url_argument,
    path_base,
    setting_source,
    sources_of,
)
from visio_shared import Topics

from visio_consent.access import Asker, access_export
from visio_consent.audit import audit, verify_with_witnesses
from visio_consent.bench import run_bench
from visio_consent.checkpoints import Checkpointer, NotACheckpoint
from visio_consent.keys import API_KEYS
from visio_consent.ledger import SCHEMA, subject_ref
from visio_consent.rebuild import CannotRebuild, rebuild_from_events
from visio_consent.settings import ConsentSettings
from visio_consent.signing import load_signing_key, trusted_keys
from visio_consent.verify import VerifyReport
from visio_consent.witnesses import gather, requested_cafs

EXIT_OK, EXIT_BROKEN, EXIT_UNREACHABLE = 0, 1, 2
_UNREACHABLE = (
    OSError,
    asyncpg.PostgresError,
    asyncpg.InterfaceError,
    TimeoutError,
    KafkaError,
)


def register(subparsers: Any) -> None:
    consent = subparsers.add_parser(
        "consent",
        help="the consent ledger: verify, checkpoint, rebuild after a restore, right of access, "
        "API keys, bench",
    )
    commands = consent.add_subparsers(dest="consent_command", required=True)

    verify_cmd = commands.add_parser(
        "verify",
        help="walk the chain, check it against the signed checkpoints (file and topic) and the "
        "unsigned tail against its ConsentRecorded events",
    )
    _ledger_dsn_argument(verify_cmd)
    verify_cmd.add_argument("--json", action="store_true", help="print the report as JSON")
    verify_cmd.add_argument(
        "--checkpoints",
        type=Path,
        help="checkpoint file (default: CONSENT_CHECKPOINT_FILE, else var_dir's)",
    )
    verify_cmd.add_argument(
        "--no-topic",
        action="store_true",
        help="read the checkpoint file alone: no checkpoint topic, no ConsentRecorded "
        "cross-check (the report says so)",
    )
    # Reading the topic is the default now; the flag stays so that older scripts still run.
    verify_cmd.add_argument("--kafka", action="store_true", help=argparse.SUPPRESS)
    verify_cmd.set_defaults(handler=_verify)

    checkpoint = commands.add_parser(
        "checkpoint",
        help="sign a checkpoint of the verified head now, if it moved (file and topic)",
    )
    _ledger_dsn_argument(checkpoint)
    checkpoint.set_defaults(handler=_checkpoint)

    rebuild = commands.add_parser(
        "rebuild-from-events",
        help="after restoring a backup: put back the records appended since, from the "
        "ConsentRecorded events that carried them, if they all chain; then verify",
    )
    _ledger_dsn_argument(rebuild)
    rebuild.add_argument(
        "--checkpoints",
        type=Path,
        help="checkpoint file the rebuilt hashes must match (default: as for verify)",
    )
    rebuild.add_argument(
        "--dry-run", action="store_true", help="say what would be rebuilt; write nothing"
    )
    rebuild.set_defaults(handler=_rebuild)

    access = commands.add_parser("access", help="right of access: every record of one person")
    _ledger_dsn_argument(access)
    access.add_argument("--email", required=True, help="the person's email address")
    access.add_argument("--json", action="store_true", help="JSON instead of French text")
    access.add_argument(
        "--requested-by",
        default=getpass.getuser(),
        help="who asks, as the person will read it in their export (default: your login name); "
        "every export is recorded",
    )
    access.set_defaults(handler=_access)

    register_api_key_commands(commands, API_KEYS)

    bench = commands.add_parser(
        "bench", help="appends per second, on a scratch database that is dropped afterwards"
    )
    owner_url_argument(bench)
    bench.add_argument(
        "--records", type=int, default=20_000, help="records to append (default: %(default)s)"
    )
    bench.add_argument(
        "--batch", type=int, help="records per append (default: CONSENT_APPEND_BATCH_SIZE)"
    )
    bench.set_defaults(handler=_bench)


def _ledger_dsn_argument(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--dsn",
        help="PostgreSQL connection string (default: CONSENT_DATABASE_URL, else "
        "VISIO_DATABASE_URL or DATABASE_URL, else the stack `visio-rdv up` runs in this "
        "checkout, else the service's default)",
    )


@dataclass(frozen=True)
class _Ledger:
    """What a ledger command works on: consent's settings, with the running stack filling what
    the environment leaves unset (broker, topic prefix, the var/ of the checkpoint file and the
    development key), and the ledger's connection; with where each came from."""

    lookup: Lookup
    settings: ConsentSettings
    filled: frozenset[str]
    dsn: str
    dsn_source: str

    def announce(self, *, checkpoints: Path | None = None, kafka: bool = False) -> None:
        parts = [database_part(self.dsn, self.dsn_source, self.lookup)]
        if checkpoints is not None:
            parts.append(Part(f"checkpoints {checkpoints}", self._checkpoint_sources(checkpoints)))
        if kafka:
            parts.append(kafka_part(self.settings, self.filled))
        announce(self.lookup, parts)

    def _checkpoint_sources(self, path: Path) -> tuple[str, ...]:
        if path != self.settings.checkpoints_path:
            return ("--checkpoints",)
        if self.settings.checkpoint_file is not None:
            return (setting_source(self.settings, "checkpoint_file"),)
        return sources_of(self.settings, self.filled, "var_dir")


def _ledger(args: argparse.Namespace) -> _Ledger:
    lookup = find_local_stack()
    settings, filled = fill_from_stack(ConsentSettings(), lookup, var_dir="consent_var_dir")
    settings = settings.anchored(path_base(lookup))
    owner, source = owner_database_url(None, lookup)
    if args.dsn:
        dsn, source = str(args.dsn), "--dsn"
    elif "CONSENT_DATABASE_URL" in os.environ or owner is None:
        # Consent's own setting wins over an owner connection; else the service's default.
        dsn = settings.database_url.get_secret_value()
        source = setting_source(settings, "database_url")
    else:
        dsn = owner
    return _Ledger(lookup, settings, filled, dsn, source)


def _run(work: Callable[[asyncpg.Connection], Awaitable[int]], dsn: str) -> int:
    async def main() -> int:
        conn = await asyncpg.connect(dsn, server_settings={"search_path": SCHEMA.schema})
        try:
            return await work(conn)
        finally:
            await conn.close()

    try:
        return asyncio.run(main())
    except _UNREACHABLE as exc:
        print(f"consent: cannot reach what it needs: {type(exc).__name__}: {exc}", file=sys.stderr)
        return EXIT_UNREACHABLE


def _verify(args: argparse.Namespace) -> int:
    ledger = _ledger(args)
    settings = ledger.settings
    checkpoint_file = args.checkpoints.resolve() if args.checkpoints else settings.checkpoints_path
    read_topic = not args.no_topic
    ledger.announce(checkpoints=checkpoint_file, kafka=read_topic)
    trusted = trusted_keys(settings, load_signing_key(settings, create=False))

    async def work(conn: asyncpg.Connection) -> int:
        report = await verify_with_witnesses(
            conn, settings, trusted, checkpoint_file=checkpoint_file, read_topic=read_topic
        )
        _print_report(report, args.json)
        return EXIT_OK if report.ok else EXIT_BROKEN

    return _run(work, ledger.dsn)


def _print_report(report: VerifyReport, as_json: bool) -> None:
    print(report.model_dump_json(indent=2) if as_json else report.describe())


def _rebuild(args: argparse.Namespace) -> int:
    ledger = _ledger(args)
    settings = ledger.settings
    checkpoint_file = args.checkpoints.resolve() if args.checkpoints else settings.checkpoints_path
    ledger.announce(checkpoints=checkpoint_file, kafka=True)
    trusted = trusted_keys(settings, load_signing_key(settings, create=False))

    async def work(conn: asyncpg.Connection) -> int:
        try:
            witnesses = await gather(settings, checkpoint_file)
            cafs = await requested_cafs(settings)
            rebuilt = await rebuild_from_events(
                conn, witnesses, trusted, dry_run=args.dry_run, cafs=cafs
            )
        except (CannotRebuild, NotACheckpoint) as exc:
            print(f"consent rebuild-from-events: refused: {exc}", file=sys.stderr)
            return EXIT_BROKEN
        print(rebuilt.describe())
        if args.dry_run:
            return EXIT_OK
        report = await audit(
            conn,
            witnesses,
            trusted,
            max_unsigned_age=timedelta(seconds=settings.max_unsigned_age_s),
        )
        _print_report(report, as_json=False)
        return EXIT_OK if report.ok else EXIT_BROKEN

    return _run(work, ledger.dsn)


def _checkpoint(args: argparse.Namespace) -> int:
    ledger = _ledger(args)
    settings = ledger.settings
    ledger.announce(checkpoints=settings.checkpoints_path, kafka=True)
    topics = Topics(settings.topic_prefix)
    checkpointer = Checkpointer(settings, topics)

    async def work(conn: asyncpg.Connection) -> int:
        checkpointer.load_key()
        await ensure_topics(settings, [topics.consent_checkpoints])
        broker = make_broker(settings, client_id="visio-rdv-consent-checkpoint")
        await broker.start()
        try:
            outcome = await checkpointer.take(conn, broker)
        finally:
            await broker.stop()
        if not outcome.report.ok:
            _print_report(outcome.report, as_json=False)
            return EXIT_BROKEN
        if outcome.checkpoint is None:
            print("the ledger is empty: nothing to sign", file=sys.stderr)
            return EXIT_OK
        print(outcome.checkpoint.line())
        if outcome.signed:
            said = (
                f"signed seq {outcome.checkpoint.seq}; written to {settings.checkpoints_path} "
                f"and {topics.consent_checkpoints}"
            )
        else:
            said = (
                f"the head has not moved since the checkpoint of {outcome.checkpoint.signed_at}"
                f" (seq {outcome.checkpoint.seq}): nothing new signed"
            )
        print(said, file=sys.stderr)
        return EXIT_OK

    return _run(work, ledger.dsn)


def _access(args: argparse.Namespace) -> int:
    ledger = _ledger(args)
    ledger.announce()
    ref = subject_ref(ledger.settings.subject_key.get_secret_value(), args.email)

    async def work(conn: asyncpg.Connection) -> int:
        export = await access_export(conn, ref, Asker.command(args.requested_by))
        print(export.model_dump_json(indent=2) if args.json else export.text())
        return EXIT_OK

    return _run(work, ledger.dsn)


def _bench(args: argparse.Namespace) -> int:
    owner = command_owner_url(args.database_url, "visio-rdv consent bench")
    if owner is None:
        return EXIT_UNREACHABLE
    batch = args.batch or ConsentSettings().append_batch_size
    if args.records < 1 or batch < 1:
        print("consent bench: --records and --batch must be at least 1")
        return EXIT_BROKEN
    try:
        result = asyncio.run(run_bench(owner, args.records, batch))
    except _UNREACHABLE as exc:
        print(f"consent bench: {type(exc).__name__}: {exc}", file=sys.stderr)
        return EXIT_UNREACHABLE
    print(result.describe())
    return EXIT_OK if result.report.ok else EXIT_BROKEN


def main(argv: Sequence[str] | None = None) -> int:
    """`python -m visio_consent.commands …`: the same commands without the umbrella."""
    parser = argparse.ArgumentParser(prog="visio-rdv")
    register(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(argv)
    result: int = args.handler(args)
    return result


if __name__ == "__main__":
    sys.exit(main())
