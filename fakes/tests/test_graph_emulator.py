"""The Graph + Entra ID emulator, exercised over real HTTPS with msal and httpx (JSON batching
included: by id, in any order, a status per request, 4 Outlook requests at once).

One emulator serves the module on a free port with a freshly generated dev CA; each test
starts from an empty tenant through the control API (`POST /_emulator/reset`).
"""

from __future__ import annotations

import asyncio
import base64
import datetime as dt
import email.utils
import re
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import msal
import pytest
import pytest_asyncio
import requests
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.x509.oid import NameOID
from starlette.types import ASGIApp, Receive, Scope, Send
from visio_fakes.devca import CA_COMMON_NAME, ensure_dev_ca
from visio_fakes.graph_emulator import (
    AppRegistration,
    EmulatorSettings,
    EmulatorState,
    FaultConfig,
    RunningEmulator,
    serve_in_background,
)
from visio_fakes.graph_emulator.app import create_app
from visio_fakes.graph_emulator.main import settings_from_command_line
from visio_fakes.graph_emulator.meetings import V1_MEETING_PROPERTIES

GRAPH_SCOPES = ["https://graph.microsoft.com/.default"]
ORGANIZER = "3f1c9a52-8e0c-4c7c-9d0a-1b2c3d4e5f60"
OTHER_USER = "7d2b1e40-5a6f-4c3b-8e9d-0f1a2b3c4d5e"
CERT_APP_ID = "22222222-2222-2222-2222-222222222222"
# The property meetings sets, which the emulator counts per appointment by default.
EXTERNAL_ID = "String {66f5a359-4659-4830-9070-00047ec6ac6e} Name VisioRdvAppointmentId"


def _self_signed(key: rsa.RSAPrivateKey) -> str:
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "visio-rdv-meetings")])
    now = dt.datetime.now(dt.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(hours=1))
        .not_valid_after(now + dt.timedelta(days=1))
        .sign(key, hashes.SHA256())
    )
    return cert.public_bytes(serialization.Encoding.PEM).decode()


def _key_pem(key: rsa.RSAPrivateKey) -> str:
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    ).decode()


@pytest.fixture(scope="module")
def client_key() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


@pytest_asyncio.fixture(scope="module", loop_scope="session")
async def emulator(
    tmp_path_factory: pytest.TempPathFactory, client_key: rsa.RSAPrivateKey
) -> AsyncIterator[RunningEmulator]:
    settings = EmulatorSettings(
        port=0,
        ca_dir=str(tmp_path_factory.mktemp("dev-ca")),
        log_level="warning",
        extra_apps=[
            AppRegistration(client_id=CERT_APP_ID, certificate_pem=_self_signed(client_key))
        ],
    )
    async with await serve_in_background(settings) as running:
        yield running


@pytest_asyncio.fixture(loop_scope="session")
async def client(emulator: RunningEmulator) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(
        base_url=emulator.base_url, verify=emulator.ca.ssl_context(), trust_env=False
    ) as http:
        reset = await http.post("/_emulator/reset")
        assert reset.status_code == 204
        yield http


@pytest_asyncio.fixture(loop_scope="session")
async def graph(
    client: httpx.AsyncClient, emulator: RunningEmulator
) -> AsyncIterator[httpx.AsyncClient]:
    """A client carrying a bearer token from the token endpoint."""
    token = await client.post(
        f"/{emulator.settings.tenant_id}/oauth2/v2.0/token",
        data={
            "grant_type": "client_credentials",
            "client_id": emulator.settings.client_id,
            "client_secret": emulator.settings.client_secret,
            "scope": GRAPH_SCOPES[0],
        },
    )
    assert token.status_code == 200, token.text
    async with httpx.AsyncClient(
        base_url=f"{emulator.base_url}/v1.0",
        verify=emulator.ca.ssl_context(),
        trust_env=False,
        headers={"Authorization": f"Bearer {token.json()['access_token']}"},
    ) as http:
        yield http


def _msal_app(
    emulator: RunningEmulator,
    credential: str | dict[str, str],
    session: requests.Session,
    client_id: str | None = None,
) -> msal.ConfidentialClientApplication:
    # REQUESTS_CA_BUNDLE would override verify= unless the session ignores the environment.
    session.trust_env = False
    session.verify = str(emulator.ca.bundle_path)
    return msal.ConfidentialClientApplication(
        client_id or emulator.settings.client_id,
        client_credential=credential,
        authority=emulator.authority,
        instance_discovery=False,
        http_client=session,
    )


async def _msal_token(
    emulator: RunningEmulator, credential: str | dict[str, str], client_id: str | None = None
) -> dict[str, Any]:
    def acquire() -> dict[str, Any]:
        # msal does blocking I/O (discovery included): keep it off the server's loop. The
        # session is closed after, or its keep-alive connection holds the server's shutdown.
        with requests.Session() as session:
            app = _msal_app(emulator, credential, session, client_id)
            result: dict[str, Any] = app.acquire_token_for_client(scopes=GRAPH_SCOPES)
        return result

    return await asyncio.to_thread(acquire)


def _event(**overrides: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "subject": "Rendez-vous Caf",
        "body": {"contentType": "text", "content": "Votre rendez-vous en visio"},
        "start": {"dateTime": "2030-05-02T10:00:00", "timeZone": "Romance Standard Time"},
        "end": {"dateTime": "2030-05-02T10:30:00", "timeZone": "Romance Standard Time"},
        "isOnlineMeeting": True,
        "onlineMeetingProvider": "teamsForBusiness",
        "transactionId": "booking-1",
        "singleValueExtendedProperties": [{"id": EXTERNAL_ID, "value": "booking-1"}],
    }
    body.update(overrides)
    return body


async def _create(graph: httpx.AsyncClient, **overrides: Any) -> dict[str, Any]:
    response = await graph.post(f"/users/{ORGANIZER}/events", json=_event(**overrides))
    assert response.status_code == 201, response.text
    created: dict[str, Any] = response.json()
    return created


def _assert_graph_error(response: httpx.Response, status: int, code: str) -> dict[str, Any]:
    assert response.status_code == status, response.text
    error: dict[str, Any] = response.json()["error"]
    assert error["code"] == code
    inner = error["innerError"]
    assert inner["request-id"] == response.headers["request-id"]
    assert inner["client-request-id"] == response.headers["client-request-id"]
    assert dt.datetime.fromisoformat(inner["date"])
    return error


# --- dev CA -------------------------------------------------------------------------


def test_dev_ca_is_created_once_then_reused(tmp_path: Path) -> None:
    first = ensure_dev_ca(tmp_path)
    again = ensure_dev_ca(tmp_path)
    assert again.ca_cert.read_bytes() == first.ca_cert.read_bytes()
    assert again.server_cert.read_bytes() == first.server_cert.read_bytes()

    ca_cert = x509.load_pem_x509_certificate(first.ca_cert.read_bytes())
    server = x509.load_pem_x509_certificate(first.server_cert.read_bytes())
    server.verify_directly_issued_by(ca_cert)
    assert ca_cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value == CA_COMMON_NAME
    san = server.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert "localhost" in san.get_values_for_type(x509.DNSName)
    assert {str(ip) for ip in san.get_values_for_type(x509.IPAddress)} == {"127.0.0.1", "::1"}
    assert 300 <= (server.not_valid_after_utc - server.not_valid_before_utc).days <= 400

    bundle = first.bundle_path.read_bytes()
    assert bundle.endswith(first.ca_cert.read_bytes())
    assert bundle.count(b"BEGIN CERTIFICATE") > 1  # the public roots come first
    assert first.server_key.stat().st_mode & 0o077 == 0


