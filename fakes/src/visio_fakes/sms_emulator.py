"""An emulator of Brevo's transactional SMS API (the contract `visio_notifications.brevo`
follows), for the local stack and the tests: it keeps what it was sent instead of texting
anyone, posts delivery receipts to each message's `webUrl`, and misbehaves on demand.

- `POST /v3/transactionalSMS/send` (header `api-key`): `201 {"messageId"}`; 400 for a recipient
  that is not international digits; 401 without the key.
- `GET /v3/transactionalSMS/statistics/events?tags=["…"]`: the `sent` events under those tags.
- Receipts: `delivered` shortly after, or `hard_bounce` for a number in `unknown_numbers`.
- Faults, consumed in order from a queue (`POST /_emulator/faults {"send": [...], "find": [...]}`)
  or drawn at random with a seed (`{"rates": {"429": 0.1, …}, "seed": 7}`): `429`, `500`,
  `502`, `503`, `timeout_before` (no answer, nothing kept), `timeout_after` (kept, then no
  answer: the ambiguous case), `unknown_number` (kept, then a hard_bounce receipt).
- `GET /_emulator/messages`: every message kept, with its segment count as the emulator counts
  it (its own reading of GSM 03.38, independent of the service's); `POST /_emulator/reset`.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import itertools
import json
import logging
import random
import socket
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import httpx
import uvicorn
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response

log = logging.getLogger(__name__)

API_KEY = "dev-sms-api-key"
FAULTS = ("429", "500", "502", "503", "timeout_before", "timeout_after", "unknown_number")

# GSM 03.38: the default alphabet and the extension table (two septets each).
_GSM = set(
    "@£$¥èéùìòÇ\nØø\rÅåΔ_ΦΓΛΩΠΨΣΘΞÆæßÉ !\"#¤%&'()*+,-./0123456789:;<=>?¡ABCDEFGHIJKLMNOPQRSTUVWXYZ"
    "ÄÖÑÜ§¿abcdefghijklmnopqrstuvwxyzäöñüà"
)
_GSM_EXT = set("\f^{}\\[~]|€")


def sms_count(text: str) -> tuple[str, int]:
    """(encoding, segments), as a network would split the text."""
    if all(c in _GSM or c in _GSM_EXT for c in text):
        units = [2 if c in _GSM_EXT else 1 for c in text]
        single, part, encoding = 160, 153, "GSM-7"
    else:
        units = [2 if ord(c) > 0xFFFF else 1 for c in text]
        single, part, encoding = 70, 67, "UCS-2"
    if sum(units) <= single:
        return encoding, 1
    parts, used = 1, 0
    for unit in units:
        if used + unit > part:
            parts, used = parts + 1, 0
        used += unit
    return encoding, parts


@dataclass
class EmulatorState:
    hang_s: float = 30.0
    receipt_delay_s: float = 0.05
    messages: list[dict[str, Any]] = field(default_factory=list)
    queued: dict[str, list[str]] = field(default_factory=lambda: {"send": [], "find": []})
    rates: dict[str, float] = field(default_factory=dict)
    rng: random.Random = field(default_factory=random.Random)
    unknown_numbers: set[str] = field(default_factory=set)
    faults_served: list[str] = field(default_factory=list)
    ids: itertools.count[int] = field(default_factory=lambda: itertools.count(1511882900176220))
    receipts: set[asyncio.Task[None]] = field(default_factory=set)

    def next_fault(self, call: str) -> str | None:
        if self.queued[call]:
            return self.queued[call].pop(0)
        if call == "send" and self.rates:
            draw = self.rng.random()
            for fault, rate in self.rates.items():
                if draw < rate:
                    return fault
                draw -= rate
        return None


def create_app(state: EmulatorState | None = None) -> FastAPI:
    app = FastAPI(title="Brevo transactional SMS emulator", docs_url=None, redoc_url=None)
    app.state.sms = state = state or EmulatorState()
    _add_brevo_api(app, state)
    _add_controls(app, state)
    return app


def _unauthorised(request: Request) -> Response | None:
    if request.headers.get("api-key") != API_KEY:
        return JSONResponse({"code": "unauthorized", "message": "Key not found"}, 401)
    return None


async def _fault_answer(state: EmulatorState, fault: str | None) -> Response | None:
    if fault is None:
        return None
    state.faults_served.append(fault)
    if fault in ("429", "500", "502", "503"):
        return JSONResponse({"code": "emulated", "message": f"fault {fault}"}, int(fault))
    if fault == "timeout_before":
        await asyncio.sleep(state.hang_s)
    return None


def _add_brevo_api(app: FastAPI, state: EmulatorState) -> None:
    """Brevo's two calls: send, and find the sent events by tag."""

    @app.post("/v3/transactionalSMS/send")
    async def send(request: Request) -> Response:
        if (refused := _unauthorised(request)) is not None:
            return refused
        body = await request.json()
        fault = state.next_fault("send")
        if (answer := await _fault_answer(state, fault)) is not None:
            return answer
        recipient = str(body.get("recipient", ""))
        if not recipient.isdigit() or not 6 <= len(recipient) <= 15:
            return JSONResponse({"code": "invalid_parameter", "message": "Invalid phone"}, 400)
        content = str(body.get("content", ""))
        encoding, segments = sms_count(content)
        message = {
            "messageId": next(state.ids),
            "recipient": recipient,
            "sender": body.get("sender"),
            "content": content,
            "tag": body.get("tag"),
            "webUrl": body.get("webUrl"),
            "unicodeEnabled": bool(body.get("unicodeEnabled")),
            "encoding": encoding,
            "smsCount": segments,
            "date": datetime.now(UTC).isoformat(),
        }
        state.messages.append(message)
        bounce = fault == "unknown_number" or recipient in state.unknown_numbers
        if message["webUrl"]:
            task = asyncio.create_task(_receipt(state, message, bounce))
            state.receipts.add(task)
            task.add_done_callback(state.receipts.discard)
        if fault == "timeout_after":
            await asyncio.sleep(state.hang_s)
        return JSONResponse({"messageId": message["messageId"]}, 201)

    @app.get("/v3/transactionalSMS/statistics/events")
    async def events(request: Request, tags: str = "[]") -> Response:
        if (refused := _unauthorised(request)) is not None:
            return refused
        fault = state.next_fault("find")
        if (answer := await _fault_answer(state, fault)) is not None:
            return answer
        wanted = set(json.loads(tags))
        found = [
            {
                "date": m["date"],
                "event": "sent",
                "messageId": str(m["messageId"]),
                "phoneNumber": m["recipient"],
                "tag": m["tag"],
            }
            for m in state.messages
            if m["tag"] in wanted
        ]
        return JSONResponse({"events": found})


