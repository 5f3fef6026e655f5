"""`visio-rdv`: the command for people (up, migrate, …); it calls into the services' modules."""

from __future__ import annotations

import argparse
import asyncio
import os
import sys

from visio_deploy.migrate import migrate_all


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="visio-rdv", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)
    commands.add_parser("up", help="run the whole system locally (embedded default)")
    migrate = commands.add_parser("migrate", help="apply every service's migrations")
    migrate.add_argument(
        "--database-url",
        default=os.environ.get("VISIO_DATABASE_URL") or os.environ.get("DATABASE_URL"),
        help="owner connection string (default: VISIO_DATABASE_URL or DATABASE_URL)",
    )
    args = parser.parse_args(argv)

    if args.command == "up":
        from visio_deploy.up import main_up

        sys.exit(main_up())
    if args.command == "migrate":
        if not args.database_url:
            parser.error("give --database-url or set VISIO_DATABASE_URL / DATABASE_URL")
        applied = asyncio.run(migrate_all(args.database_url))
        for service, files in applied.items():
            print(f"{service}: {', '.join(files) if files else 'up to date'}")
