"""Commands for people, reached through `visio-rdv consent …`."""

from __future__ import annotations

import argparse
import asyncio
import sys
from collections.abc import Sequence

import asyncpg

from visio_consent.ledger import SCHEMA, VerifyReport, verify
from visio_consent.settings import ConsentSettings

EXIT_OK, EXIT_BROKEN, EXIT_UNREACHABLE = 0, 1, 2


def verify_main(argv: Sequence[str] | None = None) -> int:
    """`visio-rdv consent verify [--dsn DSN] [--json]`: walk the ledger's hash chain.

    Returns the exit status: 0 when the chain verifies, 1 when a link is broken (the report
    names the first one), 2 when the database cannot be read.
    """
    parser = argparse.ArgumentParser(
        prog="visio-rdv consent verify",
        description="Walk the consent ledger from genesis and report the first broken link.",
    )
    parser.add_argument(
        "--dsn",
        help="PostgreSQL connection string (default: CONSENT_DATABASE_URL, else the service's)",
    )
    parser.add_argument("--json", action="store_true", help="print the report as JSON")
    args = parser.parse_args(argv)
    dsn = args.dsn or ConsentSettings().database_url.get_secret_value()
    try:
        report = asyncio.run(_verify(dsn))
    except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
        print(f"cannot read the consent ledger: {type(exc).__name__}: {exc}", file=sys.stderr)
        return EXIT_UNREACHABLE
    print(report.model_dump_json(indent=2) if args.json else report.describe())
    return EXIT_OK if report.ok else EXIT_BROKEN


async def _verify(dsn: str) -> VerifyReport:
    conn = await asyncpg.connect(dsn, server_settings={"search_path": SCHEMA.schema})
    try:
        return await verify(conn)
    finally:
        await conn.close()


if __name__ == "__main__":
    sys.exit(verify_main())
