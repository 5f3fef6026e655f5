"""Where a partner system writes its requests and reads its replies, as the proofs see it — and
the replies it read: its own topics, `visio-rdv.booking-requests.<system>.v1` and
`visio-rdv.booking-replies.<system>.v1`.

`ReplyReader` reads a partner's reply topic from its beginning while a run goes on, as the
partner would: what booking's own tables say it answered does not count, only what reached the
topic the partner reads."""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections import defaultdict
from dataclasses import dataclass, field
from typing import Any

from visio_runtime.settings import ServiceSettings
from visio_runtime.topic_reader import partitions, reader
from visio_shared import Topics


def request_topic(topics: Topics, system: str) -> str:
    """The topic `system` writes its booking requests on: its own."""
    return topics.partner_requests(system)


def reply_topic(topics: Topics, system: str) -> str:
    """The topic `system` reads its replies on: its own."""
    return topics.partner_replies(system)


def per_partner_topics(topics: Topics) -> bool:
    """Whether each partner has a request topic of its own (ACLs can then tell them apart)."""
    return request_topic(topics, "a") != request_topic(topics, "b")


@dataclass
class ReplyReader:
    """Every reply on one partner's reply topic, by request id, as it arrives."""

    bootstrap: str
    topic: str
    system: str
    replies: defaultdict[str, list[dict[str, Any]]] = field(
        default_factory=lambda: defaultdict(list)
    )
    _task: asyncio.Task[None] | None = None
    _next: dict[int, int] = field(default_factory=dict)  # partition → next offset to read
    arrived: asyncio.Event = field(default_factory=asyncio.Event)

    async def __aenter__(self) -> ReplyReader:
        self._task = asyncio.create_task(self._read())
        return self

    async def __aexit__(self, *_: object) -> None:
        assert self._task is not None
        self._task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._task

    def answers(self, request_id: str) -> list[dict[str, Any]]:
        """The distinct replies (by event id) to one request."""
        seen: dict[str, dict[str, Any]] = {}
        for reply in self.replies.get(request_id, []):
            seen.setdefault(str(reply.get("event_id")), reply)
        return list(seen.values())

    async def wait(self, request_id: str, within_s: float) -> list[dict[str, Any]]:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + within_s
        while not self.answers(request_id) and loop.time() < deadline:
            self.arrived.clear()
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(max(0.1, deadline - loop.time())):
                    await self.arrived.wait()
        return self.answers(request_id)

    async def _read(self) -> None:
        settings = ServiceSettings(kafka_bootstrap_servers=self.bootstrap)
        while True:  # a cut connection or a broker hiccup: read again from where it was
            try:
                tps = await partitions(settings, [self.topic])
                async with reader(settings) as consumer:
                    consumer.assign(tps)
                    for tp in tps:
                        consumer.seek(tp, self._next.get(tp.partition, 0))
                    while True:
                        batches = await consumer.getmany(timeout_ms=500)
                        for tp, records in batches.items():
                            for record in records:
                                self._next[tp.partition] = record.offset + 1
                                self._take(record.value)
            except asyncio.CancelledError:
                raise
            except Exception:
                await asyncio.sleep(0.5)

    def _take(self, value: bytes | None) -> None:
        try:
            reply = json.loads(value or b"")
        except (ValueError, RecursionError):  # not a reply (a hostile record, say): not ours
            return
        if not isinstance(reply, dict) or reply.get("calling_system") not in (self.system, None):
            return
        request_id = reply.get("request_id")
        if isinstance(request_id, str):
            self.replies[request_id].append(reply)
            self.arrived.set()
