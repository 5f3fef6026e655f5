"""The Graph client and its tokens, against the emulator over real HTTPS."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import httpx
import pytest
from pydantic import SecretStr
from visio_deploy.processes import free_port
from visio_meetings.graph import (
    APPOINTMENT_PROPERTY_ID,
    GraphClient,
    GraphRefused,
    GraphUnauthorized,
    graph_ssl_context,
    join_web_url_filter,
    retry_after,
    transaction_id,
)
from visio_meetings.settings import MeetingsSettings
from visio_meetings.tokens import TokenError, TokenProvider
from visio_runtime.errors import Transient
from visio_shared import AppointmentRequested

if TYPE_CHECKING:
    from conftest import ClientCertificate, EmulatorControl

ADVISOR = "a1b2c3d4-0000-4000-8000-00000000ad01"

Make = Callable[..., AppointmentRequested]


async def test_one_token_serves_many_graph_calls(
    graph: GraphClient, control: EmulatorControl, make_appointment: Make
) -> None:
    for _ in range(3):
        created = await graph.create_event(ADVISOR, make_appointment())
        meeting = await graph.find_online_meeting(ADVISOR, created["onlineMeeting"]["joinUrl"])
        assert meeting is not None
        await graph.update_meeting_options(ADVISOR, meeting["id"], recording_authorised=False)

    stats = await control.stats()
    assert stats["calls"]["graph.events.create"] == 3
    assert stats["calls"]["graph.onlineMeetings.update"] == 3
    # One msal application, one discovery, one token for all nine calls.
    assert stats["calls"]["entra.openid_configuration"] == 1
    assert stats["calls"]["entra.token"] == 1


async def test_concurrent_first_calls_share_one_token(
    graph: GraphClient, control: EmulatorControl, make_appointment: Make
) -> None:
    await asyncio.gather(*(graph.create_event(ADVISOR, make_appointment()) for _ in range(5)))

    assert await control.calls("entra.token") == 1
    assert (await control.stats())["events_live"] == 5


async def test_a_401_drops_the_token_and_retries_once_with_a_new_one(
    graph: GraphClient, control: EmulatorControl, make_appointment: Make
) -> None:
    await graph.create_event(ADVISOR, make_appointment())
    # The emulator's clock jumps past the token's lifetime: msal, on the real clock, still
    # holds it as valid, so only Graph's 401 can tell the client to drop it.
    await control.advance_clock(3600)

    created = await graph.create_event(ADVISOR, make_appointment())

    assert created["id"]
    stats = await control.stats()
    assert stats["calls"]["entra.token"] == 2
    assert stats["responses"]["graph.events.create"] == {"201": 2, "401": 1}
    # And the new token is the one kept: no further token request.
    await graph.create_event(ADVISOR, make_appointment())
    assert await control.calls("entra.token") == 2


async def test_a_token_graph_keeps_refusing_is_retried_once_only(
    settings: MeetingsSettings, control: EmulatorControl, make_appointment: Make
) -> None:
    invalidated: list[str] = []

    class ForgedTokens(TokenProvider):
        async def token(self) -> str:
            return "eyJhbGciOiJIUzI1NiJ9.eyJhdWQiOiJ4In0.forged"

        def invalidate(self, token: str) -> None:
            invalidated.append(token)

    tokens = ForgedTokens(settings)
    client = GraphClient(
        httpx.AsyncClient(verify=graph_ssl_context(settings), trust_env=False),
        tokens,
        settings.graph_base_url,
    )
    try:
        with pytest.raises(GraphUnauthorized, match="InvalidAuthenticationToken"):
            await client.create_event(ADVISOR, make_appointment())
    finally:
        await client.aclose()
    assert (await control.stats())["responses"]["graph.events.create"] == {"401": 2}
    assert len(invalidated) == 2


async def test_a_throttled_token_endpoint_is_transient(
    settings: MeetingsSettings, control: EmulatorControl
) -> None:
    await control.faults(throttle_rate=1.0, endpoints=["entra.token"])
    tokens = TokenProvider(settings)
    try:
        with pytest.raises(Transient, match="temporarily_unavailable"):
            await tokens.token()
    finally:
        tokens.close()


async def test_a_token_closer_to_expiry_than_the_margin_is_replaced(
    settings: MeetingsSettings, control: EmulatorControl
) -> None:
    # The emulator's tokens live 3599 s: with a larger margin, a cached one is never enough.
    tokens = TokenProvider(settings.model_copy(update={"token_refresh_margin_s": 3700}))
    try:
        first = await tokens.token()
        second = await tokens.token()
    finally:
        tokens.close()
    assert first != second
    assert await control.calls("entra.token") == 2


async def test_a_certificate_credential_gets_a_token(
    settings: MeetingsSettings,
    client_certificate: ClientCertificate,
    control: EmulatorControl,
    make_appointment: Make,
) -> None:
    by_certificate = settings.model_copy(
        update={
            "client_id": client_certificate.client_id,
            "client_secret": None,
            "client_certificate_path": client_certificate.pem_path,
        }
    )
    client = GraphClient.from_settings(by_certificate)
    try:
        created = await client.create_event(ADVISOR, make_appointment())
    finally:
        await client.aclose()
    assert created["id"]
    assert (await control.stats())["responses"]["entra.token"] == {"200": 1}


async def test_requests_ca_bundle_in_the_environment_does_not_steer_msal(
    settings: MeetingsSettings, control: EmulatorControl, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Set on these machines; requests would prefer it over `verify=` if the session read it.
    monkeypatch.setenv("REQUESTS_CA_BUNDLE", "/nonexistent/ca-bundle.pem")
    monkeypatch.setenv("HTTPS_PROXY", "http://127.0.0.1:9")
    tokens = TokenProvider(settings)
    try:
        assert await tokens.token()
    finally:
        tokens.close()
    assert await control.calls("entra.token") == 1


async def test_a_wrong_secret_is_a_token_error(
    settings: MeetingsSettings, control: EmulatorControl
) -> None:
    tokens = TokenProvider(
        settings.model_copy(update={"client_secret": SecretStr("not-the-secret")})
    )
    try:
        with pytest.raises(TokenError, match="invalid_client"):
            await tokens.token()
    finally:
        tokens.close()


async def test_an_unreachable_entra_is_transient(settings: MeetingsSettings) -> None:
    port = free_port()
    tokens = TokenProvider(
        settings.model_copy(update={"authority": f"https://127.0.0.1:{port}/tenant"})
    )
    try:
        with pytest.raises(Transient, match="Entra ID unreachable"):
            await tokens.token()
    finally:
        tokens.close()


async def test_the_event_carries_its_idempotency_keys_and_mails_nobody(
    graph: GraphClient, control: EmulatorControl, make_appointment: Make
) -> None:
    appointment = make_appointment()

    created = await graph.create_event(ADVISOR, appointment)

    [record] = await control.events()
    assert record["transaction_id"] == transaction_id(appointment.appointment_id)
    assert record["external_id"] == str(appointment.appointment_id)
    assert record["single_value_extended_properties"] == [
        {"id": APPOINTMENT_PROPERTY_ID, "value": str(appointment.appointment_id)}
    ]
    event = record["event"]
    assert event["attendees"] == []
    assert event["isOnlineMeeting"] is True
    assert event["onlineMeetingProvider"] == "teamsForBusiness"
    assert event["allowNewTimeProposals"] is False
    assert event["responseRequested"] is False
    assert event["showAs"] == "busy"
    assert "Rendez-vous Visio RDV" in event["body"]["content"]
    # 09:30 in La Réunion (UTC+4) is 05:30 UTC, 45 minutes long.
    assert record["start_utc"].startswith("2031-03-04T05:30:00")
    assert record["end_utc"].startswith("2031-03-04T06:15:00")
    assert created["id"] == record["event_id"]
    assert created["onlineMeeting"]["joinUrl"] == record["join_url"]


async def test_the_same_transaction_id_brings_back_the_same_event(
    graph: GraphClient, control: EmulatorControl, make_appointment: Make
) -> None:
    appointment = make_appointment()
    first = await graph.create_event(ADVISOR, appointment)
    again = await graph.create_event(ADVISOR, appointment)

    assert again["id"] == first["id"]
    stats = await control.stats()
    assert stats["events_total"] == 1
    assert stats["transaction_replays"] == {transaction_id(appointment.appointment_id): 1}


async def test_meeting_options_are_set(
    graph: GraphClient, control: EmulatorControl, make_appointment: Make
) -> None:
    created = await graph.create_event(ADVISOR, make_appointment())
    meeting = await graph.find_online_meeting(ADVISOR, created["onlineMeeting"]["joinUrl"])
    assert meeting is not None

    await graph.update_meeting_options(ADVISOR, meeting["id"], recording_authorised=True)

    [stored] = await control.online_meetings()
    options: dict[str, Any] = stored["meeting"]
    assert options["allowRecording"] is True
    assert options["allowTranscription"] is True
    assert options["recordAutomatically"] is False
    assert options["allowedPresenters"] == "organizer"
    assert options["lobbyBypassSettings"]["scope"] == "organization"


async def test_an_unknown_join_url_finds_nothing(
    graph: GraphClient, control: EmulatorControl
) -> None:
    found = await graph.find_online_meeting(
        ADVISOR, "https://teams.microsoft.com/l/meetup-join/19%3ameeting_x'y%40thread.v2/0"
    )
    assert found is None
    assert (await control.stats())["responses"]["graph.onlineMeetings.list"] == {"200": 1}


async def test_throttling_is_transient_with_graphs_retry_after(
    graph: GraphClient, control: EmulatorControl, make_appointment: Make
) -> None:
    await control.faults(throttle_rate=1.0, retry_after_seconds=7, endpoints=["graph.events"])

    with pytest.raises(Transient) as caught:
        await graph.create_event(ADVISOR, make_appointment())

    assert caught.value.retry_after == 7
    assert "429" in str(caught.value)


async def test_a_gateway_timeout_is_transient(
    graph: GraphClient, control: EmulatorControl, make_appointment: Make
) -> None:
    await control.faults(gateway_timeout_rate=1.0, endpoints=["graph.events.create"])
    with pytest.raises(Transient, match="504"):
        await graph.create_event(ADVISOR, make_appointment())


async def test_a_graph_timeout_is_transient(
    settings: MeetingsSettings, control: EmulatorControl, make_appointment: Make
) -> None:
    await control.faults(latency_ms=2000, endpoints=["graph.events.create"])
    client = GraphClient.from_settings(settings.model_copy(update={"graph_timeout_s": 0.3}))
    try:
        with pytest.raises(Transient, match="timed out"):
            await client.create_event(ADVISOR, make_appointment())
    finally:
        await client.aclose()


async def test_an_access_policy_refusal_is_permanent(
    graph: GraphClient, control: EmulatorControl, make_appointment: Make
) -> None:
    await control.access_policy(allowed_user_ids=[str(uuid.uuid4())])

    with pytest.raises(GraphRefused) as caught:
        await graph.create_event(ADVISOR, make_appointment())

    assert caught.value.status == 403
    assert caught.value.code == "ErrorAccessDenied"
    assert caught.value.reason == "graph_forbidden"
    assert "AccessPolicy" in caught.value.message


async def test_an_unknown_advisor_is_permanent(
    graph: GraphClient, make_appointment: Make, control: EmulatorControl
) -> None:
    with pytest.raises(GraphRefused) as caught:
        await graph.create_event("not-a-user", make_appointment())
    assert caught.value.reason == "graph_not_found"


def test_the_join_url_filter_is_quoted_for_odata_and_for_the_url() -> None:
    url = "https://teams.microsoft.com/l/meetup-join/19%3ameeting_a'b%40thread.v2/0?context=%7b%7d"
    query = join_web_url_filter(url)
    assert query == (
        "$filter=JoinWebUrl%20eq%20'https%3A%2F%2Fteams.microsoft.com%2Fl%2Fmeetup-join%2F"
        "19%253ameeting_a''b%2540thread.v2%2F0%3Fcontext%3D%257b%257d'"
    )


def test_retry_after_reads_seconds_and_http_dates() -> None:
    assert retry_after("12") == 12
    assert retry_after(None) is None
    assert retry_after("soon") is None
    assert retry_after("Wed, 21 Oct 2015 07:28:00 GMT") == 0
