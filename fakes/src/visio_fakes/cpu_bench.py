"""What the fakes cost per appointment: CPU of the Graph emulator per meeting, of the SMTP sink
per message (issue 20: the fakes must not hide us).

    uv run python -m visio_fakes.cpu_bench [--rounds 25] [--messages 400] [--only graph|smtp]

- Graph: the emulator's app in this process, called as uvicorn calls it (ASGI, no network),
  `--rounds` times a meeting's four steps for `--batch` meetings, each step one `$batch` (as
  meetings makes them: find the event by its creation key, create it, find its Teams meeting by
  join URL, set its options), then `$batch`es of creates alone. Only the app's calls are
  timed (the CPU of this process while the app answers), not the making of the bodies.
- SMTP: the sink in its own process (`visio-rdv-smtp-sink`), `--messages` emails of a
  notification's shape (text, HTML, an invitation) sent on one kept connection; the sink
  process's CPU over them. Its mailbox is made under `var/`, where the local stack keeps it.

Figures, not a test: they depend on the machine and on what else runs on it.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import json
import os
import shutil
import smtplib
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from email.message import EmailMessage
from pathlib import Path
from typing import Any
from urllib.parse import quote

import psutil
from starlette.types import Message

from visio_fakes.graph_emulator.app import create_app
from visio_fakes.graph_emulator.faults import FaultConfig
from visio_fakes.graph_emulator.settings import EmulatorSettings
from visio_fakes.graph_emulator.state import EmulatorState

ADVISORS = [f"a1b2c3d4-0000-4000-8000-{n:012d}" for n in range(50)]
PROPERTY = "String {66f5a359-4659-4830-9070-00047ec6ac6e} Name visio-rdv-meeting-key"
APPOINTMENT = "String {66f5a359-4659-4830-9070-00047ec6ac6e} Name visio-rdv-appointment-id"


class _Emulator:
    """The app, called in process; `cpu` adds up the CPU seconds spent inside its calls."""

    def __init__(self) -> None:
        settings = EmulatorSettings(faults=FaultConfig(seed=1))
        self.app = create_app(settings)
        state: EmulatorState = self.app.state.emulator
        registration = state.apps[settings.client_id.lower()]
        token = state.tokens.issue(
            registration, now=state.now(), lifetime=86400, with_certificate=False
        )
        self.headers = [
            (b"authorization", f"Bearer {token}".encode()),
            (b"content-type", b"application/json"),
            (b"host", b"localhost:8443"),
        ]
        self.cpu = 0.0
        self.calls = 0

    async def batch(self, requests: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
        body = json.dumps({"requests": requests}).encode()
        scope = {
            "type": "http",
            "asgi": {"version": "3.0"},
            "http_version": "1.1",
            "method": "POST",
            "scheme": "https",
            "path": "/v1.0/$batch",
            "raw_path": b"/v1.0/$batch",
            "root_path": "",
            "query_string": b"",
            "headers": [*self.headers, (b"content-length", str(len(body)).encode())],
            "client": ("127.0.0.1", 50000),
            "server": ("127.0.0.1", 8443),
        }
        sent = False
        chunks: list[bytes] = []
        status = 0

        async def receive() -> Message:
            nonlocal sent
            if sent:
                await asyncio.Event().wait()
            sent = True
            return {"type": "http.request", "body": body, "more_body": False}

        async def send(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            elif message["type"] == "http.response.body":
                chunks.append(message.get("body", b""))

        before = time.process_time()
        await self.app(scope, receive, send)
        self.cpu += time.process_time() - before
        self.calls += 1
        if status != 200:
            raise RuntimeError(f"$batch answered {status}: {b''.join(chunks)[:300]!r}")
        answers = json.loads(b"".join(chunks))["responses"]
        return {answer["id"]: answer for answer in answers}


def _event(n: int, key: str) -> dict[str, Any]:
    start = dt.datetime(2031, 3, 4, 9, 30) + dt.timedelta(minutes=n)
    end = start + dt.timedelta(minutes=30)
    return {
        "subject": "Rendez-vous Caf",
        "body": {"contentType": "HTML", "content": "<p>Votre rendez-vous avec la Caf.</p>"},
        "start": {"dateTime": start.isoformat(), "timeZone": "Romance Standard Time"},
        "end": {"dateTime": end.isoformat(), "timeZone": "Romance Standard Time"},
        "isOnlineMeeting": True,
        "onlineMeetingProvider": "teamsForBusiness",
        "allowNewTimeProposals": False,
        "responseRequested": False,
        "showAs": "busy",
        "transactionId": key,
        "singleValueExtendedProperties": [
            {"id": APPOINTMENT, "value": str(uuid.uuid4())},
            {"id": PROPERTY, "value": key},
        ],
    }


def _filter(expression: str) -> str:
    return "$filter=" + quote(expression, safe="'")


async def _graph(rounds: int, size: int) -> dict[str, float]:
    emulator = _Emulator()
    n = 0
    for _ in range(rounds):
        made = [(m, ADVISORS[m % len(ADVISORS)], f"key-{uuid.uuid4()}") for m in range(n, n + size)]
        n += size
        found = await emulator.batch(
            [_find(i, advisor, key) for i, (_, advisor, key) in enumerate(made)]
        )
        assert all(not a["body"]["value"] for a in found.values())
        created = await emulator.batch(
            [_create(str(i), advisor, _event(m, key)) for i, (m, advisor, key) in enumerate(made)]
        )
        joins = [created[str(i)]["body"]["onlineMeeting"]["joinUrl"] for i in range(size)]
        listed = await emulator.batch(
            [_find_meeting(i, advisor, joins[i]) for i, (_, advisor, _) in enumerate(made)]
        )
        ids = [listed[str(i)]["body"]["value"][0]["id"] for i in range(size)]
        updated = await emulator.batch(
            [_set_options(i, advisor, ids[i]) for i, (_, advisor, _) in enumerate(made)]
        )
        assert {a["status"] for a in updated.values()} == {200}
    per_meeting = emulator.cpu * 1000 / n
    creates = _Emulator()
    for r in range(rounds):
        batch = [
            _create(str(i), ADVISORS[i % len(ADVISORS)], _event(i, f"only-{r}-{i}-{uuid.uuid4()}"))
            for i in range(size)
        ]
        answers = await creates.batch(batch)
        assert {a["status"] for a in answers.values()} == {201}
    return {
        "graph_meetings": n,
        "graph_cpu_ms_per_meeting": round(per_meeting, 3),
        "graph_cpu_ms_per_batch_of_creates": round(creates.cpu * 1000 / rounds, 2),
        "graph_cpu_ms_per_create": round(creates.cpu * 1000 / (rounds * size), 3),
    }


def _find(i: int, advisor: str, key: str) -> dict[str, Any]:
    condition = f"ep/id eq '{PROPERTY}' and ep/value eq '{key}'"
    query = _filter(f"singleValueExtendedProperties/any(ep: {condition})")
    url = f"/users/{advisor}/events?{query}&$select=id,onlineMeeting&$top=2"
    return {"id": str(i), "method": "GET", "url": url}


def _create(request_id: str, advisor: str, event: dict[str, Any]) -> dict[str, Any]:
    return {
        "id": request_id,
        "method": "POST",
        "url": f"/users/{advisor}/events",
        "headers": {"Content-Type": "application/json"},
        "body": event,
    }


def _find_meeting(i: int, advisor: str, join_url: str) -> dict[str, Any]:
    query = _filter("JoinWebUrl eq '{}'".format(join_url.replace("'", "''")))
    return {"id": str(i), "method": "GET", "url": f"/users/{advisor}/onlineMeetings?{query}"}


def _set_options(i: int, advisor: str, meeting_id: str) -> dict[str, Any]:
    return {
        "id": str(i),
        "method": "PATCH",
        "url": f"/users/{advisor}/onlineMeetings/{quote(meeting_id, safe='')}",
        "headers": {"Content-Type": "application/json"},
        "body": {
            "lobbyBypassSettings": {"scope": "organization", "isDialInBypassEnabled": False},
            "allowedPresenters": "organizer",
            "allowRecording": i % 2 == 0,
            "allowTranscription": i % 2 == 0,
            "recordAutomatically": False,
        },
    }


def _message(n: int) -> bytes:
    message = EmailMessage()
    message["From"] = "Caf <rendez-vous@caf.example>"
    message["To"] = f"person{n}@example.org"
    message["Subject"] = "Votre rendez-vous du mardi 4 mars 2031 à 9 h 30"
    message["Date"] = "Tue, 04 Mar 2031 08:00:00 +0000"
    message["Message-ID"] = f"<{uuid.uuid4()}.r1.confirmation@visio-rdv.example>"
    text = "Bonjour,\n\nVotre rendez-vous est confirmé. Lien : https://teams.example/x\n" * 12
    message.set_content(text)
    message.add_alternative(f"<html><body><p>{text}</p></body></html>", subtype="html")
    invitation = "BEGIN:VCALENDAR\r\nVERSION:2.0\r\nMETHOD:REQUEST\r\n" + "X:y\r\n" * 40
    message.add_attachment(
        invitation.encode(), maintype="text", subtype="calendar", filename="rdv.ics"
    )
    return bytes(message)


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


def _smtp(messages: int, parent: Path) -> dict[str, float]:
    parent.mkdir(parents=True, exist_ok=True)
    mail_dir = Path(tempfile.mkdtemp(prefix="sink-cpu-", dir=parent))
    port = _free_port()
    env = {
        **os.environ,
        "SMTP_SINK_PORT": str(port),
        "SMTP_SINK_MAIL_DIR": str(mail_dir),
        "SMTP_SINK_RETENTION_DAYS": "0",
    }
    command = Path(sys.executable).parent / "visio-rdv-smtp-sink"
    process = subprocess.Popen([command], env=env)  # noqa: S603 - our own script
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                if time.monotonic() > deadline or process.poll() is not None:
                    raise RuntimeError("the sink did not start") from None
                time.sleep(0.05)
        bodies = [_message(n) for n in range(messages)]
        sink = psutil.Process(process.pid)
        before = sink.cpu_times()
        with smtplib.SMTP("127.0.0.1", port) as client:
            for n, body in enumerate(bodies):
                client.sendmail("bounce@visio-rdv.example", [f"person{n}@example.org"], body)
        after = sink.cpu_times()
        stored = len(list(mail_dir.glob("*.eml")))
    finally:
        process.terminate()
        process.wait()
        shutil.rmtree(mail_dir, ignore_errors=True)
    if stored != messages:
        raise RuntimeError(f"{stored} messages stored of {messages}")
    return {
        "smtp_messages": messages,
        "smtp_bytes_per_message": len(bodies[0]),
        "smtp_cpu_ms_per_message": round(
            (after.user + after.system - before.user - before.system) * 1000 / messages, 3
        ),
        # The kernel's part (sockets, files) varies most with what else the machine does.
        "smtp_user_ms_per_message": round((after.user - before.user) * 1000 / messages, 3),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=25, help="rounds of --batch meetings")
    parser.add_argument(
        "--batch",
        type=int,
        default=20,
        help="meetings a $batch carries (20 at most; the bench's are small: its meetings "
        "arrive one by one, and the Provisioner gathers what arrives within 5 ms)",
    )
    parser.add_argument("--messages", type=int, default=400)
    parser.add_argument("--only", choices=["graph", "smtp"])
    parser.add_argument(
        "--mail-parent",
        type=Path,
        default=Path("var"),
        help="where the sink's mailbox is made (default var/, as the local stack's var/mail: "
        "creating a file costs very differently from one directory to another)",
    )
    args = parser.parse_args()
    figures: dict[str, float] = {}
    if args.only != "smtp":
        figures |= asyncio.run(_graph(args.rounds, args.batch))
    if args.only != "graph":
        figures |= _smtp(args.messages, args.mail_parent)
    for name, value in figures.items():
        print(f"{name}: {value}")


if __name__ == "__main__":
    main()
