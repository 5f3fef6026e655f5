"""A micro-benchmark of the email path alone: the CPU notifications spends to compose one email
(to the bytes the relay receives), to send one over SMTP, and the CPU the SMTP sink spends to
take one. It prints figures; nothing is asserted (speed is shown by commands, never by tests).

    uv run python -m visio_deploy.bench.mail                  # 2,000 emails composed, 1,000 sent
    uv run python -m visio_deploy.bench.mail --compose 500 --send 200

The sink runs as its own process (`visio-rdv-smtp-sink`, as in the stack), so its CPU is read
from the OS apart from this one's. The emails are a mix of kinds, devices and zones, each for
another appointment, as a backlog would bring them.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import psutil
from pydantic import SecretStr
from visio_fakes.smtp_sink import free_port
from visio_notifications.compose import Letter, compose_mail
from visio_notifications.mailer import SmtpMailer
from visio_notifications.mime import Mail
from visio_notifications.settings import NotificationsSettings
from visio_shared import (
    Advisor,
    AppointmentCancelled,
    AppointmentRequested,
    ConsentGiven,
    Device,
    Person,
    current_cgu,
)

NOW = datetime(2026, 11, 20, 9, 0, tzinfo=UTC)
JOIN_URL = "https://teams.microsoft.com/l/meetup-join/19%3ameeting_bench%40thread.v2/0"
# (kind, caf code, zone, device): what a day of emails is made of, roughly.
MIX = (
    ("confirmation", "075", "Europe/Paris", Device.COMPUTER),
    ("confirmation", "974", "Indian/Reunion", Device.SMARTPHONE),
    ("confirmation", "691", "Europe/Paris", Device.TABLET),
    ("reminder", "075", "Europe/Paris", Device.SMARTPHONE),
    ("confirmation", "971", "America/Guadeloupe", Device.COMPUTER),
    ("reminder", "973", "America/Cayenne", Device.COMPUTER),
    ("rescheduled", "131", "Europe/Paris", Device.COMPUTER),
    ("cancellation", "976", "Indian/Mayotte", Device.SMARTPHONE),
)


def bench_settings(port: int = 1025) -> NotificationsSettings:
    return NotificationsSettings(
        link_keys=SecretStr("b1:" + "e" * 40),
        booking_public_url="https://rdv.caf.example/booking",
        consent_public_url="https://consentement.caf.example",
        smtp_port=port,
        smtp_timeout_s=30,
    )


def letters(count: int) -> Iterator[Letter]:
    cgu = current_cgu()
    for number in range(count):
        kind, caf, zone, device = MIX[number % len(MIX)]
        revision = 2 if kind in ("rescheduled", "cancellation") else 1
        appointment = AppointmentRequested(
            appointment_id=uuid.uuid4(),
            correlation_id=uuid.uuid4(),
            revision=revision,
            caf_code=caf,
            advisor=Advisor(id=str(uuid.uuid4()), display_name=f"Conseiller {number % 200}"),
            # Office-hour slots over four weeks, as a Caf's calendar fills: many people share
            # a day and a time, so their emails share a subject.
            start=datetime(2026, 12, 3, 7, 0, tzinfo=UTC)
            + timedelta(days=number % 28, minutes=30 * (number // 28 % 18)),
            duration_minutes=30,
            timezone=zone,
            subject="Prime d'activité",
            user=Person(
                first_name=f"Prénom{number}",
                last_name="Hoarau",
                email=f"personne{number}@example.org",
                device=device,
            ),
            consent=ConsentGiven(
                cgu_version=cgu.version,
                cgu_sha256=cgu.sha256,
                accepted_at=NOW,
                recording_authorised=number % 2 == 0,
                channel="api",
            ),
            calling_system="caf.fr",
        )
        cancellation = None
        if kind == "cancellation":
            cancellation = AppointmentCancelled(
                appointment_id=appointment.appointment_id,
                correlation_id=appointment.correlation_id,
                revision=revision,
                reason="user",
                cancelled_by="caf.fr",
            )
        yield Letter(
            kind=kind,
            revision=revision,
            appointment=appointment,
            join_url=None if kind == "cancellation" else JOIN_URL,
            cancellation=cancellation,
            reminder_offset_minutes=60 if kind == "reminder" else None,
            link_sent_before=kind != "confirmation",
        )


def to_wire(letter: Letter, settings: NotificationsSettings) -> Mail:
    """What the mailer is handed: the relay's bytes and the envelope."""
    return compose_mail(letter, settings, now=NOW)


