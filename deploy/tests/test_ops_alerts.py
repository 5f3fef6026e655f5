"""The Caf hears of failures, on the real broker, PostgreSQL and SMTP sink: a failed meeting
(told twice, and before the appointment itself arrives) gives exactly one email to that Caf's
team, with the appointment, the advisor, the time and the reason — and an appointment left
unconfirmed past the threshold gives one too."""

from __future__ import annotations

import email
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from email import policy
from pathlib import Path

import pytest
from aiosmtpd.controller import Controller
from visio_deploy.ops.alerts import AlertsSettings, create_app, prepare
from visio_deploy.smtp_sink import start_sink
from visio_runtime.service import Runtime
from visio_runtime.testing import wait_until
from visio_shared import (
    Advisor,
    AppointmentRequested,
    ConsentGiven,
    Device,
    MeetingFailed,
    Person,
    publish_event,
)


@pytest.fixture
def sink(tmp_path: Path) -> Iterator[Controller]:
    controller = start_sink(tmp_path / "mail", port=0)
    try:
        yield controller
    finally:
        controller.stop()


def stored(mail_dir: Path) -> list[Path]:
    return sorted(mail_dir.glob("*.eml"))


def requested(occurred_at: datetime) -> AppointmentRequested:
    return AppointmentRequested(
        appointment_id=uuid.uuid4(),
        revision=1,
        correlation_id=uuid.uuid4(),
        occurred_at=occurred_at,
        caf_code="974",
        advisor=Advisor(id="7a1e2b3c-4d5e-4f60-8a9b-0c1d2e3f4a57", display_name="Claire Martin"),
        start=datetime(2030, 3, 4, 6, 30, tzinfo=UTC),  # 10:30 in La Réunion
        duration_minutes=30,
        timezone="Indian/Reunion",
        subject="Prime d'activité",
        user=Person(
            first_name="Jeanne",
            last_name="Dupont",
            email="jeanne.dupont@example.fr",
            device=Device.COMPUTER,
        ),
        consent=ConsentGiven(
            cgu_version="1",
            cgu_sha256="0" * 64,
            accepted_at=occurred_at,
            recording_authorised=False,
            channel="api",
        ),
        calling_system="test",
    )


async def test_each_failure_tells_its_caf_once(
    kafka_bootstrap: str, fresh_database: str, sink: Controller
) -> None:
    settings = await prepare(
        AlertsSettings(
            kafka_bootstrap_servers=kafka_bootstrap,
            topic_prefix=f"alerts-{uuid.uuid4().hex[:8]}",
            owner_database_url=fresh_database,
            team_addresses={"974": "visio@caf974.fr"},
            smtp_port=sink.port,
            stuck_after_minutes=60,
            scan_interval_s=0.1,
        )
    )
    app = create_app(settings)
    rt: Runtime = app.state.runtime
    mail_dir: Path = sink.handler.mail_dir
    failing = requested(occurred_at=datetime.now(UTC))
    forgotten = requested(occurred_at=datetime.now(UTC) - timedelta(hours=2))
    async with app.router.lifespan_context(app):
        await wait_until(lambda: rt.consumer.state()["state"] == "assigned", what="assignment")
        for _ in range(2):  # the same failure told twice (two events, one cause)
            meeting_failed = MeetingFailed(
                **failing.caused(appointment_id=failing.appointment_id, revision=1),
                reason="graph_forbidden",
                detail="the advisor's mailbox refuses the application",
            )
            await publish_event(rt.broker, rt.topics.meetings, meeting_failed)
        for appointment in (failing, forgotten):
            await publish_event(rt.broker, rt.topics.appointments, appointment)

        await wait_until(lambda: rt.metrics.value("events_handled_total") == 4, what="4 events")
        await wait_until(lambda: len(stored(mail_dir)) == 2, what="two emails")

    mails = stored(mail_dir)
    assert len(mails) == 2  # and no more, once every event was handled and the scans ran

    received = {
        message["Message-ID"].strip(): message
        for message in (
            email.message_from_bytes(path.read_bytes(), policy=policy.default) for path in mails
        )
    }
    assert set(received) == {
        f"<alert.{failing.appointment_id}.meeting_failed@visio-rdv.caf.fr>",
        f"<alert.{forgotten.appointment_id}.stuck@visio-rdv.caf.fr>",
    }
    alert = received[f"<alert.{failing.appointment_id}.meeting_failed@visio-rdv.caf.fr>"]
    assert alert["To"] == "visio@caf974.fr"
    body = alert.get_content()
    assert str(failing.appointment_id) in body
    assert "Claire Martin (7a1e2b3c-4d5e-4f60-8a9b-0c1d2e3f4a57)" in body
    assert "04/03/2030 10:30 (Indian/Reunion)" in body
    assert "graph_forbidden" in body and "refuses the application" in body
    assert "Dupont" not in alert.as_string() and "jeanne" not in alert.as_string()
    assert rt.metrics.value("alerts_sent_total", cause="meeting_failed") == 1
    assert rt.metrics.value("alerts_sent_total", cause="stuck") == 1
