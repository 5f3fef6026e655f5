"""Outages that heal: `visio-rdv ops heal` replays the dead letters an unavailable dependency
caused, once that dependency answers again, without an operator.

A service dead-letters a record past its retry bound; when the failure was an outside party
not answering — Graph's 5xx, 429 and timeouts, Entra ID unreachable, an SMTP 4xx or a refused
connection — the letter says which (`dlq.unavailable`: `graph`, `smtp`). Every round this
process:

1. reads the dead letters not yet replayed (the replay ledger of `ops dlq replay`, so a letter
   is replayed once, whoever replays it) that name a dependency;
2. probes each such dependency (`VISIO_HEAL_PROBES`): an HTTP(S) URL answers below 500 (a 401
   without a token is Graph up), an `smtp://host:port` relay greets with 220;
3. replays, for a dependency that answers, the letters whose backoff is over — `heal_backoff_s`
   after the letter was written, doubled at each earlier automatic replay of the same record —
   at most `heal_max_replays` times per record (counted in the `visio.auto_replays` header the
   replay carries, which the next letter keeps) and at most `heal_max_per_hour` letters an
   hour in all.

Permanent refusals (poison, Graph refusing the advisor, an address that bounces) carry no
`dlq.unavailable`: they wait for an operator (`ops dlq replay`), as do letters past their
automatic replays. While people wait, the alerts process tells the Caf (their email late past
`VISIO_EMAIL_LATE_AFTER_MINUTES`), and the `VisioDeadLetters` alert fires on the dead letters.
"""

from __future__ import annotations

import asyncio
import logging
import ssl
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from urllib.parse import urlsplit

import httpx
from visio_shared import Headers

from visio_deploy.ops import dlq
from visio_deploy.ops.settings import OpsSettings

log = logging.getLogger("visio.ops.heal")

Probe = Callable[[str], Awaitable[bool]]


@dataclass
class Budget:
    """At most `per_hour` replays in any hour (a sliding window)."""

    per_hour: int
    spent: deque[datetime] = field(default_factory=deque)

    def left(self, now: datetime) -> int:
        while self.spent and self.spent[0] <= now - timedelta(hours=1):
            self.spent.popleft()
        return max(self.per_hour - len(self.spent), 0)

    def spend(self, count: int, now: datetime) -> None:
        self.spent.extend([now] * count)


@dataclass(frozen=True)
class Round:
    replayed: list[str]  # letter ids
    waiting: dict[str, int]  # dependency → letters held (not answering, or backing off)
    down: list[str]  # dependencies that did not answer
    exhausted: list[str]  # letters past their automatic replays: for an operator


def replays_of(letter: dlq.Letter) -> int:
    try:
        return int(letter.header(Headers.AUTO_REPLAYS) or 0)
    except ValueError:
        return 0


def due_at(letter: dlq.Letter, settings: OpsSettings) -> datetime:
    written = datetime.fromisoformat(letter.header(Headers.DLQ_DEAD_LETTERED_AT))
    wait = min(settings.heal_backoff_s * 2 ** replays_of(letter), settings.heal_backoff_max_s)
    return written + timedelta(seconds=wait)


async def heal_round(
    settings: OpsSettings, probe: Probe, budget: Budget, now: datetime | None = None
) -> Round:
    now = now or datetime.now(UTC)
    done = await dlq.replayed(settings)
    waiting = [
        letter
        for letter in await dlq.letters(settings)
        if letter.header(Headers.DLQ_UNAVAILABLE) and letter.id not in done and not letter.truncated
    ]
    answers = {
        dependency: await probe(dependency)
        for dependency in sorted({letter.header(Headers.DLQ_UNAVAILABLE) for letter in waiting})
    }
    due: list[dlq.Letter] = []
    held: dict[str, int] = {}
    exhausted: list[str] = []
    for letter in waiting:
        dependency = letter.header(Headers.DLQ_UNAVAILABLE)
        if replays_of(letter) >= settings.heal_max_replays:
            exhausted.append(letter.id)
        elif answers[dependency] and due_at(letter, settings) <= now:
            due.append(letter)
        else:
            held[dependency] = held.get(dependency, 0) + 1
    chosen = {letter.id for letter in due[: budget.left(now)]}
    replayed: list[str] = []
    if chosen:
        results, _ = await dlq.replay(
            settings,
            lambda letter: letter.id in chosen,
            by="visio-rdv ops heal",
            headers=lambda letter: {Headers.AUTO_REPLAYS: str(replays_of(letter) + 1)},
        )
        replayed = [result.letter.id for result in results]
        budget.spend(len(replayed), now)
    return Round(replayed, held, [d for d, up in answers.items() if not up], exhausted)


def prober(settings: OpsSettings) -> Probe:
    """Does `dependency` answer? Per `heal_probes`; one without a probe never does (its letters
    wait for an operator)."""
    tls = ssl.create_default_context(
        cafile=str(settings.heal_ca_bundle) if settings.heal_ca_bundle else None
    )

    async def probe(dependency: str) -> bool:
        url = settings.heal_probes.get(dependency)
        if url is None:
            return False
        try:
            if url.startswith("smtp://"):
                return await _smtp_greets(url, settings.heal_probe_timeout_s)
            async with httpx.AsyncClient(
                verify=tls, timeout=settings.heal_probe_timeout_s, trust_env=False
            ) as client:
                return (await client.get(url)).status_code < 500
        except (httpx.HTTPError, OSError, TimeoutError):
            return False

    return probe


async def _smtp_greets(url: str, within: float) -> bool:
    parts = urlsplit(url)
    async with asyncio.timeout(within):
        reader, writer = await asyncio.open_connection(parts.hostname, parts.port or 25)
    try:
        async with asyncio.timeout(within):
            greeting = await reader.readline()
        writer.write(b"QUIT\r\n")
        await writer.drain()
        return greeting.startswith(b"220")
    finally:
        writer.close()


async def serve(settings: OpsSettings, once: bool = False) -> int:
    """Rounds every `heal_interval_s` until stopped (or one, `once`)."""
    budget = Budget(settings.heal_max_per_hour)
    probe = prober(settings)
    while True:
        try:
            result = await heal_round(settings, probe, budget)
        except Exception:  # the broker away: try again next round
            log.exception("ops heal: a round failed")
        else:
            _report(result)
        if once:
            return 0
        await asyncio.sleep(settings.heal_interval_s)


def _report(result: Round) -> None:
    if result.replayed:
        log.warning("ops heal: replayed %d dead letters: %s", len(result.replayed), result.replayed)
    for dependency in result.down:
        log.warning(
            "ops heal: %s does not answer; %d dead letters wait for it",
            dependency,
            result.waiting.get(dependency, 0),
        )
    if result.exhausted:
        log.error(
            "ops heal: %d dead letters past %s automatic replays wait for an operator: %s",
            len(result.exhausted),
            "their",
            result.exhausted,
        )
