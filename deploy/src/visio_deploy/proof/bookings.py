"""How the proof books, as a partner system would: over HTTP with an Idempotency-Key, retried
with the same key after any cut or 5xx; and as the declared partner `national-scheduler` on its
own topic `booking-requests.national-scheduler.v1`, resent with the same request_id when the
broker does not acknowledge. Either way a retry takes effect once."""

from __future__ import annotations

import asyncio
import json
import random
import time
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import httpx
from aiokafka import AIOKafkaProducer
from visio_shared.booking_requests import kafka_caller
from visio_shared.cgu_versions import current_cgu

from visio_deploy.stack import LOCAL_PARTNERS

# The partner the proof and the bench book as (one the local stack declares), and the name its
# appointments and request ids are kept under.
KAFKA_CALLER = LOCAL_PARTNERS[1]  # national-scheduler
KAFKA_OWNER = kafka_caller(KAFKA_CALLER)


def drawn_id(seed: int | str) -> str:
    """A uuid drawn from `seed`: the same seed, the same id (advisors the runs can name again)."""
    return str(uuid.UUID(int=random.Random(seed).getrandbits(128), version=4))


ADVISORS = [drawn_id(n) for n in range(8)]
_TAKEN: set[tuple[str, int, int]] = set()


def booking_body(rng: random.Random, **overrides: Any) -> dict[str, Any]:
    """A booking as a partner sends it. Its advisor and start, unless the caller gives both,
    are an hour of one of `ADVISORS` no other body of this process took: booking refuses an
    advisor's overlapping appointments (409)."""
    if "advisor" in overrides and "start" in overrides:  # the caller keeps them apart
        advisor, start = "", datetime.now(UTC)
    else:
        advisor, start = _free_hour(rng)
    n = rng.getrandbits(32)
    body: dict[str, Any] = {
        "caf_code": "974",
        "advisor": {"id": advisor, "display_name": "Claire Martin"},
        "start": start.replace(microsecond=0).isoformat(),
        "duration_minutes": rng.choice((20, 30, 45)),
        "timezone": "Indian/Reunion",
        "subject": "Prime d'activité",
        "user": {
            "first_name": "Jeanne",
            "last_name": "Dupont",
            "email": f"jeanne.{n}@example.fr",
            "device": rng.choice(("computer", "smartphone", "tablet")),
        },
        "consent": {
            "cgu_version": current_cgu().version,
            "accepted_at": datetime.now(UTC).isoformat(),
            "recording_authorised": rng.random() < 0.5,
        },
    }
    body.update(overrides)
    return body


def _free_hour(rng: random.Random) -> tuple[str, datetime]:
    """An (advisor, hour) no earlier body took, drawn at random; a clear error once all 6,408
    are taken (a caller booking more gives each body its advisor and start)."""
    if len(_TAKEN) >= len(ADVISORS) * 89 * 9:
        raise RuntimeError(
            f"booking_body: every hour of the {len(ADVISORS)} advisors is taken; "
            "give `advisor` and `start` to book more"
        )
    while True:
        advisor, day, hour = rng.choice(ADVISORS), rng.randint(2, 90), rng.randint(8, 16)
        if (advisor, day, hour) not in _TAKEN:
            _TAKEN.add((advisor, day, hour))
            break
    start = (datetime.now(UTC) + timedelta(days=day)).astimezone(ZoneInfo("Indian/Reunion"))
    return advisor, start.replace(hour=hour, minute=rng.choice((0, 10)), second=0)


async def book_over_http(
    client: httpx.AsyncClient, body: dict[str, Any], key: str, deadline: float
) -> tuple[str | None, str]:
    """The appointment id, or None and why. Retries connection errors, 429 and 5xx."""
    answer, why = await post_over_http(client, "/v1/appointments", body, key, deadline)
    return (str(answer["appointment_id"]), why) if answer is not None else (None, why)


async def post_over_http(
    client: httpx.AsyncClient, path: str, body: dict[str, Any], key: str, deadline: float
) -> tuple[dict[str, Any] | None, str]:
    """Booking's 202 answer, or None and why. Retries connection errors, 429 and 5xx with the
    same Idempotency-Key, as a partner does: the request takes effect once."""
    reason = "deadline"
    delay = 0.2
    while time.monotonic() < deadline:
        try:
            answer = await client.post(path, json=body, headers={"Idempotency-Key": key})
        except httpx.HTTPError as exc:
            reason = type(exc).__name__
        else:
            if answer.status_code == 202:
                accepted: dict[str, Any] = answer.json()
                return accepted, "accepted"
            if answer.status_code < 500 and answer.status_code != 429:
                return None, f"{answer.status_code} {answer.text[:200]}"
            reason = str(answer.status_code)
        await asyncio.sleep(delay)  # a client's backoff, not synchronisation
        delay = min(delay * 2, 2.0)
    return None, reason


def kafka_request(
    body: dict[str, Any],
    request_id: str,
    request_type: str = "BookAppointment",
    appointment_id: str | None = None,
    caller: str = KAFKA_CALLER,
) -> bytes:
    envelope = {
        "request_id": request_id,
        "calling_system": caller,
        "request_type": request_type,
        "sent_at": datetime.now(UTC).isoformat(),
        "payload": body,
    }
    if appointment_id is not None:
        envelope["appointment_id"] = appointment_id
    return json.dumps(envelope).encode()


async def send_over_kafka(
    producer: AIOKafkaProducer, topic: str, value: bytes, request_id: str, deadline: float
) -> bool:
    while time.monotonic() < deadline:
        try:
            await producer.send_and_wait(topic, value, key=request_id.encode())
            return True
        except Exception:  # any broker error: resend, the request_id makes it safe
            await asyncio.sleep(0.5)
    return False