def test_dev_ca_reissues_a_server_certificate_missing_a_hostname(tmp_path: Path) -> None:
    first = ensure_dev_ca(tmp_path)
    wider = ensure_dev_ca(tmp_path, extra_hostnames=["graph-emulator"])
    assert wider.ca_cert.read_bytes() == first.ca_cert.read_bytes()  # clients keep trusting
    server = x509.load_pem_x509_certificate(wider.server_cert.read_bytes())
    san = server.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert "graph-emulator" in san.get_values_for_type(x509.DNSName)


# --- Entra ID -----------------------------------------------------------------------


async def test_discovery_document_points_back_at_the_emulator(
    client: httpx.AsyncClient, emulator: RunningEmulator
) -> None:
    tenant = emulator.settings.tenant_id
    document = (await client.get(f"/{tenant}/v2.0/.well-known/openid-configuration")).json()
    assert document["token_endpoint"] == f"{emulator.base_url}/{tenant}/oauth2/v2.0/token"
    assert document["authorization_endpoint"].startswith(f"{emulator.base_url}/{tenant}/")
    assert document["issuer"] == f"{emulator.base_url}/{tenant}/v2.0"

    unknown = await client.get("/not-a-tenant/v2.0/.well-known/openid-configuration")
    assert unknown.status_code == 400
    assert unknown.json()["error_codes"] == [90002]


async def test_msal_gets_a_token_with_the_client_secret(
    emulator: RunningEmulator, client: httpx.AsyncClient
) -> None:
    result = await _msal_token(emulator, emulator.settings.client_secret)
    assert result.get("token_type") == "Bearer", result
    assert result["expires_in"] > 3000

    events = await client.get(
        f"/v1.0/users/{ORGANIZER}/events",
        headers={"Authorization": f"Bearer {result['access_token']}"},
    )
    assert events.status_code == 200
    assert events.json()["value"] == []


async def test_msal_reports_a_wrong_secret_as_entra_does(emulator: RunningEmulator) -> None:
    result = await _msal_token(emulator, "not-the-secret")
    assert "access_token" not in result
    assert result["error"] == "invalid_client"
    assert result["error_codes"] == [7000215]
    assert result["error_description"].startswith("AADSTS7000215: Invalid client secret")


async def test_msal_certificate_credential_is_checked(
    emulator: RunningEmulator, client_key: rsa.RSAPrivateKey
) -> None:
    registered_cert = emulator.state.apps[CERT_APP_ID].certificate_pem
    assert registered_cert is not None
    good = await _msal_token(
        emulator,
        {"private_key": _key_pem(client_key), "public_certificate": registered_cert},
        client_id=CERT_APP_ID,
    )
    assert "access_token" in good, good

    # The registered certificate's thumbprint, but signed by another key.
    intruder = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    forged = await _msal_token(
        emulator,
        {"private_key": _key_pem(intruder), "public_certificate": registered_cert},
        client_id=CERT_APP_ID,
    )
    assert forged["error"] == "invalid_client"
    assert forged["error_codes"] == [700027]


async def test_token_endpoint_refuses_other_scopes_and_unknown_apps(
    client: httpx.AsyncClient, emulator: RunningEmulator
) -> None:
    url = f"/{emulator.settings.tenant_id}/oauth2/v2.0/token"
    form = {
        "grant_type": "client_credentials",
        "client_id": emulator.settings.client_id,
        "client_secret": emulator.settings.client_secret,
    }
    delegated = await client.post(url, data={**form, "scope": "Calendars.ReadWrite"})
    assert delegated.status_code == 400
    assert delegated.json()["error"] == "invalid_scope"
    assert delegated.json()["error_codes"] == [1002012]

    stranger = await client.post(
        url, data={**form, "client_id": OTHER_USER, "scope": GRAPH_SCOPES[0]}
    )
    assert stranger.status_code == 400
    assert stranger.json()["error_codes"] == [700016]


async def test_graph_refuses_missing_and_expired_tokens(
    graph: httpx.AsyncClient, client: httpx.AsyncClient, emulator: RunningEmulator
) -> None:
    anonymous = await client.get(f"/v1.0/users/{ORGANIZER}/events")
    error = _assert_graph_error(anonymous, 401, "InvalidAuthenticationToken")
    assert error["message"] == "Access token is empty."

    assert (await graph.get(f"/users/{ORGANIZER}/events")).status_code == 200
    lifetime = emulator.settings.token_lifetime_seconds
    moved = await client.post("/_emulator/clock", json={"advance_seconds": lifetime + 1})
    assert moved.status_code == 200
    expired = await graph.get(f"/users/{ORGANIZER}/events")
    error = _assert_graph_error(expired, 401, "InvalidAuthenticationToken")
    assert "expired" in error["message"]


# --- Graph: events and online meetings ----------------------------------------------


async def test_online_event_gets_a_teams_join_url(graph: httpx.AsyncClient) -> None:
    event = await _create(graph)
    join_url = event["onlineMeeting"]["joinUrl"]
    assert join_url.startswith("https://teams.microsoft.com/l/meetup-join/19%3ameeting_")
    assert "%40thread.v2/0?context=" in join_url
    assert event["isOnlineMeeting"] is True
    assert event["onlineMeetingProvider"] == "teamsForBusiness"
    assert event["transactionId"] == "booking-1"
    # Graph answers in UTC by default: 10:00 in Paris in May is 08:00Z.
    assert event["start"] == {"dateTime": "2030-05-02T08:00:00.0000000", "timeZone": "UTC"}
    assert event["originalStartTimeZone"] == "Romance Standard Time"

    fetched = await graph.get(
        f"/users/{ORGANIZER}/events/{event['id']}",
        params={"$expand": f"singleValueExtendedProperties($filter=id eq '{EXTERNAL_ID}')"},
        headers={"Prefer": 'outlook.timezone="Europe/Paris"'},
    )
    assert fetched.status_code == 200
    body = fetched.json()
    assert body["singleValueExtendedProperties"] == [{"id": EXTERNAL_ID, "value": "booking-1"}]
    assert body["start"] == {"dateTime": "2030-05-02T10:00:00.0000000", "timeZone": "Europe/Paris"}
    assert body["onlineMeeting"]["joinUrl"] == join_url


async def test_same_transaction_id_creates_a_single_event(
    graph: httpx.AsyncClient, client: httpx.AsyncClient
) -> None:
    first = await _create(graph, transactionId="booking-42")
    second = await _create(graph, transactionId="booking-42")
    assert second["id"] == first["id"]
    assert second["onlineMeeting"]["joinUrl"] == first["onlineMeeting"]["joinUrl"]

    recorded = (await client.get("/_emulator/events")).json()["value"]
    assert [(e["transaction_id"], e["user_id"]) for e in recorded] == [("booking-42", ORGANIZER)]
    stats = (await client.get("/_emulator/stats")).json()
    assert stats["events_per_transaction_id"] == {"booking-42": 1}
    assert stats["events_per_external_id"] == {"booking-1": 1}
    assert stats["transaction_replays"] == {"booking-42": 1}
    assert stats["calls"]["graph.events.create"] == 2


