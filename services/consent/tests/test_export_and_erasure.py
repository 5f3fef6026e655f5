"""The whole export says which service did not answer, and chains the request; an erasure
removes the details kept beside the chain, appends its pseudonymous record (the chain still
verifies), and no replayed request keeps the details again."""

from __future__ import annotations

import asyncio
import json
import socket
import uuid
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import asyncpg
import uvicorn
from fastapi import FastAPI
from pydantic import SecretStr
from visio_consent.access import Asker
from visio_consent.erasure import erase_subject
from visio_consent.export import assemble
from visio_consent.handlers import record_consent
from visio_consent.ledger import GENESIS_HASH, check_chain, subject_ref
from visio_consent.settings import ConsentSettings
from visio_consent.verify import verify
from visio_runtime.personal_data import add_route
from visio_runtime.testing import wait_until
from visio_shared import (
    AppointmentRequested,
    ConsentRecorded,
    PersonalDataErasureRequested,
    Topics,
)

if TYPE_CHECKING:
    from conftest import FakePublisher

TOPICS = Topics("visio-rdv-test")
MakeEvent = Callable[..., AppointmentRequested]


def _announcements_of(publisher: FakePublisher, kind: str) -> list[dict[str, Any]]:
    """The ConsentRecorded events published for records of this kind."""
    published = [json.loads(call.message) for call in publisher.calls]
    return [
        event
        for event in published
        if event["event_type"] == "ConsentRecorded" and event["entries"][0]["kind"] == kind
    ]


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def test_an_export_names_the_service_that_did_not_answer_and_is_chained(
    pool: asyncpg.Pool, publisher: FakePublisher, make_event: MakeEvent
) -> None:
    event = make_event()
    base = ConsentSettings(subject_key=SecretStr("test-subject-key"))
    await record_consent(event, pool, publisher, base, TOPICS)

    async def collect(_: asyncpg.Connection, ids: list[uuid.UUID]) -> dict[str, object]:
        return {"appointments": [{"appointment_id": str(i)} for i in ids]}

    booking = FastAPI()
    add_route(booking, lambda: pool, collect)
    port = _closed_port()
    server = uvicorn.Server(uvicorn.Config(booking, host="127.0.0.1", port=port, log_level="error"))
    serving = asyncio.create_task(server.serve())
    await wait_until(lambda: server.started, within=30, what="uvicorn to listen")
    settings = base.model_copy(
        update={
            "booking_internal_url": f"http://127.0.0.1:{port}",
            "meetings_internal_url": f"http://127.0.0.1:{_closed_port()}",  # nobody listens
            "notifications_internal_url": None,  # not configured
            "export_deadline_s": 2.0,
        }
    )
    try:
        ref = subject_ref("test-subject-key", event.user.email)
        export = await assemble(pool, publisher, TOPICS, settings, ref, Asker.command("caf-dpo"))
    finally:
        server.should_exit = True
        await serving

    assert not export.complete
    parts = {part.service: part for part in export.services}
    assert parts["booking"].answered
    assert parts["booking"].data == {
        "appointments": [{"appointment_id": str(event.appointment_id)}]
    }
    assert not parts["meetings"].answered and not parts["notifications"].answered
    assert len(export.incomplete) == 2
    assert any("(meetings) n'a pas répondu" in line for line in export.incomplete)
    assert any("(notifications) n'a pas répondu" in line for line in export.incomplete)
    assert export.recorded is not None and export.recorded.kind == "access_exported"
    stored = await pool.fetchval("SELECT payload FROM ledger WHERE seq = $1", export.recorded.seq)
    assert '"services_missing": ["notifications", "meetings"]' in stored
    # Announced, carrying the record as hashed: a restored ledger can get it back.
    [announced] = _announcements_of(publisher, "access_exported")
    assert announced["appointment_id"] == str(event.appointment_id)
    assert announced["correlation_id"] == str(event.correlation_id)
    assert json.loads(announced["entries"][0]["payload"]) == json.loads(stored)
    async with pool.acquire() as conn:
        assert (await verify(conn)).ok


async def test_an_erasure_keeps_the_proof_and_no_replay_brings_the_details_back(
    pool: asyncpg.Pool, publisher: FakePublisher, make_event: MakeEvent
) -> None:
    settings = ConsentSettings(subject_key=SecretStr("test-subject-key"))
    event = make_event(email="ghislaine.erasable@example.org")
    await record_consent(event, pool, publisher, settings, TOPICS)
    assert await pool.fetchval("SELECT count(*) FROM subjects") == 1
    erasure = PersonalDataErasureRequested(
        appointment_id=event.appointment_id,
        revision=1,
        correlation_id=event.correlation_id,
        erasure_id=uuid.uuid4(),
        requested_by="ops:dpo",
    )

    await erase_subject(erasure, pool, publisher, TOPICS)
    await erase_subject(erasure, pool, publisher, TOPICS)  # redelivered: nothing more

    assert await pool.fetchval("SELECT count(*) FROM subjects") == 0
    kinds = [row["kind"] for row in await pool.fetch("SELECT kind FROM ledger ORDER BY seq")]
    assert kinds == ["cgu_accepted", "recording_authorised", "personal_data_erased"]
    async with pool.acquire() as conn:
        assert (await verify(conn)).ok
    confirmations = [
        json.loads(call.message)
        for call in publisher.calls
        if b"PersonalDataErased" in call.message
    ]
    assert len(confirmations) == 2  # confirmed again, as the same event
    assert len({c["event_id"] for c in confirmations}) == 1
    announced = _announcements_of(publisher, "personal_data_erased")
    assert len(announced) == 2 and len({a["event_id"] for a in announced}) == 1  # the same
    stored = await pool.fetchval("SELECT payload FROM ledger WHERE kind = 'personal_data_erased'")
    assert json.loads(announced[0]["entries"][0]["payload"]) == json.loads(stored)

    # Every record, the erasure's included, travelled on the topic: the whole chain can be
    # rebuilt from the announcements alone (what `consent rebuild-from-events` relies on).
    entries = {
        entry.seq: entry
        for call in publisher.calls
        if b'"ConsentRecorded"' in call.message
        for entry in ConsentRecorded.model_validate_json(call.message).entries
    }
    assert sorted(entries) == [1, 2, 3]
    check_chain([entries[seq] for seq in sorted(entries)], 0, GENESIS_HASH)

    # The same request re-emitted under a new id (as after a consumer reset): nothing kept.
    again = event.model_copy(update={"event_id": uuid.uuid4()})
    assert await record_consent(again, pool, publisher, settings, TOPICS) is None
    assert await pool.fetchval("SELECT count(*) FROM subjects") == 0
    assert await pool.fetchval("SELECT count(*) FROM ledger") == 3
