"""One appointment through the whole system, on real parts: `visio-rdv up` (as a person runs
it) with the test broker and a fresh PostgreSQL database, the Graph + Entra emulator over HTTPS,
the SMTP sink and the four services as separate processes. The first booking after `ready` is
confirmed as fast as the next ones, and the commands typed in a second terminal, from anywhere
in the checkout and with no setting, answer about this stack."""

from __future__ import annotations

import asyncio
import email
import email.policy
import itertools
import json
import os
import re
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import asyncpg
import httpx
import psutil
import pytest
from prometheus_client.parser import text_string_to_metric_families
from visio_deploy.monitoring import (
    RULES_DIR,
    Exported,
    check,
    check_monitoring,
    rule_expressions,
)
from visio_deploy.readiness import expected_partitions, waiting_for
from visio_deploy.stack import LOCAL_PARTNERS
from visio_deploy.up import LAG_EXPORTER
from visio_fakes.devca import ensure_dev_ca
from visio_fakes.processes import free_port
from visio_runtime.local_stack import STACK_FILE, read_stack_file
from visio_runtime.settings import ServiceSettings
from visio_testing import create_database, drop_database

from .self_service_support import wait_for

pytestmark = pytest.mark.long  # whole stacks: handed out first (conftest.py)

REMINDER_OFFSETS = [2, 1]  # minutes before the start


@dataclass
class RunningStack:
    process: subprocess.Popen[bytes]
    checkout: Path  # stands for the checkout: `up` records the stack in its var/
    var: Path
    log: Path
    booking: str
    graph: str
    owner_dsn: str
    api_key: str
    sms: str  # the SMS emulator, as var/stack.json records it


@pytest.fixture(scope="module")
def stack(kafka_bootstrap: str, postgres_url: str, tmp_path_factory: Any) -> Iterator[RunningStack]:
    owner_dsn = asyncio.run(create_database(postgres_url, prefix="visio_e2e"))
    checkout = tmp_path_factory.mktemp("checkout")
    var = checkout / "var"
    var.mkdir()
    ports = {
        name: free_port()
        for name in (
            "graph", "smtp", "sms", "booking", "meetings", "notif", "consent", "alerts", "lag"
        )
    }  # fmt: skip
    env = {
        **os.environ,
        "VISIO_VAR_DIR": str(var),
        "VISIO_DATABASE_URL": owner_dsn,
        "VISIO_KAFKA_BOOTSTRAP_SERVERS": kafka_bootstrap,
        # One prefix per stack: test_personal_data starts another stack on the same broker, whose
        # consent must not read this one's checkpoints (signed with another key).
        "VISIO_TOPIC_PREFIX": f"e2e-{os.getpid()}-{uuid.uuid4().hex[:8]}",
        "VISIO_GRAPH_PORT": str(ports["graph"]),
        "VISIO_SMTP_PORT": str(ports["smtp"]),
        "VISIO_BOOKING_PORT": str(ports["booking"]),
        "VISIO_MEETINGS_PORT": str(ports["meetings"]),
        "VISIO_NOTIFICATIONS_PORT": str(ports["notif"]),
        "VISIO_CONSENT_PORT": str(ports["consent"]),
        "VISIO_ALERTS_PORT": str(ports["alerts"]),
        "VISIO_LAG_EXPORTER_PORT": str(ports["lag"]),
        "VISIO_SMS_PORT": str(ports["sms"]),
        # Reminders a minute apart, due within the test (docs/sms.md); every other booking here
        # is days ahead. Quiet hours narrowed to 23:00-24:00, a zone outside them is chosen.
        "NOTIFICATIONS_REMINDER_OFFSETS_MINUTES": json.dumps(REMINDER_OFFSETS),
        "NOTIFICATIONS_POLL_INTERVAL_S": "1",
        "NOTIFICATIONS_SMS_QUIET_START_HOUR": "23",
        "NOTIFICATIONS_SMS_QUIET_END_HOUR": "0",
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
            checkout=checkout,
            var=var,
            log=log,
            booking=f"http://127.0.0.1:{ports['booking']}",
            graph=f"https://127.0.0.1:{ports['graph']}",
            owner_dsn=owner_dsn,
            api_key=(var / "dev-api-key").read_text().strip(),
            sms=str(recorded_sms_emulator(var)),
        )
    finally:
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
            process.wait(60)
        asyncio.run(drop_database(postgres_url, owner_dsn))


