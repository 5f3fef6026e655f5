"""A booking is one statement (visio_booking.intake, store.book). What it costs booking's
database is counted on the wire to the real PostgreSQL: the app talks to PostgreSQL through a
proxy that reads the frontend protocol and counts, for the service's pool (its
`application_name`), the statements it runs (simple queries and extended `Execute`s) and its
round trips (a simple query, or a `Sync`: each waits for the server). Counted after a warm-up,
so every statement is prepared already on the connection it gets.

And what the statement keeps of the request's rules where it differs from a change's way: the
API key is checked by the statement (its holder kept in memory), so a key revoked before the
request is refused, with nothing written and no other answer; a refused booking leaves its
idempotency key free; a repeat is answered even once it would be refused."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import json
import struct
import uuid
from collections import Counter
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import asyncpg
import pytest
from visio_booking.keys import API_KEYS
from visio_shared.booking_requests import BookAppointment, BookingRequest

SSL_REQUEST = 80877103
POOL = "visio-rdv-booking"  # the service's pool; the outbox relay's connection is not counted


@dataclass
class Wire:
    """Counts per application_name, of what the clients sent."""

    statements: Counter[str] = field(default_factory=Counter)
    round_trips: Counter[str] = field(default_factory=Counter)

    def snapshot(self) -> tuple[int, int]:
        return self.statements[POOL], self.round_trips[POOL]


async def _pipe_counting(
    reader: asyncio.StreamReader, writer: asyncio.StreamWriter, wire: Wire
) -> None:
    """Client → server: forward every message, counting the typed ones once started up."""
    application = "?"
    while True:  # untyped messages first: an SSLRequest (answered 'N'), then the startup
        head = await reader.readexactly(8)
        length, code = struct.unpack("!ii", head)
        body = await reader.readexactly(length - 8)
        writer.write(head + body)
        if code != SSL_REQUEST:
            parts = body.split(b"\0")
            settings = dict(zip(parts[0::2], parts[1::2], strict=False))
            application = settings.get(b"application_name", b"?").decode()
            break
    while True:
        head = await reader.readexactly(5)
        kind, length = head[:1], struct.unpack("!i", head[1:])[0]
        writer.write(head + await reader.readexactly(length - 4))
        if kind in (b"Q", b"E"):
            wire.statements[application] += 1
        if kind in (b"Q", b"S"):
            wire.round_trips[application] += 1
            await writer.drain()


async def _pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    while data := await reader.read(65536):
        writer.write(data)
        await writer.drain()


@contextlib.asynccontextmanager
async def counting_proxy(postgres_url: str) -> AsyncIterator[tuple[str, Wire]]:
    """A URL like `postgres_url` that reaches the same server through the counting proxy."""
    target = urlsplit(postgres_url)
    wire = Wire()

    async def serve(client_r: asyncio.StreamReader, client_w: asyncio.StreamWriter) -> None:
        server_r, server_w = await asyncio.open_connection(target.hostname, target.port or 5432)
        pipes = [
            asyncio.create_task(_pipe_counting(client_r, server_w, wire)),
            asyncio.create_task(_pipe(server_r, client_w)),
        ]
        with contextlib.suppress(Exception):
            await asyncio.wait(pipes, return_when=asyncio.FIRST_COMPLETED)
        for task in pipes:
            task.cancel()
        for writer in (client_w, server_w):
            writer.close()

    server = await asyncio.start_server(serve, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    netloc = target.netloc.rsplit("@", 1)
    user = netloc[0] + "@" if len(netloc) == 2 else ""
    query = "&".join(filter(None, [target.query, "sslmode=disable"]))
    url = urlunsplit((target.scheme, f"{user}127.0.0.1:{port}", target.path, query, ""))
    try:
        yield url, wire
    finally:
        server.close()


@pytest.fixture(scope="module")
async def counted(
    postgres_url: str, kafka_bootstrap: str, start_booking: Any
) -> AsyncIterator[tuple[Any, Wire]]:
    async with counting_proxy(postgres_url) as (url, wire):
        harness, close = await start_booking(url, kafka_bootstrap)
        try:
            yield harness, wire
        finally:
            await close()


async def _http_booking(
    booking: Any, body: dict[str, Any] | None = None, caller: str = "caf-portal", **headers: str
) -> None:
    answer = await booking.client.post(
        "/v1/appointments", json=body or booking.body(), headers=booking.auth(caller, **headers)
    )
    assert answer.status_code == 202, answer.text


async def cost(wire: Wire, times: int, action: Any) -> tuple[float, float]:
    """Statements and round trips per action, over `times` of them after as many to warm up."""
    for _ in range(times):
        await action()
    before = wire.snapshot()
    for _ in range(times):
        await action()
    after = wire.snapshot()
    return (after[0] - before[0]) / times, (after[1] - before[1]) / times


# What a booking may cost: its one statement (store.book); the pool sends no reset when the
# connection comes back (visio_runtime.db.create_pool). Over HTTP, the API key nothing more: its
# holder is kept, the statement checks it.
BOOKING_COST = (1.0, 1.0)
KEY_COST = (0.0, 0.0)


async def test_an_http_booking_costs_one_statement(counted: tuple[Any, Wire]) -> None:
    booking, wire = counted
    plain = await cost(wire, 8, lambda: _http_booking(booking))
    keyed = await cost(
        wire, 8, lambda: _http_booking(booking, **{"Idempotency-Key": str(uuid.uuid4())})
    )
    print(f"HTTP booking (statements, round trips): {plain} without a key, {keyed} with one")
    expected = tuple(k + b for k, b in zip(KEY_COST, BOOKING_COST, strict=True))
    assert plain == keyed == expected


async def test_a_kafka_booking_costs_one_statement(counted: tuple[Any, Wire]) -> None:
    booking, wire = counted
    system = "national-scheduler"
    topic = booking.runtime.topics.partner_requests(system)
    replies = booking.runtime.topics.partner_replies(system)
    done: set[str] = set()

    async def one() -> None:
        request_id = str(uuid.uuid4())
        request = BookAppointment(
            request_id=request_id,
            calling_system=system,
            payload=BookingRequest.model_validate(booking.body()),
        )
        await booking.runtime.broker.publish(
            request.model_dump_json().encode(), topic, key=request_id.encode()
        )

        async def answered() -> bool:
            return request_id in done or await _replied(booking, replies, request_id, done)

        await booking.until(answered, 60, f"the reply to {request_id}")

    per = await cost(wire, 4, one)
    print(f"Kafka booking (statements, round trips): {per}")
    assert per == BOOKING_COST


async def _replied(booking: Any, topic: str, request_id: str, done: set[str]) -> bool:
    rows = await booking.sql(
        "SELECT payload FROM outbox WHERE topic = $1 AND payload::jsonb->>'request_id' = $2",
        topic,
        request_id,
    )
    for row in rows:
        done.add(json.loads(row["payload"])["request_id"])
    return request_id in done


async def test_a_booking_refused_as_an_overlap_leaves_its_key_free(
    counted: tuple[Any, Wire],
) -> None:
    booking, _ = counted
    taken = booking.body()
    await _http_booking(booking, body=taken)
    key = {"Idempotency-Key": f"overlap-{uuid.uuid4()}"}
    overlapping = {**booking.body(), "advisor": taken["advisor"], "start": taken["start"]}
    refused = await booking.client.post(
        "/v1/appointments", json=overlapping, headers=booking.auth(**key)
    )
    assert refused.status_code == 409, refused.text
    assert refused.json()["type"].endswith("/advisor-unavailable")
    # Refused, so not remembered: fixed, the request goes through with the same key.
    fixed = {**overlapping, "advisor": {"id": str(uuid.uuid4()), "display_name": "Paul Hoarau"}}
    answer = await booking.client.post("/v1/appointments", json=fixed, headers=booking.auth(**key))
    assert answer.status_code == 202, answer.text
    assert "Idempotent-Replayed" not in answer.headers


async def test_a_repeat_gets_its_first_answer_even_once_it_would_be_refused(
    counted: tuple[Any, Wire],
) -> None:
    booking, _ = counted
    body, key = booking.body(days=20), {"Idempotency-Key": f"later-{uuid.uuid4()}"}
    first = await booking.client.post("/v1/appointments", json=body, headers=booking.auth(**key))
    assert first.status_code == 202, first.text
    rules = booking.app.state.context
    booking.app.state.context = dataclasses.replace(rules, horizon_days=10)  # 20 days: too far
    try:
        refused = await booking.client.post(
            "/v1/appointments", json=booking.body(days=20), headers=booking.auth()
        )
        assert refused.status_code == 422, "the rule holds for a new request"
        again = await booking.client.post(
            "/v1/appointments", json=body, headers=booking.auth(**key)
        )
        assert again.status_code == 202 and again.content == first.content
        assert again.headers["Idempotent-Replayed"] == "true"
        other = await booking.client.post(
            "/v1/appointments", json={**body, "subject": "Autre"}, headers=booking.auth(**key)
        )
        assert other.status_code == 422
        assert other.json()["type"].endswith("/idempotency-key-reused")
    finally:
        booking.app.state.context = rules


async def _revocable_key(booking: Any, name: str) -> tuple[str, asyncpg.Connection]:
    """A key of its own, kept by the app (it booked once), and the owner's connection."""
    conn = await asyncpg.connect(booking.owner_dsn)
    key = await API_KEYS.create(conn, name, ["appointments:write", "appointments:read"])
    booking.keys[name] = key
    await _http_booking(booking, caller=name)
    return key, conn


