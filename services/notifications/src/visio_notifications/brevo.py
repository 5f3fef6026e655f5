"""Brevo's transactional SMS API (Brevo, formerly Sendinblue, Paris), implemented from its
public documentation (developers.brevo.com, API v3, as read in 2025 — « Send transactional
SMS », « Get all your SMS activity (unaggregated events) », « Transactional webhooks »). No
Brevo account could be reached from where this was written: it is tested against the emulator
in `visio_fakes.sms_emulator`, which serves the same contract.

- Send: `POST /v3/transactionalSMS/send`, key in the `api-key` header, JSON body `sender`,
  `recipient` (international digits, no +), `content`, `type: transactional`, `tag` (our client
  reference), `webUrl` (where receipts go), `unicodeEnabled`; `201 {"messageId": …}`.
- Look up: `GET /v3/transactionalSMS/statistics/events?tags=["<ref>"]&days=N`: the events of
  the messages under that tag — how an ambiguous send is settled without sending twice.
- Receipts: Brevo posts `{"messageId", "msg_status": sent|delivered|soft_bounce|hard_bounce,
  "to", "sms_count", "tag", …}` to `webUrl` (`parse_receipt`).
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from typing import Any

import httpx
from visio_runtime.errors import Transient
from visio_runtime.metrics import Metrics

from visio_notifications.sms_provider import Accepted, SmsAmbiguous, SmsMessage, SmsRejected

# Statuses that mean « sent, surely not »: the provider said so before doing anything.
_NOT_SENT = frozenset({401, 402, 403, 408, 429, 503})
_LOOKUP_DAYS = 7


@dataclass(frozen=True)
class Receipt:
    provider_id: str
    status: str  # sent | delivered | soft_bounce | hard_bounce | …
    tag: str | None
    detail: str


def parse_receipt(body: dict[str, Any]) -> Receipt:
    """A delivery receipt as Brevo posts it; `ValueError` if it is not one."""
    message_id, status = body.get("messageId"), body.get("msg_status")
    if not isinstance(message_id, int | str) or not isinstance(status, str):
        raise ValueError("not a Brevo SMS receipt: messageId and msg_status are required")
    tag = body.get("tag")
    if isinstance(tag, list):
        tag = tag[0] if tag else None
    return Receipt(
        str(message_id), status, tag if isinstance(tag, str) else None, str(body.get("reason", ""))
    )


class BrevoSms:
    name = "brevo"

    def __init__(
        self,
        base_url: str,
        api_key: str,
        sender: str,
        timeout_s: float,
        metrics: Metrics,
        ca_file: str | None = None,
    ) -> None:
        self._client = httpx.AsyncClient(
            base_url=base_url.rstrip("/"),
            headers={"api-key": api_key, "accept": "application/json"},
            timeout=timeout_s,
            verify=ca_file or True,
        )
        self._sender = sender
        self._latency = metrics.histogram(
            "sms_provider_seconds",
            "Time the SMS provider took to answer, by call (send, find) and outcome.",
            ["call", "outcome"],
        )

    async def send(self, message: SmsMessage) -> Accepted:
        body = {
            "sender": self._sender,
            "recipient": message.recipient.removeprefix("+"),
            "content": message.text,
            "type": "transactional",
            "tag": message.client_ref,
            "unicodeEnabled": message.unicode,
        }
        if message.receipt_url:
            body["webUrl"] = message.receipt_url
        response = await self._call("send", "POST", "/transactionalSMS/send", json=body)
        if response.status_code in (200, 201):
            return Accepted(str(response.json()["messageId"]))
        detail = _detail(response)
        if response.status_code in _NOT_SENT:
            raise Transient(f"SMS provider {response.status_code}: {detail}", dependency="sms")
        if 400 <= response.status_code < 500:
            raise SmsRejected("rejected", f"{response.status_code} {detail}")
        raise SmsAmbiguous(f"SMS provider {response.status_code}: {detail}", dependency="sms")

    async def find(self, client_ref: str) -> Accepted | None:
        params = {"tags": json.dumps([client_ref]), "days": str(_LOOKUP_DAYS), "limit": "100"}
        try:
            response = await self._call(
                "find", "GET", "/transactionalSMS/statistics/events", params=params
            )
        except SmsAmbiguous as exc:  # a lookup changes nothing: merely not answered
            raise Transient(str(exc), dependency="sms") from None
        if response.status_code != 200:
            raise Transient(f"SMS lookup {response.status_code}", dependency="sms")
        for event in response.json().get("events", []):
            if event.get("tag") == client_ref and event.get("messageId"):
                return Accepted(str(event["messageId"]))
        return None

    async def close(self) -> None:
        await self._client.aclose()

    async def _call(self, call: str, method: str, path: str, **kwargs: Any) -> httpx.Response:
        started = time.perf_counter()
        outcome = "error"
        try:
            response = await self._client.request(method, path, **kwargs)
            outcome = str(response.status_code)
            return response
        except (httpx.ConnectError, httpx.ConnectTimeout, httpx.PoolTimeout) as exc:
            raise Transient(
                f"SMS provider unreachable: {type(exc).__name__}", dependency="sms"
            ) from None
        except httpx.HTTPError as exc:  # the request went out; its answer did not come
            outcome = "lost"
            raise SmsAmbiguous(
                f"SMS provider answer lost: {type(exc).__name__}", dependency="sms"
            ) from None
        finally:
            self._latency.labels(call, outcome).observe(time.perf_counter() - started)


def _detail(response: httpx.Response) -> str:
    try:
        body = response.json()
    except ValueError:
        return response.text[:200]
    return str(body.get("message") or body.get("code") or body)[:200]
