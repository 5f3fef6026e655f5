"""What the meetings tests run against: the real Graph + Entra ID emulator over HTTPS (served
in this event loop, trusted through a dev CA made for the session) and a real PostgreSQL
database made for the session, migrated, and used through the service's restricted role."""

from __future__ import annotations

import asyncio
import datetime as dt
import uuid
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import pytest
from aiokafka import ConsumerRecord
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.x509.oid import NameOID
from visio_fakes.graph_emulator import (
    AppRegistration,
    EmulatorSettings,
    RunningEmulator,
    serve_in_background,
)
from visio_fakes.graph_emulator.settings import DEFAULT_CLIENT_ID, DEFAULT_CLIENT_SECRET
from visio_meetings.graph import GraphClient
from visio_meetings.handlers import MeetingsDeps, handle_event
from visio_meetings.payloads import MeetingSpec, meeting_key
from visio_meetings.settings import MeetingsSettings
from visio_meetings.store import SCHEMA
from visio_runtime.db import create_pool, migrate, role_dsn
from visio_runtime.metrics import Metrics
from visio_runtime.service import Runtime
from visio_runtime.testing import RecordingPublisher, record_of
from visio_shared import (
    Advisor,
    AdvisorReassigned,
    AppointmentCancelled,
    AppointmentEvent,
    AppointmentRequested,
    AppointmentRescheduled,
    ConsentGiven,
    Device,
    Person,
    RecordingConsentWithdrawn,
    Topics,
)
from visio_testing import create_database, drop_database

SERVICE_PASSWORD = "visio_meetings"
CERT_CLIENT_ID = "22222222-2222-2222-2222-222222222222"
ADVISOR_ID = "a1b2c3d4-0000-4000-8000-00000000ad01"
OTHER_ADVISOR_ID = "a1b2c3d4-0000-4000-8000-00000000ad02"


# --- Graph + Entra ID emulator ---------------------------------------------------------


@dataclass(frozen=True)
class ClientCertificate:
    client_id: str  # the app registration that trusts this certificate
    pem_path: Path  # private key then certificate, as MEETINGS_CLIENT_CERTIFICATE_PATH takes it
    certificate_pem: str


@pytest.fixture(scope="session")
def client_certificate(tmp_path_factory: pytest.TempPathFactory) -> ClientCertificate:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "visio-rdv-meetings-test")])
    now = dt.datetime.now(dt.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(hours=1))
        .not_valid_after(now + dt.timedelta(days=2))
        .sign(key, hashes.SHA256())
    )
    cert_pem = cert.public_bytes(serialization.Encoding.PEM).decode()
    key_pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    ).decode()
    path = tmp_path_factory.mktemp("client-cert") / "meetings.pem"
    path.write_text(key_pem + cert_pem)
    return ClientCertificate(client_id=CERT_CLIENT_ID, pem_path=path, certificate_pem=cert_pem)


@pytest.fixture(scope="session")
async def emulator(
    tmp_path_factory: pytest.TempPathFactory, client_certificate: ClientCertificate
) -> AsyncIterator[RunningEmulator]:
    settings = EmulatorSettings(
        host="127.0.0.1",
        port=0,
        ca_dir=str(tmp_path_factory.mktemp("dev-ca")),
        extra_apps=[
            AppRegistration(
                client_id=CERT_CLIENT_ID,
                display_name="Visio RDV (certificate)",
                certificate_pem=client_certificate.certificate_pem,
            )
        ],
        log_level="warning",
    )
    running = await serve_in_background(settings)
    try:
        yield running
    finally:
        await running.stop()