async def test_join_web_url_filter_finds_the_meeting_and_patch_sets_options(
    graph: httpx.AsyncClient,
) -> None:
    join_url = (await _create(graph))["onlineMeeting"]["joinUrl"]
    found = await graph.get(
        f"/users/{ORGANIZER}/onlineMeetings", params={"$filter": f"JoinWebUrl eq '{join_url}'"}
    )
    assert found.status_code == 200
    [meeting] = found.json()["value"]
    assert meeting["joinWebUrl"] == join_url
    assert meeting["allowRecording"] is True
    assert meeting["allowedPresenters"] == "everyone"
    assert meeting["lobbyBypassSettings"] == {
        "scope": "organization",
        "isDialInBypassEnabled": False,
    }
    assert meeting["recordAutomatically"] is False
    assert meeting["startDateTime"] == "2030-05-02T08:00:00.0000000Z"

    patched = await graph.patch(
        f"/users/{ORGANIZER}/onlineMeetings/{meeting['id']}",
        json={"allowRecording": False, "lobbyBypassSettings": {"isDialInBypassEnabled": True}},
    )
    assert patched.status_code == 200
    again = (await graph.get(f"/users/{ORGANIZER}/onlineMeetings/{meeting['id']}")).json()
    assert again["allowRecording"] is False
    assert again["lobbyBypassSettings"] == {"scope": "organization", "isDialInBypassEnabled": True}

    half = await graph.patch(
        f"/users/{ORGANIZER}/onlineMeetings/{meeting['id']}",
        json={"startDateTime": "2030-05-02T09:00:00Z"},
    )
    _assert_graph_error(half, 400, "BadRequest")


async def test_rescheduling_an_event_keeps_its_join_url(graph: httpx.AsyncClient) -> None:
    event = await _create(graph)
    moved = await graph.patch(
        f"/users/{ORGANIZER}/events/{event['id']}",
        json={
            "subject": "Rendez-vous Caf (déplacé)",
            "start": {"dateTime": "2030-05-03T14:00:00", "timeZone": "UTC"},
            "end": {"dateTime": "2030-05-03T14:45:00", "timeZone": "UTC"},
        },
    )
    assert moved.status_code == 200
    body = moved.json()
    assert body["onlineMeeting"]["joinUrl"] == event["onlineMeeting"]["joinUrl"]
    assert body["start"]["dateTime"] == "2030-05-03T14:00:00.0000000"
    assert body["changeKey"] != event["changeKey"]

    join_url = event["onlineMeeting"]["joinUrl"]
    meetings = await graph.get(
        f"/users/{ORGANIZER}/onlineMeetings", params={"$filter": f"JoinWebUrl eq '{join_url}'"}
    )
    [meeting] = meetings.json()["value"]
    assert meeting["startDateTime"] == "2030-05-03T14:00:00.0000000Z"
    assert meeting["subject"] == "Rendez-vous Caf (déplacé)"


async def test_deleted_event_is_gone_from_graph_but_kept_for_inspection(
    graph: httpx.AsyncClient, client: httpx.AsyncClient
) -> None:
    event = await _create(graph)
    deleted = await graph.delete(f"/users/{ORGANIZER}/events/{event['id']}")
    assert deleted.status_code == 204
    _assert_graph_error(
        await graph.get(f"/users/{ORGANIZER}/events/{event['id']}"), 404, "ErrorItemNotFound"
    )
    _assert_graph_error(
        await graph.delete(f"/users/{ORGANIZER}/events/{event['id']}"), 404, "ErrorItemNotFound"
    )
    [record] = (await client.get("/_emulator/events")).json()["value"]
    assert record["is_deleted"] is True
    assert record["event"]["isCancelled"] is True
    meetings = await graph.get(
        f"/users/{ORGANIZER}/onlineMeetings",
        params={"$filter": f"JoinWebUrl eq '{event['onlineMeeting']['joinUrl']}'"},
    )
    assert meetings.json()["value"] == []


async def test_extended_property_filter_lists_matching_events(graph: httpx.AsyncClient) -> None:
    await _create(graph)
    wanted = await _create(
        graph,
        transactionId="booking-2",
        singleValueExtendedProperties=[{"id": EXTERNAL_ID, "value": "booking-2"}],
    )
    listed = await graph.get(
        f"/users/{ORGANIZER}/events",
        params={
            "$filter": f"singleValueExtendedProperties/any(ep: ep/id eq '{EXTERNAL_ID}' "
            "and ep/value eq 'booking-2')"
        },
    )
    assert listed.status_code == 200
    assert [e["id"] for e in listed.json()["value"]] == [wanted["id"]]


async def test_restricted_access_policy_forbids_other_mailboxes(
    graph: httpx.AsyncClient, client: httpx.AsyncClient
) -> None:
    join_url = (await _create(graph))["onlineMeeting"]["joinUrl"]
    policy = await client.post("/_emulator/access-policy", json={"allowed_user_ids": [OTHER_USER]})
    assert policy.status_code == 200

    refused = await graph.post(f"/users/{ORGANIZER}/events", json=_event(transactionId="b-9"))
    error = _assert_graph_error(refused, 403, "ErrorAccessDenied")
    assert "AccessPolicy" in error["message"]
    meetings = await graph.get(
        f"/users/{ORGANIZER}/onlineMeetings", params={"$filter": f"JoinWebUrl eq '{join_url}'"}
    )
    error = _assert_graph_error(meetings, 403, "Forbidden")
    assert error["message"] == "No application access policy found for this app."

    allowed = await graph.post(f"/users/{OTHER_USER}/events", json=_event())
    assert allowed.status_code == 201


async def test_invalid_requests_get_graph_error_bodies(graph: httpx.AsyncClient) -> None:
    typo = await graph.post(
        f"/users/{ORGANIZER}/events",
        json={**_event(), "isOnlineMeting": True},
        headers={"client-request-id": "my-correlation-id"},
    )
    error = _assert_graph_error(typo, 400, "RequestBodyRead")
    assert "isOnlineMeting" in error["message"]
    assert typo.headers["client-request-id"] == "my-correlation-id"

    # 07:00 UTC is before the 10:00 Paris (08:00 UTC) start.
    backwards = _event(end={"dateTime": "2030-05-02T07:00:00", "timeZone": "UTC"})
    _assert_graph_error(
        await graph.post(f"/users/{ORGANIZER}/events", json=backwards), 400, "ErrorInvalidRequest"
    )
    _assert_graph_error(
        await graph.get(f"/users/{ORGANIZER}/events/AAMkADunknown"), 404, "ErrorItemNotFound"
    )
    _assert_graph_error(
        await graph.post("/users/not-a-user/events", json=_event()), 404, "ErrorInvalidUser"
    )


# --- faults -------------------------------------------------------------------------


async def test_throttling_answers_429_with_retry_after(
    graph: httpx.AsyncClient, client: httpx.AsyncClient
) -> None:
    configured = await client.post(
        "/_emulator/faults",
        json={"throttle_rate": 1.0, "retry_after_seconds": 7, "endpoints": ["graph.events.create"]},
    )
    assert configured.status_code == 200
    throttled = await graph.post(f"/users/{ORGANIZER}/events", json=_event())
    _assert_graph_error(throttled, 429, "TooManyRequests")
    assert throttled.headers["Retry-After"] == "7"
    # Only the targeted endpoint is throttled.
    assert (await graph.get(f"/users/{ORGANIZER}/events")).status_code == 200

    stats = (await client.get("/_emulator/stats")).json()
    assert stats["events_total"] == 0
    assert stats["faults_injected"] == {"429": 1}
    assert stats["responses"]["graph.events.create"] == {"429": 1}


async def test_unavailable_and_gateway_timeout_faults(
    graph: httpx.AsyncClient, client: httpx.AsyncClient
) -> None:
    await client.post("/_emulator/faults", json={"unavailable_rate": 1.0, "max_faults": 1})
    unavailable = await graph.get(f"/users/{ORGANIZER}/events")
    _assert_graph_error(unavailable, 503, "ServiceUnavailable")
    assert "Retry-After" in unavailable.headers
    assert (await graph.get(f"/users/{ORGANIZER}/events")).status_code == 200  # fault budget spent

    await client.post("/_emulator/faults", json={"gateway_timeout_rate": 1.0})
    timed_out = await graph.get(f"/users/{ORGANIZER}/events")
    _assert_graph_error(timed_out, 504, "UnknownError")


