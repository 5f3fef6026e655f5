"""The meetings service: reads `appointments.v1` and `consents.v1`, answers on `meetings.v1`;
after each meeting, tells on `meetings.v1` who attended and which recordings exist."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from fastapi import FastAPI
from visio_runtime.service import Runtime, build_runtime, create_service_app
from visio_shared import AppointmentEvent

from visio_meetings import personal_data
from visio_meetings.batch import Failures, handle_batch
from visio_meetings.graph import GraphClient
from visio_meetings.handlers import HANDLED, MeetingsDeps
from visio_meetings.poller import MeetingsPollerDeps, poll_once
from visio_meetings.provisioning import Provisioner
from visio_meetings.settings import MeetingsSettings

SERVICE = "meetings"


@dataclass
class MeetingsClients:
    """Outside clients, opened when the service starts and closed when it stops."""

    graph: GraphClient | None = None
    provisioner: Provisioner | None = None

    def require_graph(self) -> GraphClient:
        assert self.graph is not None, "the Graph client opens when the service starts"
        return self.graph


def create_app(settings: MeetingsSettings | None = None) -> FastAPI:
    settings = settings or MeetingsSettings()  # from the environment
    runtime = build_runtime(SERVICE, settings)
    clients = MeetingsClients()

    async def open_clients(_: Runtime) -> None:
        # No network here: msal builds its application (and fetches the authority's
        # configuration) on the first token request, so an Entra outage delays meetings
        # rather than the service's start.
        clients.graph = GraphClient.from_settings(settings, metrics=runtime.metrics)
        clients.provisioner = Provisioner(clients.graph, window_s=settings.graph_batch_window_s)

    async def close_clients(_: Runtime) -> None:
        if clients.provisioner is not None:
            await clients.provisioner.aclose()
            clients.provisioner = None
        if clients.graph is not None:
            await clients.graph.aclose()
            clients.graph = None

    runtime.on_start.append(open_clients)
    runtime.on_stop.append(close_clients)
    runtime.ready_checks["graph_token"] = lambda: clients.require_graph().check_token()

    grace = timedelta(seconds=settings.attendance_grace_s)

    failures = Failures()

    async def on_events(events: list[AppointmentEvent]) -> None:
        graph = clients.require_graph()
        deps = MeetingsDeps(
            runtime.db,
            graph,
            runtime.broker,
            runtime.topics,
            grace,
            provisioner=clients.provisioner,
            booking_public_url=settings.booking_public_url,
        )
        await handle_batch(events, deps, failures)

    def poller() -> MeetingsPollerDeps:
        graph = clients.require_graph()
        return MeetingsPollerDeps(
            runtime.db, graph, runtime.broker, runtime.topics, settings, lambda: datetime.now(UTC)
        )

    # What arrives together is handled together (visio_meetings.batch), at most one event of
    # an appointment in a batch.
    runtime.consumer.on_batch(*HANDLED)(on_events)
    # One subscriber for both topics: one appointment's records are handled one at a time, in
    # the order they arrive, so a withdrawal and a change of the same appointment never race
    # within a replica (the appointment lock covers replicas). ConsentRecorded, also on
    # consents.v1, is skipped and counted.
    runtime.consumer.subscribe(runtime.topics.appointments, runtime.topics.consents)
    # After each meeting: its attendance report and recordings (the record of connections).
    runtime.run_every(
        "attendance-poller", settings.attendance_poll_interval_s, lambda: poll_once(poller())
    )
    runtime.personal_data = personal_data.collect
    app = create_service_app(runtime, title="Visio RDV meetings")
    app.state.clients = clients
    return app