def recorded_sms_emulator(var: Path) -> str:
    recorded = read_stack_file(var / STACK_FILE)
    assert recorded is not None and recorded.sms_emulator, "up records the SMS emulator"
    return recorded.sms_emulator.removesuffix("/v3")


# Booking refuses two live appointments of one advisor at once (409): each body takes a day.
_DAYS = itertools.count(7)


def booking_body(**overrides: Any) -> dict[str, Any]:
    start = (
        (datetime.now(UTC) + timedelta(days=next(_DAYS)))
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


def book_and_wait_until_confirmed(client: httpx.Client) -> float:
    """Seconds from the booking's request to its `confirmed` status."""
    started = time.monotonic()
    answer = client.post("/v1/appointments", json=booking_body())
    assert answer.status_code == 202, answer.text
    path = f"/v1/appointments/{answer.json()['appointment_id']}"
    wait_for(lambda: client.get(path).json()["status"] == "confirmed", 60, "a confirmation")
    return time.monotonic() - started


def test_ready_means_every_group_holds_its_partitions_before_the_first_booking(
    stack: RunningStack,
) -> None:
    """Before: `ready` came while the groups were still settling, and the first booking waited
    ~10 s for a rebalance. What `ready` promises is checked as it stands right after it, on each
    process's own /health/ready; the first booking's time beside the next ones' is printed (a
    benchmark's figure, never asserted: it depends on the machine's load)."""
    # This reads the stack's state before its very first booking: it runs first in this module.
    assert not list((stack.var / "mail").glob("*.eml")), "a booking was made before this test"
    recorded = read_stack_file(stack.var / STACK_FILE)
    assert recorded is not None
    settings = ServiceSettings(
        kafka_bootstrap_servers=recorded.kafka_bootstrap_servers,
        topic_prefix=recorded.topic_prefix,
    )
    expected = asyncio.run(expected_partitions(settings, LOCAL_PARTNERS))
    assert expected and all(count > 0 for count in expected.values()), expected
    with httpx.Client(timeout=10, trust_env=False) as client:
        for name, count in expected.items():
            answer = client.get(f"{recorded.admin[name]}/health/ready")
            assert waiting_for(answer.status_code, answer.json(), count) is None, (
                name,
                answer.json(),
            )
            # Each service process runs on uvloop (asyncio's own loop cost a third of its CPU).
            live = client.get(f"{recorded.admin[name]}/health/live").json()
            assert live["event_loop"] == "uvloop", (name, live)

    headers = {"Authorization": f"Bearer {stack.api_key}"}
    with httpx.Client(base_url=stack.booking, headers=headers, trust_env=False) as client:
        first, *next_ones = [book_and_wait_until_confirmed(client) for _ in range(6)]
    print(f"\nconfirmed in: first {first:.2f}s, then {', '.join(f'{s:.2f}s' for s in next_ones)}")


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
            steps = {entry["status"] for entry in view["history"]}
            # MeetingReady and NotificationSent come on two topics, each read by a client of
            # its own: « confirmed » may show before the meeting_ready step is recorded.
            done = view["status"] == "confirmed" and "meeting_ready" in steps
            return view if done else None

        view = wait_for(confirmed, 60, "the appointment confirmed, its meeting step recorded")

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
    mails = list((stack.var / "mail").glob(f"{appointment_id}.*.eml"))
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

    # Consent follows AppointmentRequested on its own: « confirmed » does not wait for it.
    rows = wait_for(
        lambda: (found := asyncio.run(ledger())) and len(found) >= 2 and found,
        60,
        "the ledger records",
    )
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


# --- A second terminal: the commands find this stack with no setting at all -------------------

# Settings that would tell a command where the stack is: none of them in the second terminal.
PROJECT_SETTINGS = ("VISIO_", "KAFKA_", "DATABASE_URL", "BOOKING_", "MEETINGS_", "NOTIFICATIONS_",
                    "CONSENT_", "ALERTS_")  # fmt: skip
WRITTEN = re.compile(r"^written: (?P<where>\S+ \[\d+\] @\d+)  key=", re.MULTILINE)


def second_terminal(stack: RunningStack) -> Any:
    """`visio-rdv …` typed deep inside the checkout, in an environment with no setting."""
    here = stack.checkout / "services" / "consent" / "src"
    here.mkdir(parents=True, exist_ok=True)
    env = {
        name: value for name, value in os.environ.items() if not name.startswith(PROJECT_SETTINGS)
    }

    def visio_rdv(*argv: str) -> subprocess.CompletedProcess[str]:
        done = subprocess.run(
            [sys.executable, "-m", "visio_deploy", *argv],
            cwd=here, env=env, capture_output=True, text=True, timeout=120, check=False,
        )  # fmt: skip
        # Each names the stack it talks to, in one line on stderr.
        assert (
            f"visio-rdv: the stack in {stack.var} (visio-rdv up, pid {stack.process.pid},"
            in (done.stderr.splitlines() or [""])[0]
        ), done.stderr
        return done

    return visio_rdv, here


def tailed(output: str) -> list[dict[str, Any]]:
    """The records `visio-rdv ops tail` printed: where each is, its headers, its value."""
    records: list[dict[str, Any]] = []
    for line in output.splitlines():
        if not line.startswith(" "):
            records.append({"where": line, "headers": {}, "value": []})
        elif line.startswith("    "):
            records[-1]["value"].append(line[4:])
        else:
            name, _, value = line.strip().partition(": ")
            records[-1]["headers"][name] = value
    for record in records:
        record["value"] = json.loads("\n".join(record["value"]))
    return records


def test_commands_typed_in_a_second_terminal_answer_about_this_stack(stack: RunningStack) -> None:
    visio_rdv, here = second_terminal(stack)
    graph = httpx.Client(
        base_url=stack.graph, verify=ensure_dev_ca(stack.var / "dev-ca").ssl_context(),
        trust_env=False,
    )  # fmt: skip
    request_id = f"e2e-{uuid.uuid4().hex[:12]}"
    (here / "request.json").write_text(
        json.dumps(
            {
                "request_id": request_id,
                "calling_system": "national-scheduler",
                "request_type": "BookAppointment",
                "payload": booking_body(),
            }
        )
    )
    # The local stack declares national-scheduler: it writes its own topic, reads its own.
    requests_topic, replies_topic = (
        "booking-requests.national-scheduler", "booking-replies.national-scheduler"
    )  # fmt: skip

    # Graph answers 503 to everything: the appointment booked now waits for its meeting.
    graph.post("/_emulator/faults", json={"unavailable_rate": 1.0}).raise_for_status()
    try:
        produced = visio_rdv(
            "ops", "produce", requests_topic, "--key", request_id,
            "--header", f"request_id={request_id}", "--file", "request.json",
        )  # fmt: skip
        assert produced.returncode == 0, produced.stderr
        written = WRITTEN.search(produced.stdout)
        assert written, produced.stdout

        # `ops tail` reads it where `ops produce` said, header and all.
        requests = tailed(visio_rdv("ops", "tail", requests_topic).stdout)
        mine = [record for record in requests if record["where"].startswith(written["where"])]
        assert len(mine) == 1 and mine[0]["headers"]["request_id"] == request_id

        # Booking took it and said so on the partner's replies topic, with the appointment's id.
        def accepted() -> dict[str, Any] | None:
            replies = tailed(visio_rdv("ops", "tail", replies_topic).stdout)
            return next(
                (r["value"] for r in replies if r["value"].get("request_id") == request_id), None
            )

        reply = wait_for(accepted, 60, "booking's reply to the request")
        appointment_id = reply["appointment_id"]

        stuck = visio_rdv("ops", "appointments", "--stuck", "--after-minutes", "0")
        assert stuck.returncode == 0, stuck.stderr
        assert "PostgreSQL" in stuck.stderr
        row = next(line for line in stuck.stdout.splitlines() if appointment_id in line)
        assert "waiting for a meeting" in row
    finally:
        graph.post("/_emulator/faults", json={}).raise_for_status()
        graph.close()

    # The ledger of this stack: consent recorded the new appointment too, and it verifies.
    async def ledger_size() -> int:
        conn = await asyncpg.connect(stack.owner_dsn)
        try:
            count: int = await conn.fetchval("SELECT count(*) FROM consent.ledger")
            mine = await conn.fetchval(
                "SELECT count(*) FROM consent.ledger WHERE appointment_id = $1",
                uuid.UUID(appointment_id),
            )
        finally:
            await conn.close()
        return count if mine == 2 else 0

    records = wait_for(lambda: asyncio.run(ledger_size()), 60, "the new appointment's consent")
    # Verify stands on a signed checkpoint (docs/consent-ledger.md): sign the head first.
    signed = visio_rdv("consent", "checkpoint")
    assert signed.returncode == 0, signed.stdout + signed.stderr
    verified = visio_rdv("consent", "verify")
    assert verified.returncode == 0, verified.stdout + verified.stderr
    assert verified.stdout.startswith(f"OK {records} records"), verified.stdout
    assert f"checkpoints {stack.var / 'consent'}" in verified.stderr

    keys = visio_rdv("booking", "api-key", "list")
    assert keys.returncode == 0 and "development (visio-rdv up)" in keys.stdout

    # Graph answering again, a booking of the partner goes all the way, and the partner is told
    # on its own topic, without asking: `confirmed`, once the person has the email.
    second = f"e2e-{uuid.uuid4().hex[:12]}"
    (here / "second.json").write_text(
        json.dumps({"request_id": second, "request_type": "BookAppointment",
                    "payload": booking_body()})
    )  # fmt: skip
    produced = visio_rdv("ops", "produce", requests_topic, "--key", second, "--file", "second.json")
    assert produced.returncode == 0, produced.stderr

    def confirmed() -> dict[str, Any] | None:
        found = [r["value"] for r in tailed(visio_rdv("ops", "tail", replies_topic).stdout)]
        booked = next((r for r in found if r.get("request_id") == second), None)
        if booked is None:
            return None
        return next(
            (
                r for r in found
                if r.get("event_type") == "AppointmentOutcome"
                and r["appointment_id"] == booked["appointment_id"]
                and r["outcome"] == "confirmed"
            ),
            None,
        )  # fmt: skip

    outcome = wait_for(confirmed, 120, "the partner to be told its booking is confirmed")
    assert (outcome["calling_system"], outcome["revision"]) == ("national-scheduler", 1)


# --- Text messages through booking's API (issue 26) ------------------------------------------


def _awake_zone(start: datetime) -> tuple[str, str]:
    """(caf_code, time zone) where neither now nor `start` falls in 23:00-24:00, the quiet
    hours this stack is given."""
    for caf_code, zone in (("075", "Europe/Paris"), ("974", "Indian/Reunion")):
        hours = {moment.astimezone(ZoneInfo(zone)).hour for moment in (datetime.now(UTC), start)}
        if 23 not in hours:
            return caf_code, zone
    raise AssertionError("unreachable: the two zones are hours apart")


def _texts(stack: RunningStack) -> list[dict[str, Any]]:
    messages: list[dict[str, Any]] = httpx.get(
        f"{stack.sms}/_emulator/messages", trust_env=False
    ).json()["messages"]
    return messages


def _sms_log(stack: RunningStack, appointment_id: str) -> list[dict[str, Any]]:
    async def fetch() -> list[dict[str, Any]]:
        conn = await asyncpg.connect(stack.owner_dsn)
        try:
            rows = await conn.fetch(
                "SELECT kind, reminder_offset_minutes, status, encoding, segments, fallback, "
                "provider_id, delivery FROM notifications.sms_messages "
                "WHERE appointment_id = $1 ORDER BY id",
                uuid.UUID(appointment_id),
            )
        finally:
            await conn.close()
        return [dict(row) for row in rows]

    return asyncio.run(fetch())


def test_texts_through_booking_and_a_bounced_email_falls_back_to_a_text(
    stack: RunningStack,
) -> None:
    """Booked over HTTP with a mobile and texts chosen: the confirmation and both reminders
    arrive in the emulator, once each, with the segments the service counted (and the
    emulator, on its own). Meanwhile a booking whose address bounces after the relay took the
    email: the DSN comes back through the sink, the dispatch fails, the confirmation goes by
    text (not opted in: the fallback), booking shows it, and the Caf is alerted."""
    headers = {"Authorization": f"Bearer {stack.api_key}"}
    # The first reminder falls due 30 s from now, the second a minute later.
    start = (datetime.now(UTC) + timedelta(minutes=max(REMINDER_OFFSETS), seconds=30)).replace(
        microsecond=0
    )
    caf_code, zone = _awake_zone(start)
    texted = booking_body(
        caf_code=caf_code,
        timezone=zone,
        start=start.astimezone(ZoneInfo(zone)).isoformat(),
    )
    texted["user"] = {**texted["user"], "mobile": "06 12 34 56 78", "sms_opt_in": True}
    bounced = booking_body()
    bounced["user"] = {
        **bounced["user"],
        "email": "jeanne.dupont@bounce-later.example",
        "mobile": "+262 692 12 34 56",
    }
    with httpx.Client(base_url=stack.booking, headers=headers, trust_env=False) as client:
        answers = [client.post("/v1/appointments", json=body) for body in (texted, bounced)]
        assert [a.status_code for a in answers] == [202, 202], [a.text for a in answers]
        texted_id, bounced_id = (a.json()["appointment_id"] for a in answers)

        # The bounce: the relay took the email, then its DSN failed it.
        def failed() -> dict[str, Any] | None:
            view = client.get(f"/v1/appointments/{bounced_id}").json()
            return view if view["status"] == "notification_failed" else None

        view = wait_for(failed, 60, "the bounced email to fail the booking's confirmation")
    assert any("bounced" in str(entry.get("detail")) for entry in view["history"]), view
    [dsn] = list((stack.var / "mail" / "bounces").glob("*.eml"))
    assert b"To: bounce+" in dsn.read_bytes() and b"Action: failed" in dsn.read_bytes()
    alert = stack.var / "mail" / f"alert.{bounced_id}.notification_failed@visio-rdv.caf.fr.eml"
    wait_for(alert.exists, 60, "the Caf's alert about the bounced email")
    alert_text = email.message_from_bytes(alert.read_bytes(), policy=email.policy.default)
    assert alert_text["Subject"].startswith("[Visio RDV] email non envoyé — Caf 974")

    def fallback() -> list[dict[str, Any]] | None:
        mine = [m for m in _texts(stack) if m["recipient"] == "262692123456"]
        return mine or None

    [fallback_text] = wait_for(fallback, 60, "the confirmation by text after the bounce")
    assert fallback_text["content"].startswith("Caf : votre rendez-vous en visio est confirmé")
    first = _sms_log(stack, bounced_id)[0]
    assert (first["kind"], first["fallback"]) == ("confirmation", True)

    # The texts chosen: the confirmation, then each reminder as it falls due.
    def all_three() -> list[dict[str, Any]] | None:
        mine = [m for m in _texts(stack) if m["recipient"] == "33612345678"]
        return mine if len(mine) >= 3 else None

    wait_for(all_three, 150, "the confirmation and both reminders by text")
    # Two more rounds of notifications' poller, counted on its /metrics: nothing sent twice.
    rounds = poller_rounds(stack)
    wait_for(lambda: poller_rounds(stack) >= rounds + 2, 60, "two more rounds of the poller")
    received = [m for m in _texts(stack) if m["recipient"] == "33612345678"]
    logged = _sms_log(stack, texted_id)
    assert [(r["kind"], r["reminder_offset_minutes"], r["status"]) for r in logged] == [
        ("confirmation", None, "sent"),
        *[("reminder", offset, "sent") for offset in REMINDER_OFFSETS],
    ]
    assert len(received) == 3 and len({m["tag"] for m in received}) == 3
    by_id = {str(m["messageId"]): m for m in received}
    for row in logged:
        text = by_id[row["provider_id"]]
        # The service's count, the emulator's own reading of GSM 03.38, and the texts are
        # written so that one SMS holds each (a date in August alone turns them to UCS-2).
        assert (row["encoding"], row["segments"]) == (text["encoding"], text["smsCount"])
        if "août" not in text["content"]:
            assert (text["encoding"], text["smsCount"]) == ("GSM-7", 1), text
        assert "/r/" in text["content"]
    assert received[0]["content"].startswith("Caf : votre rendez-vous en visio est confirmé")
    assert all("rappel" in m["content"].lower() or "commence" in m["content"] for m in received[1:])
    # Receipts came back from the emulator to notifications' public address.
    wait_for(
        lambda: all(r["delivery"] == "delivered" for r in _sms_log(stack, texted_id)),
        30,
        "the delivery receipts",
    )


def poller_rounds(stack: RunningStack) -> float:
    """Rounds notifications' poller has finished (`visio_periodic_rounds_total`, ok or not)."""
    recorded = read_stack_file(stack.var / STACK_FILE)
    assert recorded is not None
    text = httpx.get(f"{recorded.admin['notifications']}/metrics", trust_env=False).text
    return sum(
        sample.value
        for family in text_string_to_metric_families(text)
        if family.name == "visio_periodic_rounds"
        for sample in family.samples
        if sample.name.endswith("_total") and sample.labels["task"] == "notifications-poller"
    )


def scrape_every_process(stack: RunningStack) -> dict[str, str]:
    """Each process's /metrics, as `up` recorded where they answer (var/stack.json): the admin
    ports, since the public ones serve no /metrics."""
    recorded = read_stack_file(stack.var / STACK_FILE)
    assert recorded is not None and set(recorded.admin) == set(recorded.http)
    with httpx.Client(timeout=10, trust_env=False) as client:
        return {name: client.get(f"{url}/metrics").text for name, url in recorded.admin.items()}


def test_every_metric_and_label_a_rule_or_a_panel_names_is_exported(
    stack: RunningStack, tmp_path: Path
) -> None:
    """Rule tests invent their series: this holds the rules and the dashboard to what the
    running processes really export, after a booking and a dead letter have been through."""
    headers = {"Authorization": f"Bearer {stack.api_key}"}
    ca = ensure_dev_ca(stack.var / "dev-ca").ssl_context()
    with (
        httpx.Client(base_url=stack.booking, headers=headers, trust_env=False) as client,
        httpx.Client(base_url=stack.graph, verify=ca, trust_env=False) as graph,
    ):
        book_and_wait_until_confirmed(client)
        # A failed attempt (Graph away for a moment), so failures have a class to show.
        graph.post("/_emulator/faults", json={"unavailable_rate": 1.0}).raise_for_status()
        try:
            assert client.post("/v1/appointments", json=booking_body()).status_code == 202
            wait_for(
                lambda: "visio_events_failed_total{" in scrape_every_process(stack)["meetings"],
                60,
                "a failed attempt in meetings",
            )
        finally:
            graph.post("/_emulator/faults", json={}).raise_for_status()
    visio_rdv, here = second_terminal(stack)
    (here / "garbage.txt").write_text("not an event")
    produced = visio_rdv("ops", "produce", "appointments", "--raw", "--file", "garbage.txt")
    assert produced.returncode == 0, produced.stderr

    def exercised() -> dict[str, str] | None:
        pages = scrape_every_process(stack)
        ready = (
            "visio_events_dead_lettered_total{" in pages["meetings"]
            and "visio_consumer_group_members{" in pages[LAG_EXPORTER]
        )
        return pages if ready else None

    pages = wait_for(exercised, 60, "a dead letter and the lag exporter's first measurement")
    assert set(pages) == {"booking", "meetings", "notifications", "consent", "alerts", LAG_EXPORTER}
    for name, page in pages.items():
        assert "process_resident_memory_bytes" in page and "python_info" in page, name
    assert (
        'visio_http_requests_total{method="POST",route="/v1/appointments",status="202"}'
        in (pages["booking"])
    )

    assert check_monitoring(pages.values()) == []

    # The same check fails once a metric a rule uses is renamed (here in a copy of the rules;
    # renaming it in the code instead leaves the rule naming a metric no process exports).
    renamed_rules = tmp_path / "rules"
    renamed_rules.mkdir()
    rules = (RULES_DIR / "visio-rdv.rules.yml").read_text(encoding="utf-8")
    assert "visio_smtp_sends_total" in rules
    (renamed_rules / "visio-rdv.rules.yml").write_text(
        rules.replace("visio_smtp_sends_total", "visio_smtp_messages_total"), encoding="utf-8"
    )
    exported = Exported()
    for page in pages.values():
        exported.add_page(page)
    assert check(rule_expressions(renamed_rules), exported) == [
        "visio-rdv.rules.yml: VisioSmtpDeferrals: no process exports visio_smtp_messages_total"
    ]
    # And a page from which the metric went (the code renamed it) fails the real rules.
    without = {
        name: "\n".join(line for line in page.splitlines() if "visio_smtp_sends" not in line)
        for name, page in pages.items()
    }
    assert "VisioSmtpDeferrals: no process exports visio_smtp_sends_total" in "\n".join(
        check_monitoring(without.values())
    )


def test_each_started_service_set_its_heap_aside_from_the_garbage_collector(
    stack: RunningStack,
) -> None:
    """visio_runtime.heap: once started, a service's objects are frozen out of the collector's
    walks (a build that no longer settles its heap exports 0 here)."""
    pages = scrape_every_process(stack)
    for name in ("booking", "meetings", "notifications", "consent", "alerts"):
        frozen = [
            sample.value
            for family in text_string_to_metric_families(pages[name])
            if family.name == "visio_heap_frozen_objects"
            for sample in family.samples
        ]
        # A started service holds about 100,000 objects: modules, schemas, templates, routes.
        assert len(frozen) == 1 and frozen[0] > 20_000, (name, frozen)


def test_stopping_up_leaves_no_process_behind(stack: RunningStack) -> None:
    children = psutil.Process(stack.process.pid).children(recursive=True)
    assert len(children) >= 6  # emulator, sink and the four services at least
    stack.process.send_signal(signal.SIGTERM)
    assert stack.process.wait(60) == 0
    _, alive = psutil.wait_procs(children, timeout=15)
    assert alive == [], [process.cmdline() for process in alive]
    assert "stopped" in stack.log.read_text()
    # The stack file went with it: no command of another terminal talks to a stopped stack.
    assert not (stack.var / "stack.json").exists()
