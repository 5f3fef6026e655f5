"""Tokens for Graph (msal, client credentials) against the emulator's Entra ID over HTTPS:
one token for many calls, renewed on a 401, refused credentials told apart from outages."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import TYPE_CHECKING

import httpx
import pytest
from pydantic import SecretStr
from visio_fakes.processes import free_port
from visio_meetings.graph import GraphClient
from visio_meetings.graph_http import graph_ssl_context
from visio_meetings.refusals import GraphUnauthorized
from visio_meetings.settings import MeetingsSettings
from visio_meetings.tokens import TokenError, TokenProvider
from visio_runtime.errors import Transient
from visio_shared import AppointmentRequested

if TYPE_CHECKING:
    from conftest import Changes, ClientCertificate, EmulatorControl

ADVISOR = "a1b2c3d4-0000-4000-8000-00000000ad01"

Make = Callable[..., AppointmentRequested]


async def test_one_token_serves_many_graph_calls(
    graph: GraphClient, control: EmulatorControl, make_appointment: Make, changes: type[Changes]
) -> None:
    for _ in range(3):
        created = await graph.create_event(changes.spec_of(make_appointment()))
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
    graph: GraphClient, control: EmulatorControl, make_appointment: Make, changes: type[Changes]
) -> None:
    await asyncio.gather(
        *(graph.create_event(changes.spec_of(make_appointment())) for _ in range(5))
    )

    assert await control.calls("entra.token") == 1
    assert (await control.stats())["events_live"] == 5


async def test_a_401_drops_the_token_and_retries_once_with_a_new_one(
    graph: GraphClient, control: EmulatorControl, make_appointment: Make, changes: type[Changes]
) -> None:
    await graph.create_event(changes.spec_of(make_appointment()))
    # The emulator's clock jumps past the token's lifetime: msal, on the real clock, still
    # holds it as valid, so only Graph's 401 can tell the client to drop it.
    await control.advance_clock(3600)

    created = await graph.create_event(changes.spec_of(make_appointment()))

    assert created["id"]
    stats = await control.stats()
    assert stats["calls"]["entra.token"] == 2
    assert stats["responses"]["graph.events.create"] == {"201": 2, "401": 1}
    # And the new token is the one kept: no further token request.
    await graph.create_event(changes.spec_of(make_appointment()))
    assert await control.calls("entra.token") == 2


async def test_a_token_graph_keeps_refusing_is_retried_once_only(
    settings: MeetingsSettings,
    control: EmulatorControl,
    make_appointment: Make,
    changes: type[Changes],
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
            await client.create_event(changes.spec_of(make_appointment()))
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
    changes: type[Changes],
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
        created = await client.create_event(changes.spec_of(make_appointment()))
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
