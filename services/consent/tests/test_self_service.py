"""The self-service pages over HTTP on a real PostgreSQL, with a recording publisher: the
recording page's states and the withdrawal (once, even on a double submit), the consents page
and its JSON export, and every way a link is refused (tampered, forged, another page's, revoked,
unknown, expired, older than a correction of the address, over its rate limit, a form without
its token). Nothing in the service's logs names the link or the person."""

from __future__ import annotations

import html
import json
import logging
import re
import uuid
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

import asyncpg
import httpx
import pytest
from aiokafka.structs import ConsumerRecord
from fastapi import FastAPI
from pydantic import SecretStr
from visio_consent.access import Asker, access_export
from visio_consent.app import create_app
from visio_consent.handlers import record_consent, record_contact_correction
from visio_consent.self_service import WITHDRAW_ACTION
from visio_consent.settings import ConsentSettings
from visio_consent.withdrawal import announce_pending_withdrawals
from visio_runtime.headers import security_header_problems
from visio_runtime.testing import record_of
from visio_shared import (
    AppointmentCancelled,
    AppointmentEvent,
    AppointmentRequested,
    AppointmentRescheduled,
    ConsentRecorded,
    ContactCorrected,
    Headers,
    RecordingConsentWithdrawn,
    Topics,
)
from visio_shared.links import LinkKeys, LinkPurpose, form_token, link_fingerprint, sign_link

if TYPE_CHECKING:
    from conftest import FakePublisher

MakeEvent = Callable[..., AppointmentRequested]

RING = f"k2:{'b' * 40},k1:{'a' * 40}"
KEYS = LinkKeys.parse(RING)
BOOKING = "https://rdv.caf.test"
REUNION_ACCEPTANCE = "samedi 1er mars 2025 à 13 h 15 (heure de La Réunion)"


def link(
    appointment_id: uuid.UUID,
    purpose: LinkPurpose = LinkPurpose.RECORDING,
    *,
    revision: int = 1,
    expires_in: timedelta = timedelta(days=30),
    keys: LinkKeys = KEYS,
) -> str:
    return sign_link(keys, purpose, appointment_id, revision, datetime.now(UTC) + expires_in)


def text(answer: httpx.Response) -> str:
    """The page as a person reads it: entities decoded, no-break spaces as plain ones."""
    return html.unescape(answer.text).replace("\u00a0", " ")


@dataclass
class Site:
    client: httpx.AsyncClient
    app: FastAPI
    settings: ConsentSettings
    pool: asyncpg.Pool
    publisher: FakePublisher
    topics: Topics

    async def book(self, event: AppointmentRequested) -> AppointmentRequested:
        await record_consent(event, self.pool, self.publisher, self.settings, self.topics)
        self.publisher.calls.clear()
        return event

    async def withdraw(self, token: str, csrf: str | None = None) -> httpx.Response:
        given = form_token(KEYS, token, WITHDRAW_ACTION) if csrf is None else csrf
        return await self.client.post(f"/enregistrement/{token}/retirer", data={"csrf": given})

    async def kinds(self) -> list[str]:
        return [
            row["kind"] for row in await self.pool.fetch("SELECT kind FROM ledger ORDER BY seq")
        ]

    def published(self, model: type[AppointmentEvent]) -> list[Any]:
        found = []
        for call in self.publisher.calls:
            if call.headers and call.headers.get(Headers.EVENT_TYPE) == model.__name__:
                found.append(model.model_validate_json(call.message))
        return found


def make_site_app(settings: ConsentSettings, pool: asyncpg.Pool, publisher: Any) -> FastAPI:
    app = create_app(settings)
    runtime = app.state.runtime  # what the lifespan would do, minus Kafka
    runtime.pool = pool
    runtime.broker = runtime.consumer.broker = publisher
    return app


@pytest.fixture
async def site(
    settings: ConsentSettings, pool: asyncpg.Pool, publisher: FakePublisher
) -> AsyncIterator[Site]:
    settings = settings.model_copy(
        update={"link_keys": SecretStr(RING), "booking_public_url": BOOKING + "/"}
    )
    app = make_site_app(settings, pool, publisher)
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://consent") as client:
        yield Site(client, app, settings, pool, publisher, Topics(settings.topic_prefix))


