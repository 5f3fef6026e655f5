"""« Mon rendez-vous » on real parts (PostgreSQL, the outbox): what the page says, what its forms
do exactly once, and how every bad, old or expired link, every forged form and every flood is
answered — without a link or an address in the logs."""

from __future__ import annotations

import asyncio
import html
import json
import logging
import re
import uuid
import zoneinfo
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest
from pydantic import SecretStr
from visio_booking.app import create_app
from visio_booking.selfservice import Standing, standing
from visio_booking.settings import BookingSettings
from visio_runtime import french_dates
from visio_runtime.headers import security_header_problems
from visio_shared.links import (
    LinkKeys,
    LinkPurpose,
    address_confirmation_code,
    form_token,
    link_fingerprint,
    sign_link,
)

SECRET_1, SECRET_2 = "1" * 40, "2" * 40
# k2 signs, k1 still verifies (a rotation under way); k0 was dropped: its links are revoked.
RING = f"k2:{SECRET_2},k1:{SECRET_1}"
KEYS = LinkKeys.parse(RING)
OLD_KEYS = LinkKeys.parse(f"k1:{SECRET_1}")
DROPPED_KEYS = LinkKeys.parse("k0:" + "0" * 40)
TEAMS = "https://teams.microsoft.com/l/meetup-join/19%3ameeting_abc%40thread.v2/0"
REUNION_PORTAL = "https://www.caf.fr/allocataires/caf-de-la-reunion/rendez-vous"


@pytest.fixture(scope="module")
async def site(postgres_url: str, kafka_bootstrap: str, start_booking: Any) -> AsyncIterator[Any]:
    harness, close = await start_booking(
        postgres_url,
        kafka_bootstrap,
        link_keys=SecretStr(RING),
        booking_portal_urls={"974": REUNION_PORTAL},
        resend_interval_s=600,
        link_attempts_per_hour=30,
        fresh_link_emails_per_hour=3,
    )
    try:
        yield harness
    finally:
        await close()


def link(
    appointment_id: str,
    revision: int = 1,
    purpose: LinkPurpose = LinkPurpose.MANAGE,
    keys: LinkKeys = KEYS,
    expires_in: timedelta = timedelta(days=30),
) -> str:
    expires = datetime.now(UTC) + expires_in
    return sign_link(keys, purpose, uuid.UUID(appointment_id), revision, expires)


def address() -> str:
    return f"jeanne.{uuid.uuid4().hex[:10]}@example.fr"


async def book(site: Any, email: str | None = None, **overrides: Any) -> str:
    user = {"first_name": "Jeanne", "last_name": "Dupont", "device": "computer"}
    user |= overrides.pop("user", {})
    return await site.book(user={**user, "email": email or address()}, **overrides)


async def confirm(site: Any, appointment_id: str, join_url: str = TEAMS) -> None:
    await site.sql(
        "UPDATE appointments SET status = 'confirmed', join_url = $2 WHERE appointment_id = $1",
        uuid.UUID(appointment_id),
        join_url,
    )


async def events(site: Any, appointment_id: str, event_type: str) -> list[dict[str, Any]]:
    rows = await site.sql("SELECT payload FROM outbox WHERE key = $1 ORDER BY id", appointment_id)
    found = [json.loads(row["payload"]) for row in rows]
    return [event for event in found if event["event_type"] == event_type]


@pytest.mark.parametrize(
    ("status", "revision", "link_revision", "expected"),
    [
        ("confirmed", 3, 3, Standing.CURRENT),
        ("confirmed", 3, 2, Standing.REPLACED),  # rescheduled, corrected, reassigned since
        ("cancelled", 3, 2, Standing.CURRENT),  # the cancel itself replaces no link
        ("cancelled", 3, 1, Standing.REPLACED),
        ("confirmed", 3, 4, Standing.UNKNOWN),  # never signed by what we know
    ],
)
def test_a_link_opens_the_appointment_as_its_email_showed_it(
    status: str, revision: int, link_revision: int, expected: Standing
) -> None:
    assert standing({"status": status, "revision": revision}, link_revision) is expected
    assert standing(None, link_revision) is Standing.UNKNOWN


