"""Emails the relay took whose dispatch this process has not yet seen committed.

An email is sent inside the transaction that records it (under the appointment's lock), and
sent first: if the transaction then fails — PostgreSQL's connection cut, the commit lost — the
relay has the email and the dispatch log does not. The next try would send it again under the
same Message-ID (mail clients merge it), or, if the appointment changed meanwhile, owe the
person a different email: a second « confirmation » for a new time where « rescheduled » was
owed, since the log shows no confirmation (the chaos proof of seed 2035).

So the process remembers each email the relay took until its dispatch is committed
(`Delivery.send` keeps it, the settling code forgets it after the commit), and a later try of
the same email (its Message-ID) takes the remembered outcome and records it, without sending
it again. A process killed in that window forgets, and the next one sends the email again under
its Message-ID, as before: that ambiguity remains (docs/guarantees.md).
"""

from __future__ import annotations

import uuid
from collections import OrderedDict
from collections.abc import Iterable

from visio_notifications.dispatches import Dispatch

# Entries live from a send to its commit (milliseconds), or until the retry of an email whose
# record was lost (seconds to minutes); a commit whose answer was lost leaves one behind, never
# asked for again. The oldest go first past this many.
LIMIT = 10_000


class Unrecorded:
    def __init__(self, limit: int = LIMIT) -> None:
        self._limit = limit
        self._sent: OrderedDict[str, Dispatch] = OrderedDict()

    def keep(self, dispatch: Dispatch) -> None:
        """The relay took this email; its dispatch is not committed yet."""
        self._sent[dispatch.message_id] = dispatch
        self._sent.move_to_end(dispatch.message_id)
        while len(self._sent) > self._limit:
            self._sent.popitem(last=False)

    def get(self, message_id: str) -> Dispatch | None:
        """The outcome of this email, if the relay took it and its record was not committed."""
        return self._sent.get(message_id)

    def of(self, appointment_id: uuid.UUID) -> list[Dispatch]:
        """The appointment's, oldest first (a handful in the whole process but for a moment)."""
        return [d for d in self._sent.values() if d.appointment_id == appointment_id]

    def forget(self, message_ids: Iterable[str]) -> None:
        """Their dispatches are committed."""
        for message_id in message_ids:
            self._sent.pop(message_id, None)

    def __len__(self) -> int:
        return len(self._sent)
