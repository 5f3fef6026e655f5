"""The service around the handlers: consumer routing and dead letters, and the HTTP API with its
API keys (verification, checkpoints, right of access, withdrawal). The broker is a recording
fake here; PostgreSQL is real. The same flows on a real broker: test_end_to_end.py."""

from __future__ import annotations

import json
import uuid
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import asyncpg
import httpx
import pytest
from aiokafka.structs import ConsumerRecord
from fastapi import FastAPI
from pydantic import SecretStr
from visio_consent.app import create_app
from visio_consent.checkpoints import read_file
from visio_consent.handlers import record_consent
from visio_consent.keys import API_KEYS
from visio_consent.settings import ConsentSettings
from visio_runtime.testing import record_of
from visio_shared import (
    AppointmentEvent,
    AppointmentRequested,
    ConsentRecorded,
    ContactCorrected,
    Headers,
    Topics,
)

if TYPE_CHECKING:
    from conftest import FakePublisher, Forger

MakeEvent = Callable[..., AppointmentRequested]


def as_record(event: AppointmentEvent, offset: int = 0) -> ConsumerRecord[Any, Any]:
    return record_of(event, "visio-rdv-test.appointments.v1", offset)


def test_create_app_does_no_io() -> None:
    # Nothing listens on these addresses: building the app must not try to reach them.
    app = create_app(
        ConsentSettings(
            database_url=SecretStr("postgresql://nobody@127.0.0.1:1/none"),
            kafka_bootstrap_servers="127.0.0.1:1",
            var_dir="/nonexistent/var",
        )
    )
    paths = set(app.openapi()["paths"])
    assert {
        "/v1/ledger/verify",
        "/v1/ledger/checkpoints",
        "/v1/access",
        "/v1/appointments/{appointment_id}/recording-withdrawal",
        "/health/live",
        "/health/ready",
    } <= paths
    assert "/metrics" not in paths  # served on the admin port, outside the API
    assert ConsentSettings().http_port == 8083


def wire(app: FastAPI, pool: asyncpg.Pool, publisher: FakePublisher) -> None:
    """What the lifespan would do, minus Kafka: the pool, a recording broker, the key."""
    runtime = app.state.runtime
    runtime.pool = pool
    runtime.broker = runtime.consumer.broker = publisher
    app.state.checkpointer.load_key()


async def test_consumer_records_consent_and_dead_letters_poison(
    settings: ConsentSettings,
    pool: asyncpg.Pool,
    publisher: FakePublisher,
    make_event: MakeEvent,
) -> None:
    app = create_app(settings)
    wire(app, pool, publisher)
    consumer = app.state.runtime.consumer
    topics = Topics(settings.topic_prefix)

    good = make_event()
    assert await consumer.process(as_record(good)) == "handled"
    user = good.user.model_copy(update={"email": "new@example.org"})
    correction = ContactCorrected(
        **good.caused(appointment_id=good.appointment_id, revision=2), user=user
    )
    assert await consumer.process(as_record(correction, offset=1)) == "handled"
    bad = make_event(cgu_sha256="0" * 64)
    assert await consumer.process(as_record(bad, offset=2)) == "dead_lettered"

    kinds = [row["kind"] for row in await pool.fetch("SELECT kind FROM ledger ORDER BY seq")]
    assert kinds == ["cgu_accepted", "recording_authorised", "contact_corrected"]
    consents, corrected, dead = publisher.calls
    assert consents.topic == corrected.topic == topics.consents
    assert ConsentRecorded.model_validate_json(consents.message).causation_id == good.event_id
    assert (
        ConsentRecorded.model_validate_json(corrected.message).causation_id == correction.event_id
    )
    assert dead.topic == topics.dlq("consent")
    assert dead.message == bad.to_json_bytes()
    assert dead.headers[Headers.DLQ_ERROR_CLASS] == "Poison"
    assert "is not the digest of CGU version 1" in dead.headers[Headers.DLQ_REASON]


@dataclass
class Api:
    client: httpx.AsyncClient
    app: FastAPI
    keys: dict[str, str]

    def auth(self, who: str) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.keys[who]}"}