def said(page: httpx.Response) -> str:
    """The page's text as read: entities decoded, French no-break spaces as spaces."""
    return html.unescape(page.text).replace("\u00a0", " ")


def jeton(page: httpx.Response, action: str = "") -> str:
    """The CSRF token of the page's form whose action ends with `action`."""
    forms = re.findall(r'<form method="post" action="([^"]*)"[^>]*>(.*?)</form>', page.text, re.S)
    for target, body in forms:
        if target.endswith(action):
            found = re.search(r'name="jeton" value="([^"]+)"', body)
            assert found, body
            return found.group(1)
    raise AssertionError(f"no form posting to …{action} on the page")


async def test_the_page_says_what_the_email_says(site: Any) -> None:
    appointment_id = await book(site)
    await confirm(site, appointment_id)
    url = f"/mon-rendez-vous/{link(appointment_id)}"
    page = await site.client.get(url)

    assert page.status_code == 200, page.text
    assert "default-src 'none'" in page.headers["content-security-policy"]
    assert page.headers["cache-control"] == "no-store"
    assert '<html lang="fr">' in page.text and page.text.count("<h1") == 1
    assert "<script" not in page.text
    view = await site.view(appointment_id)
    start = datetime.fromisoformat(view["start"])
    text = said(page)
    assert french_dates.french_date(start, with_year=True).capitalize() in text
    assert f"à {french_dates.french_time(start)}" in text and "(heure de Paris)" in text
    assert "Claire Martin" in text and "Prime d'activité" in text
    assert f'href="{TEAMS}"' in text
    # The guide, the person's own device (a computer) first.
    assert text.index("Un ordinateur") < text.index("Votre smartphone ou une tablette")
    assert f'action="{url}/renvoyer"' in text and "Recevoir à nouveau le lien" in text
    assert f'href="{url}/annuler"' in text
    # Another slot is asked for here; the portal is for after the appointment (issue 24).
    assert f'href="{url}/changer"' in text and "Mon rendez-vous visio avec la Caf de Paris" in text


async def test_an_overseas_appointment_is_told_in_its_own_zone(site: Any) -> None:
    start = (datetime.now(UTC) + timedelta(days=4)).replace(microsecond=0)
    reunion = zoneinfo.ZoneInfo("Indian/Reunion")
    appointment_id = await book(
        site,
        caf_code="974",
        timezone="Indian/Reunion",
        start=start.astimezone(reunion).isoformat(),
        user={"device": "smartphone"},
    )
    page = await site.client.get(f"/mon-rendez-vous/{link(appointment_id)}")

    text = said(page)
    assert page.status_code == 200
    assert f"à {french_dates.french_time(start.astimezone(reunion))}" in text
    assert "(heure de La Réunion)" in text and "heure de Paris" not in text
    assert text.index("Votre smartphone ou une tablette") < text.index("Un ordinateur")
    assert "Contacter la Caf de La Réunion" in text
    # No meeting yet: no link, no resend, the promise of an email.
    assert "Le lien vous sera envoyé par email dès qu'il sera prêt." in text
    assert "/renvoyer" not in text


async def test_only_a_teams_join_url_becomes_a_link(site: Any) -> None:
    appointment_id = await book(site)
    await confirm(site, appointment_id, join_url="javascript:alert(1)")
    page = await site.client.get(f"/mon-rendez-vous/{link(appointment_id)}")
    assert page.status_code == 200 and "javascript:" not in page.text
    assert "/renvoyer" not in page.text


async def test_resend_leaves_one_event_then_asks_to_wait(site: Any) -> None:
    appointment_id = await book(site)
    await confirm(site, appointment_id)
    url = f"/mon-rendez-vous/{link(appointment_id)}"
    page = await site.client.get(url)
    form = {"jeton": jeton(page, "/renvoyer")}

    first = await site.client.post(f"{url}/renvoyer", data=form)
    assert first.status_code == 200, first.text
    assert "vient de vous être envoyé" in first.text
    second = await site.client.post(f"{url}/renvoyer", data=form)
    assert second.status_code == 429 and second.headers["retry-after"] == "600"
    assert "moins de 10 minutes" in second.text
    reopened = await site.client.get(f"{url}/renvoyer")  # the address bar after sending
    assert (reopened.status_code, reopened.headers["location"]) == (303, url)

    sent = await events(site, appointment_id, "AppointmentLinkRequested")
    assert [(event["reason"], event["revision"]) for event in sent] == [("resend", 1)]
    view = await site.view(appointment_id)
    assert [e["detail"] for e in view["history"] if e["status"] == "link_requested"] == ["resend"]