def soon() -> datetime:
    return datetime.now(UTC) + timedelta(days=7)


async def test_recording_page_says_the_choice_and_offers_withdrawal_before_the_start(
    site: Site, make_event: MakeEvent
) -> None:
    event = await site.book(make_event(recording_authorised=True, start=soon()))
    token = link(event.appointment_id)

    page = await site.client.get(f"/enregistrement/{token}")

    assert page.status_code == 200
    assert f"Vous avez autorisé l'enregistrement de l'entretien le {REUNION_ACCEPTANCE}" in text(
        page
    )
    assert "article 9" in text(page) and "servir de preuve" in text(page)
    assert f'href="/enregistrement/{token}/retirer"' in page.text
    assert "Retirer mon autorisation d'enregistrement" in text(page)
    assert page.text.count("<h1") == 1 and "<script" not in page.text
    assert page.headers["cache-control"] == "no-store"
    assert "default-src 'none'" in page.headers["content-security-policy"]


async def test_refused_recording_has_nothing_to_withdraw(site: Site, make_event: MakeEvent) -> None:
    event = await site.book(make_event(recording_authorised=False, start=soon()))
    token = link(event.appointment_id)

    page = await site.client.get(f"/enregistrement/{token}")
    confirm = await site.client.get(f"/enregistrement/{token}/retirer")
    posted = await site.withdraw(token)

    assert page.status_code == 200
    assert f"Vous avez refusé l'enregistrement de l'entretien le {REUNION_ACCEPTANCE}" in text(page)
    assert "vous n'avez rien à retirer" in text(page)
    assert "/retirer" not in page.text
    assert (confirm.status_code, confirm.headers["location"]) == (303, f"/enregistrement/{token}")
    assert posted.status_code == 303
    assert await site.kinds() == ["cgu_accepted", "recording_refused"]
    assert site.publisher.calls == []


async def test_after_the_start_it_can_no_longer_be_withdrawn_here(
    site: Site, make_event: MakeEvent
) -> None:
    started = datetime.now(UTC) - timedelta(minutes=5)
    event = await site.book(make_event(recording_authorised=True, start=started))
    token = link(event.appointment_id)

    page = await site.client.get(f"/enregistrement/{token}")
    posted = await site.withdraw(token)

    assert page.status_code == 200
    assert "Le rendez-vous a commencé : l'autorisation ne peut plus être retirée" in text(page)
    assert "écrivez à la Caf de La Réunion (article 8" in text(page)
    assert "/retirer" not in page.text
    assert posted.status_code == 303
    assert await site.kinds() == ["cgu_accepted", "recording_authorised"]
    assert site.publisher.calls == []

    # Booked before consent kept the start: the page cannot tell, so it sends to the Caf too.
    await site.pool.execute("UPDATE appointments SET starts_at = NULL")
    unknown = await site.client.get(f"/enregistrement/{token}")
    assert "L'heure de ce rendez-vous n'est pas connue de ce service" in text(unknown)
    assert "/retirer" not in unknown.text


