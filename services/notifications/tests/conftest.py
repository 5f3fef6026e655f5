"""Fixtures on real parts: PostgreSQL (databases cloned from one migrated template; the one the
handler tests share is emptied before each test), the project's SMTP sink with its fault hooks,
a clock the test moves, and a fake Kafka publisher for the tests that do not run the broker.
Events are made as booking and meetings would make them.

Test modules are imported with --import-mode=importlib and cannot import this file: its helpers
reach them as fixtures (`make`, `mailbox`, `clock`, `until`).
"""

from __future__ import annotations

import asyncio
import contextlib
import email
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from email import policy
from email.message import EmailMessage
from html.parser import HTMLParser
from pathlib import Path
from types import SimpleNamespace
from typing import Any, cast
from urllib.parse import urlsplit

import asyncpg
import css_inline
import icalendar
import pytest
from pydantic import SecretStr
from visio_fakes import sms_emulator
from visio_fakes.smtp_sink import start_sink
from visio_notifications.brevo import BrevoSms
from visio_notifications.compose import Letter, compose_mail
from visio_notifications.deps import NotificationsDeps
from visio_notifications.mailer import SmtpMailer
from visio_notifications.mime import Mail
from visio_notifications.settings import NotificationsSettings
from visio_notifications.sms_metrics import SmsMetrics
from visio_notifications.store import SCHEMA
from visio_runtime.db import create_pool, migrate, role_dsn
from visio_runtime.metrics import Metrics
from visio_shared import (
    Advisor,
    AdvisorReassigned,
    AppointmentCancelled,
    AppointmentLinkRequested,
    AppointmentRequested,
    AppointmentRescheduled,
    ConsentGiven,
    ContactCorrected,
    Device,
    MeetingFailed,
    MeetingReady,
    Person,
    Topics,
    current_cgu,
    parse_event,
)
from visio_shared.links import LinkKeys
from visio_testing import create_database, drop_database, with_database

SERVICE_PASSWORD = "visio_notifications"
# The ring the tests sign self-service links with; the pages' side reads them back with it.
LINK_KEYS = "t2:" + "a" * 40 + ",t1:" + "b" * 40
JOIN_URL = (
    "https://teams.microsoft.com/l/meetup-join/19%3ameeting_ZjA4NDk0%40thread.v2/0"
    "?context=%7b%22Tid%22%3a%22t1%22%2c%22Oid%22%3a%22o1%22%7d"
)
NEW_JOIN_URL = "https://teams.microsoft.com/meet/2647813459?p=NewAdvisorLink"
# Tests live on 20 November 2026; appointments are on 3 December.
NOW = datetime(2026, 11, 20, 9, 0, tzinfo=UTC)
START = datetime(2026, 12, 3, 9, 0, tzinfo=UTC)  # 10 h 00 in Paris


# --- Events ---------------------------------------------------------------------------------


