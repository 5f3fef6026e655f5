"""Each Caf speaks for itself on the self-service pages (issue 24, item 5), over HTTP on a real
PostgreSQL: « Enregistrement » and « Mes consentements » name the appointment's Caf and give what
`CONSENT_CAF_CONTACTS` says of it (contact page, phone, mediator, right-of-access address), a
Caf without a contact entry gets the national caf.fr page and nothing invented, and an
appointment recorded before consent kept its Caf (no caf_code) keeps the national wording. The
access export names the Caf of each record; erasure still works; the service warns at start of
the Cafs left on the national page."""

from __future__ import annotations

import html
import logging
import uuid
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING

import asyncpg
import httpx
import pytest
from pydantic import SecretStr
from visio_consent.access import Asker, access_export
from visio_consent.app import create_app
from visio_consent.erasure import erase_subject
from visio_consent.handlers import record_consent
from visio_consent.settings import ConsentSettings
from visio_runtime.service import Runtime
from visio_shared import AppointmentRequested, PersonalDataErasureRequested, Topics
from visio_shared.caf_directory import CafContact, caf_directory
from visio_shared.links import LinkKeys, LinkPurpose, sign_link

if TYPE_CHECKING:
    from conftest import FakePublisher

MakeEvent = Callable[..., AppointmentRequested]

CAF_KEYS = f"c1:{'c' * 40}"
REUNION = CafContact.model_validate(
    {
        "contact_url": "https://www.caf.fr/allocataires/caf-de-la-reunion/nous-contacter",
        "phone": "3230",
        "hours": "du lundi au vendredi, de 8 h à 16 h",
        "mediator": "Médiateur de la Caf de La Réunion, 4 rue Elie Gruchet, 97400 Saint-Denis",
        "access_address": "Délégué à la protection des données, Caf de La Réunion, 97400",
    }
)
NATIONAL = caf_directory().national_contact_url


@dataclass
class CafPages:
    client: httpx.AsyncClient
    settings: ConsentSettings
    pool: asyncpg.Pool
    publisher: FakePublisher

    async def booked(self, event: AppointmentRequested, purpose: LinkPurpose) -> str:
        """Record the request as consent's consumer would; the page's path for `purpose`."""
        await record_consent(
            event, self.pool, self.publisher, self.settings, Topics(self.settings.topic_prefix)
        )
        expires = datetime.now(UTC) + timedelta(days=30)
        token = sign_link(LinkKeys.parse(CAF_KEYS), purpose, event.appointment_id, 1, expires)
        if purpose is LinkPurpose.RECORDING:
            return f"/enregistrement/{token}"
        return f"/mes-consentements/{token}"

    async def read(self, path: str) -> str:
        """The page as a person reads it: entities decoded, no-break spaces as plain ones."""
        answer = await self.client.get(path)
        assert answer.status_code == 200, answer.text
        return html.unescape(answer.text).replace("\u00a0", " ")


@pytest.fixture
async def caf_pages(
    settings: ConsentSettings, pool: asyncpg.Pool, publisher: FakePublisher
) -> AsyncIterator[CafPages]:
    configured = settings.model_copy(
        update={"link_keys": SecretStr(CAF_KEYS), "caf_contacts": {"974": REUNION}}
    )
    app = create_app(configured)
    runtime: Runtime = app.state.runtime  # as the lifespan would set it up, without Kafka
    runtime.pool = pool
    runtime.broker = runtime.consumer.broker = publisher  # type: ignore[assignment]
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://consent") as client:
        yield CafPages(client, configured, pool, publisher)


def soon() -> datetime:
    return datetime.now(UTC) + timedelta(days=7)


async def test_a_reunion_appointment_names_its_caf_and_gives_its_configured_contact(
    caf_pages: CafPages, make_event: MakeEvent
) -> None:
    event = make_event(caf_code="974", start=soon())
    recording = await caf_pages.read(await caf_pages.booked(event, LinkPurpose.RECORDING))

    assert "Votre rendez-vous avec la Caf de La Réunion</h2>" in recording
    assert "Contacter la Caf de La Réunion</h2>" in recording
    assert f'<a href="{REUNION.contact_url}">' in recording
    assert "Par téléphone : 3230 (du lundi au vendredi, de 8 h à 16 h)" in recording
    assert (
        "En cas de litige (article 7 des conditions générales d'utilisation) : Médiateur de la "
        "Caf de La Réunion, 4 rue Elie Gruchet, 97400 Saint-Denis" in recording
    )
    assert (
        "Pour accéder à vos données (article 8 des conditions générales d'utilisation), écrivez "
        "à : Délégué à la protection des données, Caf de La Réunion, 97400" in recording
    )
    assert NATIONAL not in recording

    again = make_event(caf_code="974", start=soon())
    consents = await caf_pages.read(await caf_pages.booked(again, LinkPurpose.CONSENTS))

    assert "Votre rendez-vous de ce lien est avec la Caf de La Réunion" in consents
    assert f"Rendez-vous n° {again.appointment_id} (Caf de La Réunion) (celui de ce lien)" in (
        consents
    )
    assert "Contacter la Caf de La Réunion</h2>" in consents
    assert "écrivez à : Délégué à la protection des données" in consents
    path = await caf_pages.booked(make_event(caf_code="974"), LinkPurpose.CONSENTS)
    everything = await caf_pages.read(f"{path}/mes-donnees")
    assert "(Caf de La Réunion)" in everything