async def test_cancel_asks_first_then_cancels_once_even_posted_twice(site: Any) -> None:
    appointment_id = await book(site)
    await confirm(site, appointment_id)
    url = f"/mon-rendez-vous/{link(appointment_id)}"
    step = await site.client.get(f"{url}/annuler")
    assert step.status_code == 200 and "Oui, annuler le rendez-vous" in step.text
    form = {"jeton": jeton(step, "/annuler")}

    answers = await asyncio.gather(
        site.client.post(f"{url}/annuler", data=form),
        site.client.post(f"{url}/annuler", data=form),
    )
    assert [(a.status_code, a.headers["location"]) for a in answers] == [(303, url)] * 2
    cancelled = await events(site, appointment_id, "AppointmentCancelled")
    assert [(e["reason"], e["cancelled_by"]) for e in cancelled] == [("user", "self-service")]
    view = await site.view(appointment_id)
    assert view["status"] == "cancelled" and view["status_reason"] == "user"

    page = await site.client.get(url)  # the same link, one revision behind the cancel
    assert page.status_code == 200
    text = said(page)
    assert "Ce rendez-vous est annulé" in text and "annulé à votre demande le" in text
    assert "/annuler" not in text and "/renvoyer" not in text and TEAMS not in text
    again = await site.client.post(f"{url}/annuler", data=form)
    assert again.status_code == 303
    assert len(await events(site, appointment_id, "AppointmentCancelled")) == 1


@pytest.mark.parametrize(
    ("ago", "says"),
    [(timedelta(days=2), "Ce rendez-vous est passé"), (timedelta(minutes=5), "a commencé")],
)
async def test_a_past_or_started_appointment_cannot_be_cancelled(
    site: Any, ago: timedelta, says: str
) -> None:
    appointment_id = await book(site)
    await confirm(site, appointment_id)
    await site.sql(
        "UPDATE appointments SET start_at = now() - $2::interval WHERE appointment_id = $1",
        uuid.UUID(appointment_id),
        ago,
    )
    url = f"/mon-rendez-vous/{link(appointment_id)}"
    page = await site.client.get(url)
    assert page.status_code == 200 and says in page.text
    assert "/annuler" not in page.text
    assert ("/renvoyer" in page.text) is (ago < timedelta(hours=1))  # under way: the link helps
    assert (await site.client.get(f"{url}/annuler")).status_code == 303
    form = {"jeton": form_token(KEYS, url.rsplit("/", 1)[-1], "cancel")}
    assert (await site.client.post(f"{url}/annuler", data=form)).status_code == 303
    assert (await site.view(appointment_id))["status"] == "confirmed"
    assert await events(site, appointment_id, "AppointmentCancelled") == []


async def test_a_form_without_its_own_token_is_refused(site: Any) -> None:
    appointment_id = await book(site)
    await confirm(site, appointment_id)
    token = link(appointment_id)
    url = f"/mon-rendez-vous/{token}"
    other_link = link(await book(site))
    for action, given in [
        ("renvoyer", {}),
        ("renvoyer", {"jeton": form_token(KEYS, token, "cancel")}),  # another action's
        ("annuler", {"jeton": form_token(KEYS, other_link, "cancel")}),  # another link's
        ("annuler", {"jeton": "x" * 22}),
    ]:
        answer = await site.client.post(f"{url}/{action}", data=given)
        assert answer.status_code == 403, (action, given)
        assert "Ce formulaire n'est plus valide" in answer.text
    # Its own token, in a form that is no form: too large (read no further than the limit),
    # not UTF-8, not urlencoded.
    good = f"jeton={form_token(KEYS, token, 'cancel')}".encode()
    urlencoded = {"Content-Type": "application/x-www-form-urlencoded"}
    for body, headers in [
        (good + b"&x=" + b"y" * 5_000, urlencoded),
        (good + b"&x=\xff", urlencoded),
        (good, {"Content-Type": "application/json"}),
    ]:
        answer = await site.client.post(f"{url}/annuler", content=body, headers=headers)
        assert answer.status_code == 403, body[-20:]
    # The address form's token is good only with the cookie its page set.
    address_form = await site.client.get("/nouveau-lien")
    site.client.cookies.clear()
    by_address = await site.client.post(
        "/nouveau-lien", data={"jeton": jeton(address_form), "email": address()}
    )
    assert by_address.status_code == 403
    assert (await site.view(appointment_id))["status"] == "confirmed"
    assert await events(site, appointment_id, "AppointmentLinkRequested") == []


