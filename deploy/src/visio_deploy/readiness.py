"""When `up` may say `ready`: every process answers `/health/ready`, and every consumer group
holds all the partitions it reads, so the first booking is handled at once instead of waiting
for a group to settle.

A service's `/health/ready` says how many partitions its consumers hold (`consumer.partitions`).
`up` runs one copy of each, so a group has settled when that copy holds every partition of the
topics its subscribers read: the services' own code says which topics
(`visio_deploy.ops.topology`), the broker how many partitions each has. Fewer means a member
still joining or a rebalance under way. On tansu 0.6 a member that joins a formed group bumps
its generation; the others learn of it only at their next heartbeat (every 3 s), rejoin, and a
follower's join is held 3 s by the coordinator: a rebalance takes 5 to 10 s, which a booking
made meanwhile waits out (hence one client per group: notifications' two clients each have
their own, see `EventConsumer.subscribe`)."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Mapping
from typing import TYPE_CHECKING, Any

import httpx
from visio_runtime.settings import ServiceSettings
from visio_runtime.topic_reader import topic_partitions

from visio_deploy.ops.topology import subscriptions

if TYPE_CHECKING:
    from visio_deploy.up import Stack

POLL_S = 0.3


async def expected_partitions(
    settings: ServiceSettings, partners: Iterable[str] = ()
) -> dict[str, int]:
    """Each consuming process → how many partitions its group reads, counted on the broker
    (booking's with the partner systems the stack declares)."""
    reads: dict[str, set[str]] = {}
    for subscription in subscriptions(settings.topic_prefix, partners):
        reads.setdefault(subscription.service, set()).update(subscription.topics)
    topics = set().union(*reads.values())
    known = await topic_partitions(settings)
    counts = {topic: len(known.get(topic, [])) for topic in topics}
    return {service: sum(counts[topic] for topic in read) for service, read in reads.items()}


def waiting_for(status: int | None, body: Mapping[str, Any] | None, expected: int) -> str | None:
    """None once a process is ready; else what it still waits for, as `up` reports it."""
    if status is None or body is None:
        return "not answering yet"
    if status != 200:
        failing = [name for name, state in body.get("checks", {}).items() if state != "ok"]
        return f"/health/ready answers {status} ({', '.join(failing) or 'starting'})"
    consumer = body.get("consumer", {})
    held = int(consumer.get("partitions", 0))
    if consumer.get("state") != "assigned" and expected > 0:
        return f"its consumer waits for the group (0 of {expected} partitions)"
    if held < expected:
        return f"its group is settling ({held} of {expected} partitions held)"
    return None


def wait_ready(stack: Stack, expected: Mapping[str, int], report: Callable[[str], None]) -> None:
    """Poll each process of `expected` (name → partitions its group reads) until it is ready,
    or fail past the stack's `ready_timeout_s`, saying what each one still waits for."""
    settings = stack.settings
    deadline = time.monotonic() + settings.ready_timeout_s
    pending = {name: "not started" for name in expected}
    with httpx.Client(timeout=2, trust_env=False) as client:
        while pending:
            stack.check_alive()
            if time.monotonic() > deadline:
                late = "; ".join(f"{name}: {why}" for name, why in sorted(pending.items()))
                raise TimeoutError(f"not ready after {settings.ready_timeout_s:.0f}s: {late}")
            for name in sorted(pending):
                # The admin port: plain HTTP on loopback, whatever the public port speaks.
                admin = settings.service_port(name) + 1000
                url = f"http://{settings.host}:{admin}/health/ready"
                try:
                    answer = client.get(url)
                    status, body = answer.status_code, answer.json()
                except (httpx.HTTPError, ValueError):
                    status, body = None, None
                why = waiting_for(status, body, expected[name])
                if why is None:
                    del pending[name]
                    report(f"{name}: ready, {expected[name]} partitions assigned")
                else:
                    pending[name] = why
            time.sleep(POLL_S)
