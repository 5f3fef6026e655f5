"""`visio-rdv ops lag --serve-metrics [HOST:]PORT`: consumer lag measured from outside the
consumers, on /metrics, for Prometheus.

Each consumer reports its own lag (`visio_consumer_lag_messages`), but that series vanishes with
the consumer: a dead service looks like a healthy one with nothing to report. This process reads
every group's committed offsets the way `ops lag` does (without joining the group, so nothing
rebalances) against the partitions' ends, every `--interval` seconds: a group whose consumers
died keeps a committed offset that no longer moves while the end does, so its lag grows here.
It also asks the broker how many members each group has (DescribeGroups): Apache Kafka answers
it; tansu keeps members that left in its answer, so on tansu a dead group shows by its growing
lag only. Rules and panels: deploy/prometheus, deploy/grafana, docs/runbook.md.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Mapping, Sequence

import uvicorn
from fastapi import FastAPI, Response
from visio_runtime.kafka import admin_client
from visio_runtime.metrics import CONTENT_TYPE, Metrics
from visio_runtime.settings import ServiceSettings

from visio_deploy.ops.topics import LagRow, lag_report

log = logging.getLogger(__name__)

SERVICE = "lag-exporter"


class LagGauges:
    def __init__(self, metrics: Metrics) -> None:
        where = ["group", "topic", "partition"]
        self.lag = metrics.gauge(
            "consumer_group_lag_messages",
            "Messages a consumer group has yet to handle on a partition (its end minus the "
            "group's committed offset), measured from outside the group: it keeps growing "
            "when the group's consumers are dead.",
            where,
        )
        self.committed = metrics.gauge(
            "consumer_group_committed_offset",
            "The group's committed offset on the partition: it stops moving when its "
            "consumers stop (absent: never committed).",
            where,
        )
        self.end = metrics.gauge(
            "topic_end_offset", "Where the partition ends: messages ever written to it.", where[1:]
        )
        self.members = metrics.gauge(
            "consumer_group_members",
            "Consumers in the group, as the broker says (absent when the broker does not say; "
            "tansu also counts consumers that left).",
            ["group"],
        )
        self.measured_at = metrics.gauge(
            "lag_exporter_last_success_timestamp_seconds",
            "When the lag was last measured (Unix time): a stale value means the exporter "
            "cannot reach Kafka, and the lag shown is old.",
        )
        self.failures = metrics.counter(
            "lag_exporter_failures_total", "Measurements that failed (Kafka unreachable)."
        )

    def show(self, rows: Sequence[LagRow], members: Mapping[str, int]) -> None:
        """Replace every series at once (no await in between: a scrape sees one measurement),
        so a group or partition that went away does not linger with its last value."""
        for gauge in (self.lag, self.committed, self.end, self.members):
            gauge.clear()
        for row in rows:
            where = (row.group, row.topic, str(row.partition))
            self.lag.labels(*where).set(row.lag)
            if row.committed is not None:
                self.committed.labels(*where).set(row.committed)
            self.end.labels(row.topic, str(row.partition)).set(row.end)
        for group, count in members.items():
            self.members.labels(group).set(count)
        self.measured_at.set(time.time())


async def group_members(settings: ServiceSettings, groups: Sequence[str]) -> dict[str, int]:
    """Members per group, for the groups the broker describes. One group per request: tansu
    answers a request naming a group it does not know with a frame the client cannot read."""
    found: dict[str, int] = {}
    admin = admin_client(settings)
    try:
        await admin.start()
        for group in groups:
            try:
                (answer,) = await admin.describe_consumer_groups([group])
                for described in answer.groups:  # (error, group, state, …, members, …)
                    if described[0] == 0:
                        found[described[1]] = len(described[5])
            except Exception as exc:  # this broker does not say: lag alone tells
                log.debug("no member count for %s: %s", group, type(exc).__name__)
    finally:
        await admin.close()
    return found


class LagExporter:
    def __init__(
        self, settings: ServiceSettings, groups: Mapping[str, list[str]], metrics: Metrics
    ) -> None:
        self.settings = settings
        self.groups = dict(groups)
        self.metrics = metrics
        self.gauges = LagGauges(metrics)
        self.last_success: float | None = None

    async def measure_once(self) -> list[LagRow]:
        rows = await lag_report(self.settings, self.groups)
        members = await group_members(self.settings, sorted({row.group for row in rows}))
        self.gauges.show(rows, members)
        self.last_success = time.monotonic()
        return rows

    async def run(self, interval_s: float) -> None:
        while True:
            try:
                async with asyncio.timeout(max(interval_s, 10) * 3):
                    await self.measure_once()
            except Exception as exc:  # the next round tries again; the gauge says how old
                self.gauges.failures.inc()
                log.warning("lag not measured: %s: %s", type(exc).__name__, exc)
            await asyncio.sleep(interval_s)

    def fresh(self, interval_s: float) -> bool:
        return self.last_success is not None and (
            time.monotonic() - self.last_success < 3 * max(interval_s, 10)
        )

    def app(self, interval_s: float) -> FastAPI:
        app = FastAPI(title="Visio RDV lag exporter", docs_url=None, redoc_url=None)

        @app.get("/health/live")
        async def live() -> dict[str, str]:
            return {"status": "ok"}

        @app.get("/health/ready")
        async def ready(response: Response) -> dict[str, str]:
            ok = self.fresh(interval_s)
            response.status_code = 200 if ok else 503
            return {"status": "ok" if ok else "unavailable"}

        @app.get("/metrics")
        async def metrics() -> Response:
            return Response(self.metrics.render(), media_type=CONTENT_TYPE)

        return app


def parse_listen(value: str) -> tuple[str, int]:
    """`8085` or `0.0.0.0:8085`; the host defaults to 127.0.0.1 (metrics say nothing personal,
    but nothing is published that was not asked for)."""
    host, _, port = value.rpartition(":")
    return host or "127.0.0.1", int(port)


async def serve(
    settings: ServiceSettings,
    groups: Mapping[str, list[str]],
    listen: str,
    interval_s: float,
) -> int:
    host, port = parse_listen(listen)
    exporter = LagExporter(settings, groups, Metrics(SERVICE))
    server = uvicorn.Server(
        uvicorn.Config(
            exporter.app(interval_s), host=host, port=port, log_level="warning", log_config=None
        )
    )
    measuring = asyncio.create_task(exporter.run(interval_s), name="lag")
    print(f"lag of {len(groups)} groups every {interval_s:g}s on http://{host}:{port}/metrics")
    try:
        await server.serve()
    finally:
        measuring.cancel()
        await asyncio.gather(measuring, return_exceptions=True)
    return 0
