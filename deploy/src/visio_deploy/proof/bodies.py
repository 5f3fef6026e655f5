"""Hostile HTTP bodies for every endpoint that reads one — booking's API, consent's API, the
self-service forms — and what makes an answer clear: a problem+json 4xx that names what is
wrong (the APIs), a 4xx page (the forms, which people use). Never a 5xx, never a bare page."""

from __future__ import annotations

import json
import random
import uuid
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import httpx

from visio_deploy.proof.bookings import booking_body

BOM = b"\xef\xbb\xbf"
CLEAR_STATUSES = {400, 413, 415, 422}


def api_bodies(rng: random.Random) -> dict[str, bytes]:
    """Bodies no API may take, each by what it is."""
    valid = json.dumps(booking_body(rng)).encode()
    return {
        "nested 5,000 deep": b"[" * 5_000,
        "an object nested 3,000 deep": b'{"a":' * 3_000 + b"1" + b"}" * 3_000,
        "a key given twice": valid[:-1] + b', "caf_code": "974"}',
        "a byte-order mark": BOM + valid,
        "invalid UTF-8": valid.replace(b"Jeanne", b"Jea\xc3\x28nne", 1),
        "a lone surrogate": valid.replace(b"Jeanne", b"Jea\\ud800nne", 1),
        "NaN": valid[:-1] + b', "n": NaN}',
        "empty": b"",
        "null": b"null",
        "200,000 bytes": b'{"subject": "' + b"x" * 200_000 + b'"}',
    }


def form_bodies() -> dict[str, bytes]:
    return {
        "5,000 bytes": b"jeton=x&email=" + b"a" * 5_000,
        "not UTF-8": b"jeton=\xff\xfe&email=a%40b.fr",
        "nested brackets": b"jeton[" * 2_000 + b"=1",
        "a thousand fields": b"&".join(b"f%d=1" % n for n in range(1_000)),
    }


@dataclass
class Answered:
    """What the HTTP side of the proof saw: statuses (0: no answer), and each answer that was
    not clear."""

    statuses: Counter[int] = field(default_factory=Counter)
    unclear: list[str] = field(default_factory=list)

    def saw(self, status: int) -> None:
        self.statuses[status] += 1

    def refuse(self, what: str) -> None:
        self.unclear.append(what)


def problem(answer: httpx.Response) -> dict[str, Any] | None:
    """The answer as a problem+json that names what is wrong, else None."""
    if not answer.headers.get("content-type", "").startswith("application/problem+json"):
        return None
    body: dict[str, Any] = answer.json()
    if not (body.get("type") and body.get("title") and body.get("status") == answer.status_code):
        return None
    if answer.status_code == 422 and not all(e.get("field") for e in body.get("errors", [])):
        return None
    return body


def post_to_apis(
    booking: httpx.Client,
    consent: httpx.Client,
    rng: random.Random,
    answered: Answered,
    somebody: uuid.UUID,
) -> None:
    """Every hostile body to every endpoint of both APIs that reads one, whole (with its
    Content-Length) and streamed (chunked, with none): each answer a problem+json 4xx.
    `somebody`: an appointment of the caller's, so that its changes read their bodies."""
    endpoints = [
        (booking, "POST", "/v1/appointments"),
        (booking, "POST", f"/v1/appointments/{somebody}/reschedule"),
        (booking, "POST", f"/v1/appointments/{somebody}/cancel"),
        (booking, "PATCH", f"/v1/appointments/{somebody}/contact"),
        (booking, "POST", f"/v1/appointments/{somebody}/reassign"),
        (consent, "POST", "/v1/access"),
    ]
    for name, body in api_bodies(rng).items():
        for client, method, path in endpoints:
            for streamed in (False, True):
                content: bytes | Iterator[bytes] = _chunks(body) if streamed else body
                try:
                    answer = client.request(method, path, content=content)
                except httpx.TransportError as exc:
                    answered.saw(0)
                    answered.refuse(f"{method} {path} {name}: {type(exc).__name__}")
                    continue
                answered.saw(answer.status_code)
                if not 400 <= answer.status_code < 500 or problem(answer) is None:
                    answered.refuse(
                        f"{method} {path} {name}{' (streamed)' if streamed else ''}: "
                        f"{answer.status_code} {answer.text[:200]}"
                    )


def post_forms(booking: httpx.Client, consent: httpx.Client, answered: Answered) -> None:
    """The forms people post: each hostile one refused with a 4xx page."""
    form = {"Content-Type": "application/x-www-form-urlencoded"}
    targets = [
        (booking, "/nouveau-lien"),
        (booking, "/mon-rendez-vous/not-a-link/annuler"),
        (consent, "/enregistrement/not-a-link/retirer"),
    ]
    for name, body in form_bodies().items():
        for client, path in targets:
            answer = client.post(path, content=body, headers=form)
            answered.saw(answer.status_code)
            page = answer.headers.get("content-type", "").startswith("text/html")
            if not (400 <= answer.status_code < 500 and page):
                answered.refuse(f"POST {path} {name}: {answer.status_code} {answer.text[:200]}")


def _chunks(body: bytes, size: int = 8192) -> Iterator[bytes]:
    for start in range(0, max(len(body), 1), size):
        yield body[start : start + size]
