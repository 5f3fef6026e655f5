"""withdraw_recording on a real PostgreSQL, with a fake publisher: a new record, never an
update; once per appointment however often it is asked; RecordingConsentWithdrawn and
ConsentRecorded announced every time, identically."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from typing import TYPE_CHECKING

import asyncpg
import pytest
from pydantic import SecretStr
from visio_consent.handlers import record_consent, record_contact_correction
from visio_consent.ledger import subject_ref
from visio_consent.settings import ConsentSettings
from visio_consent.verify import verify
from visio_consent.withdrawal import NothingToWithdraw, UnknownAppointment, withdraw_recording
from visio_shared import (
    AppointmentRequested,
    ConsentRecorded,
    ContactCorrected,
    RecordingConsentWithdrawn,
    Topics,
)

if TYPE_CHECKING:
    from conftest import FakePublisher

SETTINGS = ConsentSettings(subject_key=SecretStr("test-subject-key"))
TOPICS = Topics("visio-rdv-test")

MakeEvent = Callable[..., AppointmentRequested]


async def test_withdrawal_appends_once_and_announces_every_time(
    pool: asyncpg.Pool, publisher: FakePublisher, make_event: MakeEvent
) -> None:
    event = make_event(recording_authorised=True)
    await record_consent(event, pool, publisher, SETTINGS, TOPICS)
    publisher.calls.clear()

    first = await withdraw_recording(
        pool, publisher, TOPICS, event.appointment_id, calling_system="caf.fr"
    )
    again = await withdraw_recording(
        pool, publisher, TOPICS, event.appointment_id, calling_system="caf.fr"
    )

    assert (first.appended, again.appended) == (True, False)
    rows = await pool.fetch("SELECT kind, payload FROM ledger ORDER BY seq")
    assert [row["kind"] for row in rows] == [
        "cgu_accepted",
        "recording_authorised",  # still there: history is never rewritten
        "recording_withdrawn",
    ]
    record = json.loads(rows[2]["payload"])
    assert record["subject_ref"] == subject_ref("test-subject-key", event.user.email)
    assert (record["channel"], record["calling_system"], record["revision"]) == ("api", "caf.fr", 1)
    assert record["source_event_id"] == str(first.event.event_id)

    withdrawn = RecordingConsentWithdrawn.model_validate_json(publisher.calls[0].message)
    assert publisher.calls[0].topic == TOPICS.consents
    assert publisher.calls[0].key == str(event.appointment_id).encode()
    assert withdrawn == first.event
    assert (withdrawn.appointment_id, withdrawn.correlation_id) == (
        event.appointment_id,
        event.correlation_id,
    )
    assert (withdrawn.subject_ref, withdrawn.channel) == (record["subject_ref"], "api")
    recorded = ConsentRecorded.model_validate_json(publisher.calls[1].message)
    assert recorded.causation_id == withdrawn.event_id
    assert [(e.seq, e.kind, e.hash) for e in recorded.entries] == [
        (3, "recording_withdrawn", first.entry.hash)
    ]
    # The repeat announced exactly the same two events.
    assert [call.message for call in publisher.calls[2:]] == [
        call.message for call in publisher.calls[:2]
    ]
    async with pool.acquire() as conn:
        assert (await verify(conn)).count == 3


async def test_concurrent_withdrawals_append_one_record(
    pool: asyncpg.Pool, publisher: FakePublisher, make_event: MakeEvent
) -> None:
    event = make_event(recording_authorised=True)
    await record_consent(event, pool, publisher, SETTINGS, TOPICS)

    done = await asyncio.gather(
        *(
            withdraw_recording(pool, publisher, TOPICS, event.appointment_id, calling_system="x")
            for _ in range(8)
        )
    )

    assert sum(withdrawal.appended for withdrawal in done) == 1
    kinds = "SELECT count(*) FROM ledger WHERE kind = 'recording_withdrawn'"
    assert await pool.fetchval(kinds) == 1


async def test_a_withdrawal_after_a_correction_carries_the_new_subject_ref(
    pool: asyncpg.Pool, publisher: FakePublisher, make_event: MakeEvent
) -> None:
    event = make_event(recording_authorised=True)
    await record_consent(event, pool, publisher, SETTINGS, TOPICS)
    user = event.user.model_copy(update={"email": "new@example.org"})
    correction = ContactCorrected(
        **event.caused(appointment_id=event.appointment_id, revision=2), user=user
    )
    await record_contact_correction(correction, pool, publisher, SETTINGS, TOPICS)

    done = await withdraw_recording(
        pool, publisher, TOPICS, event.appointment_id, calling_system="x"
    )

    assert done.event.subject_ref == subject_ref("test-subject-key", "new@example.org")
    assert done.event.revision == 2


async def test_nothing_to_withdraw(
    pool: asyncpg.Pool, publisher: FakePublisher, make_event: MakeEvent
) -> None:
    refused = make_event(recording_authorised=False)
    await record_consent(refused, pool, publisher, SETTINGS, TOPICS)
    publisher.calls.clear()

    with pytest.raises(NothingToWithdraw):
        await withdraw_recording(
            pool, publisher, TOPICS, refused.appointment_id, calling_system="x"
        )
    with pytest.raises(UnknownAppointment):
        await withdraw_recording(
            pool, publisher, TOPICS, make_event().appointment_id, calling_system="x"
        )
    assert await pool.fetchval("SELECT count(*) FROM ledger") == 2
    assert publisher.calls == []