@pytest.fixture
async def api(
    settings: ConsentSettings,
    pool: asyncpg.Pool,
    superuser: asyncpg.Connection,
    publisher: FakePublisher,
    kafka_bootstrap: str,
) -> AsyncIterator[Api]:
    # A real broker to read from: verification reads the checkpoint and consents topics (what
    # the fake publisher was asked to publish never reaches them).
    app = create_app(settings.model_copy(update={"kafka_bootstrap_servers": kafka_bootstrap}))
    wire(app, pool, publisher)
    keys = {
        "operator": await API_KEYS.create(superuser, "ops", ["consent:read"]),
        "signer": await API_KEYS.create(superuser, "checkpoint-job", ["consent:checkpoint"]),
        "withdrawer": await API_KEYS.create(superuser, "advisor-tool", ["consent:withdraw"]),
        "portal": await API_KEYS.create(superuser, "caf.fr", ["consent:read", "consent:withdraw"]),
        "revoked": await API_KEYS.create(superuser, "old", ["consent:read"]),
    }
    await superuser.execute("UPDATE api_keys SET revoked_at = now() WHERE name = 'old'")
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://consent") as client:
        yield Api(client, app, keys)


async def test_every_endpoint_needs_a_key_with_its_scope(api: Api) -> None:
    appointment = uuid.uuid4()
    calls = [
        ("GET", "/v1/ledger/verify", "consent:read"),
        ("POST", "/v1/ledger/checkpoints", "consent:checkpoint"),
        ("POST", "/v1/access", "consent:read"),
        ("POST", f"/v1/appointments/{appointment}/recording-withdrawal", "consent:withdraw"),
    ]
    for method, path, scope in calls:
        for headers in ({}, {"Authorization": "Bearer nope"}, api.auth("revoked")):
            answer = await api.client.request(method, path, headers=headers)
            assert answer.status_code == 401, (path, answer.text)
            assert answer.headers["content-type"] == "application/problem+json"
            assert answer.headers["www-authenticate"] == "Bearer"  # as booking's (RFC 6750)
        # Every other scope is refused: reading the ledger does not let a key sign it.
        lacking = {
            "consent:read": ("withdrawer", "signer"),
            "consent:checkpoint": ("operator", "portal", "withdrawer"),
            "consent:withdraw": ("operator", "signer"),
        }[scope]
        for name in lacking:
            answer = await api.client.request(method, path, headers=api.auth(name))
            assert answer.status_code == 403, (path, name, answer.text)
            assert scope in answer.json()["detail"]


async def test_verify_and_checkpoint_over_http_catch_a_full_rewrite(
    api: Api,
    settings: ConsentSettings,
    pool: asyncpg.Pool,
    publisher: FakePublisher,
    forger: Forger,
    make_event: MakeEvent,
) -> None:
    topics = Topics(settings.topic_prefix)
    empty = await api.client.post("/v1/ledger/checkpoints", headers=api.auth("signer"))
    assert (empty.status_code, empty.content) == (204, b"")  # nothing to sign
    for _ in range(2):
        await record_consent(make_event(), pool, publisher, settings, topics)

    unsigned = await api.client.get("/v1/ledger/verify", headers=api.auth("operator"))
    assert unsigned.status_code == 200
    assert (unsigned.json()["ok"], unsigned.json()["problem"]) == (False, "no_checkpoint")
    runtime = api.app.state.runtime  # its broker is a fake here: run the scrape hooks alone
    for hook in runtime.on_scrape:
        await hook(runtime)
    assert runtime.metrics.value("ledger_head_seq") == 4

    signed = await api.client.post("/v1/ledger/checkpoints", headers=api.auth("signer"))
    assert signed.status_code == 201
    checkpoint = signed.json()
    assert (checkpoint["seq"], checkpoint["head_hash"]) == (4, unsigned.json()["head_hash"])
    verified = await api.client.get("/v1/ledger/verify", headers=api.auth("operator"))
    assert (verified.json()["ok"], verified.json()["signed_seq"]) == (True, 4)
    # Signed through the fake publisher, the checkpoint is not on the topic: said, not failed.
    assert any("holds no checkpoint" in note for note in verified.json()["notes"])
    # The head has not moved: the same checkpoint, nothing new signed.
    again = await api.client.post("/v1/ledger/checkpoints", headers=api.auth("signer"))
    assert (again.status_code, again.json()) == (200, checkpoint)
    assert [cp.model_dump() for cp in read_file(settings.checkpoints_path)] == [checkpoint]
    published = publisher.calls[-1]
    assert published.topic == topics.consent_checkpoints
    assert json.loads(published.message) == checkpoint
    assert published.headers[Headers.EVENT_TYPE] == "ConsentCheckpoint"

    await forger.rewrite(2, {"kind": "recording_refused"})

    report = (await api.client.get("/v1/ledger/verify", headers=api.auth("operator"))).json()
    assert (report["ok"], report["broken_seq"], report["problem"]) == (False, 4, "altered")
    # And no checkpoint is signed over a history that does not verify.
    refused = await api.client.post("/v1/ledger/checkpoints", headers=api.auth("signer"))
    assert refused.status_code == 409
    assert refused.json()["report"]["problem"] == "altered"
    assert len(read_file(settings.checkpoints_path)) == 1


