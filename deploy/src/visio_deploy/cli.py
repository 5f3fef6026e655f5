"""`visio-rdv`: the command for people. It calls into the services' own modules rather than
re-implementing them: each package may have a `commands` module with
`register(subparsers) -> None`, whose subcommands set `handler(args) -> int | None`."""

from __future__ import annotations

import argparse
import asyncio
import importlib
import importlib.util
import os
import sys

from visio_deploy.migrate import migrate_all

# Packages whose `commands` module, when present, adds subcommands (`visio-rdv booking …`).
COMMAND_PACKAGES = (
    "visio_booking",
    "visio_meetings",
    "visio_notifications",
    "visio_consent",
    "visio_deploy.ops",
    "visio_deploy.proof",
    "visio_deploy.bench",
)


def owner_url_argument(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--database-url",
        default=os.environ.get("VISIO_DATABASE_URL") or os.environ.get("DATABASE_URL"),
        help="owner connection string (default: VISIO_DATABASE_URL or DATABASE_URL)",
    )


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="visio-rdv", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)
    up = commands.add_parser("up", help="run the whole system locally (embedded default)")
    up.set_defaults(handler=_up)
    migrate = commands.add_parser("migrate", help="apply every service's migrations")
    owner_url_argument(migrate)
    migrate.set_defaults(handler=_migrate)
    for package in COMMAND_PACKAGES:
        name = f"{package}.commands"
        if importlib.util.find_spec(package) and importlib.util.find_spec(name):
            importlib.import_module(name).register(commands)
    return parser


def main(argv: list[str] | None = None) -> None:
    args = build_parser().parse_args(argv)
    result = args.handler(args)
    sys.exit(result or 0)


def _up(_: argparse.Namespace) -> int:
    from visio_deploy.up import main_up

    return main_up()


def _migrate(args: argparse.Namespace) -> int:
    if not args.database_url:
        print("visio-rdv migrate: give --database-url or set VISIO_DATABASE_URL / DATABASE_URL")
        return 2
    applied = asyncio.run(migrate_all(args.database_url))
    for service, files in applied.items():
        print(f"{service}: {', '.join(files) if files else 'up to date'}")
    return 0