class EmulatorControl:
    """The emulator's control API (/_emulator), over the same HTTPS as Graph."""

    def __init__(self, http: httpx.AsyncClient) -> None:
        self.http = http

    async def _get(self, path: str) -> Any:
        response = await self.http.get(path)
        response.raise_for_status()
        return response.json()

    async def _post(self, path: str, body: dict[str, Any] | None = None) -> Any:
        response = await self.http.post(path, json=body)
        response.raise_for_status()
        return response.json() if response.content else None

    async def reset(self) -> None:
        await self._post("/_emulator/reset")

    async def stats(self) -> dict[str, Any]:
        stats: dict[str, Any] = await self._get("/_emulator/stats")
        return stats

    async def events(self) -> list[dict[str, Any]]:
        events: list[dict[str, Any]] = (await self._get("/_emulator/events"))["value"]
        return events

    async def online_meetings(self) -> list[dict[str, Any]]:
        meetings: list[dict[str, Any]] = (await self._get("/_emulator/online-meetings"))["value"]
        return meetings

    async def faults(self, **config: Any) -> None:
        await self._post("/_emulator/faults", config)

    async def access_policy(self, **policy: Any) -> None:
        await self._post("/_emulator/access-policy", policy)

    async def advance_clock(self, seconds: float) -> None:
        await self._post("/_emulator/clock", {"advance_seconds": seconds})

    async def mailbox(
        self, user_id: str, *, teams_enabled: bool = True, exists: bool = True
    ) -> None:
        await self._post(
            f"/_emulator/users/{user_id}", {"teams_enabled": teams_enabled, "exists": exists}
        )

    async def join_url_style(self, style: str) -> None:
        await self._post("/_emulator/tenant", {"join_url_style": style})

    async def attendance(self, meeting_id: str, **report: Any) -> dict[str, Any]:
        """Script the meeting's attendance report (participants, when it is listed)."""
        made: dict[str, Any] = await self._post(
            f"/_emulator/online-meetings/{meeting_id}/attendance", report
        )
        return made

    async def recordings(self, meeting_id: str, *recordings: dict[str, Any]) -> list[Any]:
        made = await self._post(
            f"/_emulator/online-meetings/{meeting_id}/recordings", {"recordings": list(recordings)}
        )
        return list(made["value"])

    async def script_creates(
        self, subject: str, *outcomes: str, retry_after: float | None = None
    ) -> None:
        """The next creates of the event with this subject (an appointment's id, as the
        emulator's tests use) meet these outcomes ('429', '503', 'commit-then-504'…)."""
        body = {
            "subject": subject,
            "endpoint": "graph.events.create",
            "outcomes": list(outcomes),
            "retry_after_seconds": retry_after,
        }
        await self._post("/_emulator/faults/script", body)

    async def live_events(self) -> list[dict[str, Any]]:
        return [e for e in await self.events() if not e["is_deleted"]]

    async def calls(self, endpoint: str) -> int:
        return int((await self.stats())["calls"].get(endpoint, 0))


@pytest.fixture
async def control(emulator: RunningEmulator) -> AsyncIterator[EmulatorControl]:
    async with httpx.AsyncClient(
        base_url=emulator.base_url, verify=emulator.ca.ssl_context(), trust_env=False
    ) as http:
        ctl = EmulatorControl(http)
        await ctl.reset()  # every test starts with an empty tenant and no faults
        yield ctl


# --- PostgreSQL ---------------------------------------------------------------------------


@pytest.fixture(scope="session")
async def service_dsn(postgres_url: str) -> AsyncIterator[str]:
    """A fresh database on the server the root conftest chose, migrated as its owner; yields
    the service role's connection string."""
    owner_dsn = await create_database(postgres_url, prefix="visio_meet_test")
    try:
        await migrate(owner_dsn, SCHEMA, service_password=SERVICE_PASSWORD)
        yield role_dsn(owner_dsn, SCHEMA.service_role, SERVICE_PASSWORD)
    finally:
        await drop_database(postgres_url, owner_dsn)


@pytest.fixture(scope="session")
async def pool(service_dsn: str) -> AsyncIterator[asyncpg.Pool]:
    pool = await create_pool(service_dsn, schema=SCHEMA.schema)
    try:
        yield pool
    finally:
        await pool.close()


# --- the service's own pieces ---------------------------------------------------------------


@pytest.fixture
def settings(emulator: RunningEmulator, service_dsn: str) -> MeetingsSettings:
    return MeetingsSettings(
        authority=emulator.authority,
        client_id=DEFAULT_CLIENT_ID,
        client_secret=DEFAULT_CLIENT_SECRET,
        graph_base_url=f"{emulator.base_url}/v1.0",
        ca_bundle=emulator.ca.bundle_path,
        database_url=service_dsn,
        topic_prefix=f"test-{uuid.uuid4().hex[:8]}",
        # Short in-process waits; a Retry-After above half a second goes to the consumer.
        graph_backoff_initial_s=0.01,
        graph_backoff_max_s=0.05,
        graph_max_in_process_wait_s=0.5,
        retry_initial_delay_s=0.01,
        retry_max_delay_s=0.05,
    )


@pytest.fixture
async def graph(settings: MeetingsSettings) -> AsyncIterator[GraphClient]:
    """A Graph client with its own msal application, so token counts are this test's."""
    client = GraphClient.from_settings(settings)
    try:
        yield client
    finally:
        await client.aclose()


@pytest.fixture
def waits() -> list[float]:
    return []


@pytest.fixture
def metrics() -> Metrics:
    return Metrics("meetings")


@pytest.fixture
async def client(
    settings: MeetingsSettings, waits: list[float], metrics: Metrics
) -> AsyncIterator[GraphClient]:
    """A Graph client that notes each wait it makes between attempts (and makes it)."""

    async def sleep(seconds: float) -> None:
        waits.append(seconds)
        await asyncio.sleep(seconds)

    graph = GraphClient.from_settings(settings, sleep=sleep, metrics=metrics)
    try:
        yield graph
    finally:
        await graph.aclose()


# The runtime's recording publisher, under the name these tests use.
FakePublisher = RecordingPublisher


@pytest.fixture
def publisher() -> FakePublisher:
    return FakePublisher()


@pytest.fixture
def topics(settings: MeetingsSettings) -> Topics:
    return Topics(settings.topic_prefix)