async def test_bad_links_say_so_and_offer_a_fresh_one_by_email(site: Any) -> None:
    appointment_id = await book(site)
    good = link(appointment_id)
    tampered = good[:-6] + ("AAAAAA" if not good.endswith("AAAAAA") else "BBBBBB")
    bad = {
        "tampered": tampered,
        "forged": link(appointment_id, keys=LinkKeys.parse("k2:" + "f" * 40)),
        "another page's": link(appointment_id, purpose=LinkPurpose.RECORDING),
        "revoked key": link(appointment_id, keys=DROPPED_KEYS),
        "unknown appointment": link(str(uuid.uuid4())),
        "newer than the appointment": link(appointment_id, revision=2),
        "garbage": "not-a-link",
    }
    for name, token in bad.items():
        page = await site.client.get(f"/mon-rendez-vous/{token}")
        assert page.status_code == 404, name
        assert "Ce lien n'est pas valide" in page.text and 'name="email"' in page.text
    # A link signed by the previous key still opens while the rotation is under way.
    assert (
        await site.client.get(f"/mon-rendez-vous/{link(appointment_id, keys=OLD_KEYS)}")
    ).status_code == 200


async def test_an_expired_link_gets_a_fresh_one_in_one_click(site: Any) -> None:
    appointment_id = await book(site)
    token = link(appointment_id, expires_in=timedelta(seconds=-1))
    page = await site.client.get(f"/mon-rendez-vous/{token}")
    assert page.status_code == 410 and "Ce lien a expiré" in page.text
    assert f'name="lien" value="{token}"' in page.text

    sent = await site.client.post(
        "/nouveau-lien", data={"lien": token, "jeton": jeton(page, "/nouveau-lien")}
    )
    assert sent.status_code == 200 and "vient d'être envoyé" in sent.text
    fresh = await events(site, appointment_id, "AppointmentLinkRequested")
    assert [event["reason"] for event in fresh] == ["fresh_link"]


async def test_a_link_older_than_the_last_change_is_replaced(site: Any) -> None:
    appointment_id = await book(site)
    await confirm(site, appointment_id)
    old = link(appointment_id, revision=1)
    corrected = await site.client.patch(
        f"/v1/appointments/{appointment_id}/contact", json={"email": address()}, headers=site.auth()
    )
    assert corrected.status_code == 202

    page = await site.client.get(f"/mon-rendez-vous/{old}")
    assert page.status_code == 410
    assert "remplacé par celui du dernier message" in said(page)
    assert "Claire Martin" not in page.text and TEAMS not in page.text
    refused = await site.client.post(
        f"/mon-rendez-vous/{old}/annuler", data={"jeton": form_token(KEYS, old, "cancel")}
    )
    assert refused.status_code == 410
    assert (await site.view(appointment_id))["status"] == "confirmed"
    current = await site.client.get(f"/mon-rendez-vous/{link(appointment_id, revision=2)}")
    assert current.status_code == 200 and "Claire Martin" in current.text

    # Its fresh-link button asks for the email: it goes to the corrected address.
    sent = await site.client.post(
        "/nouveau-lien", data={"lien": old, "jeton": jeton(page, "/nouveau-lien")}
    )
    assert sent.status_code == 200
    fresh = await events(site, appointment_id, "AppointmentLinkRequested")
    assert [(event["reason"], event["revision"]) for event in fresh] == [("fresh_link", 2)]