async def test_access_over_http(
    api: Api,
    settings: ConsentSettings,
    pool: asyncpg.Pool,
    publisher: FakePublisher,
    make_event: MakeEvent,
) -> None:
    event = make_event(timezone="Indian/Reunion")
    await record_consent(event, pool, publisher, settings, Topics(settings.topic_prefix))
    body = {"email": "  AMELIE.POULAIN@example.org "}

    as_json = await api.client.post("/v1/access", json=body, headers=api.auth("operator"))
    assert as_json.status_code == 200
    assert as_json.headers["content-type"] == "application/json"
    export = as_json.json()
    assert [r["kind"] for r in export["records"]] == ["cgu_accepted", "recording_authorised"]
    assert export["records"][0]["when"] == "samedi 1er mars 2025 à 13 h 15 (heure de La Réunion)"

    headers = {**api.auth("operator"), "Accept": "text/plain"}
    as_text = await api.client.post("/v1/access", json=body, headers=headers)
    assert as_text.headers["content-type"].startswith("text/plain")
    assert "droit d'accès" in as_text.text and export["records"][1]["hash"] in as_text.text

    # Each export is recorded, shown in the person's own export: who asked (the key's name), how,
    # when; the second lists the first and itself.
    assert [(r["requested_by"], r["channel"]) for r in export["access_requests"]] == [
        ("ops", "api")
    ]
    assert as_text.text.count("par le système « ops » (API de la Caf)") == 2
    portal = await api.client.post("/v1/access", json=body, headers=api.auth("portal"))
    asked = portal.json()["access_requests"]
    assert [r["requested_by"] for r in asked] == ["ops", "ops", "caf.fr"]
    assert asked[0]["requested_at"] <= asked[1]["requested_at"] <= asked[2]["requested_at"]
    assert asked[2]["when"].endswith("(heure de La Réunion)")

    for bad, field in (({"email": "not-an-email"}, "email"), ({**body, "name": "x"}, "name")):
        answer = await api.client.post("/v1/access", json=bad, headers=api.auth("operator"))
        assert answer.status_code == 422
        assert [error["field"] for error in answer.json()["errors"]] == [field]
    huge = {"email": "a@example.org", "x": "y" * settings.max_body_bytes}
    answer = await api.client.post("/v1/access", json=huge, headers=api.auth("operator"))
    assert answer.status_code == 413


async def test_no_export_leaves_without_its_record(
    api: Api,
    settings: ConsentSettings,
    pool: asyncpg.Pool,
    publisher: FakePublisher,
    superuser: asyncpg.Connection,
    make_event: MakeEvent,
) -> None:
    """Break the record on purpose: with the service unable to write it, nothing is exported."""
    await record_consent(make_event(), pool, publisher, settings, Topics(settings.topic_prefix))
    await superuser.execute("REVOKE INSERT ON access_requests FROM visio_consent")
    body = {"email": "amelie.poulain@example.org"}
    with pytest.raises(asyncpg.InsufficientPrivilegeError):
        await api.client.post("/v1/access", json=body, headers=api.auth("operator"))
    assert await superuser.fetchval("SELECT count(*) FROM access_requests") == 0
    await superuser.execute("GRANT INSERT ON access_requests TO visio_consent")
    answer = await api.client.post("/v1/access", json=body, headers=api.auth("operator"))
    assert len(answer.json()["access_requests"]) == 1