def _wait_for_port(port: int, timeout_s: float = 30.0) -> None:
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return
        except OSError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.05)


def _cpu(process: psutil.Process) -> float:
    times = process.cpu_times()
    return float(times.user + times.system)


def measure_compose(count: int, settings: NotificationsSettings) -> float:
    """CPU µs per email composed, after a warm-up (the caches of the first emails)."""
    batch = list(letters(count + len(MIX)))
    for letter in batch[: len(MIX)]:
        to_wire(letter, settings)
    started = time.process_time()
    for letter in batch[len(MIX) :]:
        to_wire(letter, settings)
    return (time.process_time() - started) / count * 1e6


async def _send_all(mailer: SmtpMailer, messages: list[Mail], in_flight: int) -> None:
    queue = list(reversed(messages))

    async def worker() -> None:
        while queue:
            await mailer.send(queue.pop())

    await asyncio.gather(*(worker() for _ in range(in_flight)))


def measure_send(count: int, in_flight: int) -> tuple[float, float, float]:
    """(our CPU µs per email sent, the sink's CPU µs per email taken, wall seconds)."""
    with tempfile.TemporaryDirectory(prefix="visio-mail-bench-") as scratch:
        port = free_port()
        env = os.environ | {
            "SMTP_SINK_PORT": str(port),
            "SMTP_SINK_MAIL_DIR": str(Path(scratch) / "mail"),
            "SMTP_SINK_RETENTION_DAYS": "0",
        }
        sink = subprocess.Popen(
            [sys.executable, "-m", "visio_fakes.smtp_sink"],
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        try:
            _wait_for_port(port)
            settings = bench_settings(port)
            warm = [to_wire(letter, settings) for letter in letters(in_flight * 2)]
            messages = [to_wire(letter, settings) for letter in letters(count)]
            sink_process = psutil.Process(sink.pid)

            async def run() -> tuple[float, float, float]:
                mailer = SmtpMailer(settings)
                await _send_all(mailer, warm, in_flight)  # connections opened, code warm
                sink_before, ours_before = _cpu(sink_process), time.process_time()
                wall = time.perf_counter()
                await _send_all(mailer, messages, in_flight)
                await mailer.close()
                return (
                    (time.process_time() - ours_before) / count * 1e6,
                    (_cpu(sink_process) - sink_before) / count * 1e6,
                    time.perf_counter() - wall,
                )

            ours, theirs, wall = asyncio.run(run())
            stored = len(list((Path(scratch) / "mail").glob("*.eml")))
            if stored != count + in_flight * 2:
                raise SystemExit(f"the sink stored {stored} emails, not {count + in_flight * 2}")
            return ours, theirs, wall
        finally:
            sink.terminate()
            sink.wait(timeout=30)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--compose", type=int, default=2000, help="emails to compose")
    parser.add_argument("--send", type=int, default=1000, help="emails to send to the sink")
    parser.add_argument("--in-flight", type=int, default=4, help="emails sent at once")
    args = parser.parse_args(argv)
    settings = bench_settings()
    composed = measure_compose(args.compose, settings)
    print(f"compose: {composed:8.0f} CPU µs per email ({args.compose} emails)")
    ours, theirs, wall = measure_send(args.send, args.in_flight)
    print(f"send:    {ours:8.0f} CPU µs per email in notifications ({args.send} emails)")
    print(f"sink:    {theirs:8.0f} CPU µs per email in the SMTP sink")
    print(f"         {args.send / wall:8.0f} emails/s sent, {args.in_flight} at once")


if __name__ == "__main__":
    main()
