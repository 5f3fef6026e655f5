"""The bench's accounting on a real database: an appointment counts as done only when it has,
itself, its meeting, its email, its `confirmed` status and its two ledger records; and only the
PostgreSQL backends of the run's own database count as the run's, however they come and go."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from email.message import EmailMessage
from pathlib import Path

import asyncpg
import psutil
import pytest
from visio_booking import store as booking_store
from visio_consent.handlers import consent_records
from visio_consent.ledger import append
from visio_deploy.bench import load
from visio_deploy.bench.accounts import LOAD_SQL, POSTGRESQL
from visio_deploy.bench.backends import DatabaseBackends
from visio_deploy.bench.probes import ProgressProbe
from visio_deploy.migrate import migrate_all
from visio_fakes.smtp_sink import MailSink
from visio_meetings import store as meetings_store
from visio_notifications.compose import message_id
from visio_runtime.testing import wait_until
from visio_shared import AppointmentRequested
from visio_testing import create_database, drop_database

# Enough work for the OS to see: a few hundred CPU-ms in one backend.
_BURN = "SELECT sum(i) FROM generate_series(1, 3000000) AS i"


@pytest.fixture
async def db(fresh_database: str) -> str:
    await migrate_all(fresh_database)
    return fresh_database


@pytest.fixture
async def conn(db: str) -> AsyncIterator[asyncpg.Connection]:
    connection = await asyncpg.connect(db)
    try:
        yield connection
    finally:
        await connection.close()


def requested(seed: int) -> AppointmentRequested:
    body = load.bodies(1, 1, seed)[0]
    # An advisor per seed: one advisor's live appointments never overlap (booking's rule).
    body["advisor"] = {**body["advisor"], "id": str(uuid.UUID(int=seed, version=4))}
    return load.requested_event(body)


async def booked(conn: asyncpg.Connection, event: AppointmentRequested, status: str) -> None:
    await conn.execute("SET search_path = booking")
    assert await booking_store.book(conn, event, None, None, []) == "booked"
    await conn.execute(
        "UPDATE appointments SET status = $2 WHERE appointment_id = $1",
        event.appointment_id,
        status,
    )


async def meeting(conn: asyncpg.Connection, event: AppointmentRequested) -> None:
    await conn.execute("SET search_path = meetings")
    fields = dict.fromkeys(meetings_store.Meeting.__dataclass_fields__)
    fields |= {
        "appointment_id": event.appointment_id,
        "revision": 1,
        "advisor_id": event.advisor.id,
        "transaction_id": str(uuid.uuid4()),
        "status": "ready",
        "recording_authorised": False,
        "join_url": "https://teams.microsoft.com/l/meetup-join/x",
    }
    await meetings_store.save(conn, meetings_store.Meeting(**fields))


async def ledger(conn: asyncpg.Connection, event: AppointmentRequested, *, both: bool) -> None:
    """The two records consent appends for a request, or the CGU acceptance alone."""
    await conn.execute("SET search_path = consent")
    records = consent_records(event, "ref-" + event.appointment_id.hex)
    await append(conn, records if both else records[:1])


def emailed(sink: MailSink, event: AppointmentRequested) -> None:
    message = EmailMessage()
    message["Message-ID"] = message_id(event.appointment_id, 1, "confirmation", "caf.example")
    message["Subject"] = "Votre rendez-vous"
    message.set_content("Bonjour")
    sink.store(message.as_bytes())


async def test_an_appointment_is_done_only_when_it_has_all_of_its_own_parts(
    db: str, conn: asyncpg.Connection, tmp_path: Path
) -> None:
    sink = MailSink(tmp_path / "mail")
    whole, no_ledger, only_cgu, no_email, not_confirmed, ledger_only = (
        requested(n) for n in range(6)
    )
    async with ProgressProbe(db, sink.mail_dir) as probe:
        probe.begin()
        for event in (whole, no_ledger, only_cgu, no_email, not_confirmed):
            await booked(conn, event, "meeting_ready" if event is not_confirmed else "confirmed")
            await meeting(conn, event)
            if event is not no_email:
                emailed(sink, event)
        await ledger(conn, whole, both=True)
        await ledger(conn, only_cgu, both=False)
        await ledger(conn, no_email, both=True)
        await ledger(conn, not_confirmed, both=True)
        # Records of an appointment booking never confirmed: totals would pair them with
        # `no_ledger`'s meeting, email and status and call one more appointment done.
        await ledger(conn, ledger_only, both=True)

        progress = await probe.read()
        assert (progress.meetings, progress.emails, progress.confirmed) == (5, 4, 4)
        assert progress.consent == 5
        assert min(progress.meetings, progress.emails, progress.confirmed, progress.consent) == 4
        assert progress.done == 1
        assert probe.done == {str(whole.appointment_id)}

        # Its records arrive: it is done now, and the one done before is not counted twice.
        await ledger(conn, no_ledger, both=True)
        assert (await probe.read()).done == 2
        assert (await probe.read()).done == 2


async def test_a_backlog_appointment_is_done_without_booking_but_not_without_its_meeting(
    db: str, conn: asyncpg.Connection, tmp_path: Path
) -> None:
    sink = MailSink(tmp_path / "mail")
    ready, no_meeting, not_ours = (requested(n) for n in range(10, 13))
    for event in (ready, no_meeting, not_ours):
        await ledger(conn, event, both=True)
        emailed(sink, event)
    await meeting(conn, ready)
    await meeting(conn, not_ours)
    expected = [str(ready.appointment_id), str(no_meeting.appointment_id)]
    async with ProgressProbe(db, sink.mail_dir, expected=expected) as probe:
        assert (await probe.read(per_appointment=False)).done == 0
        progress = await probe.read()
    assert progress.done == 1
    assert probe.done == {str(ready.appointment_id)}


def _on_this_machine(pid: int) -> bool:
    try:
        return psutil.Process(pid).name() == "postgres"
    except psutil.NoSuchProcess:
        return False


def _cpu_s(pid: int) -> float:
    times = psutil.Process(pid).cpu_times()
    return float(times.user + times.system)


async def test_only_the_backends_of_the_runs_own_database_count_however_they_come_and_go(
    db: str, postgres_url: str
) -> None:
    elsewhere = await create_database(postgres_url, prefix="visio_test_elsewhere")
    ours = await asyncpg.connect(db)
    probe = await asyncpg.connect(db)
    neighbour = await asyncpg.connect(elsewhere)
    local = _on_this_machine(ours.get_server_pid())
    backends = DatabaseBackends(db, load_pids=[probe.get_server_pid()], every_s=0.05)
    try:
        await backends.start()
        if not local:
            # The server runs in a container or elsewhere: its backends are said unreadable,
            # never mistaken for whatever process of this machine has the same pid.
            await ours.fetchval(_BURN)
            figures = await backends.stop()
            assert figures.unreadable > 0 and POSTGRESQL not in figures.cpu_s
            return
        ours_before = _cpu_s(ours.get_server_pid())
        for connection in (ours, probe, neighbour):
            await connection.fetchval(_BURN)
        ours_used = _cpu_s(ours.get_server_pid()) - ours_before

        # A backend that begins during the phase, works, and ends before it does.
        brief = await asyncpg.connect(db)
        brief_pid = brief.get_server_pid()
        await brief.fetchval(_BURN)
        brief_used = _cpu_s(brief_pid)  # all of it: it began during the phase

        def counted(pid: int) -> float | None:
            found = [u.cpu_s for u in backends.figures().each if u.pid == pid]
            return found[0] if found else None

        await wait_until(
            lambda: (counted(brief_pid) or 0) >= brief_used - 0.01, 10, "a sample after its work"
        )
        await brief.close()
        await wait_until(
            lambda: any(u.pid == brief_pid and u.ended for u in backends.figures().each),
            10,
            "the sampler to see it end",
        )
        figures = await backends.stop()
    finally:
        for connection in (ours, probe, neighbour):
            await connection.close()
        await drop_database(postgres_url, elsewhere)

    by_pid = {use.pid: use for use in figures.each}
    assert neighbour.get_server_pid() not in by_pid, "another database's backend was counted"
    assert by_pid[ours.get_server_pid()].bucket == POSTGRESQL
    assert by_pid[ours.get_server_pid()].cpu_s == pytest.approx(ours_used, abs=0.05)
    assert by_pid[probe.get_server_pid()].bucket == LOAD_SQL
    assert by_pid[brief_pid].bucket == POSTGRESQL and by_pid[brief_pid].ended
    assert by_pid[brief_pid].cpu_s == pytest.approx(brief_used, abs=0.05)
    assert figures.ended >= 1 and figures.unreadable == 0
    # The run's database's figure is its backends' and nothing else's.
    assert figures.cpu_s[POSTGRESQL] == pytest.approx(
        sum(u.cpu_s for u in figures.each if u.bucket == POSTGRESQL)
    )
    assert figures.cpu_s[POSTGRESQL] >= ours_used + brief_used - 0.05