class Make:
    """Events of one appointment's life, with the lineage booking and meetings give them."""

    @staticmethod
    def appointment(
        *,
        revision: int = 1,
        start: datetime = START,
        timezone: str = "Europe/Paris",
        caf_code: str = "075",
        device: Device = Device.COMPUTER,
        recording_authorised: bool = True,
        advisor_name: str = "Claire Martin",
        first_name: str = "Amina",
        last_name: str = "Hoarau",
        email: str = "amina.hoarau@example.org",
        subject: str = "Prime d'activité",
        duration_minutes: int = 30,
    ) -> AppointmentRequested:
        cgu = current_cgu()
        return AppointmentRequested(
            appointment_id=uuid.uuid4(),
            correlation_id=uuid.uuid4(),
            revision=revision,
            caf_code=caf_code,
            advisor=Advisor(id="6f1c2a4e-8b1d-4c55-9a51-2f9e6f0c1d11", display_name=advisor_name),
            start=start,
            duration_minutes=duration_minutes,
            timezone=timezone,
            subject=subject,
            user=Person(first_name=first_name, last_name=last_name, email=email, device=device),
            consent=ConsentGiven(
                cgu_version=cgu.version,
                cgu_sha256=cgu.sha256,
                accepted_at=datetime(2026, 11, 20, 8, 30, tzinfo=UTC),
                recording_authorised=recording_authorised,
                channel="api",
            ),
            calling_system="caf.fr",
        )

    @staticmethod
    def _lineage(appointment: AppointmentRequested, revision: int) -> dict[str, Any]:
        return {
            "appointment_id": appointment.appointment_id,
            "correlation_id": appointment.correlation_id,
            "revision": revision,
        }

    def meeting(
        self,
        appointment: AppointmentRequested,
        *,
        revision: int | None = None,
        join_url: str = JOIN_URL,
        advisor_id: str = "6f1c2a4e-8b1d-4c55-9a51-2f9e6f0c1d11",
        **dial_in: str,
    ) -> MeetingReady:
        return MeetingReady(
            **self._lineage(appointment, appointment.revision if revision is None else revision),
            causation_id=appointment.event_id,
            join_url=join_url,
            graph_event_id="AAMkAGI2TGuLAAA=",
            advisor_id=advisor_id,
            **dial_in,
        )

    def meeting_failed(self, appointment: AppointmentRequested, revision: int = 1) -> MeetingFailed:
        return MeetingFailed(
            **self._lineage(appointment, revision),
            reason="graph_forbidden",
            detail="403 from Graph: no application access policy for this mailbox",
        )

    def rescheduled(
        self,
        appointment: AppointmentRequested,
        revision: int,
        start: datetime,
        previous_start: datetime | None = None,
        duration_minutes: int = 30,
    ) -> AppointmentRescheduled:
        return AppointmentRescheduled(
            **self._lineage(appointment, revision),
            start=start,
            duration_minutes=duration_minutes,
            timezone=appointment.timezone,
            previous_start=previous_start or appointment.start,
            previous_duration_minutes=appointment.duration_minutes,
        )

    def cancelled(
        self, appointment: AppointmentRequested, revision: int, reason: str = "user"
    ) -> AppointmentCancelled:
        return AppointmentCancelled(
            **self._lineage(appointment, revision),
            reason=cast(Any, reason),
            cancelled_by="caf.fr",
        )

    def contact_corrected(
        self, appointment: AppointmentRequested, revision: int, email: str, **person: Any
    ) -> ContactCorrected:
        user = Person.model_validate({**appointment.user.model_dump(), "email": email, **person})
        return ContactCorrected(**self._lineage(appointment, revision), user=user)

    def reassigned(
        self, appointment: AppointmentRequested, revision: int, name: str = "Karim Benali"
    ) -> AdvisorReassigned:
        return AdvisorReassigned(
            **self._lineage(appointment, revision),
            advisor=Advisor(id="0b7e4d2a-1c3f-4e5a-8d9b-6a2c1f0e3d44", display_name=name),
            previous_advisor=appointment.advisor,
        )

    def link_requested(
        self,
        appointment: AppointmentRequested,
        revision: int | None = None,
        reason: str = "resend",
        at: datetime | None = None,
    ) -> AppointmentLinkRequested:
        """What booking publishes when the person clicks « Recevoir à nouveau le lien » (or, as
        'fresh_link', « Recevoir un nouveau lien »), asked `at` that moment."""
        return AppointmentLinkRequested(
            **self._lineage(appointment, appointment.revision if revision is None else revision),
            reason=cast(Any, reason),
            **({} if at is None else {"occurred_at": at}),
        )


@pytest.fixture
def make() -> Make:
    return Make()


# --- Time -----------------------------------------------------------------------------------


@dataclass
class Clock:
    """The service's clock, moved by the test."""

    now: datetime = NOW

    def __call__(self) -> datetime:
        return self.now

    def set(self, moment: datetime) -> None:
        self.now = moment

    def advance(self, **delta: float) -> None:
        self.now += timedelta(**delta)


@pytest.fixture
def clock() -> Clock:
    return Clock()


