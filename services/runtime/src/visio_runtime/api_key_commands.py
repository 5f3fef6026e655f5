"""`visio-rdv <service> api-key create|list|revoke`: one set of commands for every service with
an API (booking, consent), over its `ApiKeys`. They need an owner connection (a service may only
read its keys): `--database-url`, VISIO_DATABASE_URL or DATABASE_URL, else the stack
`visio-rdv up` runs in this checkout.

Exit statuses: 0 done; 1 nothing to revoke; 2 a refused argument or no database/schema."""

from __future__ import annotations

import argparse
import asyncio
import sys
from collections.abc import Awaitable, Callable
from typing import Any

import asyncpg

from visio_runtime.api_keys import ApiKeys
from visio_runtime.local_stack import command_owner_url, owner_url_argument


def register_api_key_commands(service_commands: Any, keys: ApiKeys) -> None:
    """Add `api-key create|list|revoke` under a service's subcommands."""
    parser = service_commands.add_parser(
        "api-key", help=f"create, list or revoke the API keys of {keys.service}'s callers"
    )
    actions = parser.add_subparsers(dest="api_key_command", required=True)

    create = actions.add_parser("create", help="create a key and print it (once)")
    create.add_argument("--name", required=True, help="the calling system, e.g. caf-portal")
    create.add_argument(
        "--scope",
        dest="scopes",
        action="append",
        required=True,
        choices=keys.scopes,
        help="repeat for several scopes",
    )
    owner_url_argument(create)
    create.set_defaults(handler=lambda args: _with_owner(args, keys, _create))

    listing = actions.add_parser("list", help="every key: id, name, scopes, state (no secrets)")
    owner_url_argument(listing)
    listing.set_defaults(handler=lambda args: _with_owner(args, keys, _list))

    revoke = actions.add_parser("revoke", help="revoke a caller's keys, at once")
    revoke.add_argument("--name", required=True, help="the calling system")
    revoke.add_argument("--id", dest="key_id", type=int, help="only this key (see list)")
    owner_url_argument(revoke)
    revoke.set_defaults(handler=lambda args: _with_owner(args, keys, _revoke))


Action = Callable[[asyncpg.Connection, argparse.Namespace, ApiKeys], Awaitable[int]]


async def _create(conn: asyncpg.Connection, args: argparse.Namespace, keys: ApiKeys) -> int:
    try:
        key = await keys.create(conn, args.name, args.scopes)
    except ValueError as exc:
        print(f"visio-rdv {keys.service} api-key create: {exc}", file=sys.stderr)
        return 2
    print(key)
    print(
        f"API key for {args.name!r} ({', '.join(sorted(set(args.scopes)))}): shown once, "
        "store it now; only its SHA-256 is kept.",
        file=sys.stderr,
    )
    return 0


async def _list(conn: asyncpg.Connection, args: argparse.Namespace, keys: ApiKeys) -> int:
    print(f"{'id':>4}  {'name':<30} {'created':<20} {'state':<28} scopes")
    for key in await keys.list(conn):
        state = f"revoked {key.revoked_at:%Y-%m-%d %H:%M}" if key.revoked_at else "active"
        created = f"{key.created_at:%Y-%m-%d %H:%M}"
        print(f"{key.key_id:>4}  {key.name:<30} {created:<20} {state:<28} {' '.join(key.scopes)}")
    return 0


async def _revoke(conn: asyncpg.Connection, args: argparse.Namespace, keys: ApiKeys) -> int:
    count = await keys.revoke(conn, args.name, args.key_id)
    which = f"key {args.key_id} of {args.name!r}" if args.key_id else f"keys of {args.name!r}"
    if count == 0:
        print(f"no active {which}", file=sys.stderr)
        return 1
    print(f"revoked {count} {which}")
    return 0


def _with_owner(args: argparse.Namespace, keys: ApiKeys, action: Action) -> int:
    command = f"visio-rdv {keys.service} api-key"
    owner = command_owner_url(args.database_url, command)
    if owner is None:
        return 2

    async def run() -> int:
        conn = await asyncpg.connect(owner)
        try:
            return await action(conn, args, keys)
        except asyncpg.UndefinedTableError:
            print(
                f"{command}: no {keys.schema} schema here; run visio-rdv migrate", file=sys.stderr
            )
            return 2
        finally:
            await conn.close()

    try:
        return asyncio.run(run())
    except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
        print(f"{command}: cannot reach the database: {type(exc).__name__}: {exc}", file=sys.stderr)
        return 2