async def test_a_link_of_any_page_leads_to_a_fresh_one(site: Any) -> None:
    appointment_id = await book(site)
    token = link(appointment_id, purpose=LinkPurpose.CONSENTS, expires_in=timedelta(days=-3))
    page = await site.client.get("/nouveau-lien", params={"lien": token})
    assert page.status_code == 200 and f'name="lien" value="{token}"' in page.text
    sent = await site.client.post(
        "/nouveau-lien", data={"lien": token, "jeton": jeton(page, "/nouveau-lien")}
    )
    assert sent.status_code == 200
    assert len(await events(site, appointment_id, "AppointmentLinkRequested")) == 1
    broken = await site.client.get("/nouveau-lien", params={"lien": token[:-2]})
    assert broken.status_code == 200 and 'name="email"' in broken.text
    assert "Ce lien n'est pas valide" in broken.text


@pytest.mark.parametrize(
    ("when", "says"),
    [
        ("upcoming", None),
        ("past", "Ce rendez-vous est passé."),
        ("cancelled", "Ce rendez-vous a été annulé."),
    ],
)
async def test_a_fresh_link_after_the_appointment_says_it_brings_the_consents(
    site: Any, when: str, says: str | None
) -> None:
    # What notifications sends then: « Mes consentements » alone (its decide.consents_only).
    appointment_id = await book(site)
    await confirm(site, appointment_id)
    if when == "past":
        await site.sql(
            "UPDATE appointments SET start_at = now() - interval '40 days' "
            "WHERE appointment_id = $1",
            uuid.UUID(appointment_id),
        )
    elif when == "cancelled":
        await site.sql(
            "UPDATE appointments SET status = 'cancelled', cancelled_at = now(), "
            "status_reason = 'user', revision = revision + 1 WHERE appointment_id = $1",
            uuid.UUID(appointment_id),
        )
    token = link(appointment_id, purpose=LinkPurpose.CONSENTS, expires_in=timedelta(days=-1))
    page = await site.client.get("/nouveau-lien", params={"lien": token})
    sent = await site.client.post(
        "/nouveau-lien", data={"lien": token, "jeton": jeton(page, "/nouveau-lien")}
    )

    assert page.status_code == sent.status_code == 200
    before, after = said(page), said(sent)
    if says is None:
        assert "de nouveaux liens vers votre rendez-vous" in before
        assert "Un message avec un nouveau lien vient d'être envoyé" in after
        assert "Mes consentements" not in before + after
    else:
        assert f"{says} Nous vous envoyons un message avec un lien vers « Mes consentements »" in (
            before
        )
        assert (
            f"{says} Un message avec un lien vers « Mes consentements » vient d'être envoyé"
            in after
        )
        assert "leurs preuves" in after and "nouveaux liens" not in before
    fresh = await events(site, appointment_id, "AppointmentLinkRequested")
    assert [event["reason"] for event in fresh] == ["fresh_link"]


async def test_a_fresh_link_by_address_answers_alike_and_is_limited(site: Any) -> None:
    email = address()
    upcoming = await book(site, email=email)
    cancelled = await book(site, email=email)
    await site.client.post(
        f"/v1/appointments/{cancelled}/cancel", json={"reason": "user"}, headers=site.auth()
    )
    site.client.cookies.clear()
    page = await site.client.get("/nouveau-lien")
    assert page.status_code == 200 and 'type="email"' in page.text
    cookie = page.headers["set-cookie"].lower()
    assert "visio_nouveau_lien=" in cookie and "httponly" in cookie and "samesite=lax" in cookie
    form = {"jeton": jeton(page, "/nouveau-lien")}

    known = await site.client.post("/nouveau-lien", data={**form, "email": email.upper()})
    unknown = await site.client.post("/nouveau-lien", data={**form, "email": address()})
    assert known.status_code == unknown.status_code == 200
    assert known.text == unknown.text and "si un rendez-vous" in known.text.lower()
    fresh = await events(site, upcoming, "AppointmentLinkRequested")
    assert [event["reason"] for event in fresh] == ["fresh_link"]
    assert await events(site, cancelled, "AppointmentLinkRequested") == []

    statuses = [
        (await site.client.post("/nouveau-lien", data={**form, "email": email})).status_code
        for _ in range(3)
    ]
    assert statuses == [200, 200, 429]
    buckets = [row["bucket"] for row in await site.sql("SELECT bucket FROM rate_limits")]
    assert not any(email.split("@")[0] in bucket for bucket in buckets)

    typo = await site.client.post("/nouveau-lien", data={**form, "email": "jeanne@"})
    assert typo.status_code == 422 and 'aria-invalid="true"' in typo.text