async def wait_for(
    condition: Callable[[], Awaitable[bool] | bool], within_s: float = 30.0, interval: float = 0.05
) -> None:
    """Poll a condition until it holds or the deadline passes (never a fixed sleep)."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + within_s
    while True:
        result = condition()
        if not isinstance(result, bool):
            result = await result
        if result:
            return
        if loop.time() > deadline:
            raise AssertionError("condition not met before the deadline")
        await asyncio.sleep(interval)


@pytest.fixture
def until() -> Callable[..., Awaitable[None]]:
    return wait_for


# --- Mail -----------------------------------------------------------------------------------


@dataclass
class Mailbox:
    """What the sink stored, parsed back with the standard library."""

    directory: Path

    def messages(self, appointment_id: uuid.UUID | None = None) -> list[EmailMessage]:
        parsed = [
            cast(
                EmailMessage,
                email.message_from_bytes(path.read_bytes(), policy=policy.default),
            )
            for path in sorted(self.directory.glob("*.eml"), key=lambda p: p.stat().st_mtime_ns)
        ]
        if appointment_id is None:
            return parsed
        return [m for m in parsed if str(appointment_id) in str(m["Message-ID"])]

    def keys(self, appointment_id: uuid.UUID) -> list[str]:
        """`r1.confirmation`, `r2.rescheduled`, `r2.reminder-60`… in the order they arrived."""
        return [
            str(m["Message-ID"]).strip("<>").split("@")[0].split(".", 1)[1]
            for m in self.messages(appointment_id)
        ]

    def one(self, appointment_id: uuid.UUID, kind: str) -> EmailMessage:
        [message] = [
            m for m in self.messages(appointment_id) if f".{kind}@" in str(m["Message-ID"])
        ]
        return message


def text_of(message: EmailMessage) -> str:
    """The text part, with the line ends a reader sees (SMTP carries CRLF)."""
    part = message.get_body(preferencelist=("plain",))
    assert part is not None
    return cast(str, part.get_content()).replace("\r\n", "\n")


def html_of(message: EmailMessage) -> str:
    part = message.get_body(preferencelist=("html",))
    assert part is not None
    return cast(str, part.get_content())


def calendar_of(message: EmailMessage) -> icalendar.Calendar:
    """The .ics of the text/calendar alternative, checked to be the attachment's twin."""
    parts = [p for p in message.walk() if p.get_content_type() == "text/calendar"]
    assert len(parts) == 2, "a text/calendar alternative and the same .ics attached"
    inline, attached = parts
    assert attached.get_filename() == "rendez-vous-caf.ics"
    assert inline.get_payload(decode=True) == attached.get_payload(decode=True)
    calendar = icalendar.Calendar.from_ical(inline.get_payload(decode=True))
    for part in parts:
        assert part.get_param("method") == calendar["METHOD"]
    return calendar


@pytest.fixture
def parts() -> Any:
    """text_of, html_of, calendar_of as one fixture."""

    @dataclass
    class Parts:
        text = staticmethod(text_of)
        html = staticmethod(html_of)
        calendar = staticmethod(calendar_of)

    return Parts()


# --- HTML as trees ----------------------------------------------------------------------------

# An HTML5 parser and serialiser only (html5ever, in css_inline, nothing inlined: the venv has
# neither html5lib nor lxml): the implicit <tbody>, the end tags, the entities made explicit.
HTML5 = css_inline.CSSInliner(
    inline_style_tags=False,
    keep_style_tags=True,
    keep_link_tags=True,
    load_remote_stylesheets=False,
)
VOID = {"area", "base", "br", "col", "embed", "hr", "img", "input", "link", "meta", "source", "wbr"}


class Flat(HTMLParser):
    """An HTML5 serialisation read back as its nodes in document order, each with its depth:
    an element's tag and attributes (sorted; `style` as its declarations, in order), a text."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.nodes: list[tuple[Any, ...]] = []
        self.open: list[str] = []

    def handle_decl(self, decl: str) -> None:
        self.nodes.append((len(self.open), "!", decl.lower()))

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        attributes = sorted(
            (name, declarations(value or "") if name == "style" else value) for name, value in attrs
        )
        self.nodes.append((len(self.open), tag, attributes))
        if tag not in VOID:
            self.open.append(tag)

    def handle_endtag(self, tag: str) -> None:
        assert self.open.pop() == tag, f"</{tag}> out of order"

    def handle_data(self, data: str) -> None:
        last = self.nodes[-1] if self.nodes else None
        if last and last[1] == "#text" and last[0] == len(self.open):
            self.nodes[-1] = (last[0], "#text", last[2] + data)  # the parser splits texts
        else:
            self.nodes.append((len(self.open), "#text", data))

    def handle_comment(self, data: str) -> None:
        self.nodes.append((len(self.open), "#comment", data))


def declarations(style: str) -> list[tuple[str, str]]:
    pairs = (declaration.partition(":") for declaration in style.split(";") if declaration.strip())
    return [(name.strip(), value.strip()) for name, _, value in pairs]


def as_tree(page: str) -> list[tuple[Any, ...]]:
    """The page's tree as an HTML5 parser builds it, flat: two pages compared this way are the
    same to a mail client whatever their bytes (entities, implicit tags, quotes)."""
    flat = Flat()
    flat.feed(HTML5.inline(page))
    flat.close()
    assert not flat.open
    return flat.nodes


@pytest.fixture
def tree() -> Callable[[str], list[tuple[Any, ...]]]:
    """`as_tree`, the page's nodes as an HTML5 parser builds them."""
    return as_tree


