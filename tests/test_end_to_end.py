"""One appointment through the whole system, on real parts: `visio-rdv up` (as a person runs
it) with the test broker and a fresh PostgreSQL database, the Graph + Entra emulator over HTTPS,
the SMTP sink and the four services as separate processes."""

from __future__ import annotations

import email
import email.policy
import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import psutil
import pytest
from visio_deploy.devca import ensure_dev_ca
from visio_deploy.processes import free_port
from visio_deploy.testing import create_database, drop_database

from .self_service_support import wait_for


@dataclass
class RunningStack:
    process: subprocess.Popen[bytes]
    var: Path
    log: Path
    booking: str
    graph: str
    owner_dsn: str
    api_key: str


@pytest.fixture(scope="module")
def stack(kafka_bootstrap: str, postgres_url: str, tmp_path_factory: Any) -> Iterator[RunningStack]:
    import asyncio

    owner_dsn = asyncio.run(create_database(postgres_url, prefix="visio_e2e"))
    var = tmp_path_factory.mktemp("var")
    ports = {
        name: free_port() for name in ("graph", "smtp", "booking", "meetings", "notif", "consent")
    }
    env = {
        **os.environ,
        "VISIO_VAR_DIR": str(var),
        "VISIO_DATABASE_URL": owner_dsn,
        "VISIO_KAFKA_BOOTSTRAP_SERVERS": kafka_bootstrap,
        "VISIO_TOPIC_PREFIX": f"e2e-{os.getpid()}",
        "VISIO_GRAPH_PORT": str(ports["graph"]),
        "VISIO_SMTP_PORT": str(ports["smtp"]),
        "VISIO_BOOKING_PORT": str(ports["booking"]),
        "VISIO_MEETINGS_PORT": str(ports["meetings"]),
        "VISIO_NOTIFICATIONS_PORT": str(ports["notif"]),
        "VISIO_CONSENT_PORT": str(ports["consent"]),
    }
    log = var / "up.out"
    with log.open("wb") as out:
        process = subprocess.Popen(
            [sys.executable, "-m", "visio_deploy", "up"],
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    try:
        wait_for(
            lambda: "ready —" in log.read_text() or process.poll() is not None,
            180,
            "visio-rdv up to print ready",
        )
        assert process.poll() is None, log.read_text()
        yield RunningStack(
            process=process,
            var=var,
            log=log,
            booking=f"http://127.0.0.1:{ports['booking']}",
            graph=f"https://127.0.0.1:{ports['graph']}",
            owner_dsn=owner_dsn,
            api_key=(var / "dev-api-key").read_text().strip(),
        )
    finally:
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
            process.wait(60)
        asyncio.run(drop_database(postgres_url, owner_dsn))


def booking_body(**overrides: Any) -> dict[str, Any]:
    start = (
        (datetime.now(UTC) + timedelta(days=7))
        .astimezone(__import__("zoneinfo").ZoneInfo("Indian/Reunion"))
        .replace(hour=10, minute=0, second=0, microsecond=0)
    )
    body = {
        "caf_code": "974",
        "advisor": {"id": "6f1c2a4e-8b1d-4c55-9a51-2f9e6f0c1d11", "display_name": "Claire Martin"},
        "start": start.isoformat(),
        "duration_minutes": 30,
        "timezone": "Indian/Reunion",
        "subject": "Prime d'activité",
        "user": {
            "first_name": "Jeanne",
            "last_name": "Dupont",
            "email": "jeanne.dupont@example.fr",
            "device": "smartphone",
        },
        "consent": {
            "cgu_version": "1",
            "accepted_at": datetime.now(UTC).isoformat(),
            "recording_authorised": True,
        },
    }
    body.update(overrides)
    return body


def test_an_appointment_ends_confirmed_with_meeting_email_and_ledger(stack: RunningStack) -> None:
    headers = {"Authorization": f"Bearer {stack.api_key}"}
    with httpx.Client(base_url=stack.booking, headers=headers, trust_env=False) as client:
        cgu = client.get("/v1/cgu/current").json()
        answer = client.post(
            "/v1/appointments",
            json=booking_body(
                consent={
                    "cgu_version": cgu["version"],
                    "accepted_at": datetime.now(UTC).isoformat(),
                    "recording_authorised": True,
                }
            ),
        )
        assert answer.status_code == 202, answer.text
        appointment_id = answer.json()["appointment_id"]
        assert answer.json()["status"] == "requested"

        def confirmed() -> dict[str, Any] | None:
            view = client.get(f"/v1/appointments/{appointment_id}").json()
            return view if view["status"] == "confirmed" else None

        view = wait_for(confirmed, 60, "the appointment to be confirmed")

    # The history is kept in the order booking heard of each step: MeetingReady and
    # NotificationSent come on two topics, so either may come first; the status only moves
    # forward (a late meeting_ready step does not undo « confirmed »).
    statuses = [entry["status"] for entry in view["history"]]
    assert statuses[0] == "requested" and {"meeting_ready", "confirmed"} <= set(statuses)
    assert view["status"] == "confirmed"
    assert view["join_url"].startswith("https://teams.microsoft.com/l/meetup-join/")

    # The meeting, in the advisor's calendar on the emulator.
    ca = ensure_dev_ca(stack.var / "dev-ca")
    with httpx.Client(base_url=stack.graph, verify=ca.ssl_context(), trust_env=False) as graph:
        events = graph.get("/_emulator/events").json()
    events = events.get("value", events) if isinstance(events, dict) else events
    mine = [event for event in events if appointment_id in str(event)]
    assert len(mine) == 1, mine
    assert "6f1c2a4e-8b1d-4c55-9a51-2f9e6f0c1d11" in str(mine[0])
    assert view["join_url"] in str(mine[0])

    # One email in the sink: the person's address, a French subject, the join link.
    mails = list((stack.var / "mail").glob("*.eml"))
    assert len(mails) == 1, mails
    message = email.message_from_bytes(mails[0].read_bytes(), policy=email.policy.default)
    assert message["To"].addresses[0].addr_spec == "jeanne.dupont@example.fr"
    assert message["Subject"].startswith("Votre rendez-vous visio avec la Caf le ")
    text = message.get_body(preferencelist=("plain",)).get_content()
    assert view["join_url"] in text
    assert "heure de La Réunion" in text

    # The consent ledger: the CGU acceptance and the recording authorisation, chained.
    async def ledger() -> list[asyncpg.Record]:
        conn = await asyncpg.connect(stack.owner_dsn)
        try:
            return await conn.fetch(
                "SELECT seq, kind, prev_hash, hash, payload::text AS payload FROM consent.ledger "
                "WHERE appointment_id = $1 ORDER BY seq",
                __import__("uuid").UUID(appointment_id),
            )
        finally:
            await conn.close()

    import asyncio

    rows = asyncio.run(ledger())
    assert [row["kind"] for row in rows] == ["cgu_accepted", "recording_authorised"]
    assert rows[1]["prev_hash"] == rows[0]["hash"]
    assert "jeanne.dupont" not in "".join(row["payload"] for row in rows)


def test_a_rejected_booking_names_each_field(stack: RunningStack) -> None:
    headers = {"Authorization": f"Bearer {stack.api_key}"}
    body = booking_body(duration_minutes=500, timezone="Mars/Olympus")
    body["user"] = {**body["user"], "email": "not-an-email", "device": "fax"}
    answer = httpx.post(f"{stack.booking}/v1/appointments", json=body, headers=headers)
    assert answer.status_code == 422
    assert answer.headers["content-type"].startswith("application/problem+json")
    fields = {error["field"] for error in answer.json()["errors"]}
    assert {"duration_minutes", "timezone", "user.email", "user.device"} <= fields

    anonymous = httpx.post(f"{stack.booking}/v1/appointments", json=booking_body())
    assert anonymous.status_code == 401


def test_stopping_up_leaves_no_process_behind(stack: RunningStack) -> None:
    children = psutil.Process(stack.process.pid).children(recursive=True)
    assert len(children) >= 6  # emulator, sink and the four services at least
    stack.process.send_signal(signal.SIGTERM)
    assert stack.process.wait(60) == 0
    _, alive = psutil.wait_procs(children, timeout=15)
    assert alive == [], [process.cmdline() for process in alive]
    assert "stopped" in stack.log.read_text()
