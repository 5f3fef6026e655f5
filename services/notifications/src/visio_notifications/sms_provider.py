"""Sending a text message, behind one interface; the provider is a setting.

`SmsProvider.send` answers `Accepted` (the provider's id for the message), or raises:

- `SmsRejected`: refused for good (an invalid number): a failure, never retried;
- `Transient`: not sent, surely (429, 503, no connection): tried again later;
- `SmsAmbiguous`: the request went out and its answer was lost (a timeout while waiting, a
  gateway's 502/504): the message may or may not be on its way.

What happens after an ambiguous send is each kind's promise (`sms.PROMISES`), unless the
provider can be asked: `find` looks the message up by the client reference we gave it, so a
message it has is never sent twice, and one it never got is sent again.

The one provider is Brevo's transactional SMS API (`brevo.BrevoSms`); `NoSms` stands for none.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

from visio_runtime.errors import Transient


@dataclass(frozen=True)
class SmsMessage:
    recipient: str  # E.164
    text: str
    client_ref: str  # ours, unique per text: the provider's tag
    unicode: bool  # the text needs UCS-2
    receipt_url: str | None  # where the provider posts delivery receipts


@dataclass(frozen=True)
class Accepted:
    provider_id: str


class SmsRejected(Exception):
    """Refused for good: resending would be refused alike."""

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(f"{reason}: {detail}")
        self.reason = reason
        self.detail = detail


class SmsAmbiguous(Transient):
    """The request went out; whether the provider took it, nobody knows."""


class SmsProvider(Protocol):
    name: str

    async def send(self, message: SmsMessage) -> Accepted: ...

    async def find(self, client_ref: str) -> Accepted | None:
        """The message sent under `client_ref`, None if the provider never took one; raises
        `Transient` when it cannot tell."""
        ...

    async def close(self) -> None: ...
