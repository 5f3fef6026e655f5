"""Entra ID (v2.0 endpoints): OpenID discovery and the token endpoint (client credentials, and
the authorisation codes of a user's sign-in, see signin.py).

msal reads `authorization_endpoint` and `token_endpoint` (and `issuer`) from the discovery
document, then posts client credentials to the token endpoint; both point back at this
server so a real `ConfidentialClientApplication` works unchanged against the emulator.
"""

from __future__ import annotations

import base64
import binascii
from typing import Any
from urllib.parse import parse_qsl, unquote

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse

from visio_fakes.graph_emulator.errors import EntraError
from visio_fakes.graph_emulator.settings import AppRegistration
from visio_fakes.graph_emulator.signin import redeem_code, registered_app
from visio_fakes.graph_emulator.state import EmulatorState
from visio_fakes.graph_emulator.tokens import (
    CLIENT_ASSERTION_TYPE,
    GRAPH_APP_ID,
    GRAPH_RESOURCE,
    check_client_assertion,
)

router = APIRouter()

GRAPH_SCOPES = {
    f"{GRAPH_RESOURCE}/.default",
    f"{GRAPH_RESOURCE}//.default",
    f"{GRAPH_APP_ID}/.default",
}


def _state(request: Request) -> EmulatorState:
    state: EmulatorState = request.app.state.emulator
    return state


def check_tenant(state: EmulatorState, tenant: str) -> None:
    known = {state.settings.tenant_id.lower(), state.settings.tenant_domain.lower()}
    if tenant.lower() not in known:
        raise EntraError(
            400,
            "invalid_tenant" if tenant.count("-") == 4 else "invalid_request",
            90002,
            f"Tenant '{tenant}' not found. Check to make sure you have the correct tenant ID "
            "and are signing into the correct cloud.",
        )


@router.get("/{tenant}/v2.0/.well-known/openid-configuration", name="entra.openid_configuration")
async def openid_configuration(tenant: str, request: Request) -> JSONResponse:
    state = _state(request)
    check_tenant(state, tenant)
    base = state.base_url
    tenant_id = state.settings.tenant_id
    return JSONResponse(
        {
            "token_endpoint": f"{base}/{tenant_id}/oauth2/v2.0/token",
            "token_endpoint_auth_methods_supported": [
                "client_secret_post",
                "private_key_jwt",
                "client_secret_basic",
            ],
            "jwks_uri": f"{base}/{tenant_id}/discovery/v2.0/keys",
            "response_modes_supported": ["query", "fragment", "form_post"],
            "subject_types_supported": ["pairwise"],
            "id_token_signing_alg_values_supported": ["RS256"],
            "response_types_supported": ["code", "id_token", "code id_token", "id_token token"],
            "scopes_supported": ["openid", "profile", "email", "offline_access"],
            "issuer": f"{base}/{tenant_id}/v2.0",
            "request_uri_parameter_supported": False,
            "userinfo_endpoint": f"{base}/oidc/userinfo",
            "authorization_endpoint": f"{base}/{tenant_id}/oauth2/v2.0/authorize",
            "device_authorization_endpoint": f"{base}/{tenant_id}/oauth2/v2.0/devicecode",
            "http_logout_supported": True,
            "frontchannel_logout_supported": True,
            "end_session_endpoint": f"{base}/{tenant_id}/oauth2/v2.0/logout",
            "claims_supported": [
                "sub",
                "iss",
                "cloud_instance_name",
                "cloud_instance_host_name",
                "cloud_graph_host_name",
                "msgraph_host",
                "aud",
                "exp",
                "iat",
                "auth_time",
                "acr",
                "nonce",
                "preferred_username",
                "name",
                "tid",
                "ver",
                "at_hash",
                "c_hash",
                "email",
            ],
            "kerberos_endpoint": f"{base}/{tenant_id}/kerberos",
            "tenant_region_scope": "EU",
            "cloud_instance_name": "microsoftonline.com",
            "cloud_graph_host_name": "graph.windows.net",
            "msgraph_host": base.removeprefix("https://"),
            "rbac_url": "https://pas.windows.net",
        }
    )


@router.get("/{tenant}/discovery/v2.0/keys", name="entra.keys")
async def signing_keys(tenant: str, request: Request) -> JSONResponse:
    check_tenant(_state(request), tenant)
    # Access tokens are HMAC-signed with a private key: nothing public to publish.
    return JSONResponse({"keys": []})


