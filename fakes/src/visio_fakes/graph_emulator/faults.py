"""Fault injection: the transient failures real Graph produces, on demand and reproducibly.

Each call to a targeted endpoint draws once and may be answered 429 (with Retry-After), 503,
504, or "commit then 504": the request is fully processed (the event is created) but the client
sees a timeout, the case that makes idempotency keys necessary. The draw is a function of (seed,
the appointment the call is about, the endpoint, the how-manieth such call it is) — see
`visio_fakes.fault_draws` and `subjects` — so a seed replays each appointment's faults
whatever the order in which calls arrive. Without a seed, a fresh one is chosen and shown by
`GET /_emulator/faults`.

Latency delays the *answer*, after the request took effect: a client that gives up waiting
(a timeout, a killed process) has changed the tenant without knowing it, the worst case.

Outlook's own limit is not random: more than 4 concurrent requests from one application to
one mailbox are answered 429 `ApplicationThrottled` ("MailboxConcurrency"), in-flight
requests counted.
"""

from __future__ import annotations

import enum
from collections import Counter, deque
from typing import Literal

from pydantic import BaseModel, Field, model_validator

from visio_fakes.fault_draws import Attempts, draw, fresh_seed


class FaultConfig(BaseModel):
    """Body of `POST /_emulator/faults`; rates are probabilities per call, summing to <= 1."""

    throttle_rate: float = Field(default=0.0, ge=0.0, le=1.0, description="Share of 429s.")
    unavailable_rate: float = Field(default=0.0, ge=0.0, le=1.0, description="Share of 503s.")
    gateway_timeout_rate: float = Field(default=0.0, ge=0.0, le=1.0, description="Share of 504s.")
    commit_then_timeout_rate: float = Field(
        default=0.0,
        ge=0.0,
        le=1.0,
        description="Share of calls processed normally but answered 504.",
    )
    retry_after_seconds: float = Field(
        default=1,
        ge=0,
        description="Retry-After of 429 and 503; Graph sends decimals too (e.g. 2.128).",
    )
    latency_ms: int = Field(default=0, ge=0, le=60_000, description="Delay added to each call.")
    seed: int | None = Field(
        default=None,
        description="What faults are drawn from (with the appointment, the endpoint and the "
        "attempt), for runs a seed replays; unset, a fresh one, shown by GET /_emulator/faults.",
    )
    endpoints: list[str] = Field(
        default_factory=lambda: ["graph"],
        description="Endpoint names or name prefixes targeted, e.g. 'graph', "
        "'graph.events.create', 'entra.token'. See /_emulator/stats for names.",
    )
    max_faults: int | None = Field(
        default=None, ge=0, description="Stop injecting after this many faults."
    )
    mailbox_concurrency_limit: int | None = Field(
        default=4,
        ge=1,
        description="Concurrent requests per mailbox before 429 ApplicationThrottled "
        "(Outlook's MailboxConcurrency limit is 4); null turns the limit off.",
    )

    @model_validator(mode="after")
    def _rates_fit(self) -> FaultConfig:
        total = (
            self.throttle_rate
            + self.unavailable_rate
            + self.gateway_timeout_rate
            + self.commit_then_timeout_rate
        )
        if total > 1.0 + 1e-9:
            raise ValueError(f"fault rates add up to {total}, more than 1")
        return self

    def targets(self, endpoint: str) -> bool:
        if endpoint == BATCH_ENDPOINT:
            # The $batch envelope only when named: its requests meet their own faults.
            return BATCH_ENDPOINT in self.endpoints
        return any(endpoint == e or endpoint.startswith(f"{e}.") for e in self.endpoints)


BATCH_ENDPOINT = "graph.batch"


