"""record_consent on a real PostgreSQL, with a fake publisher."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from typing import TYPE_CHECKING

import asyncpg
import pytest
from pydantic import SecretStr
from visio_consent.handlers import record_consent, record_consents, record_contact_correction
from visio_consent.ledger import subject_ref
from visio_consent.settings import ConsentSettings
from visio_consent.verify import verify
from visio_runtime.errors import Poison
from visio_shared import (
    CGU_VERSIONS,
    AppointmentRequested,
    ConsentRecorded,
    ContactCorrected,
    Headers,
    Topics,
)

if TYPE_CHECKING:
    from conftest import FakePublisher

SETTINGS = ConsentSettings(subject_key=SecretStr("test-subject-key"))
TOPICS = Topics("visio-rdv-test")

MakeEvent = Callable[..., AppointmentRequested]


async def ledger_text(pool: asyncpg.Pool) -> str:
    """Every ledger row, every column, as one text."""
    return await pool.fetchval("SELECT coalesce(string_agg(l::text, ' '), '') FROM ledger l")


async def test_records_cgu_and_recording_without_personal_data(
    pool: asyncpg.Pool, publisher: FakePublisher, make_event: MakeEvent
) -> None:
    event = make_event(recording_authorised=True)

    recorded = await record_consent(event, pool, publisher, SETTINGS, TOPICS)

    rows = await pool.fetch("SELECT * FROM ledger ORDER BY seq")
    assert [row["kind"] for row in rows] == ["cgu_accepted", "recording_authorised"]
    user = event.user
    ref = subject_ref("test-subject-key", "amelie.poulain@example.org")
    cgu, recording = (json.loads(row["payload"]) for row in rows)
    for payload in (cgu, recording):
        assert payload["subject_ref"] == ref
        assert payload["appointment_id"] == str(event.appointment_id)
        assert payload["revision"] == 1
        assert payload["source_event_id"] == str(event.event_id)
        assert payload["recorded_at"].endswith("+00:00")
    assert cgu["cgu_version"] == "1"
    assert cgu["cgu_sha256"] == CGU_VERSIONS["1"].sha256
    assert cgu["accepted_at"] == "2025-03-01T09:15:00.000000+00:00"
    assert (cgu["channel"], cgu["calling_system"]) == ("api", "caf.fr")

    text = (await ledger_text(pool)).casefold()
    for personal in (user.email, "amelie.poulain", user.first_name, user.last_name, "Poulain"):
        assert personal.casefold() not in text

    subject = await pool.fetchrow("SELECT * FROM subjects WHERE subject_ref = $1", ref)
    assert (subject["email"], subject["first_name"], subject["last_name"]) == (
        user.email,
        user.first_name,
        user.last_name,
    )
    assert subject["retain_until"] > event.start

    assert len(publisher.calls) == 1
    call = publisher.calls[0]
    assert call.topic == TOPICS.consents
    assert call.key == str(event.appointment_id).encode()
    assert call.headers[Headers.EVENT_TYPE] == "ConsentRecorded"
    published = ConsentRecorded.model_validate_json(call.message)
    assert published == recorded
    assert published.correlation_id == event.correlation_id
    assert published.causation_id == event.event_id
    assert (published.appointment_id, published.revision) == (event.appointment_id, 1)
    assert (published.subject_ref, published.cgu_version) == (ref, "1")
    assert [(e.seq, e.kind, e.hash) for e in published.entries] == [
        (row["seq"], row["kind"], row["hash"]) for row in rows
    ]
    assert user.email.casefold() not in call.message.decode().casefold()

    async with pool.acquire() as conn:
        assert (await verify(conn)).ok


async def test_a_refusal_is_recorded_as_such(
    pool: asyncpg.Pool, publisher: FakePublisher, make_event: MakeEvent
) -> None:
    recorded = await record_consent(
        make_event(recording_authorised=False), pool, publisher, SETTINGS, TOPICS
    )
    assert [entry.kind for entry in recorded.entries] == ["cgu_accepted", "recording_refused"]
    kinds = [row["kind"] for row in await pool.fetch("SELECT kind FROM ledger ORDER BY seq")]
    assert kinds == ["cgu_accepted", "recording_refused"]


async def test_a_redelivered_event_appends_nothing(
    pool: asyncpg.Pool, publisher: FakePublisher, make_event: MakeEvent
) -> None:
    event = make_event()
    first = await record_consent(event, pool, publisher, SETTINGS, TOPICS)
    head = await pool.fetchrow("SELECT seq, hash FROM chain_head")

    again = await record_consent(event, pool, publisher, SETTINGS, TOPICS)

    assert await pool.fetchval("SELECT count(*) FROM ledger") == 2
    assert await pool.fetchval("SELECT count(*) FROM processed_events") == 1
    assert await pool.fetchval("SELECT count(*) FROM subjects") == 1
    assert await pool.fetchrow("SELECT seq, hash FROM chain_head") == head
    # Announced again (the first publish may have been lost after commit), as the same event.
    assert again == first
    assert len(publisher.calls) == 2
    assert publisher.calls[0].message == publisher.calls[1].message


@pytest.mark.parametrize(
    ("cgu_version", "cgu_sha256", "message"),
    [
        ("99", None, "unknown CGU version '99'"),
        ("1", "f" * 64, "is not the digest of CGU version 1"),
    ],
    ids=["unknown version", "wrong sha256"],
)
async def test_a_cgu_this_system_never_published_is_poison(
    pool: asyncpg.Pool,
    publisher: FakePublisher,
    make_event: MakeEvent,
    cgu_version: str,
    cgu_sha256: str | None,
    message: str,
) -> None:
    event = make_event(cgu_version=cgu_version, cgu_sha256=cgu_sha256)
    with pytest.raises(Poison, match=message):
        await record_consent(event, pool, publisher, SETTINGS, TOPICS)
    assert await pool.fetchval("SELECT count(*) FROM ledger") == 0
    assert await pool.fetchval("SELECT count(*) FROM processed_events") == 0
    assert await pool.fetchval("SELECT count(*) FROM subjects") == 0
    assert publisher.calls == []


async def test_erasing_a_subject_keeps_the_chain_verifiable(
    pool: asyncpg.Pool, publisher: FakePublisher, make_event: MakeEvent
) -> None:
    first = await record_consent(make_event(), pool, publisher, SETTINGS, TOPICS)
    await record_consent(
        make_event(email="jean.dupont@example.org"), pool, publisher, SETTINGS, TOPICS
    )
    ref = first.subject_ref
    ledger_before = await ledger_text(pool)

    status = await pool.execute("DELETE FROM subjects WHERE subject_ref = $1", ref)

    assert status == "DELETE 1"
    assert await pool.fetchval("SELECT count(*) FROM subjects WHERE subject_ref = $1", ref) == 0
    assert await pool.fetchval("SELECT count(*) FROM subjects") == 1
    assert await ledger_text(pool) == ledger_before
    # The pseudonymous proof stays: the subject's records are still found by subject_ref.
    kept = "SELECT count(*) FROM ledger WHERE payload->>'subject_ref' = $1"
    assert await pool.fetchval(kept, ref) == 2
    async with pool.acquire() as conn:
        report = await verify(conn)
    assert report.ok and report.count == 4


def corrected(event: AppointmentRequested, email: str, **names: str) -> ContactCorrected:
    user = event.user.model_copy(update={"email": email, **names})
    return ContactCorrected(
        **event.caused(appointment_id=event.appointment_id, revision=2), user=user
    )


async def test_a_corrected_address_ties_the_new_subject_ref_to_the_appointment(
    pool: asyncpg.Pool, publisher: FakePublisher, make_event: MakeEvent
) -> None:
    event = make_event()
    first = await record_consent(event, pool, publisher, SETTINGS, TOPICS)
    correction = corrected(event, "amelie.lefebvre@example.org")

    recorded = await record_contact_correction(correction, pool, publisher, SETTINGS, TOPICS)

    new_ref = subject_ref("test-subject-key", "amelie.lefebvre@example.org")
    assert recorded is not None
    row = await pool.fetchrow("SELECT * FROM ledger WHERE seq = 3")
    record = json.loads(row["payload"])
    assert (row["kind"], record["subject_ref"], record["previous_subject_ref"]) == (
        "contact_corrected",
        new_ref,
        first.subject_ref,
    )
    assert (record["revision"], record["cgu_version"]) == (2, "1")
    assert record["source_event_id"] == str(correction.event_id)
    assert "lefebvre" not in row["payload"].casefold()
    assert await pool.fetchrow(
        "SELECT subject_ref, revision FROM appointments WHERE appointment_id = $1",
        event.appointment_id,
    ) == (new_ref, 2)
    kept = await pool.fetch("SELECT * FROM subjects ORDER BY recorded_at")
    assert [(k["subject_ref"], k["email"]) for k in kept] == [
        (first.subject_ref, event.user.email),
        (new_ref, "amelie.lefebvre@example.org"),
    ]
    assert kept[0]["retain_until"] == kept[1]["retain_until"]
    assert (recorded.subject_ref, recorded.revision, recorded.causation_id) == (
        new_ref,
        2,
        correction.event_id,
    )
    assert [(e.seq, e.kind) for e in recorded.entries] == [(3, "contact_corrected")]
    assert ConsentRecorded.model_validate_json(publisher.calls[-1].message) == recorded

    # Redelivered: nothing appended, the same announcement again.
    again = await record_contact_correction(correction, pool, publisher, SETTINGS, TOPICS)
    assert again == recorded
    assert await pool.fetchval("SELECT count(*) FROM ledger") == 3
    async with pool.acquire() as conn:
        assert (await verify(conn)).ok


async def test_a_corrected_name_changes_nothing_in_the_chain(
    pool: asyncpg.Pool, publisher: FakePublisher, make_event: MakeEvent
) -> None:
    event = make_event()
    await record_consent(event, pool, publisher, SETTINGS, TOPICS)
    correction = corrected(event, event.user.email, last_name="Poulain")

    assert await record_contact_correction(correction, pool, publisher, SETTINGS, TOPICS) is None

    assert await pool.fetchval("SELECT count(*) FROM ledger") == 2
    assert await pool.fetchval("SELECT last_name FROM subjects") == "Poulain"
    assert await pool.fetchval("SELECT revision FROM appointments") == 2
    assert len(publisher.calls) == 1  # the request's ConsentRecorded only


async def test_a_correction_of_an_unrecorded_appointment_is_poison(
    pool: asyncpg.Pool, publisher: FakePublisher, make_event: MakeEvent
) -> None:
    correction = corrected(make_event(), "someone@example.org")
    with pytest.raises(Poison, match="replay its AppointmentRequested"):
        await record_contact_correction(correction, pool, publisher, SETTINGS, TOPICS)
    assert await pool.fetchval("SELECT count(*) FROM processed_events") == 0


async def test_group_commits_keep_the_chain_whole_and_in_each_batchs_order(
    pool: asyncpg.Pool, publisher: FakePublisher, make_event: MakeEvent
) -> None:
    """Batches of requests appended at once, two at the same time, one with a redelivered
    event: every request has its two records, next to each other in its batch's order, the
    chain verifies, and every request is announced (the redelivered one again, the same)."""
    first = [make_event() for _ in range(20)]
    second = [make_event() for _ in range(20)]
    await record_consents(first[:1], pool, publisher, SETTINGS, TOPICS)
    batches = await asyncio.gather(
        record_consents(first, pool, publisher, SETTINGS, TOPICS),
        record_consents([*second, first[0]], pool, publisher, SETTINGS, TOPICS),
    )

    rows = await pool.fetch("SELECT seq, source_event_id FROM ledger ORDER BY seq")
    assert [row["seq"] for row in rows] == list(range(1, 81))
    order = [row["source_event_id"] for row in rows[::2]]
    assert [row["source_event_id"] for row in rows[1::2]] == order  # each request's two, adjacent
    assert order[0] == first[0].event_id
    for batch in (first[1:], second):  # a batch's requests in its order, in one stretch
        ids = [event.event_id for event in batch]
        at = order.index(ids[0])
        assert order[at : at + len(ids)] == ids
    async with pool.acquire() as conn:
        report = await verify(conn)
    assert report.ok and report.count == 80
    # The redelivered request appended nothing and was announced again, identically.
    again = [each for each in batches[1] if each.causation_id == first[0].event_id]
    assert again == [batches[0][0]]
    assert len(publisher.calls) == 1 + 20 + 21
