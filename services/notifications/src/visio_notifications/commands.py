"""`visio-rdv notifications …`: commands for people (found by `visio_deploy.cli`)."""

from __future__ import annotations

import argparse
from pathlib import Path
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from visio_shared import Device

from visio_notifications.preview import (
    CANCEL_REASONS,
    ENDED,
    KINDS,
    REQUEST_REASONS,
    preview_settings,
    sample_letter,
    sms_preview,
    write_preview,
)


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = subparsers.add_parser("notifications", help="the emails sent to the public")
    commands = parser.add_subparsers(dest="notifications_command", required=True)
    preview = commands.add_parser(
        "preview",
        help="write a sample email of one kind (.eml, .html, .txt, .ics) to look at",
        description="Write a sample email of one kind for a sample appointment, without "
        "Kafka, a database or a relay: the .eml (open it in a mail client), its HTML and text "
        "parts, and its .ics when it carries one.",
    )
    preview.add_argument(
        "--kind", choices=KINDS, default="confirmation", help="which email (default: %(default)s)"
    )
    preview.add_argument(
        "--device",
        choices=[device.value for device in Device],
        default="smartphone",
        help="the device the person joins from: it changes the guide (default: %(default)s)",
    )
    preview.add_argument(
        "--timezone", default="Europe/Paris", help="the appointment's zone, e.g. Indian/Reunion"
    )
    preview.add_argument("--out", type=Path, default=Path("var/preview"), help="output folder")
    preview.add_argument("--no-recording", action="store_true", help="recording refused")
    preview.add_argument(
        "--reason", choices=CANCEL_REASONS, default="user", help="why (cancellation)"
    )
    preview.add_argument(
        "--offset", type=int, default=60, help="minutes before the start (reminder)"
    )
    preview.add_argument(
        "--request",
        choices=REQUEST_REASONS,
        default="resend",
        help="what the person asked for (link_resent)",
    )
    preview.add_argument(
        "--ended",
        choices=ENDED,
        help="a fresh link asked for after the appointment (link_resent): « Mes consentements » "
        "alone",
    )
    preview.add_argument(
        "--no-self-service",
        action="store_true",
        help="as sent without NOTIFICATIONS_LINK_KEYS: no « Gérer mon rendez-vous » links",
    )
    preview.set_defaults(handler=preview_command)


def preview_command(args: argparse.Namespace) -> int:
    try:
        ZoneInfo(args.timezone)
    except (ZoneInfoNotFoundError, ValueError):
        print(f"visio-rdv notifications preview: unknown time zone {args.timezone!r}")
        return 2
    letter, now = sample_letter(
        args.kind,
        Device(args.device),
        args.timezone,
        recording_authorised=not args.no_recording,
        reason=args.reason,
        reminder_offset_minutes=args.offset,
        request_reason=args.request,
        ended=args.ended,
    )
    settings = preview_settings(self_service=not args.no_self_service)
    for path in write_preview(args.out, letter, now, settings):
        print(path)
    text = sms_preview(letter, now, settings)
    if text is not None:
        path = args.out / f"{letter.kind}.sms.txt"
        path.write_text(text + "\n")
        print(path)
        print(f"SMS {text}")
    return 0