async def test_commit_then_504_creates_the_event_anyway(
    graph: httpx.AsyncClient, client: httpx.AsyncClient
) -> None:
    await client.post(
        "/_emulator/faults",
        json={"commit_then_timeout_rate": 1.0, "max_faults": 1, "endpoints": ["graph.events"]},
    )
    lost = await graph.post(f"/users/{ORGANIZER}/events", json=_event(transactionId="retry-me"))
    _assert_graph_error(lost, 504, "UnknownError")
    [record] = (await client.get("/_emulator/events")).json()["value"]
    assert record["transaction_id"] == "retry-me"
    assert record["join_url"].startswith("https://teams.microsoft.com/")

    # The client's retry with the same transactionId finds the event it could not see.
    retried = await graph.post(f"/users/{ORGANIZER}/events", json=_event(transactionId="retry-me"))
    assert retried.status_code == 201
    assert retried.json()["id"] == record["event_id"]
    stats = (await client.get("/_emulator/stats")).json()
    assert stats["events_per_transaction_id"] == {"retry-me": 1}


async def test_seeded_faults_are_reproducible(
    graph: httpx.AsyncClient, client: httpx.AsyncClient
) -> None:
    async def run() -> list[int]:
        await client.post(
            "/_emulator/faults", json={"throttle_rate": 0.5, "retry_after_seconds": 0, "seed": 7}
        )
        return [(await graph.get(f"/users/{ORGANIZER}/events")).status_code for _ in range(16)]

    first, second = await run(), await run()
    assert first == second
    assert set(first) == {200, 429}


async def test_a_seed_replays_each_appointments_faults_whatever_the_order(
    graph: httpx.AsyncClient, client: httpx.AsyncClient
) -> None:
    """Creating, reading and moving the events of three appointments, in one order then in
    the other: each call meets the fault of its appointment, endpoint and attempt."""
    appointments = ["appointment-a", "appointment-b", "appointment-c"]

    async def run(order: list[str]) -> dict[str, list[int]]:
        await client.post("/_emulator/reset")
        await client.post(
            "/_emulator/faults",
            json={"unavailable_rate": 0.3, "gateway_timeout_rate": 0.2, "seed": 16},
        )
        seen: dict[str, list[int]] = {a: [] for a in appointments}
        events: dict[str, str] = {}
        for name in order:
            body = _event(
                transactionId=name,
                singleValueExtendedProperties=[{"id": EXTERNAL_ID, "value": name}],
            )
            while name not in events:
                answer = await graph.post(f"/users/{ORGANIZER}/events", json=body)
                seen[name].append(answer.status_code)
                if answer.status_code == 201:
                    events[name] = answer.json()["id"]
        for name in order:
            for _ in range(4):
                answer = await graph.get(f"/users/{ORGANIZER}/events/{events[name]}")
                seen[name].append(answer.status_code)
        return seen

    first = await run(appointments)
    second = await run(appointments[::-1])
    assert first == second
    assert {code for codes in first.values() for code in codes} == {200, 201, 503, 504}
    assert (await client.get("/_emulator/faults")).json()["seed"] == 16


async def test_without_a_seed_one_is_chosen_and_shown(client: httpx.AsyncClient) -> None:
    chosen = (await client.post("/_emulator/faults", json={"throttle_rate": 0.1})).json()
    assert isinstance(chosen["seed"], int)
    assert (await client.get("/_emulator/faults")).json()["seed"] == chosen["seed"]


async def test_token_endpoint_can_be_throttled(
    client: httpx.AsyncClient, emulator: RunningEmulator
) -> None:
    await client.post(
        "/_emulator/faults", json={"throttle_rate": 1.0, "endpoints": ["entra.token"]}
    )
    throttled = await client.post(
        f"/{emulator.settings.tenant_id}/oauth2/v2.0/token",
        data={
            "grant_type": "client_credentials",
            "client_id": emulator.settings.client_id,
            "client_secret": emulator.settings.client_secret,
            "scope": GRAPH_SCOPES[0],
        },
    )
    assert throttled.status_code == 429
    assert throttled.json()["error"] == "temporarily_unavailable"
    assert throttled.headers["Retry-After"] == "1"


async def test_retry_after_keeps_graphs_decimals(
    graph: httpx.AsyncClient, client: httpx.AsyncClient
) -> None:
    await client.post(
        "/_emulator/faults", json={"throttle_rate": 1.0, "retry_after_seconds": 2.128}
    )
    throttled = await graph.get(f"/users/{ORGANIZER}/events")
    assert throttled.status_code == 429
    assert throttled.headers["Retry-After"] == "2.128"


async def test_more_than_four_requests_in_flight_to_one_mailbox_are_throttled(
    graph: httpx.AsyncClient, client: httpx.AsyncClient
) -> None:
    # Latency keeps the first requests in flight while the others arrive.
    await client.post("/_emulator/faults", json={"latency_ms": 300, "retry_after_seconds": 0.5})
    same_mailbox = [graph.get(f"/users/{ORGANIZER}/events") for _ in range(6)]
    other_mailbox = graph.get(f"/users/{OTHER_USER}/events")
    *answers, other = await asyncio.gather(*same_mailbox, other_mailbox)

    assert sorted(a.status_code for a in answers) == [200, 200, 200, 200, 429, 429]
    for refused in (a for a in answers if a.status_code == 429):
        error = _assert_graph_error(refused, 429, "ApplicationThrottled")
        assert "MailboxConcurrency" in error["message"]
        assert refused.headers["Retry-After"] == "0.5"
    assert other.status_code == 200  # another mailbox is not held back
    stats = (await client.get("/_emulator/stats")).json()
    # Refused requests leave at once, so the peak is 5 or 6 depending on arrival order.
    assert stats["max_in_flight_per_mailbox"][ORGANIZER] > 4
    assert stats["max_in_flight_per_mailbox"][OTHER_USER] == 1
    assert stats["concurrency_throttled"] == {ORGANIZER: 2}
    assert stats["faults_injected"] == {}  # the limit is Graph's behaviour, not a fault

    await client.post("/_emulator/faults", json={"mailbox_concurrency_limit": None})
    unlimited = await asyncio.gather(*(graph.get(f"/users/{ORGANIZER}/events") for _ in range(6)))
    assert {a.status_code for a in unlimited} == {200}


async def test_latency_delays_the_answer_not_the_change(
    graph: httpx.AsyncClient, client: httpx.AsyncClient
) -> None:
    await client.post(
        "/_emulator/faults", json={"latency_ms": 800, "endpoints": ["graph.events.create"]}
    )
    posting = asyncio.create_task(graph.post(f"/users/{ORGANIZER}/events", json=_event()))
    async with asyncio.timeout(5):
        while not (await client.get("/_emulator/events")).json()["value"]:
            await asyncio.sleep(0.02)
    posting.cancel()  # the client gives up: the event exists all the same
    with pytest.raises(asyncio.CancelledError):
        await posting
    [record] = (await client.get("/_emulator/events")).json()["value"]
    assert record["transaction_id"] == "booking-1"


async def test_answers_carry_a_date_on_the_emulator_clock(
    graph: httpx.AsyncClient, client: httpx.AsyncClient
) -> None:
    before = email.utils.parsedate_to_datetime(
        (await graph.get(f"/users/{ORGANIZER}/events")).headers["Date"]
    )
    assert abs((before - dt.datetime.now(dt.UTC)).total_seconds()) < 5
    await client.post("/_emulator/clock", json={"advance_seconds": 7200})
    later = await client.get("/_emulator/stats")
    moved = email.utils.parsedate_to_datetime(later.headers["Date"])
    assert 7190 < (moved - before).total_seconds() < 7300


