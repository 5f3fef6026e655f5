"""How the requests of one step go into Graph `$batch`es: which requests share a batch.

- At most 20 requests a batch (Graph's limit, `MAX_BATCH`).
- At most a mailbox's share of one mailbox (`graph_max_concurrent_per_mailbox`): a batch holds
  that mailbox's permits while it is in flight.
- Few enough Outlook requests (calendar events) that Graph runs them in one round: Graph hands
  Outlook at most 4 requests of a batch at a time, whatever their mailboxes
  (`OUTLOOK_AT_ONCE`), so 20 calendar requests in one batch take five rounds of Graph's
  latency, and in five batches sent side by side one. The extra HTTP requests cost us less
  CPU than the rounds cost the person waiting for the email.
- Past `OUTLOOK_SPREAD` such batches (a backlog: hundreds of meetings at once), a step's
  Outlook requests are spread evenly over that many batches, then the batches filled up to 20,
  so that the HTTP requests of a step stay bounded where the CPU, not Graph's rounds, limits.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field

from visio_meetings.calls import Call

MAX_BATCH = 20
OUTLOOK_AT_ONCE = 4
OUTLOOK_SPREAD = 8


def shape(requests: Sequence[Call], max_per_mailbox: int) -> list[list[int]]:
    """The requests' indexes, batch by batch, in as few batches as the rules above allow."""
    outlook = sum(call.outlook for call in requests)
    outlook_max = min(MAX_BATCH, max(OUTLOOK_AT_ONCE, -(-outlook // OUTLOOK_SPREAD)))
    batches: list[_Batch] = []
    for i, call in enumerate(requests):
        batch = next((b for b in batches if b.takes(call, max_per_mailbox, outlook_max)), None)
        if batch is None:
            batch = _Batch()
            batches.append(batch)
        batch.add(i, call)
    return [batch.indexes for batch in batches]


@dataclass
class _Batch:
    """The requests of one `$batch` being filled: their indexes, and what limits it."""

    indexes: list[int] = field(default_factory=list)
    per_mailbox: Counter[str] = field(default_factory=Counter)
    outlook: int = 0

    def takes(self, call: Call, max_per_mailbox: int, outlook_max: int) -> bool:
        return (
            len(self.indexes) < MAX_BATCH
            and self.per_mailbox[call.advisor_id.lower()] < max_per_mailbox
            and not (call.outlook and self.outlook >= outlook_max)
        )

    def add(self, index: int, call: Call) -> None:
        self.indexes.append(index)
        self.per_mailbox[call.advisor_id.lower()] += 1
        self.outlook += call.outlook