@pytest.fixture
def sink(tmp_path: Path) -> Iterator[Any]:
    controller = start_sink(tmp_path / "mail")
    try:
        yield controller
    finally:
        controller.stop()


@pytest.fixture
def mailbox(sink: Any) -> Mailbox:
    return Mailbox(sink.handler.mail_dir)


@pytest.fixture
def mails(make: Any, smtp_settings: NotificationsSettings) -> Any:
    """mails(n) → n emails of n appointments, composed as notifications sends them."""

    def mails(count: int) -> list[Mail]:
        built = []
        for _ in range(count):
            appointment = make.appointment()
            letter = Letter(
                "confirmation", 1, appointment, join_url=make.meeting(appointment).join_url
            )
            built.append(compose_mail(letter, smtp_settings, now=appointment.start.replace(day=1)))
        return built

    return mails


@pytest.fixture(scope="session")
def kit() -> Any:
    """The helper classes, for fixtures of a wider scope than the ones above."""
    return SimpleNamespace(Clock=Clock, Mailbox=Mailbox, LINK_KEYS=SecretStr(LINK_KEYS))


@pytest.fixture
def settings() -> NotificationsSettings:
    """As deployed: with link keys, so every email carries its self-service links."""
    return NotificationsSettings(
        topic_prefix=f"test-notif-{uuid.uuid4().hex[:8]}",
        link_keys=SecretStr(LINK_KEYS),
        booking_public_url="https://rdv.caf.example/booking",
        consent_public_url="https://consentement.caf.example",
    )


@pytest.fixture
def link_keys() -> LinkKeys:
    """The ring of `settings`, as the pages read links with it."""
    return LinkKeys.parse(LINK_KEYS)


@pytest.fixture
def smtp_settings(settings: NotificationsSettings, sink: Any) -> NotificationsSettings:
    """Settings that send to this test's sink."""
    return settings.model_copy(update={"smtp_port": sink.port, "smtp_timeout_s": 10})


# --- Kafka, faked for the handler tests -----------------------------------------------------