async def test_withdrawal_asks_for_confirmation_then_withdraws_once_on_a_double_submit(
    site: Site, make_event: MakeEvent
) -> None:
    event = await site.book(make_event(recording_authorised=True, start=soon()))
    token = link(event.appointment_id)

    confirm = await site.client.get(f"/enregistrement/{token}/retirer")
    csrf = re.search(r'name="csrf" value="([^"]+)"', confirm.text)
    assert confirm.status_code == 200 and csrf is not None
    assert f'action="/enregistrement/{token}/retirer"' in confirm.text
    assert await site.kinds() == ["cgu_accepted", "recording_authorised"]  # asking changes nothing

    first = await site.withdraw(token, csrf.group(1))
    second = await site.withdraw(token, csrf.group(1))

    assert [first.status_code, second.status_code] == [303, 303]
    assert first.headers["location"] == f"/enregistrement/{token}"
    assert await site.kinds() == ["cgu_accepted", "recording_authorised", "recording_withdrawn"]
    record = json.loads(
        await site.pool.fetchval("SELECT payload FROM ledger WHERE kind = 'recording_withdrawn'")
    )
    assert (record["channel"], record["calling_system"]) == ("self_service", "visio-rdv-consent")
    (withdrawn,) = site.published(RecordingConsentWithdrawn)
    assert (withdrawn.appointment_id, withdrawn.channel) == (event.appointment_id, "self_service")
    (recorded,) = site.published(ConsentRecorded)
    assert [entry.kind for entry in recorded.entries] == ["recording_withdrawn"]

    page = await site.client.get(first.headers["location"])
    assert "Votre autorisation d'enregistrement a été retirée le " in text(page)
    assert "L'entretien ne sera pas enregistré." in text(page)
    assert "/retirer" not in page.text
    again = await site.client.get(f"/enregistrement/{token}/retirer")
    assert again.status_code == 303


async def test_a_form_without_its_token_is_refused_and_changes_nothing(
    site: Site, make_event: MakeEvent
) -> None:
    event = await site.book(make_event(recording_authorised=True, start=soon()))
    token = link(event.appointment_id)
    other = link((await site.book(make_event(start=soon()))).appointment_id)

    good = f"csrf={form_token(KEYS, token, WITHDRAW_ACTION)}".encode()
    urlencoded = {"Content-Type": "application/x-www-form-urlencoded"}
    answers = [
        await site.client.post(f"/enregistrement/{token}/retirer"),
        # Its own token, in a form too large (read no further than the limit), or not UTF-8.
        await site.client.post(
            f"/enregistrement/{token}/retirer",
            content=good + b"&x=" + b"y" * 5_000,
            headers=urlencoded,
        ),
        await site.client.post(
            f"/enregistrement/{token}/retirer", content=good + b"&x=\xff", headers=urlencoded
        ),
        await site.withdraw(token, "forged"),
        await site.withdraw(token, form_token(KEYS, token, "another-action")),
        await site.withdraw(token, form_token(KEYS, other, WITHDRAW_ACTION)),
    ]

    for answer in answers:
        assert answer.status_code == 403
        assert "Demande refusée" in text(answer) and "rien n'a été modifié" in text(answer)
    assert await site.kinds() == ["cgu_accepted", "recording_authorised"] * 2
    assert site.publisher.calls == []


async def test_a_withdrawal_whose_announcement_failed_is_announced_later(
    site: Site, make_event: MakeEvent
) -> None:
    class Down:
        async def publish(self, *args: Any, **kwargs: Any) -> None:
            raise ConnectionError("the broker is away")

    event = await site.book(make_event(recording_authorised=True, start=soon()))
    token = link(event.appointment_id)
    runtime = site.app.state.runtime
    runtime.broker = Down()

    failed = await site.withdraw(token)

    assert failed.status_code == 503 and "n'a pas pu aboutir" in text(failed)
    assert await site.kinds() == ["cgu_accepted", "recording_authorised", "recording_withdrawn"]
    runtime.broker = site.publisher
    announced = await announce_pending_withdrawals(
        site.pool, site.publisher, site.topics, timedelta(0)
    )
    assert announced == 1
    assert [e.appointment_id for e in site.published(RecordingConsentWithdrawn)] == [
        event.appointment_id
    ]
    # Announced: nothing is pending, so neither the sweep nor another submit publishes again.
    assert (
        await announce_pending_withdrawals(site.pool, site.publisher, site.topics, timedelta(0))
        == 0
    )
    assert (await site.withdraw(token)).status_code == 303
    assert len(site.published(RecordingConsentWithdrawn)) == 1


