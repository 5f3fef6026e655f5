"""The bench's load: appointments booked over HTTP (as a partner's web front would) and by the
partner `national-scheduler` on its own request topic (as the Caf's national scheduler would),
spread over many advisors; and, for the backlog, `AppointmentRequested` events written straight
onto the appointments topic."""

from __future__ import annotations

import asyncio
import random
import time
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import httpx
from aiokafka import AIOKafkaProducer
from visio_shared import AppointmentRequested, Headers, current_cgu
from visio_shared.booking_requests import kafka_caller
from visio_shared.headers import event_key

from visio_deploy.proof.bookings import KAFKA_CALLER, booking_body, drawn_id, kafka_request


def advisors(count: int) -> list[dict[str, str]]:
    return [
        {"id": drawn_id(n),
         "display_name": f"Conseiller {n:03d}"}
        for n in range(count)
    ]  # fmt: skip


def bodies(count: int, advisor_count: int, seed: int) -> list[dict[str, Any]]:
    rng = random.Random(seed)  # test data, not security
    people = advisors(advisor_count)
    return [
        booking_body(rng, advisor=people[n % advisor_count], start=_hour(n // advisor_count))
        for n in range(count)
    ]


def _hour(index: int) -> str:
    """The index-th office hour from the day after tomorrow, in Réunion: an advisor's bodies
    never overlap (booking refuses that with 409); at most 45 minutes each, one an hour."""
    zone = ZoneInfo("Indian/Reunion")
    day = (datetime.now(UTC) + timedelta(days=2 + index // 9)).astimezone(zone)
    return day.replace(hour=8 + index % 9, minute=0, second=0, microsecond=0).isoformat()


@dataclass
class HttpResult:
    latencies_s: list[float] = field(default_factory=list)
    accepted_at: dict[str, float] = field(default_factory=dict)  # appointment id → epoch
    refused: dict[str, int] = field(default_factory=dict)  # why → how many

    def refuse(self, why: str) -> None:
        self.refused[why] = self.refused.get(why, 0) + 1


async def _post(client: httpx.AsyncClient, body: dict[str, Any], result: HttpResult) -> None:
    started = time.perf_counter()
    try:
        answer = await client.post(
            "/v1/appointments", json=body, headers={"Idempotency-Key": str(uuid.uuid4())}
        )
    except httpx.HTTPError as exc:
        result.refuse(type(exc).__name__)
        return
    result.latencies_s.append(time.perf_counter() - started)
    if answer.status_code == 202:
        result.accepted_at[str(answer.json()["appointment_id"])] = time.time()
    else:
        result.refuse(str(answer.status_code))


def http_client(base_url: str, api_key: str, connections: int) -> httpx.AsyncClient:
    return httpx.AsyncClient(
        base_url=base_url,
        headers={"Authorization": f"Bearer {api_key}"},
        limits=httpx.Limits(max_connections=connections, max_keepalive_connections=connections),
        timeout=30,
        trust_env=False,
    )


async def book_flat_out(
    base_url: str,
    api_key: str,
    work: list[dict[str, Any]],
    concurrency: int,
    result: HttpResult | None = None,
) -> HttpResult:
    """Book everything as fast as booking answers, `concurrency` requests in flight."""
    result = result if result is not None else HttpResult()
    queue = iter(work)
    async with http_client(base_url, api_key, concurrency) as client:

        async def worker() -> None:
            for body in queue:
                await _post(client, body, result)

        await asyncio.gather(*(worker() for _ in range(concurrency)))
    return result


async def book_at_rate(
    base_url: str, api_key: str, work: list[dict[str, Any]], rate: float
) -> HttpResult:
    """One booking every 1/rate seconds, each on its own task: an open-loop load, so a slow
    answer does not slow the offered rate (the way real users arrive)."""
    result = HttpResult()
    async with http_client(base_url, api_key, 64) as client:
        tasks = []
        start = time.perf_counter()
        for n, body in enumerate(work):
            delay = start + n / rate - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)  # pacing the offered load, not synchronisation
            tasks.append(asyncio.create_task(_post(client, body, result)))
        await asyncio.gather(*tasks)
    return result


async def send_requests(producer: AIOKafkaProducer, topic: str, work: list[dict[str, Any]]) -> int:
    """Every booking as a request on the inbound topic; returns how many the broker took."""
    futures = []
    for body in work:
        request_id = str(uuid.uuid4())
        futures.append(
            await producer.send(topic, kafka_request(body, request_id), key=request_id.encode())
        )
    done = await asyncio.gather(*futures, return_exceptions=True)
    return sum(1 for outcome in done if not isinstance(outcome, BaseException))


def requested_event(body: dict[str, Any]) -> AppointmentRequested:
    """What booking would publish for this booking (the backlog skips booking)."""
    appointment_id = uuid.uuid4()
    return AppointmentRequested.model_validate(
        {
            **body,
            "appointment_id": appointment_id,
            "revision": 1,
            "correlation_id": appointment_id,
            "consent": {
                **body["consent"],
                "cgu_sha256": current_cgu().sha256,
                "channel": "kafka",
            },
            "calling_system": kafka_caller(KAFKA_CALLER),
        }
    )


async def preload(producer: AIOKafkaProducer, topic: str, work: list[dict[str, Any]]) -> list[str]:
    """Every booking as the `AppointmentRequested` booking would publish; returns the ids of
    the appointments the broker took."""
    events = [requested_event(body) for body in work]
    futures = []
    for event in events:
        headers = [(k, v.encode()) for k, v in Headers.for_event(event).items()]
        futures.append(
            await producer.send(topic, event.to_json_bytes(), key=event_key(event), headers=headers)
        )
    done = await asyncio.gather(*futures, return_exceptions=True)
    return [
        str(event.appointment_id)
        for event, outcome in zip(events, done, strict=True)
        if not isinstance(outcome, BaseException)
    ]