async def test_online_meeting_has_join_details_as_graph_writes_them(
    graph: httpx.AsyncClient, emulator: RunningEmulator
) -> None:
    join_url = (await _create(graph))["onlineMeeting"]["joinUrl"]
    found = await graph.get(
        f"/users/{ORGANIZER}/onlineMeetings", params={"$filter": f"JoinWebUrl eq '{join_url}'"}
    )
    [meeting] = found.json()["value"]
    settings = meeting["joinMeetingIdSettings"]
    assert re.fullmatch(r"\d{13}", settings["joinMeetingId"])
    assert re.fullmatch(r"[A-Za-z0-9]{6}", settings["passcode"])
    assert settings["isPasscodeRequired"] is True
    audio = meeting["audioConferencing"]
    assert re.fullmatch(r"\d{9}", audio["conferenceId"])
    assert audio["dialinUrl"].startswith("https://dialin.teams.microsoft.com/")
    assert audio["tollNumbers"] == [audio["tollNumber"]]
    assert meeting["chatInfo"]["threadId"].startswith("19:meeting_")
    organizer = meeting["participants"]["organizer"]
    assert organizer["identity"]["user"]["id"] == ORGANIZER
    assert organizer["identity"]["user"]["tenantId"] == emulator.settings.tenant_id
    # DateTimeOffset with seven fractional digits, as Graph writes them.
    timestamp = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{7}Z")
    for name in ("creationDateTime", "startDateTime", "endDateTime"):
        assert timestamp.fullmatch(meeting[name]), meeting[name]


async def test_short_join_urls_are_found_like_classic_ones(
    graph: httpx.AsyncClient, client: httpx.AsyncClient
) -> None:
    styled = await client.post("/_emulator/tenant", json={"join_url_style": "short"})
    assert styled.status_code == 200
    join_url = (await _create(graph))["onlineMeeting"]["joinUrl"]
    assert re.fullmatch(r"https://teams\.microsoft\.com/meet/\d{13}\?p=[A-Za-z0-9]{16}", join_url)

    found = await graph.get(
        f"/users/{ORGANIZER}/onlineMeetings", params={"$filter": f"JoinWebUrl eq '{join_url}'"}
    )
    [meeting] = found.json()["value"]
    assert meeting["joinWebUrl"] == join_url
    assert join_url.split("/meet/")[1].startswith(meeting["joinMeetingIdSettings"]["joinMeetingId"])


async def test_a_mailbox_without_teams_gets_an_event_without_a_meeting(
    graph: httpx.AsyncClient, client: httpx.AsyncClient
) -> None:
    switched = await client.post(f"/_emulator/users/{ORGANIZER}", json={"teams_enabled": False})
    assert switched.status_code == 200
    event = await _create(graph)
    assert event["onlineMeeting"] is None
    assert event["isOnlineMeeting"] is False
    other = await graph.post(f"/users/{OTHER_USER}/events", json=_event(transactionId="b-2"))
    assert other.json()["onlineMeeting"]["joinUrl"]  # only that user lost the licence

    # Once licensed, turning the event online gives it its meeting.
    await client.post(f"/_emulator/users/{ORGANIZER}", json={"teams_enabled": True})
    patched = await graph.patch(
        f"/users/{ORGANIZER}/events/{event['id']}", json={"isOnlineMeeting": True}
    )
    assert patched.json()["onlineMeeting"]["joinUrl"]


async def test_an_object_id_the_tenant_does_not_have_is_an_invalid_user(
    graph: httpx.AsyncClient, client: httpx.AsyncClient
) -> None:
    gone = await client.post(f"/_emulator/users/{OTHER_USER.upper()}", json={"exists": False})
    assert gone.status_code == 200
    _assert_graph_error(
        await graph.post(f"/users/{OTHER_USER}/events", json=_event()), 404, "ErrorInvalidUser"
    )
    assert (await graph.post(f"/users/{ORGANIZER}/events", json=_event())).status_code == 201


async def test_cancel_removes_the_event_and_its_meeting(
    graph: httpx.AsyncClient, client: httpx.AsyncClient
) -> None:
    event = await _create(graph)
    cancelled = await graph.post(
        f"/users/{ORGANIZER}/events/{event['id']}/cancel", json={"Comment": "Rendez-vous annulé"}
    )
    assert cancelled.status_code == 202
    assert cancelled.content == b""
    _assert_graph_error(
        await graph.post(f"/users/{ORGANIZER}/events/{event['id']}/cancel", json={}),
        404,
        "ErrorItemNotFound",
    )
    [record] = (await client.get("/_emulator/events")).json()["value"]
    assert record["is_deleted"] is True
    assert record["cancel_comment"] == "Rendez-vous annulé"
    [meeting] = (await client.get("/_emulator/online-meetings")).json()["value"]
    assert meeting["is_deleted"] is True
    stats = (await client.get("/_emulator/stats")).json()
    assert stats["events_per_external_id"] == {"booking-1": 1}
    assert stats["live_events_per_external_id"] == {}

    typo = await graph.post(
        f"/users/{ORGANIZER}/events/{(await _create(graph))['id']}/cancel", json={"reason": "x"}
    )
    _assert_graph_error(typo, 400, "RequestBodyRead")