async def test_one_link_is_limited_whatever_is_asked(site: Any) -> None:
    appointment_id = await book(site)
    url = f"/mon-rendez-vous/{link(appointment_id)}"
    statuses = [(await site.client.get(url)).status_code for _ in range(31)]
    assert statuses == [200] * 30 + [429]
    refused = await site.client.get(f"{url}/annuler")
    assert refused.status_code == 429 and refused.headers["retry-after"] == "3600"
    assert "Trop de tentatives" in refused.text


async def test_the_logs_hold_no_link_and_no_address(
    site: Any, caplog: pytest.LogCaptureFixture
) -> None:
    # The service's own lines to the last detail; the libraries' at the level they run at
    # (aiokafka's debug lines print whole messages; it runs at WARNING, see visio_runtime.logs).
    caplog.set_level(logging.INFO)
    caplog.set_level(logging.DEBUG, logger="visio_booking")
    email = address()
    appointment_id = await book(site, email=email)
    await confirm(site, appointment_id)
    token = link(appointment_id)
    url = f"/mon-rendez-vous/{token}"
    page = await site.client.get(url)
    await site.client.post(f"{url}/renvoyer", data={"jeton": jeton(page, "/renvoyer")})
    await site.client.post(f"{url}/annuler", data={"jeton": "forged"})
    form = await site.client.get("/nouveau-lien")
    await site.client.post("/nouveau-lien", data={"jeton": jeton(form), "email": email})
    expired = link(appointment_id, expires_in=timedelta(seconds=-1))
    await site.client.get(f"/mon-rendez-vous/{expired}")

    service_lines = [r.getMessage() for r in caplog.records if not r.name.startswith("httpx")]
    logged = "\n".join(service_lines)
    assert f"link {link_fingerprint(token)}" in logged  # what happened, by fingerprint
    for secret in (token, expired, email, email.split("@")[0]):
        assert secret not in logged


async def test_without_link_keys_the_pages_do_not_exist() -> None:
    app = create_app(BookingSettings(link_keys=None))
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://booking") as client:
        for path in ("/mon-rendez-vous/abc", "/nouveau-lien"):
            assert (await client.get(path)).status_code == 404
    with_keys = create_app(BookingSettings(link_keys=SecretStr(RING)))
    paths = with_keys.openapi()["paths"]
    assert paths == app.openapi()["paths"] and not any("rendez-vous" in p for p in paths)


async def test_every_answer_of_the_public_port_carries_the_page_headers(site: Any) -> None:
    """Pages, their forms' answers, refusals, redirects, the API's JSON and its problems: each
    one never framed, never leaking the link through Referer, never sniffed; pages not cached."""
    appointment_id = await book(site)
    await confirm(site, appointment_id)
    url = f"/mon-rendez-vous/{link(appointment_id)}"
    pages = {
        "page": await site.client.get(url),
        "cancel step": await site.client.get(f"{url}/annuler"),
        "form without token": await site.client.post(f"{url}/annuler", data={}),
        "forged link": await site.client.get(
            f"/mon-rendez-vous/{link(appointment_id, keys=DROPPED_KEYS)}"
        ),
        "expired link": await site.client.get(
            f"/mon-rendez-vous/{link(appointment_id, expires_in=timedelta(days=-1))}"
        ),
        "fresh link": await site.client.get("/nouveau-lien"),
    }
    others = {
        "api without key": await site.client.get(f"/v1/appointments/{appointment_id}"),
        "api answer": await site.client.get("/v1/cgu/current"),
        "unknown path": await site.client.get("/nothing-here"),
    }
    for name, answer in pages.items():
        assert answer.headers["content-type"].startswith("text/html"), name
        assert security_header_problems(answer.headers, page=True) == [], (name, answer.headers)
        assert "style-src 'sha256-" in answer.headers["content-security-policy"], name
    for name, answer in others.items():
        assert security_header_problems(answer.headers) == [], (name, answer.headers)