async def test_a_caf_without_contact_entry_gets_the_national_page_and_nothing_invented(
    caf_pages: CafPages, make_event: MakeEvent
) -> None:
    event = make_event(caf_code="075", timezone="Europe/Paris", start=soon())
    recording = await caf_pages.read(await caf_pages.booked(event, LinkPurpose.RECORDING))

    assert "Votre rendez-vous avec la Caf de Paris</h2>" in recording
    assert "Contacter la Caf de Paris</h2>" in recording
    assert f'Sur internet : <a href="{NATIONAL}">{NATIONAL}</a></p>' in recording
    for never_guessed in ("Par téléphone", "En cas de litige", "Pour accéder à vos données"):
        assert never_guessed not in recording


async def test_an_appointment_recorded_before_its_caf_was_kept_still_renders(
    caf_pages: CafPages, make_event: MakeEvent
) -> None:
    event = make_event(caf_code="974", start=soon())
    recording = await caf_pages.booked(event, LinkPurpose.RECORDING)
    consents = await caf_pages.booked(make_event(caf_code="974"), LinkPurpose.CONSENTS)
    # As migration 006 leaves the rows recorded before it.
    await caf_pages.pool.execute("UPDATE appointments SET caf_code = NULL")

    for path in (recording, consents):
        shown = await caf_pages.read(path)
        assert "Contacter votre Caf</h2>" in shown
        assert f'<a href="{NATIONAL}">' in shown
        assert "Caf de La Réunion" not in shown
    assert "Votre rendez-vous</h2>" in await caf_pages.read(recording)


async def test_the_access_export_names_each_records_caf_and_erasure_still_works(
    caf_pages: CafPages, make_event: MakeEvent
) -> None:
    event = make_event(caf_code="974")
    await caf_pages.booked(event, LinkPurpose.CONSENTS)
    ref: str = await caf_pages.pool.fetchval(
        "SELECT subject_ref FROM appointments WHERE appointment_id = $1", event.appointment_id
    )
    async with caf_pages.pool.acquire() as conn:
        export = await access_export(conn, ref, Asker.command("test"))
    assert [(r.caf_code, r.caf) for r in export.records] == [("974", "Caf de La Réunion")] * 2
    assert f"Rendez-vous n° {event.appointment_id} (Caf de La Réunion)" in export.text()

    erasure = PersonalDataErasureRequested(
        correlation_id=event.correlation_id,
        appointment_id=event.appointment_id,
        revision=1,
        erasure_id=uuid.uuid4(),
        requested_by="test",
    )
    topics = Topics(caf_pages.settings.topic_prefix)
    await erase_subject(erasure, caf_pages.pool, caf_pages.publisher, topics)

    async with caf_pages.pool.acquire() as conn:
        after = await access_export(conn, ref, Asker.command("test"))
    assert after.personal_data == []
    assert [r.kind for r in after.records][-1] == "personal_data_erased"
    assert {r.caf for r in after.records} == {"Caf de La Réunion"}


async def test_consent_warns_at_start_of_the_cafs_left_on_the_national_page(
    caf_pages: CafPages, caplog: pytest.LogCaptureFixture
) -> None:
    runtime: Runtime = create_app(caf_pages.settings).state.runtime
    with caplog.at_level(logging.WARNING, logger="visio_consent.app"):
        for hook in runtime.on_start:
            await hook(runtime)
    warned = [r.getMessage() for r in caplog.records if "without a contact entry" in r.message]
    assert len(warned) == 1
    missing = warned[0].split(": ", 1)[1].split(", ")
    assert "075" in missing and "974" not in missing
    assert len(missing) == len(caf_directory().cafs) - 1
