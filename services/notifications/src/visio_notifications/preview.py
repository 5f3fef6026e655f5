"""A sample confirmation, to look at without Kafka or a database:
`python -m visio_notifications.preview [out_dir] [--device smartphone] [--caf 974]` writes
`confirmation.html`, `confirmation.txt` and `confirmation.eml`."""

from __future__ import annotations

import argparse
import uuid
from datetime import UTC, datetime
from pathlib import Path
from zoneinfo import ZoneInfo

from visio_shared import (
    Advisor,
    AppointmentRequested,
    ConsentGiven,
    Device,
    MeetingReady,
    Person,
    current_cgu,
)

from visio_notifications import wording
from visio_notifications.mailer import build_confirmation, confirmation_context, render_confirmation
from visio_notifications.settings import NotificationsSettings

SAMPLE_JOIN_URL = (
    "https://teams.microsoft.com/l/meetup-join/19%3ameeting_NzQ1YjM2ZTMtYjYxZC00ZGE4%40thread.v2/0"
    "?context=%7b%22Tid%22%3a%22a1b2c3d4%22%2c%22Oid%22%3a%22e5f6a7b8%22%7d"
)


def sample_events(
    device: Device = Device.SMARTPHONE,
    caf_code: str = "974",
    recording_authorised: bool = True,
) -> tuple[AppointmentRequested, MeetingReady]:
    zone = ZoneInfo(wording.CAF_ZONES.get(caf_code, wording.PARIS))
    appointment_id = uuid.uuid4()
    correlation_id = uuid.uuid4()
    cgu = current_cgu()
    appointment = AppointmentRequested(
        appointment_id=appointment_id,
        revision=1,
        correlation_id=correlation_id,
        caf_code=caf_code,
        advisor=Advisor(id="3f1c0d2e-advisor", display_name="Claire Martin"),
        start=datetime(2026, 12, 3, 10, 0, tzinfo=zone),
        duration_minutes=30,
        timezone=zone.key,
        subject="Prime d'activité : questions sur ma déclaration",
        user=Person(
            first_name="Amina", last_name="Hoarau", email="amina.hoarau@example.org", device=device
        ),
        consent=ConsentGiven(
            cgu_version=cgu.version,
            cgu_sha256=cgu.sha256,
            accepted_at=datetime(2026, 11, 20, 8, 30, tzinfo=UTC),
            recording_authorised=recording_authorised,
            channel="api",
        ),
        calling_system="caf.fr",
    )
    meeting = MeetingReady(
        appointment_id=appointment_id,
        revision=1,
        correlation_id=correlation_id,
        join_url=SAMPLE_JOIN_URL,
        graph_event_id="AAMkAGI2TGuLAAA=",
        advisor_id="3f1c0d2e-advisor",
    )
    return appointment, meeting


def write_preview(
    out_dir: Path,
    device: Device = Device.SMARTPHONE,
    caf_code: str = "974",
    recording_authorised: bool = True,
) -> list[Path]:
    settings = NotificationsSettings()
    appointment, meeting = sample_events(device, caf_code, recording_authorised)
    text, html = render_confirmation(confirmation_context(appointment, meeting, settings))
    out_dir.mkdir(parents=True, exist_ok=True)
    html_path, text_path, eml_path = (
        out_dir / f"confirmation.{suffix}" for suffix in ("html", "txt", "eml")
    )
    html_path.write_text(html, encoding="utf-8")
    text_path.write_text(text, encoding="utf-8")
    eml_path.write_bytes(bytes(build_confirmation(appointment, meeting, settings)))
    return [html_path, text_path, eml_path]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("out_dir", nargs="?", default="var/preview", type=Path)
    parser.add_argument(
        "--device", choices=[device.value for device in Device], default="smartphone"
    )
    parser.add_argument("--caf", default="974", help="caf code, e.g. 974 (La Réunion) or 750")
    parser.add_argument("--no-recording", action="store_true")
    args = parser.parse_args()
    for path in write_preview(
        args.out_dir,
        device=Device(args.device),
        caf_code=args.caf,
        recording_authorised=not args.no_recording,
    ):
        print(path)


if __name__ == "__main__":
    main()
