"""The chaos proof's story step « Recevoir à nouveau le lien », against a real ASGI page: a page
that does not offer the resend form yet is reloaded, as a person would (booking may record the
link a moment after the email carrying it went out), and one that never offers it stops the
story, so the run fails."""

from __future__ import annotations

import asyncio
import time
import uuid
from email.message import EmailMessage
from pathlib import Path
from typing import Any, cast

import httpx
import pytest
from fastapi import FastAPI
from fastapi.responses import HTMLResponse
from visio_deploy.proof import story as story_module
from visio_deploy.proof.chaos import ChaosOptions
from visio_deploy.proof.story import Actor, Plan, Story, StoryStopped

BASE = "http://booking.test"


def _site(form_after: int | None) -> tuple[FastAPI, dict[str, int]]:
    """« Mon rendez-vous »: the resend form from the `form_after`-th opening on (never: None)."""
    app = FastAPI()
    seen = {"opened": 0, "asked": 0}

    @app.get("/mon-rendez-vous/{token}", response_class=HTMLResponse)
    async def page(token: str) -> str:
        seen["opened"] += 1
        if form_after is None or seen["opened"] <= form_after:
            return "<p>Le lien vous sera envoyé par email dès qu'il sera prêt.</p>"
        return (
            f'<form method="post" action="{BASE}/mon-rendez-vous/{token}/renvoyer">'
            '<input type="hidden" name="jeton" value="t0k3n"></form>'
        )

    @app.post("/mon-rendez-vous/{token}/renvoyer", response_class=HTMLResponse)
    async def resend(token: str) -> str:
        seen["asked"] += 1
        return "<p>C'est envoyé.</p>"

    return app, seen


def _actor(app: FastAPI, mail_dir: Path) -> tuple[Actor, Story]:
    appointment_id = str(uuid.uuid4())
    confirmation = EmailMessage()
    confirmation["Message-ID"] = f"<{appointment_id}.r1.confirmation@visio-rdv.caf.fr>"
    confirmation.set_content(f"Votre rendez-vous : {BASE}/mon-rendez-vous/abc123\n")
    (mail_dir / f"{appointment_id}.r1.confirmation@visio-rdv.caf.fr.eml").write_bytes(
        confirmation.as_bytes()
    )
    http = httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url=BASE)
    unused = cast(Any, None)  # the Kafka, consent and database sides: not this step's
    actor = Actor(
        options=ChaosOptions(),
        http=http,
        consent=unused,
        producer=unused,
        request_topic="",
        replies=unused,
        mail_dir=mail_dir,
        pool=unused,
        gate=asyncio.Semaphore(1),
        deadline=time.monotonic() + 60,
    )
    body = {"start": "2030-03-04T10:30:00+01:00", "duration_minutes": 30}
    told = Story(Plan(1, "key", "http", "link_again", body), appointment_id=appointment_id)
    return actor, told


async def test_a_page_without_the_form_yet_is_reloaded(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(story_module, "FORMLESS_RELOADS", 3)
    app, seen = _site(form_after=2)
    actor, told = _actor(app, tmp_path)
    async with actor.http:
        await actor._link_again(told)
    assert told.link_asked
    assert seen == {"opened": 3, "asked": 1}


async def test_a_page_that_never_offers_the_form_stops_the_story(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(story_module, "FORMLESS_RELOADS", 3)
    app, seen = _site(form_after=None)
    actor, told = _actor(app, tmp_path)
    async with actor.http:
        with pytest.raises(StoryStopped, match=r"no resend form on the page \(200, after 3"):
            await actor._link_again(told)
    assert not told.link_asked
    assert seen == {"opened": 4, "asked": 0}