@router.post("/{tenant}/oauth2/v2.0/token", name="entra.token")
async def token(tenant: str, request: Request) -> JSONResponse:
    state = _state(request)
    check_tenant(state, tenant)
    form = await _form(request)
    basic_id, basic_secret = _basic_credentials(request.headers.get("authorization"))

    grant_type = _required(form, "grant_type")
    if grant_type not in ("client_credentials", "authorization_code"):
        raise EntraError(
            400,
            "unsupported_grant_type",
            70003,
            f"The app requested an unsupported grant type '{grant_type}'.",
        )
    client_id = form.get("client_id") or basic_id
    if not client_id:
        raise _missing("client_id")
    app = registered_app(state, client_id)
    with_certificate = _authenticate_client(state, request, tenant, app, form, basic_secret)
    if grant_type == "authorization_code":  # a user's sign-in (signin.py)
        return JSONResponse(
            redeem_code(state, app, form),
            headers={"Cache-Control": "no-store, no-cache", "Pragma": "no-cache"},
        )
    _check_scope(state, form.get("scope"))

    lifetime = state.settings.token_lifetime_seconds
    access_token = state.tokens.issue(
        app, now=state.now(), lifetime=lifetime, with_certificate=with_certificate
    )
    body: dict[str, Any] = {
        "token_type": "Bearer",
        "expires_in": lifetime,
        "ext_expires_in": lifetime,
        "access_token": access_token,
    }
    return JSONResponse(body, headers={"Cache-Control": "no-store, no-cache", "Pragma": "no-cache"})


def _authenticate_client(
    state: EmulatorState,
    request: Request,
    tenant: str,
    app: AppRegistration,
    form: dict[str, str],
    basic_secret: str | None,
) -> bool:
    """Check the secret or client assertion; True when a certificate was used."""
    assertion = form.get("client_assertion")
    secret = form.get("client_secret") or basic_secret
    if assertion:
        if form.get("client_assertion_type") != CLIENT_ASSERTION_TYPE:
            raise EntraError(
                400,
                "invalid_request",
                50027,
                f"Invalid client_assertion_type; expected '{CLIENT_ASSERTION_TYPE}'.",
            )
        token_url = str(request.url.replace(query=""))
        audiences = {
            token_url,
            f"{state.base_url}/{tenant}/oauth2/v2.0/token",
            f"{state.base_url}/{state.settings.tenant_id}/oauth2/v2.0/token",
            f"{state.base_url}/{state.settings.tenant_id}/v2.0",
        }
        check_client_assertion(assertion, app, accepted_audiences=audiences)
        return True
    if not secret:
        raise EntraError(
            401,
            "invalid_client",
            7000218,
            "The request body must contain the following parameter: 'client_assertion' or "
            "'client_secret'.",
        )
    if app.client_secret is None or secret != app.client_secret:
        raise EntraError(
            401,
            "invalid_client",
            7000215,
            "Invalid client secret provided. Ensure the secret being sent in the request is "
            "the client secret value, not the client secret ID, for a secret added to app "
            f"'{app.client_id}'.",
        )
    return False


def _check_scope(state: EmulatorState, scope: str | None) -> None:
    if not scope:
        raise _missing("scope")
    scopes = scope.split()
    if len(scopes) == 1 and scopes[0] in GRAPH_SCOPES:
        return
    resources = {s.rsplit("/.default", 1)[0].rstrip("/") for s in scopes if s.endswith("/.default")}
    if len(scopes) == 1 and resources and not resources & {GRAPH_RESOURCE, GRAPH_APP_ID}:
        raise EntraError(
            400,
            "invalid_resource",
            500011,
            f"The resource principal named {resources.pop()} was not found in the tenant "
            f"named {state.settings.tenant_id}.",
        )
    raise EntraError(
        400,
        "invalid_scope",
        1002012,
        f"The provided value for scope {scope} is not valid. Client credential flows must "
        "have a scope value with /.default suffixed to the resource identifier (application "
        "ID URI).",
    )


async def _form(request: Request) -> dict[str, str]:
    """The token request's form fields (OAuth2 mandates x-www-form-urlencoded)."""
    content_type = request.headers.get("content-type", "")
    if not content_type.lower().startswith("application/x-www-form-urlencoded"):
        raise EntraError(
            400,
            "invalid_request",
            900144,
            "The request body must contain the following parameter: 'grant_type'.",
        )
    body = (await request.body()).decode("utf-8", errors="replace")
    return dict(parse_qsl(body, keep_blank_values=True))


def _required(form: dict[str, str], name: str) -> str:
    value = form.get(name)
    if not value:
        raise _missing(name)
    return value


def _missing(name: str) -> EntraError:
    return EntraError(
        400,
        "invalid_request",
        900144,
        f"The request body must contain the following parameter: '{name}'.",
    )


def _basic_credentials(header: str | None) -> tuple[str | None, str | None]:
    """client_secret_basic: client id and secret in an HTTP Basic header, form-encoded."""
    if not header or not header.lower().startswith("basic "):
        return None, None
    try:
        decoded = base64.b64decode(header[6:].strip(), validate=True).decode()
    except (ValueError, binascii.Error):
        return None, None
    client_id, _, secret = decoded.partition(":")
    return unquote(client_id), unquote(secret)
