"""`visio-rdv proof …`: runs that prove the system's promises on the real local stack and print
their figures (and write them as JSON with --json). Exit status 0 when every promise held."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from visio_deploy.proof.report import Report


def register(subparsers: Any) -> None:
    proof = subparsers.add_parser(
        "proof", help="prove the guarantees under faults and hostile input"
    )
    commands = proof.add_subparsers(dest="proof_command", required=True)

    chaos = commands.add_parser("chaos", help="book N appointments while injecting faults")
    chaos.add_argument(
        "--appointments", type=int, default=200, help="appointments booked (default: %(default)s)"
    )
    chaos.add_argument(
        "--seed", type=int, default=1, help="the same seed replays the same faults and kills"
    )
    chaos.add_argument("--kill-every", type=float, default=15.0, help="seconds; 0: no kills")
    chaos.add_argument("--fault-rate", type=float, default=0.04, help="per Graph fault kind")
    chaos.add_argument(
        "--broker-cut-every",
        type=float,
        default=10.0,
        help="mean seconds between two cuts of a broker connection; 0: none",
    )
    chaos.add_argument(
        "--reminder-offsets",
        type=int,
        nargs="+",
        default=[48 * 60, 60],
        help="notifications' reminder leads, in minutes (the `reminder` appointments start "
        "so that the shortest falls due during the run)",
    )
    chaos.add_argument(
        "--email-within-minutes",
        type=float,
        default=10.0,
        help="the promise: every person has their confirmation this long after booking",
    )
    chaos.add_argument(
        "--settle-timeout",
        type=float,
        default=None,
        help="seconds to wait for the system to settle (default: the promise plus 2 minutes)",
    )
    chaos.add_argument(
        "--evidence",
        type=Path,
        default=Path("var/proof"),
        help="where a failed run keeps its logs, mail, emulator state, database and report",
    )
    _json(chaos, "chaos")
    chaos.set_defaults(handler=_chaos)

    inputs = commands.add_parser("inputs", help="hostile inputs to the API and inbound topic")
    inputs.add_argument(
        "--examples", type=int, default=1000, help="hostile inputs generated (default: %(default)s)"
    )
    inputs.add_argument(
        "--seed", type=int, default=1, help="the same seed generates the same inputs"
    )
    _json(inputs, "inputs")
    inputs.set_defaults(handler=_inputs)

    for name, helptext in (
        ("access", "refusals: keys, scopes, ownership, consent API, non-Teams join URLs"),
        ("tamper", "superuser tampering with the ledger, each detected by consent verify"),
    ):
        sub = commands.add_parser(name, help=helptext)
        _json(sub, name)
        sub.set_defaults(handler=_access if name == "access" else _tamper)


def _json(parser: argparse.ArgumentParser, run: str) -> None:
    parser.add_argument(
        "--json",
        type=Path,
        default=Path(f"var/proof/{run}-report.json"),
        help="where the report goes as JSON (default: %(default)s)",
    )


def _finish(report: Report, args: argparse.Namespace) -> int:
    print(report.table())
    report.write(args.json)
    print(f"report written to {args.json}")
    return 0 if report.passed else 1


def _chaos(args: argparse.Namespace) -> int:
    from visio_deploy.proof.chaos import ChaosOptions, run_chaos

    options = ChaosOptions(
        appointments=args.appointments,
        seed=args.seed,
        kill_every_s=args.kill_every,
        graph_fault_rate=args.fault_rate,
        broker_cut_every_s=args.broker_cut_every,
        reminder_offsets_minutes=tuple(args.reminder_offsets),
        email_within_s=args.email_within_minutes * 60,
        settle_timeout_s=args.settle_timeout,
        evidence=args.evidence,
    )
    return _finish(run_chaos(options), args)


def _inputs(args: argparse.Namespace) -> int:
    from visio_deploy.proof.inputs import run_inputs

    return _finish(run_inputs(args.examples, args.seed), args)


def _access(args: argparse.Namespace) -> int:
    from visio_deploy.proof.access import run_access

    return _finish(run_access(), args)


def _tamper(args: argparse.Namespace) -> int:
    from visio_deploy.proof.tamper import run_tamper

    return _finish(run_tamper(), args)