async def test_consents_page_shows_the_records_with_their_proof_and_the_export_matches(
    site: Site, make_event: MakeEvent
) -> None:
    event = await site.book(make_event(recording_authorised=True, start=soon()))
    token = link(event.appointment_id, LinkPurpose.CONSENTS)
    rows = await site.pool.fetch("SELECT seq, hash, prev_hash FROM ledger ORDER BY seq")

    page = await site.client.get(f"/mes-consentements/{token}")

    assert page.status_code == 200
    shown = text(page)
    assert "Acceptation des conditions générales d'utilisation (CGU), version 1" in shown
    assert f"Le {REUNION_ACCEPTANCE}" in shown
    assert "Enregistrement de l'entretien autorisé" in shown
    for row in rows:
        assert f"<dd>{row['seq']}</dd>" in text(page)
        assert f'<code class="proof">{row["hash"]}</code>' in page.text
        assert f'<code class="proof">{row["prev_hash"]}</code>' in page.text
    assert page.text.count("<h1") == 1 and page.text.count("<h2") >= 4

    download = await site.client.get(f"/mes-consentements/{token}/export.json")

    assert download.status_code == 200
    assert download.headers["content-type"] == "application/json"
    assert download.headers["content-disposition"].startswith("attachment;")
    exported = download.json()
    async with site.pool.acquire() as conn:
        ref = await conn.fetchval(
            "SELECT subject_ref FROM appointments WHERE appointment_id = $1", event.appointment_id
        )
        expected = (await access_export(conn, ref, Asker.command("test"))).model_dump(mode="json")
    # The page and the download were each recorded as the person's own request; the test's own
    # export (an operator's) comes after them.
    assert [r["channel"] for r in exported["access_requests"]] == ["self_service"] * 2
    assert [r["channel"] for r in expected["access_requests"]] == ["self_service"] * 2 + ["command"]
    assert "par vous, depuis votre lien personnel" in shown
    for compared in (exported, expected):
        del compared["generated_at"], compared["access_requests"]
    assert exported == expected
    assert [record["seq"] for record in exported["records"]] == [row["seq"] for row in rows]


async def test_bad_links_get_a_clear_page_and_a_way_to_a_fresh_one(
    site: Site, make_event: MakeEvent
) -> None:
    event = await site.book(make_event(recording_authorised=True, start=soon()))
    good = link(event.appointment_id)
    tampered = good[:-3] + ("AAA" if not good.endswith("AAA") else "BBB")
    forged = link(event.appointment_id, keys=LinkKeys.parse(f"k2:{'f' * 40}"))
    revoked = link(event.appointment_id, keys=LinkKeys.parse(f"k0:{'c' * 40}"))
    consents = link(event.appointment_id, LinkPurpose.CONSENTS)
    manage = link(event.appointment_id, LinkPurpose.MANAGE)
    unknown = link(uuid.uuid4())
    paths = [
        f"/enregistrement/{tampered}",
        f"/enregistrement/{forged}",
        f"/enregistrement/{revoked}/retirer",
        f"/enregistrement/{consents}",
        f"/mes-consentements/{good}",
        f"/mes-consentements/{manage}/export.json",
        f"/enregistrement/{unknown}",
        "/enregistrement/not-a-link",
    ]

    for path in paths:
        answer = await site.client.get(path)
        assert answer.status_code == 404, path
        assert "Ce lien n'est pas valide" in text(answer)
        assert f'href="{BOOKING}/nouveau-lien"' in answer.text
    posted = await site.withdraw(tampered, form_token(KEYS, good, WITHDRAW_ACTION))
    assert posted.status_code == 404
    assert await site.kinds() == ["cgu_accepted", "recording_authorised"]

    expired = link(event.appointment_id, LinkPurpose.CONSENTS, expires_in=-timedelta(minutes=1))
    answer = await site.client.get(f"/mes-consentements/{expired}")
    assert answer.status_code == 410
    assert "Ce lien a expiré" in text(answer)
    assert f'href="{BOOKING}/nouveau-lien?lien={expired}"' in answer.text


