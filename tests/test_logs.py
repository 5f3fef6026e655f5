"""Logs name no one: a consumer on the real broker is fed events holding a person's address and
name, its handler fails in the careless ways real code does (an exception quoting the address,
a validation error echoing its input, an invalid payload), and every line it logs — FastStream's
included — is read back: JSON with the event's ids, never the address or the name."""

from __future__ import annotations

import io
import json
import logging
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
from hypothesis import given
from hypothesis import settings as hypothesis_settings
from hypothesis import strategies as st
from visio_runtime import logs
from visio_runtime.logs import configure_logging
from visio_runtime.service import build_runtime
from visio_runtime.settings import ServiceSettings
from visio_runtime.testing import running, wait_until
from visio_shared import (
    Advisor,
    AppointmentRequested,
    ConsentGiven,
    Device,
    Headers,
    Person,
)

EMAIL = "jeanne.dupont@example.fr"
FIRST, LAST = "Jeanne", "Dupont"


def requested(subject: str) -> AppointmentRequested:
    now = datetime.now(UTC)
    return AppointmentRequested(
        appointment_id=uuid.uuid4(),
        revision=1,
        correlation_id=uuid.uuid4(),
        caf_code="974",
        advisor=Advisor(id="6f1c2a4e-8b1d-4c55-9a51-2f9e6f0c1d11", display_name="Claire Martin"),
        start=now + timedelta(days=7),
        duration_minutes=30,
        timezone="Indian/Reunion",
        subject=subject,
        user=Person(first_name=FIRST, last_name=LAST, email=EMAIL, device=Device.SMARTPHONE),
        consent=ConsentGiven(
            cgu_version="1",
            cgu_sha256="0" * 64,
            accepted_at=now,
            recording_authorised=True,
            channel="api",
        ),
        calling_system="test",
    )


async def test_logs_carry_ids_and_never_an_address_or_a_name(kafka_bootstrap: str) -> None:
    out = io.StringIO()
    handler = configure_logging("DEBUG", service="notifications", stream=out)
    try:
        settings = ServiceSettings(
            kafka_bootstrap_servers=kafka_bootstrap,
            topic_prefix=f"logs-{uuid.uuid4().hex[:8]}",
            retry_attempts=2,
            retry_initial_delay_s=0.01,
        )
        rt = build_runtime("notifications", settings)

        @rt.consumer.on(AppointmentRequested)
        async def careless(event: AppointmentRequested) -> None:
            if event.subject == "revalidate":
                # A ValidationError's text echoes its input: the whole person.
                Person.model_validate({**event.user.model_dump(), "device": "fax"})
            raise RuntimeError(f"550 {event.user.email} refused ({event.user.first_name})")

        rt.consumer.subscribe(rt.topics.appointments)
        events = [requested("smtp"), requested("revalidate")]
        async with running(rt):
            for event in events:
                await rt.broker.publish(
                    event.to_json_bytes(),
                    rt.topics.appointments,
                    key=str(event.appointment_id).encode(),
                    headers=Headers.for_event(event),
                )
            # An invalid payload of a known type: the parse error would quote the person.
            invalid = events[0].model_dump(mode="json") | {"duration_minutes": "long"}
            await rt.broker.publish(
                json.dumps(invalid).encode(), rt.topics.appointments, key=b"invalid"
            )
            await wait_until(
                lambda: rt.metrics.value("events_dead_lettered_total") == 3,
                what="three dead letters",
            )
    finally:
        logging.getLogger().removeHandler(handler)

    text = out.getvalue()
    lines = [json.loads(line) for line in text.splitlines()]
    assert EMAIL not in text
    assert FIRST not in text and LAST not in text
    assert "dupont" not in text.lower()
    # …while saying what happened, to which event, in which story.
    smtp = events[0]
    about_smtp = [line for line in lines if line.get("event_id") == str(smtp.event_id)]
    assert any(line["level"] == "ERROR" for line in about_smtp)
    assert all(line["correlation_id"] == str(smtp.correlation_id) for line in about_smtp)
    assert any(line.get("appointment_id") == str(smtp.appointment_id) for line in about_smtp)
    assert any("duration_minutes" in line["message"] for line in lines)
    assert {line["service"] for line in lines} == {"notifications"}


async def test_httpx_says_its_warnings_not_a_line_per_request() -> None:
    # The URL of a request can carry a signed link; our clients log their calls themselves.
    out = io.StringIO()
    handler = configure_logging("DEBUG", service="meetings", stream=out)

    async def app(scope: dict[str, object], receive: object, send: Any) -> None:
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"ok"})

    try:
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://page") as client:
            response = await client.get("/lien?jeton=signed-secret")
        assert response.status_code == 200
        logging.getLogger("httpx").warning("httpx warning kept")
    finally:
        logging.getLogger().removeHandler(handler)
    lines = [json.loads(line) for line in out.getvalue().splitlines()]
    assert [line["message"] for line in lines if line["logger"] == "httpx"] == [
        "httpx warning kept"
    ]
    assert "signed-secret" not in out.getvalue()


_PIECES = st.one_of(
    st.text(max_size=8),
    st.sampled_from(
        [
            "jeanne.dupont@example.fr",
            "<a.b@visio-rdv.caf.fr>",
            "@",
            "Bearer abc.def-ghi",
            "BEARER x",
            "bEaReR\tzz",
            "input_value='Jeanne', input_type=str",
            "input_value=",
            ", input_type=",
            " ",
        ]
    ),
)


@hypothesis_settings(max_examples=500, deadline=None)
@given(text=st.lists(_PIECES, max_size=8).map("".join))
def test_scrubbing_skips_only_what_none_of_its_patterns_could_match(text: str) -> None:
    # The three substitutions, as they ran on every value before the one search guarding them.
    expected = logs._EMAIL.sub(
        "<email>",
        logs._BEARER.sub("Bearer <hidden>", logs._PYDANTIC_INPUT.sub("input_value=<hidden>", text)),
    )
    assert logs.scrub(text) == expected