class ScriptedFaults(BaseModel):
    """Body of `POST /_emulator/faults/script`: the next calls of one endpoint about one
    subject (an appointment id, a creation key: see `subjects`) meet these outcomes, in order,
    before any drawn fault. Tests use it to put a 429 here and a 503 there in one batch."""

    subject: str
    endpoint: str
    outcomes: list[Literal["429", "503", "504", "commit-then-504", "none"]] = Field(min_length=1)
    retry_after_seconds: float | None = Field(
        default=None, ge=0, description="Retry-After of these 429s and 503s; else the config's."
    )


class Outcome(enum.Enum):
    NO_FAULT = "none"
    THROTTLE = "429"
    UNAVAILABLE = "503"
    GATEWAY_TIMEOUT = "504"
    COMMIT_THEN_TIMEOUT = "commit-then-504"


class FaultInjector:
    def __init__(self) -> None:
        self.configure(FaultConfig())

    def configure(self, config: FaultConfig) -> None:
        if config.seed is None:
            config = config.model_copy(update={"seed": fresh_seed()})
        self.config = config
        self._attempts = Attempts()
        self.injected: Counter[str] = Counter()
        self._scripted: dict[tuple[str, str], deque[tuple[Outcome, float | None]]] = {}

    def script(self, scripted: ScriptedFaults) -> None:
        queue = self._scripted.setdefault((scripted.subject, scripted.endpoint), deque())
        for outcome in scripted.outcomes:
            queue.append((Outcome(outcome), scripted.retry_after_seconds))

    @property
    def active(self) -> bool:
        """Whether any call may meet a fault (else the subject of a call need not be found)."""
        config = self.config
        return (
            bool(self._scripted)
            or (
                config.throttle_rate
                + config.unavailable_rate
                + config.gateway_timeout_rate
                + config.commit_then_timeout_rate
            )
            > 0
        )

    def wants_subject(self, endpoint: str) -> bool:
        """Whether deciding this call's fault needs its subject."""
        if any(key[1] == endpoint for key in self._scripted):
            return True
        return self.active and self.config.targets(endpoint)

    def decide(self, endpoint: str, subject: str = "") -> Outcome:
        """The outcome of one call, and its Retry-After (None: the config's)."""
        return self.decide_with_delay(endpoint, subject)[0]

    def decide_with_delay(self, endpoint: str, subject: str = "") -> tuple[Outcome, float | None]:
        queue = self._scripted.get((subject, endpoint))
        if queue:
            outcome, retry_after = queue.popleft()
            if not queue:
                del self._scripted[(subject, endpoint)]
            if outcome is not Outcome.NO_FAULT:
                self.injected[outcome.value] += 1
            return outcome, retry_after
        return self._draw(endpoint, subject), None

    def _draw(self, endpoint: str, subject: str) -> Outcome:
        config = self.config
        if not config.targets(endpoint):
            return Outcome.NO_FAULT
        if config.max_faults is not None and sum(self.injected.values()) >= config.max_faults:
            return Outcome.NO_FAULT
        assert config.seed is not None  # set by `configure`
        # One draw per call keeps a seeded sequence stable whatever the rates are.
        value = draw(config.seed, subject, endpoint, self._attempts.next(subject, endpoint))
        outcome = Outcome.NO_FAULT
        for rate, candidate in (
            (config.throttle_rate, Outcome.THROTTLE),
            (config.unavailable_rate, Outcome.UNAVAILABLE),
            (config.gateway_timeout_rate, Outcome.GATEWAY_TIMEOUT),
            (config.commit_then_timeout_rate, Outcome.COMMIT_THEN_TIMEOUT),
        ):
            if value < rate:
                outcome = candidate
                break
            value -= rate
        if outcome is not Outcome.NO_FAULT:
            self.injected[outcome.value] += 1
        return outcome

    def retry_after_header(self, seconds: float | None = None) -> str:
        """Retry-After as Graph writes it: whole seconds bare, decimals as they are."""
        return f"{self.config.retry_after_seconds if seconds is None else seconds:g}"

    def latency_seconds(self, endpoint: str) -> float:
        if not self.config.targets(endpoint):
            return 0.0
        return self.config.latency_ms / 1000