async def test_a_text_messages_short_link_opens_the_page_and_nothing_else(site: Any) -> None:
    from visio_shared.links import short_code

    appointment_id = await book(
        site, user={"mobile": "06 12 34 56 78", "sms_opt_in": True, "device": "smartphone"}
    )
    await confirm(site, appointment_id)
    stored = await site.sql(
        "SELECT mobile, sms_opt_in FROM appointments WHERE appointment_id = $1",
        uuid.UUID(appointment_id),
    )
    assert tuple(stored[0]) == ("+33612345678", True)
    # Signed by the key notifications signs with; a key still in the ring opens it too.
    for keys in (KEYS, OLD_KEYS):
        code = short_code(keys, uuid.UUID(appointment_id))
        answer = await site.client.get(f"/r/{code}")
        assert answer.status_code == 303, answer.text
        page = await site.client.get(answer.headers["location"])
        assert page.status_code == 200 and "Claire Martin" in page.text
    # A code of a dropped key, a forged one, a malformed one: the page offering a fresh link.
    forged = short_code(DROPPED_KEYS, uuid.UUID(appointment_id))
    for code in (forged, "A" * 16, "not-a-code"):
        assert (await site.client.get(f"/r/{code}")).status_code == 404


async def test_a_booking_with_a_foreign_mobile_is_refused_by_name(
    site: Any, booking_body: Any
) -> None:
    body = booking_body()
    body["user"] |= {"mobile": "+32 470 12 34 56", "sms_opt_in": True}
    answer = await site.client.post("/v1/appointments", json=body, headers=site.auth("caf-portal"))
    assert answer.status_code == 422
    assert answer.headers["content-type"] == "application/problem+json"
    assert answer.json()["errors"] == [
        {
            "field": "user.mobile",
            "message": "+32 numbers cannot receive our text messages: only mobiles of "
            "metropolitan France (+33) and of the overseas départements (+262, +590, +594, "
            "+596) are accepted",
        }
    ]


async def test_a_name_is_corrected_at_once_a_new_address_only_once_confirmed(site: Any) -> None:
    appointment_id = await book(site)
    await confirm(site, appointment_id)
    url = f"/mon-rendez-vous/{link(appointment_id)}"
    step = await site.client.get(f"{url}/corriger")
    assert step.status_code == 200 and "Enregistrer mes coordonnées" in step.text
    form = {"jeton": jeton(step, "/corriger"), "first_name": "Jeanne", "last_name": "Dupont"}

    wrong = await site.client.post(f"{url}/corriger", data={**form, "email": "pas une adresse"})
    assert wrong.status_code == 422 and 'id="email-erreur"' in wrong.text
    new = f"jeanne.{uuid.uuid4().hex[:8]}@example.org"
    asked = await site.client.post(f"{url}/corriger", data={**form, "email": new})
    assert asked.status_code == 200 and "Un message vient de partir" in said(asked)
    [requested] = await events(site, appointment_id, "ContactCorrectionRequested")
    assert requested["user"]["email"] == new and requested["revision"] == 1
    assert await events(site, appointment_id, "ContactCorrected") == []  # not before confirmed

    # The code notifications mails is derived from the event's id; booking keeps its hash.
    code = address_confirmation_code(KEYS, uuid.UUID(requested["event_id"]))
    [kept] = await site.sql("SELECT * FROM contact_corrections WHERE appointment_id = $1",
                            uuid.UUID(appointment_id))  # fmt: skip
    assert kept["code_sha256"] != code and code not in json.dumps(dict(kept), default=str)
    page = await site.client.get(f"/mon-rendez-vous/confirmer-adresse/{code}")
    assert page.status_code == 200 and "Confirmer mon adresse email" in page.text
    assert await events(site, appointment_id, "ContactCorrected") == []  # opening is not confirming
    done = await site.client.post(f"/mon-rendez-vous/confirmer-adresse/{code}")
    assert done.status_code == 200 and "Votre adresse est confirmée" in said(done)
    [corrected] = await events(site, appointment_id, "ContactCorrected")
    assert (corrected["user"]["email"], corrected["revision"]) == (new, 2)
    again = await site.client.post(f"/mon-rendez-vous/confirmer-adresse/{code}")
    assert again.status_code == 404  # used
    forged = await site.client.post("/mon-rendez-vous/confirmer-adresse/" + "A" * 43)
    assert forged.status_code == 404

    # The old link is now behind; the page's own link goes on. A name alone needs no email.
    fresh = re.search(r'href="(/mon-rendez-vous/[^"/]+)"', done.text)
    assert fresh is not None
    step = await site.client.get(f"{fresh[1]}/corriger")
    form = {"jeton": jeton(step, "/corriger"), "first_name": "Jeanne", "last_name": "Martin"}
    named = await site.client.post(f"{fresh[1]}/corriger", data={**form, "email": new.upper()})
    assert named.status_code == 200 and "Votre nom est corrigé" in said(named)
    corrections = await events(site, appointment_id, "ContactCorrected")
    assert [(c["user"]["last_name"], c["revision"]) for c in corrections] == [
        ("Dupont", 2),
        ("Martin", 3),
    ]
    stale = await site.client.post(f"{url}/corriger", data=form)  # the first link: replaced
    assert stale.status_code == 410