def appointment(
    *,
    recording_authorised: bool = False,
    advisor_id: str = ADVISOR_ID,
    appointment_id: uuid.UUID | None = None,
    timezone: str = "Indian/Reunion",
) -> AppointmentRequested:
    return AppointmentRequested(
        correlation_id=uuid.uuid4(),
        appointment_id=appointment_id or uuid.uuid4(),
        revision=1,
        caf_code="974",
        advisor=Advisor(id=advisor_id, display_name="Conseillère Caf"),
        start=dt.datetime(2031, 3, 4, 9, 30, tzinfo=dt.timezone(dt.timedelta(hours=4))),
        duration_minutes=45,
        timezone=timezone,
        subject="Rendez-vous Caf : votre dossier",
        user=Person(
            first_name="Marie",
            last_name="Payet",
            email="marie.payet@example.org",
            device=Device.SMARTPHONE,
        ),
        consent=ConsentGiven(
            cgu_version="2024-01",
            cgu_sha256="0" * 64,
            accepted_at=dt.datetime(2031, 3, 1, 8, 0, tzinfo=dt.UTC),
            recording_authorised=recording_authorised,
            channel="api",
        ),
        calling_system="caf.fr",
    )


@pytest.fixture
def make_appointment() -> Callable[..., AppointmentRequested]:
    return appointment


@pytest.fixture
def deps(
    pool: asyncpg.Pool, graph: GraphClient, publisher: FakePublisher, topics: Topics
) -> MeetingsDeps:
    return MeetingsDeps(pool, graph, publisher, topics)


@pytest.fixture
def handle(deps: MeetingsDeps) -> Callable[[AppointmentEvent], Any]:
    """The service's handling of one event, as the consumer calls it."""

    async def run(event: AppointmentEvent) -> None:
        await handle_event(event, deps)

    return run


def spec_of(appointment: AppointmentRequested) -> MeetingSpec:
    return MeetingSpec(
        appointment_id=appointment.appointment_id,
        advisor_id=appointment.advisor.id,
        key=meeting_key(appointment.appointment_id),
        subject=appointment.subject,
        start=appointment.start,
        duration_minutes=appointment.duration_minutes,
        timezone=appointment.timezone,
        recording_authorised=appointment.consent.recording_authorised,
    )


# --- the changes of one appointment, each one revision further -------------------------------


def _next(of: AppointmentEvent, revision: int | None) -> dict[str, Any]:
    return {
        "correlation_id": of.correlation_id,
        "appointment_id": of.appointment_id,
        "revision": revision or of.revision + 1,
    }


def rescheduled(
    of: AppointmentRequested, start: dt.datetime, *, revision: int | None = None
) -> AppointmentRescheduled:
    return AppointmentRescheduled(
        start=start,
        duration_minutes=30,
        timezone=of.timezone,
        previous_start=of.start,
        previous_duration_minutes=of.duration_minutes,
        **_next(of, revision),
    )


def cancelled(of: AppointmentEvent, *, revision: int | None = None) -> AppointmentCancelled:
    return AppointmentCancelled(reason="user", cancelled_by="caf.fr", **_next(of, revision))


def reassigned(
    of: AppointmentRequested, advisor_id: str, *, revision: int | None = None
) -> AdvisorReassigned:
    return AdvisorReassigned(
        advisor=Advisor(id=advisor_id, display_name="Autre conseillère"),
        previous_advisor=of.advisor,
        **_next(of, revision),
    )


def withdrawn(of: AppointmentEvent) -> RecordingConsentWithdrawn:
    return RecordingConsentWithdrawn(
        subject_ref="hmac-of-the-address",
        withdrawn_at=dt.datetime(2031, 3, 2, 10, 0, tzinfo=dt.UTC),
        channel="api",
        correlation_id=of.correlation_id,
        appointment_id=of.appointment_id,
        revision=of.revision,
    )


class Changes:
    """The change factories, for tests (conftest is not importable at run time)."""

    rescheduled = staticmethod(rescheduled)
    cancelled = staticmethod(cancelled)
    reassigned = staticmethod(reassigned)
    withdrawn = staticmethod(withdrawn)
    spec_of = staticmethod(spec_of)


@pytest.fixture
def changes() -> type[Changes]:
    return Changes


@pytest.fixture
def to_record() -> Callable[..., ConsumerRecord[bytes, bytes]]:
    return record_of


@pytest.fixture
async def service(
    settings: MeetingsSettings, pool: asyncpg.Pool, publisher: FakePublisher
) -> AsyncIterator[Runtime]:
    """The service as `create_app` assembles it, started without a broker: records go in
    through its consumer, answers come out in the recording publisher."""
    from visio_meetings.app import create_app

    app = create_app(settings)
    runtime: Runtime = app.state.runtime
    runtime.pool = pool
    runtime.broker = publisher  # type: ignore[assignment]
    runtime.consumer.broker = publisher  # type: ignore[assignment]
    for hook in runtime.on_start:
        await hook(runtime)
    try:
        yield runtime
    finally:
        for task in runtime.background:  # the attendance poller, as the lifespan stops it
            task.cancel()
        await asyncio.gather(*runtime.background, return_exceptions=True)
        for hook in runtime.on_stop:
            await hook(runtime)