@dataclass
class FakePublisher:
    """Records what would go to Kafka; can be told to fail the next publications."""

    published: list[dict[str, Any]] = field(default_factory=list)
    fail_next: int = 0

    async def publish(
        self,
        message: Any,
        topic: str,
        *,
        key: bytes | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        if self.fail_next:
            self.fail_next -= 1
            raise ConnectionError("broker unavailable")
        self.published.append({"message": message, "topic": topic, "key": key, "headers": headers})

    def events(self, appointment_id: uuid.UUID | None = None) -> list[Any]:
        events = [parse_event(item["message"]) for item in self.published]
        return [
            event
            for event in events
            if appointment_id is None or getattr(event, "appointment_id", None) == appointment_id
        ]


@pytest.fixture
def publisher() -> FakePublisher:
    return FakePublisher()


# --- PostgreSQL -----------------------------------------------------------------------------


@pytest.fixture(scope="session")
async def template_database(postgres_url: str) -> AsyncIterator[str]:
    """One database migrated with the service's own SQL (twice: it must be a no-op), cloned
    for each test, so each test has its own reminders and dispatch log."""
    owner_url = await create_database(postgres_url, prefix="visio_notif_template")
    try:
        applied = await migrate(owner_url, SCHEMA, service_password=SERVICE_PASSWORD)
        assert applied == [
            "001_init.sql",
            "002_changes_and_reminders.sql",
            "003_link_requests.sql",
            "004_settle_error.sql",
            "005_sms.sql",
            "006_bounces.sql",
            "007_personal_data.sql",
        ]
        assert await migrate(owner_url, SCHEMA, service_password=SERVICE_PASSWORD) == []
        yield owner_url.rsplit("/", 1)[1]
    finally:
        await drop_database(postgres_url, owner_url)


@pytest.fixture(scope="session")
def clone_database(
    postgres_url: str, template_database: str
) -> Callable[[], contextlib.AbstractAsyncContextManager[str]]:
    """clone_database() → async context of the service role's connection string to a fresh
    clone of the template, dropped afterwards."""

    @contextlib.asynccontextmanager
    async def clone() -> AsyncIterator[str]:
        name = f"visio_notif_{uuid.uuid4().hex[:10]}"
        admin = await asyncpg.connect(postgres_url)
        try:
            await admin.execute(f'CREATE DATABASE "{name}" TEMPLATE "{template_database}"')
        finally:
            await admin.close()
        owner_url = with_database(postgres_url, name)
        try:
            yield role_dsn(owner_url, SCHEMA.service_role, SERVICE_PASSWORD)
        finally:
            await drop_database(postgres_url, owner_url)

    return clone


@pytest.fixture(scope="session")
async def session_database(
    clone_database: Callable[[], contextlib.AbstractAsyncContextManager[str]],
) -> AsyncIterator[str]:
    async with clone_database() as url:
        yield url


@pytest.fixture(scope="session")
async def session_pool(session_database: str) -> AsyncIterator[asyncpg.Pool]:
    pool = await create_pool(session_database, SCHEMA.schema, min_size=1, max_size=6)
    try:
        yield pool
    finally:
        await pool.close()


@pytest.fixture
async def pool(
    session_pool: asyncpg.Pool, session_database: str, postgres_url: str
) -> asyncpg.Pool:
    """The service role's pool on a database emptied for this test (cheaper than a new one):
    each test has its own reminders and dispatch log, which the poller reads whole."""
    database = urlsplit(session_database).path.lstrip("/")
    owner = await asyncpg.connect(with_database(postgres_url, database))
    try:
        tables = await owner.fetch(
            "SELECT tablename FROM pg_tables WHERE schemaname = 'notifications' "
            "AND tablename <> 'schema_migrations'"
        )
        names = ", ".join(f'notifications."{row["tablename"]}"' for row in tables)
        await owner.execute(f"TRUNCATE {names} RESTART IDENTITY")
    finally:
        await owner.close()
    return session_pool


@pytest.fixture
def deps(
    pool: asyncpg.Pool,
    publisher: FakePublisher,
    smtp_settings: NotificationsSettings,
    clock: Clock,
) -> NotificationsDeps:
    """The real relay path (SmtpMailer → the sink) and PostgreSQL; Kafka faked."""
    return NotificationsDeps(
        pool=pool,
        publisher=publisher,
        settings=smtp_settings,
        topics=Topics(smtp_settings.topic_prefix),
        send_mail=SmtpMailer(smtp_settings).send,
        clock=clock,
    )


# --- Text messages: the Brevo emulator over HTTP ----------------------------------------------


@pytest.fixture
async def emulator() -> Any:
    running = await sms_emulator.serve_in_background()
    try:
        yield running
    finally:
        await running.stop()


@pytest.fixture
def sms_deps(deps: Any, emulator: Any) -> Any:
    settings = deps.settings.model_copy(
        update={
            "sms_provider": "brevo",
            "sms_api_url": emulator.base_url,
            "sms_api_key": SecretStr(sms_emulator.API_KEY),
            "sms_timeout_s": 0.5,
            "sms_retry_initial_s": 1.0,
            "sms_retry_max_s": 2.0,
        }
    )
    metrics = Metrics("notifications")
    provider = BrevoSms(
        emulator.base_url, sms_emulator.API_KEY, "Caf", settings.sms_timeout_s, metrics
    )
    return replace(deps, settings=settings, sms=provider, sms_metrics=SmsMetrics(metrics))
