"""`visio-rdv booking api-key create|list|revoke` (`visio_runtime.api_key_commands`). Found by
`visio-rdv` through `register`; also runs alone as `python -m visio_booking.commands api-key …`."""

from __future__ import annotations

import sys
from typing import Any

from visio_runtime.api_key_commands import register_api_key_commands

from visio_booking.keys import API_KEYS


def register(subparsers: Any) -> None:
    booking = subparsers.add_parser("booking", help="booking: callers' API keys")
    commands = booking.add_subparsers(dest="booking_command", required=True)
    register_api_key_commands(commands, API_KEYS)


def main(argv: list[str] | None = None) -> int:
    import argparse

    parser = argparse.ArgumentParser(prog="python -m visio_booking.commands")
    register(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(["booking", *(sys.argv[1:] if argv is None else argv)])
    result: int = args.handler(args)
    return result


if __name__ == "__main__":
    sys.exit(main())