# --- « Changer de créneau » (issue 24) ------------------------------------------------------


async def test_asking_to_move_records_it_and_tells_the_owner_nothing_else_changes(
    site: Any,
) -> None:
    appointment_id = await book(site)
    await confirm(site, appointment_id)
    partner = site.runtime.settings.partners[0]
    await site.sql(
        "UPDATE appointments SET calling_system = $2 WHERE appointment_id = $1",
        uuid.UUID(appointment_id),
        f"kafka:{partner}",
    )
    url = f"/mon-rendez-vous/{link(appointment_id)}"
    page = await site.client.get(url)
    assert f'href="{url}/changer"' in page.text and "Caf de Paris" in said(page)
    assert 'href="http://127.0.0.1:8083/cgu/1"' in page.text  # the version accepted
    step = await site.client.get(f"{url}/changer")
    assert step.status_code == 200 and "Les jours qui vous conviennent" in said(step)
    form = {"jeton": jeton(step, "/changer")}

    # Nothing ticked, a message too long: said, nothing recorded, what was typed kept.
    refused = await site.client.post(
        f"{url}/changer", data=form | {"message": "x" * 301, "jour_mardi": "1"}
    )
    assert refused.status_code == 422
    assert "Cochez au moins un moment de la journée." in said(refused)
    assert (
        "trop long" in said(refused)
        and 'id="jour-mardi" name="jour_mardi" value="1" checked' in refused.text
    )
    assert await events(site, appointment_id, "RescheduleRequested") == []

    wanted = {"jour_mardi": "1", "jour_jeudi": "1", "moment_matin": "1", "message": "Plutôt  tôt"}
    done = await site.client.post(f"{url}/changer", data=form | wanted)
    assert done.status_code == 200
    text = said(done)
    assert (
        "Votre demande est envoyée" in text
        and "Le lien pour rejoindre le rendez-vous ne change pas" in text
    )
    [asked] = await events(site, appointment_id, "RescheduleRequested")
    expected = {
        "days": ["mardi", "jeudi"],
        "times": ["matin"],
        "from_date": None,
        "message": "Plutôt tôt",
    }
    assert asked["preferences"] == expected
    outcomes = [
        json.loads(row["payload"])
        for row in await site.sql(
            "SELECT payload FROM outbox WHERE key = $1 AND topic = $2",
            appointment_id,
            site.runtime.topics.partner_replies(partner),
        )
    ]
    assert [(o["outcome"], o["preferences"]) for o in outcomes] == [
        ("reschedule_requested", expected)
    ]
    rows = await site.sql(
        "SELECT revision, preferences FROM reschedule_requests WHERE appointment_id = $1",
        uuid.UUID(appointment_id),
    )
    assert [(r["revision"], json.loads(r["preferences"])) for r in rows] == [(1, expected)]
    [row] = await site.sql(
        "SELECT status, revision FROM appointments WHERE appointment_id = $1",
        uuid.UUID(appointment_id),
    )
    assert (row["status"], row["revision"]) == ("confirmed", 1)  # nothing moved