async def test_a_link_older_than_a_correction_of_the_address_is_replaced(
    site: Site, make_event: MakeEvent
) -> None:
    event = await site.book(make_event(recording_authorised=True, start=soon()))
    user = event.user.model_copy(update={"email": "bon.destinataire@example.org"})
    correction = ContactCorrected(
        **event.caused(appointment_id=event.appointment_id, revision=2), user=user
    )
    await record_contact_correction(
        correction, site.pool, site.publisher, site.settings, site.topics
    )
    appointment = event.appointment_id

    for path in (
        f"/enregistrement/{link(appointment)}",
        f"/mes-consentements/{link(appointment, LinkPurpose.CONSENTS)}",
        f"/mes-consentements/{link(appointment, LinkPurpose.CONSENTS)}/export.json",
    ):
        answer = await site.client.get(path)
        assert answer.status_code == 410, path
        assert "Ce lien a été remplacé" in text(answer)
        token = path.split("/")[2]
        assert f'href="{BOOKING}/nouveau-lien?lien={token}"' in answer.text
        assert "Amélie" not in answer.text and "example.org" not in answer.text.casefold()

    fresh = await site.client.get(
        f"/mes-consentements/{link(appointment, LinkPurpose.CONSENTS, revision=2)}"
    )
    assert fresh.status_code == 200
    assert "Adresse électronique corrigée" in text(fresh)
    assert "Acceptation des conditions générales" in text(fresh)  # recorded under the old address
    assert "bon.destinataire@example.org" in text(fresh)
    assert "amelie.poulain@example.org" not in fresh.text.casefold()

    # A revision consent has not read yet: the recording page opens, the consents page waits.
    ahead = await site.client.get(f"/enregistrement/{link(appointment, revision=3)}")
    assert ahead.status_code == 200
    waiting = await site.client.get(
        f"/mes-consentements/{link(appointment, LinkPurpose.CONSENTS, revision=3)}"
    )
    assert waiting.status_code == 503 and waiting.headers["retry-after"] == "60"
    assert "Page en cours de mise à jour" in text(waiting)


def as_record(event: AppointmentEvent, offset: int = 0) -> ConsumerRecord[Any, Any]:
    return record_of(event, "visio-rdv-test.appointments.v1", offset)


async def test_the_page_follows_reschedules_and_cancellations(
    site: Site, make_event: MakeEvent
) -> None:
    event = await site.book(make_event(recording_authorised=True, start=soon()))
    token = link(event.appointment_id)
    consumer = site.app.state.runtime.consumer
    earlier = datetime.now(UTC) - timedelta(minutes=1)
    moved = AppointmentRescheduled(
        **event.caused(appointment_id=event.appointment_id, revision=2),
        start=earlier,
        duration_minutes=30,
        timezone="Indian/Reunion",
        previous_start=event.start,
        previous_duration_minutes=30,
    )

    assert await consumer.process(as_record(moved, 1)) == "handled"
    assert "Le rendez-vous a commencé" in text(await site.client.get(f"/enregistrement/{token}"))

    later = soon() + timedelta(days=1)
    back = moved.model_copy(update={"event_id": uuid.uuid4(), "revision": 3, "start": later})
    assert await consumer.process(as_record(back, 2)) == "handled"
    # A redelivery of the older change does not move the start back.
    assert await consumer.process(as_record(moved, 1)) == "handled"
    page = await site.client.get(f"/enregistrement/{token}")
    assert f'href="/enregistrement/{token}/retirer"' in page.text

    cancelled = AppointmentCancelled(
        **event.caused(appointment_id=event.appointment_id, revision=4),
        reason="user",
        cancelled_by="caf.fr",
    )
    assert await consumer.process(as_record(cancelled, 3)) == "handled"
    page = await site.client.get(f"/enregistrement/{token}")
    assert "Ce rendez-vous a été annulé" in text(page) and "/retirer" not in page.text
    row = await site.pool.fetchrow(
        "SELECT revision, starts_at FROM appointments WHERE appointment_id = $1",
        event.appointment_id,
    )
    assert (row["revision"], row["starts_at"]) == (4, later)