def _add_controls(app: FastAPI, state: EmulatorState) -> None:
    """The emulator's own routes, for the tests: what it kept, faults to serve, a reset."""

    @app.get("/_emulator/messages")
    async def messages() -> Response:
        return JSONResponse({"messages": state.messages, "faults": state.faults_served})

    @app.post("/_emulator/faults")
    async def faults(request: Request) -> Response:
        body = await request.json()
        for call in ("send", "find"):
            state.queued[call] = list(body.get(call, []))
        state.rates = {k: float(v) for k, v in body.get("rates", {}).items()}
        state.rng = random.Random(body.get("seed"))
        state.unknown_numbers = set(body.get("unknown_numbers", []))
        if "hang_s" in body:
            state.hang_s = float(body["hang_s"])
        return JSONResponse({"ok": True})

    @app.post("/_emulator/reset")
    async def reset() -> Response:
        state.messages.clear()
        state.faults_served.clear()
        state.queued = {"send": [], "find": []}
        state.rates = {}
        state.unknown_numbers = set()
        return JSONResponse({"ok": True})


async def _receipt(state: EmulatorState, message: dict[str, Any], bounce: bool) -> None:
    await asyncio.sleep(state.receipt_delay_s)
    body = {
        "id": 1,
        "to": message["recipient"],
        "sms_count": message["smsCount"],
        "credits_used": message["smsCount"],
        "messageId": message["messageId"],
        "remaining_credit": 1000.0,
        "msg_status": "hard_bounce" if bounce else "delivered",
        "date": datetime.now(UTC).isoformat(),
        "type": "transactional",
        "reference": f"ref-{message['messageId']}",
        "tag": message["tag"],
    }
    for _ in range(5):  # Brevo retries a webhook that does not answer; so does this
        with contextlib.suppress(httpx.HTTPError):
            async with httpx.AsyncClient(timeout=5) as client:
                response = await client.post(message["webUrl"], json=body)
            if response.status_code < 500:
                return
        await asyncio.sleep(0.5)


@dataclass
class RunningSmsEmulator:
    state: EmulatorState
    server: uvicorn.Server
    task: asyncio.Task[None]
    port: int

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v3"

    async def stop(self) -> None:
        self.server.should_exit = True
        for task in list(self.state.receipts):
            task.cancel()
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(5):
                await asyncio.shield(self.task)
        self.server.force_exit = True


async def serve_in_background(
    host: str = "127.0.0.1", port: int = 0, state: EmulatorState | None = None
) -> RunningSmsEmulator:
    """Start the emulator (plain HTTP, local only) in the running loop; port 0 picks one."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, port))
    app = create_app(state)
    config = uvicorn.Config(app, log_level="warning", access_log=False, lifespan="off")
    server = uvicorn.Server(config)
    task = asyncio.create_task(server.serve(sockets=[sock]), name="sms-emulator")
    while not server.started:
        if task.done():
            task.result()
            raise RuntimeError("the SMS emulator stopped during startup")
        await asyncio.sleep(0.01)
    return RunningSmsEmulator(app.state.sms, server, task, sock.getsockname()[1])


def main() -> None:
    parser = argparse.ArgumentParser(description="Brevo transactional SMS emulator")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8466)
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO)
    uvicorn.run(create_app(), host=args.host, port=args.port, log_level="warning")
