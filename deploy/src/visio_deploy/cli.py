"""`visio-rdv`: the command for people. It calls into the services' own modules rather than
re-implementing them: each package may have a `commands` module with
`register(subparsers) -> None`, whose subcommands set `handler(args) -> int | None`."""

from __future__ import annotations

import argparse
import asyncio
import importlib
import importlib.util
import sys
from importlib.metadata import version

from visio_runtime.local_stack import command_owner_url, find_local_stack, owner_url_argument

from visio_deploy.migrate import MissingPassword, migrate_all

# Packages whose `commands` module, when present, adds subcommands (`visio-rdv booking …`).
COMMAND_PACKAGES = (
    "visio_booking",
    "visio_meetings",
    "visio_notifications",
    "visio_consent",
    "visio_deploy.ops",
)
# Those that run the system on this machine, on the fakes (visio_fakes: tansu, embedded
# PostgreSQL, the Graph emulator, the SMTP sink), like `up`: offered only where deploy's `local`
# extra installed them, never in a production image (which has `migrate` and `ops`).
LOCAL_COMMAND_PACKAGES = ("visio_deploy.proof", "visio_deploy.bench")


def local_extra_installed() -> bool:
    return importlib.util.find_spec("visio_fakes") is not None


DESCRIPTION = """\
Visio RDV, the Caf's free video appointments: a person books, gets a Teams meeting with a Caf
advisor and a confirmation email in plain French. This command runs the whole system on one
machine (`up`), looks after a running one (`ops`: lag, dead letters and their replay, stuck
appointments, alerts, purge), and checks its promises (`proof`, `bench`)."""

UP_DESCRIPTION = """\
Start PostgreSQL (or use DATABASE_URL), Kafka (tansu, or VISIO_KAFKA_BOOTSTRAP_SERVERS), the
Graph and SMTP emulators, the four services, the alerts process and the lag exporter; print
`ready` with the booking API's address and a development API key once every process answers;
stop everything on Ctrl-C or SIGTERM."""

EPILOG = """\
start here:
  visio-rdv up                           the whole system on this machine, until Ctrl-C
  visio-rdv stack                        where each part of it answers
  visio-rdv ops appointments --stuck     who is still waiting for an email, and why
  visio-rdv ops dlq list                 what was given up on, with the reason
Each command says which stack it talks to; `visio-rdv <command> --help` for its flags.
Alerts and what to do about each: docs/runbook.md."""


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="visio-rdv",
        description=DESCRIPTION,
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "--version", action="version", version=f"%(prog)s {version('visio-deploy')}"
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    local = local_extra_installed()
    if local:
        from visio_deploy.up import settings_help

        up = commands.add_parser(
            "up",
            help="run the whole system on this machine, in the foreground (Ctrl-C stops it)",
            description=UP_DESCRIPTION,
            epilog=settings_help(),
            formatter_class=argparse.RawDescriptionHelpFormatter,
        )
        up.add_argument(
            "--production",
            action="store_true",
            help="every process in production mode: generated secrets (var/secrets), HTTPS and "
            "SMTP STARTTLS with the development CA, the local broker waiver for tansu "
            "(as VISIO_ENVIRONMENT=production)",
        )
        up.set_defaults(handler=_up)
    stack = commands.add_parser(
        "stack", help="the stack `up` runs in this checkout: where each part answers"
    )
    stack.add_argument(
        "--json", action="store_true", help="var/stack.json as it is (it holds the owner URL)"
    )
    stack.set_defaults(handler=_stack)
    migrate = commands.add_parser(
        "migrate",
        help="apply every service's migrations; create the roles (VISIO_<SERVICE>_DATABASE_"
        "PASSWORD[_FILE] for their passwords)",
    )
    owner_url_argument(migrate)
    migrate.add_argument(
        "--set-password",
        action="append",
        default=[],
        metavar="SERVICE",
        help="also give this existing service role its secret (a rotation); repeat for several. "
        "Without it, an existing role's password is never changed",
    )
    migrate.set_defaults(handler=_migrate)
    for package in COMMAND_PACKAGES + (LOCAL_COMMAND_PACKAGES if local else ()):
        name = f"{package}.commands"
        if importlib.util.find_spec(package) and importlib.util.find_spec(name):
            importlib.import_module(name).register(commands)
    return parser


def main(argv: list[str] | None = None) -> None:
    args = build_parser().parse_args(argv)
    result = args.handler(args)
    sys.exit(result or 0)


def _up(args: argparse.Namespace) -> int:
    from visio_deploy.up import main_up

    return main_up(production=args.production)


def _migrate(args: argparse.Namespace) -> int:
    owner = command_owner_url(args.database_url, "visio-rdv migrate")
    if owner is None:
        return 2
    try:
        applied = asyncio.run(migrate_all(owner, set_passwords=args.set_password))
    except (MissingPassword, ValueError) as exc:
        print(f"visio-rdv migrate: {exc}", file=sys.stderr)
        return 2
    for service, files in applied.items():
        print(f"{service}: {', '.join(files) if files else 'up to date'}")
    return 0


def _stack(args: argparse.Namespace) -> int:
    lookup = find_local_stack()
    stack = lookup.stack
    if stack is None:
        print(f"no running stack ({lookup.why_not}); `uv run visio-rdv up` starts one")
        return 1
    if args.json:
        print(stack.model_dump_json(indent=2))
        return 0
    booking = stack.http["booking"]
    rows = [
        (
            "booking API",
            f"{booking} (OpenAPI: /docs on the admin port, public + 1000; "
            f"key in {stack.api_key_file})",
        ),
        *(
            (
                name,
                url if stack.admin.get(name, url) == url else f"{url} (admin {stack.admin[name]})",
            )
            for name, url in stack.http.items()
            if name != "booking"
        ),
        (
            "Kafka",
            f"{stack.kafka_bootstrap_servers} ({stack.broker}), topics {stack.topic_prefix}.*",
        ),
        ("PostgreSQL", stack.database_label),
        ("Graph emulator", f"{stack.graph_url} (dev CA in {stack.var_dir / 'dev-ca'})"),
        ("SMTP sink", f"{stack.smtp}, emails in {stack.mail_dir}"),
        *([("SMS emulator", stack.sms_emulator)] if stack.sms_emulator else []),
        ("logs", str(stack.log_dir)),
    ]
    print(stack.describe())
    for name, where in rows:
        print(f"  {name:<15} {where}")
    return 0