async def test_each_link_has_its_rate_limit(
    site: Site, make_event: MakeEvent, pool: asyncpg.Pool, publisher: FakePublisher
) -> None:
    settings = site.settings.model_copy(update={"link_attempts_per_hour": 3})
    app = make_site_app(settings, pool, publisher)
    event = await site.book(make_event(recording_authorised=True, start=soon()))
    token = link(event.appointment_id)
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://consent") as client:
        answers = [
            await client.get(f"/enregistrement/{token}"),
            await client.get(f"/enregistrement/{token}/retirer"),
            await client.get(f"/enregistrement/{token}"),
            await client.post(f"/enregistrement/{token}/retirer", data={"csrf": "x"}),
            await client.get(f"/enregistrement/{token}"),
        ]
        other = await client.get(
            f"/mes-consentements/{link(event.appointment_id, LinkPurpose.CONSENTS)}"
        )

    assert [answer.status_code for answer in answers] == [200, 200, 200, 429, 429]
    assert "Trop de tentatives" in text(answers[-1])
    assert answers[-1].headers["retry-after"] == "3600"
    assert other.status_code == 200
    assert await site.kinds() == ["cgu_accepted", "recording_authorised"]


async def test_logs_name_no_link_and_no_person(
    site: Site, make_event: MakeEvent, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    event = await site.book(make_event(recording_authorised=True, start=soon()))
    token = link(event.appointment_id)
    consents = link(event.appointment_id, LinkPurpose.CONSENTS)
    expired = link(event.appointment_id, expires_in=-timedelta(minutes=1))

    await site.client.get(f"/enregistrement/{token}")
    await site.withdraw(token, "forged")
    await site.withdraw(token)
    await site.client.get(f"/mes-consentements/{consents}")
    await site.client.get(f"/mes-consentements/{consents}/export.json")
    await site.client.get(f"/enregistrement/{expired}")

    # The test's own HTTP client logs the URLs it calls; the service's lines are the others.
    lines = [record.getMessage() for record in caplog.records if not record.name.startswith("http")]
    logged = "\n".join(lines)
    assert f"withdrawn from link {link_fingerprint(token)}" in logged
    for secret in (token, consents, expired, event.user.email, event.user.email.casefold()):
        assert secret not in logged
    assert "Poulain" not in logged


async def test_without_link_keys_the_pages_do_not_exist(
    settings: ConsentSettings, pool: asyncpg.Pool, publisher: FakePublisher, make_event: MakeEvent
) -> None:
    event = make_event(recording_authorised=True, start=soon())
    await record_consent(event, pool, publisher, settings, Topics(settings.topic_prefix))
    app = make_site_app(settings, pool, publisher)
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://consent") as client:
        answers = [
            await client.get(f"/enregistrement/{link(event.appointment_id)}"),
            await client.get(
                f"/mes-consentements/{link(event.appointment_id, LinkPurpose.CONSENTS)}"
            ),
        ]
    assert [answer.status_code for answer in answers] == [404, 404]

    with_keys = make_site_app(
        settings.model_copy(update={"link_keys": SecretStr(RING)}), pool, publisher
    )
    transport = httpx.ASGITransport(app=with_keys)
    async with httpx.AsyncClient(transport=transport, base_url="http://consent") as client:
        shown = await client.get(f"/enregistrement/{link(event.appointment_id)}")
    assert shown.status_code == 200
    documented = with_keys.openapi()["paths"]
    assert "/v1/access" in documented
    assert not any("enregistrement" in path or "consentements" in path for path in documented)


async def test_every_answer_of_the_consent_pages_carries_the_page_headers(
    site: Site, make_event: MakeEvent
) -> None:
    event = await site.book(make_event(recording_authorised=True, start=soon()))
    token = link(event.appointment_id)
    answers = {
        "recording": await site.client.get(f"/enregistrement/{token}"),
        "withdraw step": await site.client.get(f"/enregistrement/{token}/retirer"),
        "form without token": await site.withdraw(token, ""),
        "consents": await site.client.get(
            f"/mes-consentements/{link(event.appointment_id, LinkPurpose.CONSENTS)}"
        ),
        "forged": await site.client.get(f"/enregistrement/{token[:-2]}AA"),
    }
    for name, answer in answers.items():
        assert security_header_problems(answer.headers, page=True) == [], (name, answer.headers)
    api = await site.client.post("/v1/access", json={"email": "x@example.fr"})
    assert api.status_code == 401
    assert security_header_problems(api.headers) == [], api.headers
