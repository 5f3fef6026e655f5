"""`visio-rdv consent …`: the ledger's commands for people (operators, auditors, the DPO).

Exit statuses: 0 done / the chain verifies; 1 the chain is broken (the report names the first
broken record) or nothing to do; 2 the database or the broker cannot be reached.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path
from typing import Any

import asyncpg
from visio_runtime.kafka import ensure_topics, make_broker
from visio_shared import Topics

from visio_consent.access import access_export
from visio_consent.bench import run_bench
from visio_consent.checkpoints import Checkpointer, NotACheckpoint, read_file, read_topic
from visio_consent.keys import SCOPES, create_api_key
from visio_consent.ledger import SCHEMA, subject_ref
from visio_consent.settings import ConsentSettings
from visio_consent.signing import load_signing_key, trusted_keys
from visio_consent.verify import VerifyReport, unreadable_checkpoints, verify

EXIT_OK, EXIT_BROKEN, EXIT_UNREACHABLE = 0, 1, 2
_UNREACHABLE = (OSError, asyncpg.PostgresError, asyncpg.InterfaceError, TimeoutError)


def register(subparsers: Any) -> None:
    consent = subparsers.add_parser(
        "consent", help="the consent ledger: verify, checkpoint, right of access, API keys, bench"
    )
    commands = consent.add_subparsers(dest="consent_command", required=True)

    verify_cmd = commands.add_parser(
        "verify", help="walk the chain, check it against the signed checkpoints"
    )
    _ledger_dsn_argument(verify_cmd)
    verify_cmd.add_argument("--json", action="store_true", help="print the report as JSON")
    verify_cmd.add_argument(
        "--checkpoints", type=Path, help="checkpoint file (default: CONSENT_CHECKPOINT_FILE)"
    )
    verify_cmd.add_argument(
        "--kafka", action="store_true", help="also check the checkpoints on the checkpoint topic"
    )
    verify_cmd.set_defaults(handler=_verify)

    checkpoint = commands.add_parser(
        "checkpoint", help="sign a checkpoint of the verified head now (file and topic)"
    )
    _ledger_dsn_argument(checkpoint)
    checkpoint.set_defaults(handler=_checkpoint)

    access = commands.add_parser("access", help="right of access: every record of one person")
    _ledger_dsn_argument(access)
    access.add_argument("--email", required=True, help="the person's email address")
    access.add_argument("--json", action="store_true", help="JSON instead of French text")
    access.set_defaults(handler=_access)

    api_key = commands.add_parser("api-key", help="API keys of consent's HTTP API")
    api_key_commands = api_key.add_subparsers(dest="api_key_command", required=True)
    create = api_key_commands.add_parser("create", help="create a key; it is printed once")
    _owner_dsn_argument(create)
    create.add_argument("--name", required=True, help="the calling system, e.g. caf.fr")
    create.add_argument(
        "--scope", action="append", required=True, choices=SCOPES, help="repeat for several"
    )
    create.set_defaults(handler=_create_api_key)

    bench = commands.add_parser(
        "bench", help="appends per second, on a scratch database that is dropped afterwards"
    )
    _owner_dsn_argument(bench)
    bench.add_argument("--records", type=int, default=20_000)
    bench.add_argument(
        "--batch", type=int, help="records per append (default: CONSENT_APPEND_BATCH_SIZE)"
    )
    bench.set_defaults(handler=_bench)


def _ledger_dsn_argument(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--dsn",
        help="PostgreSQL connection string (default: CONSENT_DATABASE_URL, else "
        "VISIO_DATABASE_URL or DATABASE_URL, else the service's default)",
    )


def _owner_dsn_argument(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--database-url",
        default=os.environ.get("VISIO_DATABASE_URL") or os.environ.get("DATABASE_URL"),
        help="owner connection string (default: VISIO_DATABASE_URL or DATABASE_URL)",
    )


def _ledger_dsn(args: argparse.Namespace, settings: ConsentSettings) -> str:
    if args.dsn:
        return str(args.dsn)
    if "CONSENT_DATABASE_URL" not in os.environ:
        owner = os.environ.get("VISIO_DATABASE_URL") or os.environ.get("DATABASE_URL")
        if owner:
            return owner
    return settings.database_url.get_secret_value()


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
    settings = ConsentSettings()
    trusted = trusted_keys(settings, load_signing_key(settings, create=False))
    topic = Topics(settings.topic_prefix).consent_checkpoints

    async def work(conn: asyncpg.Connection) -> int:
        try:
            checkpoints = read_file(args.checkpoints or settings.checkpoints_path)
            if args.kafka:
                checkpoints += await read_topic(settings, topic)
        except NotACheckpoint as exc:
            report = unreadable_checkpoints(str(exc))
        else:
            report = await verify(conn, checkpoints, trusted)
        _print_report(report, args.json)
        return EXIT_OK if report.ok else EXIT_BROKEN

    return _run(work, _ledger_dsn(args, settings))


def _print_report(report: VerifyReport, as_json: bool) -> None:
    print(report.model_dump_json(indent=2) if as_json else report.describe())


def _checkpoint(args: argparse.Namespace) -> int:
    settings = ConsentSettings()
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
        if outcome.checkpoint is None:
            _print_report(outcome.report, as_json=False)
            return EXIT_BROKEN
        print(outcome.checkpoint.line())
        print(
            f"signed seq {outcome.checkpoint.seq}; written to {settings.checkpoints_path} and "
            f"{topics.consent_checkpoints}",
            file=sys.stderr,
        )
        return EXIT_OK

    return _run(work, _ledger_dsn(args, settings))


def _access(args: argparse.Namespace) -> int:
    settings = ConsentSettings()
    ref = subject_ref(settings.subject_key.get_secret_value(), args.email)

    async def work(conn: asyncpg.Connection) -> int:
        export = await access_export(conn, ref)
        print(export.model_dump_json(indent=2) if args.json else export.text())
        return EXIT_OK

    return _run(work, _ledger_dsn(args, settings))


def _create_api_key(args: argparse.Namespace) -> int:
    if not args.database_url:
        print("consent api-key create: give --database-url or set VISIO_DATABASE_URL")
        return EXIT_UNREACHABLE

    async def work(conn: asyncpg.Connection) -> int:
        key = await create_api_key(conn, args.name, args.scope)
        print(key)
        print(
            f"API key for {args.name} ({', '.join(sorted(set(args.scope)))}): shown once, "
            "stored only as its SHA-256",
            file=sys.stderr,
        )
        return EXIT_OK

    return _run(work, args.database_url)


def _bench(args: argparse.Namespace) -> int:
    if not args.database_url:
        print("consent bench: give --database-url or set VISIO_DATABASE_URL / DATABASE_URL")
        return EXIT_UNREACHABLE
    batch = args.batch or ConsentSettings().append_batch_size
    if args.records < 1 or batch < 1:
        print("consent bench: --records and --batch must be at least 1")
        return EXIT_BROKEN
    try:
        result = asyncio.run(run_bench(args.database_url, args.records, batch))
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