async def test_a_body_that_is_not_a_request_is_a_problem_never_a_500(
    api: Api, settings: ConsentSettings
) -> None:
    for body, status, said in (
        (b"[" * 4_000, 400, "recursion limit exceeded"),  # within the 4 KiB: read, and refused
        (b'{"email":' * 300 + b'"a@b.fr"' + b"}" * 300, 400, "recursion limit exceeded"),
        (b'\xef\xbb\xbf{"email": "a@example.org"}', 400, "byte-order mark"),
        (b'{"email": "a\xc3\x28@example.org"}', 400, "invalid unicode"),
        (b"", 400, "empty"),
        (b'{"email": "a@example.org", "email": "b@example.org"}', 422, "given more than once"),
        (b"[]", 422, "dictionary"),
    ):
        answer = await api.client.post("/v1/access", content=body, headers=api.auth("operator"))
        assert answer.status_code == status, answer.text
        assert answer.headers["content-type"] == "application/problem+json"
        assert said in answer.text, answer.text

    pulled = 0

    async def endless() -> Any:  # chunked, without a Content-Length to refuse it by
        nonlocal pulled
        for _ in range(10_000):
            pulled += 1
            yield b" " * 1024

    answer = await api.client.post("/v1/access", content=endless(), headers=api.auth("operator"))
    assert (
        answer.status_code == 413 and answer.headers["content-type"] == "application/problem+json"
    )
    assert pulled <= settings.max_body_bytes // 1024 + 1


async def test_withdrawal_over_http(
    api: Api,
    settings: ConsentSettings,
    pool: asyncpg.Pool,
    publisher: FakePublisher,
    make_event: MakeEvent,
) -> None:
    topics = Topics(settings.topic_prefix)
    authorised, refused = make_event(), make_event(recording_authorised=False)
    for event in (authorised, refused):
        await record_consent(event, pool, publisher, settings, topics)
    path = "/v1/appointments/{}/recording-withdrawal"

    first = await api.client.post(
        path.format(authorised.appointment_id), headers=api.auth("portal")
    )
    again = await api.client.post(
        path.format(authorised.appointment_id), headers=api.auth("portal")
    )

    assert (first.status_code, again.status_code) == (201, 200)
    assert (first.json()["appended"], again.json()["appended"]) == (True, False)
    assert first.json()["seq"] == again.json()["seq"] == 5
    record = json.loads(await pool.fetchval("SELECT payload FROM ledger WHERE seq = 5"))
    assert (record["kind"], record["calling_system"]) == ("recording_withdrawn", "caf.fr")
    assert await pool.fetchval("SELECT count(*) FROM ledger") == 5

    answer = await api.client.post(path.format(refused.appointment_id), headers=api.auth("portal"))
    assert (answer.status_code, answer.json()["type"].rsplit("/", 1)[-1]) == (
        409,
        "nothing-to-withdraw",
    )
    answer = await api.client.post(path.format(uuid.uuid4()), headers=api.auth("portal"))
    assert answer.status_code == 404
    answer = await api.client.post(path.format("not-a-uuid"), headers=api.auth("portal"))
    assert answer.status_code == 422


# --- The CGU versions, published (issue 24) ----------------------------------------------------


async def test_each_cgu_version_is_published_with_its_sha256_and_an_unknown_one_is_a_404(
    api: Api,
) -> None:
    import hashlib
    import html

    from visio_shared import CGU_VERSIONS

    for version, cgu in CGU_VERSIONS.items():
        page = await api.client.get(f"/cgu/{version}")
        assert page.status_code == 200
        text = html.unescape(page.text)
        assert '<html lang="fr"' in page.text and 'name="viewport"' in page.text
        assert "<script" not in page.text
        assert cgu.sha256 in text
        assert hashlib.sha256(cgu.text().encode()).hexdigest() == cgu.sha256
        # Every paragraph of the very text accepted is there.
        for block in (b.strip() for b in cgu.text().split("\n\n") if b.strip()):
            assert block in text
        assert "D'une façon générale, tout acte d'incivilité probant" in text
    unknown = await api.client.get("/cgu/99")
    assert unknown.status_code == 404
    said = html.unescape(unknown.text).replace("\u00a0", " ")
    assert "Cette version n'existe pas" in said and 'href="/cgu/1"' in unknown.text
