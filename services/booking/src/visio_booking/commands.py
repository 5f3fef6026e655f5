"""`visio-rdv booking api-key create|list|revoke`: the callers' keys, managed with an owner
connection (the service itself may only read them): `--database-url`, VISIO_DATABASE_URL or
DATABASE_URL, else the stack `visio-rdv up` runs in this checkout. Found by `visio-rdv` through
`register`; also runs alone as `python -m visio_booking.commands api-key …`."""

from __future__ import annotations

import argparse
import asyncio
import sys
from collections.abc import Awaitable, Callable
from typing import Any

import asyncpg
from visio_runtime.local_stack import command_owner_url, owner_url_argument

from visio_booking.keys import SCOPES, create_api_key, list_api_keys, revoke_api_keys


def register(subparsers: Any) -> None:
    booking = subparsers.add_parser("booking", help="booking: callers' API keys")
    commands = booking.add_subparsers(dest="booking_command", required=True)
    keys = commands.add_parser("api-key", help="create, list or revoke callers' API keys")
    actions = keys.add_subparsers(dest="api_key_command", required=True)

    create = actions.add_parser("create", help="create a key and print it (once)")
    create.add_argument("--name", required=True, help="the calling system, e.g. caf-portal")
    create.add_argument(
        "--scope",
        dest="scopes",
        action="append",
        required=True,
        choices=SCOPES,
        help="repeat for several scopes",
    )
    owner_url_argument(create)
    create.set_defaults(handler=_create)

    listing = actions.add_parser("list", help="every key: id, name, scopes, state (no secrets)")
    owner_url_argument(listing)
    listing.set_defaults(handler=_list)

    revoke = actions.add_parser("revoke", help="revoke a caller's keys, at once")
    revoke.add_argument("--name", required=True, help="the calling system")
    revoke.add_argument("--id", dest="key_id", type=int, help="only this key (see list)")
    owner_url_argument(revoke)
    revoke.set_defaults(handler=_revoke)


def _create(args: argparse.Namespace) -> int:
    async def create(conn: asyncpg.Connection) -> int:
        try:
            key = await create_api_key(conn, args.name, args.scopes)
        except ValueError as exc:
            print(f"visio-rdv booking api-key create: {exc}", file=sys.stderr)
            return 2
        print(key)
        print(
            f"API key for {args.name!r} ({', '.join(sorted(set(args.scopes)))}): shown once, "
            "store it now; only its hash is kept.",
            file=sys.stderr,
        )
        return 0

    return _with_owner(args, create)


def _list(args: argparse.Namespace) -> int:
    async def show(conn: asyncpg.Connection) -> int:
        print(f"{'id':>4}  {'name':<30} {'created':<20} {'state':<28} scopes")
        for key in await list_api_keys(conn):
            state = f"revoked {key.revoked_at:%Y-%m-%d %H:%M}" if key.revoked_at else "active"
            created = f"{key.created_at:%Y-%m-%d %H:%M}"
            print(
                f"{key.key_id:>4}  {key.name:<30} {created:<20} {state:<28} {' '.join(key.scopes)}"
            )
        return 0

    return _with_owner(args, show)


def _revoke(args: argparse.Namespace) -> int:
    async def revoke(conn: asyncpg.Connection) -> int:
        count = await revoke_api_keys(conn, args.name, args.key_id)
        which = f"key {args.key_id} of {args.name!r}" if args.key_id else f"keys of {args.name!r}"
        if count == 0:
            print(f"no active {which}", file=sys.stderr)
            return 1
        print(f"revoked {count} {which}")
        return 0

    return _with_owner(args, revoke)


def _with_owner(
    args: argparse.Namespace, action: Callable[[asyncpg.Connection], Awaitable[int]]
) -> int:
    owner = command_owner_url(args.database_url, "visio-rdv booking")
    if owner is None:
        return 2

    async def run() -> int:
        conn = await asyncpg.connect(owner)
        try:
            return await action(conn)
        except asyncpg.UndefinedTableError:
            print(
                "visio-rdv booking: no booking schema here; run visio-rdv migrate", file=sys.stderr
            )
            return 2
        finally:
            await conn.close()

    return asyncio.run(run())


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m visio_booking.commands")
    register(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(["booking", *(sys.argv[1:] if argv is None else argv)])
    result: int = args.handler(args)
    return result


if __name__ == "__main__":
    sys.exit(main())