async def test_a_booking_with_a_key_revoked_before_it_is_refused_at_once(
    counted: tuple[Any, Wire],
) -> None:
    booking, _ = counted
    name = f"revoked-{uuid.uuid4().hex[:8]}"
    _, conn = await _revocable_key(booking, name)
    try:
        first = booking.body()
        replayable = await booking.client.post(
            "/v1/appointments", json=first, headers=booking.auth(name, **{"Idempotency-Key": name})
        )
        assert replayable.status_code == 202
        assert await API_KEYS.revoke(conn, name) == 1
    finally:
        await conn.close()
    attempts = {
        "a booking": booking.body(),
        "a repeat of its first request": first,
        "an invalid booking": booking.body(duration_minutes=7),
        "an overlap": {**booking.body(), "advisor": first["advisor"], "start": first["start"]},
        "malformed JSON": b"{",
    }
    for what, body in attempts.items():
        sent = {"content": body} if isinstance(body, bytes) else {"json": body}
        answer = await booking.client.post(
            "/v1/appointments", **sent, headers=booking.auth(name, **{"Idempotency-Key": name})
        )
        assert answer.status_code == 401, f"{what}: {answer.text}"
        assert answer.json()["detail"] == "unknown or revoked API key"
    written = await booking.sql(
        "SELECT count(*) AS n FROM appointments WHERE calling_system = $1", name
    )
    assert written[0]["n"] == 2, "the two bookings made before the revocation, nothing after"