def test_faults_come_from_the_command_line_over_the_environment(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("GRAPH_EMULATOR_FAULTS__UNAVAILABLE_RATE", "0.2")
    monkeypatch.setenv("GRAPH_EMULATOR_FAULTS__LATENCY_MS", "5")
    flags = "--throttle-rate 0.1 --latency-ms 100 --retry-after-seconds 2.128 --port 0"
    flags += " --mailbox-concurrency-limit 0 --join-url-style short"
    settings = settings_from_command_line(
        [*flags.split(), "--endpoints", "graph.events, graph.onlineMeetings"]
    )
    faults = settings.faults
    assert (faults.throttle_rate, faults.unavailable_rate) == (0.1, 0.2)
    assert faults.latency_ms == 100
    assert faults.retry_after_seconds == 2.128
    assert faults.endpoints == ["graph.events", "graph.onlineMeetings"]
    assert faults.mailbox_concurrency_limit is None
    assert (settings.port, settings.join_url_style) == (0, "short")

    # The configured faults are where a reset goes back to.
    state = EmulatorState(settings)
    state.faults.configure(FaultConfig())
    state.reset()
    chosen = state.faults.config.seed  # none was configured: a fresh one, shown
    assert isinstance(chosen, int)
    assert state.faults.config == faults.model_copy(update={"seed": chosen})

    with pytest.raises(ValueError, match="more than 1"):
        settings_from_command_line(["--gateway-timeout-rate", "0.9"])


# --- meeting artifacts: attendance reports and recordings -----------------------------------


async def _meeting_id(graph: httpx.AsyncClient) -> str:
    event = await _create(graph)
    found = await graph.get(
        f"/users/{ORGANIZER}/onlineMeetings",
        params={"$filter": f"JoinWebUrl eq '{event['onlineMeeting']['joinUrl']}'"},
    )
    meeting_id: str = found.json()["value"][0]["id"]
    return meeting_id


async def test_attendance_report_is_listed_late_then_served_with_its_records(
    graph: httpx.AsyncClient, client: httpx.AsyncClient
) -> None:
    meeting_id = await _meeting_id(graph)
    reports_path = f"/users/{ORGANIZER}/onlineMeetings/{meeting_id}/attendanceReports"
    scripted = await client.post(
        f"/_emulator/online-meetings/{meeting_id}/attendance",
        json={
            "available_after_list_calls": 1,
            "participants": [
                {
                    "kind": "organizer",
                    "intervals": [{"join_offset_seconds": -60, "leave_offset_seconds": 1800}],
                },
                # A late join, a dropped connection, and a return.
                {
                    "kind": "anonymous",
                    "display_name": "Marie P.",
                    "intervals": [
                        {"join_offset_seconds": 300, "leave_offset_seconds": 600},
                        {"join_offset_seconds": 660, "leave_offset_seconds": 1790},
                    ],
                },
            ],
        },
    )
    assert scripted.status_code == 200, scripted.text

    assert (await graph.get(reports_path)).json()["value"] == []  # not generated yet
    [listed] = (await graph.get(reports_path)).json()["value"]
    assert set(listed) == {
        "id",
        "totalParticipantCount",
        "meetingStartDateTime",
        "meetingEndDateTime",
    }
    assert listed["totalParticipantCount"] == 2
    assert listed["meetingStartDateTime"] == "2030-05-02T07:59:00.0000000Z"
    assert listed["meetingEndDateTime"] == "2030-05-02T08:30:00.0000000Z"

    report = (
        await graph.get(f"{reports_path}/{listed['id']}", params={"$expand": "attendanceRecords"})
    ).json()
    organizer, public = report["attendanceRecords"]
    assert organizer["role"] == "Organizer"
    assert organizer["identity"]["tenantId"] == "00000000-0000-0000-0000-0000000000ca"
    assert (public["role"], public["emailAddress"], public["identity"]["tenantId"]) == (
        "Attendee",
        None,
        None,
    )
    assert public["totalAttendanceInSeconds"] == 300 + 1130
    assert public["attendanceIntervals"][1] == {
        "joinDateTime": "2030-05-02T08:11:00.0000000Z",
        "leaveDateTime": "2030-05-02T08:29:50.0000000Z",
        "durationInSeconds": 1130,
    }
    bare = (await graph.get(f"{reports_path}/{listed['id']}")).json()
    assert "attendanceRecords" not in bare


async def test_recordings_are_listed_as_metadata(
    graph: httpx.AsyncClient, client: httpx.AsyncClient
) -> None:
    meeting_id = await _meeting_id(graph)
    path = f"/users/{ORGANIZER}/onlineMeetings/{meeting_id}/recordings"
    assert (await graph.get(path)).json()["value"] == []
    await client.post(
        f"/_emulator/online-meetings/{meeting_id}/recordings",
        json={"recordings": [{"created_offset_seconds": 120}]},
    )
    [recording] = (await graph.get(path)).json()["value"]
    assert recording["meetingId"] == meeting_id
    assert recording["createdDateTime"] == "2030-05-02T08:02:00.0000000Z"
    assert recording["contentCorrelationId"]
    assert recording["recordingContentUrl"].endswith(f"/recordings/{recording['id']}/content")


async def test_artifacts_need_their_own_permissions(
    client: httpx.AsyncClient, emulator: RunningEmulator
) -> None:
    async with await serve_in_background(
        emulator.settings.model_copy(
            update={"port": 0, "app_roles": ["Calendars.ReadWrite", "OnlineMeetings.ReadWrite.All"]}
        )
    ) as limited:
        async with httpx.AsyncClient(
            base_url=limited.base_url, verify=limited.ca.ssl_context(), trust_env=False
        ) as http:
            token = await http.post(
                f"/{limited.settings.tenant_id}/oauth2/v2.0/token",
                data={
                    "grant_type": "client_credentials",
                    "client_id": limited.settings.client_id,
                    "client_secret": limited.settings.client_secret,
                    "scope": GRAPH_SCOPES[0],
                },
            )
            headers = {"Authorization": f"Bearer {token.json()['access_token']}"}
            base = f"/v1.0/users/{ORGANIZER}/onlineMeetings/any"
            for tail in ("attendanceReports", "recordings"):
                refused = await http.get(f"{base}/{tail}", headers=headers)
                _assert_graph_error(refused, 403, "Forbidden")


# --- JSON batching ($batch), look-up indexes, the v1.0 onlineMeeting ---------------------

MAILBOXES = [f"3f1c9a52-8e0c-4c7c-9d0a-00000000000{n}" for n in range(5)]


def _new_event(key: str, **overrides: Any) -> dict[str, Any]:
    return {
        "subject": f"Rendez-vous {key}",
        "start": {"dateTime": "2030-05-02T10:00:00", "timeZone": "UTC"},
        "end": {"dateTime": "2030-05-02T10:30:00", "timeZone": "UTC"},
        "isOnlineMeeting": True,
        "onlineMeetingProvider": "teamsForBusiness",
        "transactionId": key,
        "singleValueExtendedProperties": [{"id": EXTERNAL_ID, "value": key}],
        **overrides,
    }


def _create_request(request_id: str, mailbox: str, key: str) -> dict[str, Any]:
    return {
        "id": request_id,
        "method": "POST",
        "url": f"/users/{mailbox}/events",
        "headers": {"Content-Type": "application/json"},
        "body": _new_event(key),
    }


def _lookup_request(request_id: str, mailbox: str, key: str) -> dict[str, Any]:
    query = (
        f"singleValueExtendedProperties/any(ep: ep/id eq '{EXTERNAL_ID}' and ep/value eq '{key}')"
    )
    return {
        "id": request_id,
        "method": "GET",
        "url": f"/users/{mailbox}/events?$filter={query}&$select=id,subject",
    }


async def _batch(graph: httpx.AsyncClient, requests: list[dict[str, Any]]) -> httpx.Response:
    return await graph.post("/$batch", json={"requests": requests})


def _by_id(response: httpx.Response) -> dict[str, dict[str, Any]]:
    assert response.status_code == 200, response.text
    answers = response.json()["responses"]
    by_id = {answer["id"]: answer for answer in answers}
    assert len(by_id) == len(answers)
    return by_id


async def test_a_batch_of_20_lookups_answers_each_by_its_id_in_any_order(
    graph: httpx.AsyncClient, client: httpx.AsyncClient
) -> None:
    keys = [f"appt-{n:02d}" for n in range(20)]
    creates = [_create_request(f"c{n}", MAILBOXES[n % 5], key) for n, key in enumerate(keys)]
    made = _by_id(await _batch(graph, creates))
    assert {answer["status"] for answer in made.values()} == {201}

    lookups = [_lookup_request(str(n), MAILBOXES[n % 5], key) for n, key in enumerate(keys)]
    response = await _batch(graph, lookups)

    answers = _by_id(response)
    assert [a["id"] for a in response.json()["responses"]] != [r["id"] for r in lookups]
    for n, key in enumerate(keys):
        answer = answers[str(n)]
        assert answer["status"] == 200
        assert answer["headers"]["Content-Type"].startswith("application/json")
        [found] = answer["body"]["value"]
        assert found["id"] == made[f"c{n}"]["body"]["id"]
        assert found["subject"] == f"Rendez-vous {key}"
    stats = (await client.get("/_emulator/stats")).json()
    assert stats["batches"] == 2 and stats["batched_requests"] == 40
    # Each request of the batch is served as itself: counted under its own endpoint.
    assert stats["calls"]["graph.events.list"] == 20
    assert stats["calls"]["graph.events.create"] == 20


async def test_a_batch_that_breaks_the_rules_is_refused_whole(graph: httpx.AsyncClient) -> None:
    too_many = [_lookup_request(str(n), MAILBOXES[0], "k") for n in range(21)]
    assert (await _batch(graph, too_many)).status_code == 400
    twice = [_lookup_request("1", MAILBOXES[0], "k"), _lookup_request("1", MAILBOXES[1], "k")]
    assert (await _batch(graph, twice)).status_code == 400
    later = [
        {**_lookup_request("1", MAILBOXES[0], "k"), "dependsOn": ["2"]},
        _lookup_request("2", MAILBOXES[0], "k"),
    ]
    assert (await _batch(graph, later)).status_code == 400
    assert (await graph.post("/$batch", json={"value": []})).status_code == 400

    # A request's own mistake is that request's 400, not the batch's.
    no_type = {**_create_request("1", MAILBOXES[0], "k"), "headers": {}}
    answers = _by_id(await _batch(graph, [no_type, _lookup_request("2", MAILBOXES[0], "k")]))
    assert answers["1"]["status"] == 400
    assert answers["2"]["status"] == 200


async def test_a_request_throttled_inside_a_batch_gets_its_own_429_and_retry_after(
    graph: httpx.AsyncClient, client: httpx.AsyncClient
) -> None:
    script = {"subject": "slow", "endpoint": "graph.events.create", "outcomes": ["429"]}
    await client.post("/_emulator/faults/script", json={**script, "retry_after_seconds": 2.5})
    await client.post(
        "/_emulator/faults/script",
        json={"subject": "down", "endpoint": "graph.events.create", "outcomes": ["503"]},
    )
    requests = [
        _create_request("a", MAILBOXES[0], "slow"),
        _create_request("b", MAILBOXES[0], "down"),
        _create_request("c", MAILBOXES[0], "fine"),
    ]

    answers = _by_id(await _batch(graph, requests))

    assert answers["a"]["status"] == 429
    assert answers["a"]["headers"]["Retry-After"] == "2.5"
    assert answers["a"]["body"]["error"]["code"] == "TooManyRequests"
    assert answers["b"]["status"] == 503
    assert answers["b"]["headers"]["Retry-After"] == "1"  # the configured one
    assert answers["c"]["status"] == 201
    events = (await client.get("/_emulator/stats")).json()["events_per_transaction_id"]
    assert events == {"fine": 1}


async def test_commit_then_504_inside_a_batch_made_the_event_its_retry_finds(
    graph: httpx.AsyncClient, client: httpx.AsyncClient
) -> None:
    await client.post(
        "/_emulator/faults/script",
        json={
            "subject": "lost",
            "endpoint": "graph.events.create",
            "outcomes": ["commit-then-504"],
        },
    )
    first = _by_id(await _batch(graph, [_create_request("1", MAILBOXES[0], "lost")]))
    assert first["1"]["status"] == 504

    again = _by_id(await _batch(graph, [_create_request("1", MAILBOXES[0], "lost")]))

    assert again["1"]["status"] == 201
    stats = (await client.get("/_emulator/stats")).json()
    assert stats["live_events_per_external_id"] == {"lost": 1}
    assert stats["transaction_replays"] == {"lost": 1}


async def test_outlook_runs_at_most_four_requests_of_a_batch_at_once(
    graph: httpx.AsyncClient, client: httpx.AsyncClient
) -> None:
    await client.post("/_emulator/faults", json={"latency_ms": 50, "endpoints": ["graph.events"]})
    # Twenty look-ups over five mailboxes: no mailbox's own limit is in play.
    lookups = [_lookup_request(str(n), MAILBOXES[n % 5], f"k{n}") for n in range(20)]

    answers = _by_id(await _batch(graph, lookups))

    assert {a["status"] for a in answers.values()} == {200}
    stats = (await client.get("/_emulator/stats")).json()
    assert stats["max_in_flight_total"] == 4


async def test_a_mailbox_over_its_limit_gets_429_inside_the_batches(
    graph: httpx.AsyncClient, client: httpx.AsyncClient
) -> None:
    await client.post(
        "/_emulator/faults",
        json={"latency_ms": 200, "endpoints": ["graph.events"], "retry_after_seconds": 0.75},
    )
    # Two batches at once, four look-ups each, all on one mailbox: eight in flight, four allowed.
    batches = [
        [_lookup_request(f"{b}-{n}", MAILBOXES[0], f"k{n}") for n in range(4)] for b in range(2)
    ]

    responses = await asyncio.gather(*(_batch(graph, batch) for batch in batches))

    answers = [a for r in responses for a in _by_id(r).values()]
    throttled = [a for a in answers if a["status"] == 429]
    assert throttled and len(throttled) + sum(a["status"] == 200 for a in answers) == 8
    for answer in throttled:
        assert answer["body"]["error"]["code"] == "ApplicationThrottled"
        assert answer["headers"]["Retry-After"] == "0.75"
    stats = (await client.get("/_emulator/stats")).json()
    assert stats["concurrency_throttled"][MAILBOXES[0]] == len(throttled)


async def test_depends_on_orders_and_fails_dependants_with_424(
    graph: httpx.AsyncClient,
) -> None:
    missing = {"id": "1", "method": "GET", "url": f"/users/{MAILBOXES[0]}/events/nope"}
    requests = [
        missing,
        {**_create_request("2", MAILBOXES[0], "after-a-failure"), "dependsOn": ["1"]},
        {**_lookup_request("3", MAILBOXES[0], "k"), "dependsOn": ["2"]},
    ]

    answers = _by_id(await _batch(graph, requests))

    assert answers["1"]["status"] == 404
    assert answers["2"]["status"] == 424
    assert answers["3"]["status"] == 424

    created = [
        _create_request("1", MAILBOXES[0], "first"),
        _lookup_request("2", MAILBOXES[0], "first"),
    ]
    created[1]["dependsOn"] = ["1"]
    ordered = _by_id(await _batch(graph, created))
    # Run after the creation: the look-up sees it (ordering, not the creation's answer).
    assert ordered["2"]["body"]["value"][0]["id"] == ordered["1"]["body"]["id"]


async def test_lookups_follow_changes_through_the_indexes(
    graph: httpx.AsyncClient,
) -> None:
    async def found(key: str) -> list[str]:
        answers = _by_id(await _batch(graph, [_lookup_request("1", MAILBOXES[1], key)]))
        return [e["id"] for e in answers["1"]["body"]["value"]]

    made = (await graph.post(f"/users/{MAILBOXES[1]}/events", json=_new_event("old"))).json()
    assert await found("old") == [made["id"]]
    assert await found("OLD") == [made["id"]]  # values match in any case, as in Graph

    patched = await graph.patch(
        f"/users/{MAILBOXES[1]}/events/{made['id']}",
        json={"singleValueExtendedProperties": [{"id": EXTERNAL_ID, "value": "new"}]},
    )
    assert patched.status_code == 200
    assert await found("old") == []
    assert await found("new") == [made["id"]]

    assert (await graph.delete(f"/users/{MAILBOXES[1]}/events/{made['id']}")).status_code == 204
    assert await found("new") == []
    # A deleted event's transactionId makes a new event, not the old one.
    remade = (await graph.post(f"/users/{MAILBOXES[1]}/events", json=_new_event("old"))).json()
    assert remade["id"] != made["id"]
    # Another mailbox's event is not this one's.
    assert (
        _by_id(await _batch(graph, [_lookup_request("1", MAILBOXES[2], "old")]))["1"]["body"][
            "value"
        ]
        == []
    )


async def test_an_online_meeting_has_only_graph_v1_properties(
    graph: httpx.AsyncClient,
) -> None:
    event = (await graph.post(f"/users/{MAILBOXES[0]}/events", json=_new_event("v1"))).json()
    join_url = event["onlineMeeting"]["joinUrl"]
    found = await graph.get(
        f"/users/{MAILBOXES[0]}/onlineMeetings", params={"$filter": f"JoinWebUrl eq '{join_url}'"}
    )
    [meeting] = found.json()["value"]

    assert set(meeting) <= V1_MEETING_PROPERTIES
    for beta_only in ("joinUrl", "autoAdmittedUsers", "anonymizeIdentityForRoles", "meetingInfo"):
        assert beta_only not in meeting
    assert "meetingCode" not in meeting  # exists in no version
    assert "identityProvider" not in meeting["participants"]["organizer"]["identity"]["user"]
    # What meetings reads is there.
    assert meeting["joinWebUrl"] == join_url
    assert meeting["joinMeetingIdSettings"]["joinMeetingId"]
    assert meeting["audioConferencing"]["conferenceId"]
    got = await graph.get(f"/users/{MAILBOXES[0]}/onlineMeetings/{meeting['id']}")
    assert set(got.json()) - {"@odata.context"} <= V1_MEETING_PROPERTIES
    # A beta-only property cannot be set either.
    refused = await graph.patch(
        f"/users/{MAILBOXES[0]}/onlineMeetings/{meeting['id']}",
        json={"anonymizeIdentityForRoles": ["attendee"]},
    )
    assert refused.status_code == 400


# Graph v1.0's documented properties, written from Microsoft's reference pages (not from the
# emulator), to compare the emulator's answer with:
# https://learn.microsoft.com/en-us/graph/api/resources/onlinemeeting?view=graph-rest-1.0
# (onlineMeeting and what it inherits from onlineMeetingBase; attendeeReport is a stream, never
# in the JSON) and https://learn.microsoft.com/en-us/graph/api/resources/audioconferencing
DOCUMENTED_V1_ONLINE_MEETING = frozenset(
    """allowAttendeeToEnableCamera allowAttendeeToEnableMic allowBreakoutRooms
    allowCopyingAndSharingMeetingContent allowedLobbyAdmitters allowedPresenters allowLiveShare
    allowMeetingChat allowParticipantsToChangeName allowPowerPointSharing allowRecording
    allowTeamworkReactions allowTranscription allowWhiteboard audioConferencing
    broadcastSettings chatInfo chatRestrictions creationDateTime endDateTime expiryDateTime
    externalId id isBroadcast isEndToEndEncryptionEnabled isEntryExitAnnounced joinInformation
    joinMeetingIdSettings joinWebUrl lobbyBypassSettings meetingOptionsWebUrl
    meetingSpokenLanguageTag meetingTemplateId participants recordAutomatically
    sensitivityLabelAssignment shareMeetingChatHistoryDefault startDateTime subject
    videoTeleconferenceId watermarkProtection""".split()
)
DOCUMENTED_V1_AUDIO_CONFERENCING = frozenset(
    {"conferenceId", "dialinUrl", "tollFreeNumbers", "tollNumbers", "tollFreeNumber", "tollNumber"}
)


def off_v1_contract(meeting: dict[str, Any]) -> list[str]:
    """What an onlineMeeting answer holds beyond Graph v1.0's documented shape."""
    wrong = sorted(set(meeting) - {"@odata.context"} - DOCUMENTED_V1_ONLINE_MEETING)
    audio = meeting.get("audioConferencing")
    if audio is not None:
        wrong += [
            f"audioConferencing.{key}"
            for key in sorted(set(audio) - DOCUMENTED_V1_AUDIO_CONFERENCING)
        ]
    return wrong


async def test_online_meeting_keys_are_v1_documented_and_dial_in_only_with_audio_conferencing(
    graph: httpx.AsyncClient, client: httpx.AsyncClient
) -> None:
    assert V1_MEETING_PROPERTIES <= DOCUMENTED_V1_ONLINE_MEETING
    without = MAILBOXES[3]
    set_up = await client.post(f"/_emulator/users/{without}", json={"audio_conferencing": False})
    assert set_up.status_code == 200
    answers = {}
    for mailbox in (MAILBOXES[2], without):
        event = (await graph.post(f"/users/{mailbox}/events", json=_new_event("dial"))).json()
        found = await graph.get(
            f"/users/{mailbox}/onlineMeetings",
            params={"$filter": f"JoinWebUrl eq '{event['onlineMeeting']['joinUrl']}'"},
        )
        [meeting] = found.json()["value"]
        got = await graph.get(f"/users/{mailbox}/onlineMeetings/{meeting['id']}")
        assert off_v1_contract(meeting) == off_v1_contract(got.json()) == []
        answers[mailbox] = got.json()
    audio = answers[MAILBOXES[2]]["audioConferencing"]
    assert audio["conferenceId"] and audio["tollNumbers"] and audio["dialinUrl"]
    assert answers[without]["audioConferencing"] is None


def test_the_v1_check_sees_a_beta_property_and_an_undocumented_dial_in_key() -> None:
    meeting = {"id": "m", "joinUrl": "beta", "audioConferencing": {"conferenceId": "1", "pin": "2"}}
    assert off_v1_contract(meeting) == ["joinUrl", "audioConferencing.pin"]


async def test_the_emulator_counts_the_connections_graph_calls_came_on(
    client: httpx.AsyncClient, graph: httpx.AsyncClient, emulator: RunningEmulator
) -> None:
    url = f"/users/{MAILBOXES[0]}/events"
    for _ in range(5):
        assert (await graph.get(url)).status_code == 200
    assert (await client.get("/_emulator/stats")).json()["connections"] == 1

    # A client that does not keep its connection opens one per call, and it shows.
    closing = {"Authorization": graph.headers["Authorization"], "Connection": "close"}
    for _ in range(3):
        async with httpx.AsyncClient(verify=emulator.ca.ssl_context(), trust_env=False) as once:
            answer = await once.get(f"{emulator.base_url}/v1.0{url}", headers=closing)
            assert answer.status_code == 200
    assert (await client.get("/_emulator/stats")).json()["connections"] == 4


async def test_a_batch_is_answered_by_the_handlers_not_by_the_app_once_per_request() -> None:
    """Each request of a `$batch` goes to its handler directly (issue 20: a trip through the
    whole app per request was most of the emulator's CPU per meeting): the app is entered once
    for the batch, and each request still passes the front door, counted as itself."""
    app = create_app(EmulatorSettings())
    entered = 0

    class CountEntries:
        def __init__(self, app: ASGIApp) -> None:
            self.app = app

        async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
            nonlocal entered
            entered += scope["type"] == "http"
            await self.app(scope, receive, send)

    app.add_middleware(CountEntries)
    state: EmulatorState = app.state.emulator
    token = state.tokens.issue(
        state.apps[state.settings.client_id.lower()],
        now=state.now(),
        lifetime=3600,
        with_certificate=False,
    )
    creates = [_create_request(str(n), MAILBOXES[n % 5], f"direct-{n}") for n in range(20)]
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app),
        base_url="https://emulator.test/v1.0",
        headers={"Authorization": f"Bearer {token}"},
    ) as graph:
        answers = _by_id(await _batch(graph, creates))

    assert {answer["status"] for answer in answers.values()} == {201}
    assert entered == 1
    assert state.stats.calls["graph.events.create"] == 20
    assert state.stats.responses["graph.events.create"] == {"201": 20}
    for answer in answers.values():
        assert answer["headers"]["Content-Type"].startswith("application/json;odata.metadata")
        assert answer["headers"]["Request-Id"] == answer["headers"]["Client-Request-Id"]


async def test_a_batch_answers_content_that_is_not_json_in_base64(
    graph: httpx.AsyncClient, client: httpx.AsyncClient
) -> None:
    meeting_id = await _meeting_id(graph)
    path = f"/users/{ORGANIZER}/onlineMeetings/{meeting_id}/recordings"
    await client.post(
        f"/_emulator/online-meetings/{meeting_id}/recordings", json={"recordings": [{}]}
    )
    [recording] = (await graph.get(path)).json()["value"]
    alone = await graph.get(f"{path}/{recording['id']}/content")

    answers = _by_id(
        await _batch(
            graph, [{"id": "1", "method": "GET", "url": f"{path}/{recording['id']}/content"}]
        )
    )

    assert answers["1"]["status"] == 200
    assert answers["1"]["headers"]["Content-Type"] == alone.headers["content-type"] == "video/mp4"
    assert base64.b64decode(answers["1"]["body"]) == alone.content
