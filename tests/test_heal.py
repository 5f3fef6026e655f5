"""Outages that heal, on the real stack: Graph (the emulator) stops answering for longer than
meetings' retry bound, so the appointments booked meanwhile end in meetings' dead letters, each
saying Graph was unavailable (`dlq.unavailable`); `visio-rdv ops heal`, which `up` runs, leaves
them while its probe of Graph fails, and once Graph answers again replays them — the
appointments end confirmed, with no operator. A poison record's letters are never replayed."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import httpx
import pytest
from aiokafka import AIOKafkaProducer
from visio_deploy.ops import dlq, heal
from visio_deploy.ops.settings import OpsSettings
from visio_deploy.proof.stack import ProofStack, proof_stack
from visio_fakes.devca import ensure_dev_ca
from visio_shared import Headers, Topics

from .self_service_support import wait_for
from .test_end_to_end import booking_body

EMULATOR = "graph-emulator"


@pytest.fixture(scope="module")
def stack(postgres_url: str) -> Iterator[ProofStack]:
    env = {
        # Meetings gives up quickly: one call per attempt, two attempts, short waits.
        "meetings": {
            "MEETINGS_GRAPH_ATTEMPTS": "1",
            "MEETINGS_RETRY_ATTEMPTS": "2",
            "MEETINGS_RETRY_INITIAL_DELAY_S": "0.2",
            "MEETINGS_RETRY_MAX_DELAY_S": "0.5",
        },
        "heal": {"VISIO_HEAL_INTERVAL_S": "1", "VISIO_HEAL_BACKOFF_S": "1"},
    }
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("DATABASE_URL", postgres_url)
        with proof_stack(seed=5, quiet=True, faults=False, name="heal", env=env) as running:
            yield running


def ops_settings(stack: ProofStack) -> OpsSettings:
    return OpsSettings(
        kafka_bootstrap_servers=stack.bootstrap, topic_prefix=stack.settings.topic_prefix
    )


def heal_settings(stack: ProofStack) -> OpsSettings:
    """What `up` gives `visio-rdv ops heal`: the probe of Graph, trusting the dev CA."""
    return ops_settings(stack).model_copy(
        update={
            "heal_probes": {"graph": f"{stack.graph}/v1.0/"},
            "heal_ca_bundle": ensure_dev_ca(stack.var / "dev-ca").bundle_path,
        }
    )


def status(api: httpx.Client, appointment_id: str) -> str:
    return str(api.get(f"/v1/appointments/{appointment_id}").json()["status"])


def test_appointments_dead_lettered_while_graph_is_down_are_confirmed_once_it_is_back(
    stack: ProofStack,
) -> None:
    settings = ops_settings(stack)
    headers = {"Authorization": f"Bearer {stack.api_key}"}
    with httpx.Client(base_url=stack.url("booking"), headers=headers, trust_env=False) as api:
        consent = {
            "cgu_version": api.get("/v1/cgu/current").json()["version"],
            "accepted_at": datetime.now(UTC).isoformat(),
            "recording_authorised": True,
        }
        stack.stack.stop_one(EMULATOR)  # Graph is down
        booked = []
        for _ in range(3):
            answer = api.post("/v1/appointments", json=booking_body(consent=consent))
            assert answer.status_code == 202, answer.text
            booked.append(answer.json()["appointment_id"])

        def graph_letters() -> list[dlq.Letter]:
            letters = asyncio.run(dlq.letters(settings, "meetings"))
            found = [
                letter
                for letter in letters
                if letter.header(Headers.DLQ_UNAVAILABLE) == "graph"
                and letter.event_type == "AppointmentRequested"
            ]
            return found if len(found) >= len(booked) else []

        letters = wait_for(graph_letters, 90, "meetings to dead-letter the three requests")
        assert all("gave up after 2 attempts" in letter.reason for letter in letters)
        # Down for a while longer: rounds of the healer, as `up` runs it (probes and all), see
        # Graph down and replay nothing; three of them here, beside the stack's own.
        healing = heal_settings(stack)
        for _ in range(3):
            round_ = asyncio.run(heal.heal_round(healing, heal.prober(healing), heal.Budget(100)))
            assert (round_.replayed, round_.down) == ([], ["graph"]), round_
            assert round_.waiting["graph"] >= len(booked)
        assert not asyncio.run(dlq.replayed(settings))
        assert {status(api, appointment_id) for appointment_id in booked} == {"requested"}

        stack.stack.restart(EMULATOR)  # Graph is back
        wait_for(
            lambda: {status(api, appointment_id) for appointment_id in booked} == {"confirmed"},
            120,
            "the three appointments to be confirmed without an operator",
        )
    ledger = asyncio.run(dlq.replayed(settings))
    assert {letter.id for letter in letters} <= set(ledger)
    assert {ledger[letter.id]["by"] for letter in letters} == {"visio-rdv ops heal"}


def test_a_permanent_failure_still_waits_for_an_operator(stack: ProofStack) -> None:
    settings = ops_settings(stack)
    topic = Topics(settings.topic_prefix).appointments

    async def send_poison() -> None:
        producer = AIOKafkaProducer(bootstrap_servers=stack.bootstrap)
        await producer.start()
        try:
            await producer.send_and_wait(
                topic,
                b"{not json",
                key=b"poison",
                headers=[("event_type", b"AppointmentRequested")],
            )
        finally:
            await producer.stop()

    asyncio.run(send_poison())

    def poison_letters() -> list[Any]:
        letters = asyncio.run(dlq.letters(settings, "meetings"))
        return [letter for letter in letters if letter.record.key == b"poison"]

    letters = wait_for(poison_letters, 60, "the poison record's dead letter")
    assert not letters[0].header(Headers.DLQ_UNAVAILABLE)

    # Rounds of the healer, even with every dependency answering, leave it to an operator.
    async def everything_answers(_: str) -> bool:
        return True

    for _ in range(3):
        round_ = asyncio.run(heal.heal_round(settings, everything_answers, heal.Budget(100)))
        assert letters[0].id not in round_.replayed
    assert letters[0].id not in asyncio.run(dlq.replayed(settings))
