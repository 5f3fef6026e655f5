"""The meetings service: reads `appointments.v1` and `consents.v1`, answers on `meetings.v1`."""

from __future__ import annotations

from dataclasses import dataclass

from fastapi import FastAPI
from visio_runtime.service import Runtime, build_runtime, create_service_app
from visio_shared import AppointmentEvent

from visio_meetings.graph import GraphClient
from visio_meetings.handlers import HANDLED, Deps, handle_event
from visio_meetings.settings import MeetingsSettings

SERVICE = "meetings"


@dataclass
class Clients:
    """Outside clients, opened when the service starts and closed when it stops."""

    graph: GraphClient | None = None

    def require_graph(self) -> GraphClient:
        assert self.graph is not None, "the Graph client opens when the service starts"
        return self.graph


def create_app(settings: MeetingsSettings | None = None) -> FastAPI:
    settings = settings or MeetingsSettings()  # from the environment
    runtime = build_runtime(SERVICE, settings)
    clients = Clients()

    async def open_clients(_: Runtime) -> None:
        # No network here: msal builds its application (and fetches the authority's
        # configuration) on the first token request, so an Entra outage delays meetings
        # rather than the service's start.
        clients.graph = GraphClient.from_settings(settings)

    async def close_clients(_: Runtime) -> None:
        if clients.graph is not None:
            await clients.graph.aclose()
            clients.graph = None

    runtime.on_start.append(open_clients)
    runtime.on_stop.append(close_clients)

    async def on_event(event: AppointmentEvent) -> None:
        deps = Deps(runtime.db, clients.require_graph(), runtime.broker, runtime.topics)
        await handle_event(event, deps)

    for model in HANDLED:
        runtime.consumer.on(model)(on_event)
    # One subscriber for both topics: its records are handled one at a time, so a withdrawal
    # and a change of the same appointment never race within a replica (the appointment lock
    # covers replicas). ConsentRecorded, also on consents.v1, is skipped and counted.
    runtime.consumer.subscribe(runtime.topics.appointments, runtime.topics.consents)
    app = create_service_app(runtime, title="Visio RDV meetings")
    app.state.clients = clients
    return app
