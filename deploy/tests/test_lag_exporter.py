"""`visio-rdv ops lag --serve-metrics`: the lag measured from outside the consumers, on the real
test broker. A consumer that dies takes its own lag gauge with it; here its group's lag keeps
growing on the exporter's /metrics while its committed offset stays where it died."""

from __future__ import annotations

import uuid

import httpx
from prometheus_client.parser import text_string_to_metric_families
from visio_deploy.cli import build_parser
from visio_deploy.ops.lag_exporter import LagExporter, parse_listen
from visio_deploy.ops.settings import OpsSettings
from visio_runtime.metrics import Metrics
from visio_runtime.service import build_runtime
from visio_runtime.testing import collecting, running, wait_until
from visio_shared import MeetingFailed, publish_event

Series = dict[tuple[str, tuple[tuple[str, str], ...]], float]


def failed() -> MeetingFailed:
    return MeetingFailed(
        appointment_id=uuid.uuid4(), revision=1, correlation_id=uuid.uuid4(), reason="x"
    )


async def scrape(exporter: LagExporter) -> Series:
    transport = httpx.ASGITransport(app=exporter.app(15))
    async with httpx.AsyncClient(transport=transport, base_url="http://exporter") as client:
        answer = await client.get("/metrics")
        assert answer.status_code == 200
        assert (await client.get("/health/ready")).status_code == 200
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(answer.text)
        for sample in family.samples
    }


def of_group(series: Series, name: str, group: str) -> float:
    return sum(
        value for (found, labels), value in series.items()
        if found == name and ("group", group) in labels
    )  # fmt: skip


async def test_a_dead_consumers_lag_keeps_growing_on_the_exporter(kafka_bootstrap: str) -> None:
    settings = OpsSettings(
        kafka_bootstrap_servers=kafka_bootstrap, topic_prefix=f"lagx-{uuid.uuid4().hex[:8]}"
    )
    rt, handled = collecting("booking", settings, MeetingFailed)
    group = rt.topics.group("booking")
    exporter = LagExporter(settings, {group: [rt.topics.meetings]}, Metrics("lag-exporter"))
    async with running(rt):
        for _ in range(2):
            await publish_event(rt.broker, rt.topics.meetings, failed())
        await wait_until(lambda: len(handled) == 2, what="two events handled")

        async def caught_up() -> bool:
            await exporter.measure_once()
            return of_group(await scrape(exporter), "visio_consumer_group_lag_messages", group) == 0

        await wait_until(caught_up, what="the group's commits")
        alive = await scrape(exporter)
        assert of_group(alive, "visio_consumer_group_committed_offset", group) == 2
        # tansu answers DescribeGroups for a live group: one member.
        assert of_group(alive, "visio_consumer_group_members", group) == 1

        # The consumer dies (its process gone: no more polls, no more commits).
        await rt.consumer.drain()
        await rt.broker.stop()
        writer = build_runtime("booking", settings).broker
        await writer.start()
        try:
            seen = []
            for more in (3, 2):
                for _ in range(more):
                    await publish_event(writer, rt.topics.meetings, failed())
                await exporter.measure_once()
                seen.append(await scrape(exporter))
        finally:
            await writer.stop()

    lags = [of_group(s, "visio_consumer_group_lag_messages", group) for s in seen]
    assert lags == [3, 5]  # growing while nobody reads
    assert [of_group(s, "visio_consumer_group_committed_offset", group) for s in seen] == [2, 2]
    assert len(handled) == 2
    last = seen[-1]
    assert ("visio_service_info", (("service", "lag-exporter"),)) in last
    assert any(name == "process_cpu_seconds_total" for name, _ in last)
    assert last[("visio_lag_exporter_last_success_timestamp_seconds", ())] > 0


def test_the_exporter_is_a_flag_of_ops_lag() -> None:
    args = build_parser().parse_args(["ops", "lag", "--serve-metrics", "0.0.0.0:8085"])
    assert args.serve_metrics == "0.0.0.0:8085" and args.interval == 15.0
    assert parse_listen(args.serve_metrics) == ("0.0.0.0", 8085)
    assert parse_listen("8085") == ("127.0.0.1", 8085)
