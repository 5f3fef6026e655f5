"""A service's own `visio-rdv <service> …` commands, run as `visio-rdv` runs them
(visio_deploy.cli finds each package's `commands.register`), but without deploy: a service's
tests then depend on the service alone, not on the package that depends on every service."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from types import ModuleType


def run_commands(commands: ModuleType, argv: Sequence[str]) -> None:
    """Parse `argv` with the subcommands `commands.register` adds, run the chosen handler and
    exit with its code (SystemExit, as the console script does)."""
    parser = argparse.ArgumentParser(prog="visio-rdv")
    subparsers = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    commands.register(subparsers)
    args = parser.parse_args(list(argv))
    sys.exit(args.handler(args) or 0)
