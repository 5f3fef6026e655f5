"""Entra ID's sign-in of a user (OpenID Connect authorisation code with PKCE), as booking's
advisor page uses it through msal's `initiate_auth_code_flow` / `acquire_token_by_auth_code_flow`.

`GET /{tenant}/oauth2/v2.0/authorize` checks the app registration, its redirect URI and the
PKCE challenge (S256 only, as Entra requires for public and SPA clients and booking always
sends), then shows a sign-in form: a user per advisor, named by their Entra object id (a GUID,
the id booking keeps for the advisor) or a user principal name. Its POST sends the browser back
to the redirect URI with a one-time code (10 minutes). The token endpoint (entra.py) redeems it
with the client's secret and the PKCE verifier for an id_token whose `oid` is that user, `aud`
the client, `nonce` the authorize request's, `iss` the discovery document's issuer.
"""

from __future__ import annotations

import base64
import datetime as dt
import hashlib
import html
import json
import secrets
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qsl, urlencode

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response

from visio_fakes.graph_emulator.errors import EntraError
from visio_fakes.graph_emulator.settings import AppRegistration
from visio_fakes.graph_emulator.state import EmulatorState
from visio_fakes.graph_emulator.tokens import b64url_encode
from visio_fakes.graph_emulator.users import object_id, user_address

router = APIRouter()

CODE_LIFETIME = dt.timedelta(minutes=10)
_CARRIED = ("client_id", "redirect_uri", "state", "nonce", "code_challenge", "scope")


@dataclass(frozen=True)
class IssuedCode:
    client_id: str
    redirect_uri: str
    code_challenge: str
    nonce: str | None
    scope: str
    oid: str
    username: str
    expires_at: dt.datetime


def _state(request: Request) -> EmulatorState:
    state: EmulatorState = request.app.state.emulator
    return state


def _codes(state: EmulatorState) -> dict[str, IssuedCode]:
    codes: dict[str, IssuedCode] = state.sign_in_codes
    return codes


def registered_app(state: EmulatorState, client_id: str | None) -> AppRegistration:
    """The tenant's app registration of that client id, or Entra's AADSTS700016."""
    app = state.apps.get((client_id or "").lower())
    if app is None:
        raise EntraError(
            400,
            "unauthorized_client",
            700016,
            f"Application with identifier '{client_id}' was not found in the directory "
            f"'{state.settings.tenant_id}'. This can happen if the application has not been "
            "installed by the administrator of the tenant or consented to by any user in the "
            "tenant.",
        )
    return app


def _registered(state: EmulatorState, client_id: str | None, redirect_uri: str | None) -> None:
    app = registered_app(state, client_id)
    if not redirect_uri or (app.redirect_uris and redirect_uri not in app.redirect_uris):
        raise EntraError(
            400,
            "invalid_request",
            50011,
            f"The redirect URI '{redirect_uri}' specified in the request does not match the "
            f"redirect URIs configured for the application '{client_id}'.",
        )


def _check_authorize(state: EmulatorState, params: dict[str, str]) -> None:
    _registered(state, params.get("client_id"), params.get("redirect_uri"))
    if params.get("response_type") not in (None, "code"):
        raise EntraError(
            400, "unsupported_response_type", 700054, "response_type must be 'code' here."
        )
    if not params.get("code_challenge") or params.get("code_challenge_method") != "S256":
        raise EntraError(
            400,
            "invalid_request",
            9002325,
            "Proof Key for Code Exchange is required: send code_challenge with "
            "code_challenge_method=S256.",
        )


@router.get("/{tenant}/oauth2/v2.0/authorize", name="entra.authorize")
async def authorize(tenant: str, request: Request) -> Response:
    from visio_fakes.graph_emulator.entra import check_tenant

    state = _state(request)
    check_tenant(state, tenant)
    params = dict(request.query_params)
    _check_authorize(state, params)
    hidden = "".join(
        f'<input type="hidden" name="{name}" value="{html.escape(params.get(name, ""))}">'
        for name in _CARRIED
    )
    hint = html.escape(params.get("login_hint", ""))
    page = (
        '<!doctype html><html lang="fr"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        "<title>Connexion (émulateur Entra ID)</title></head><body>"
        "<h1>Connexion à votre compte professionnel</h1>"
        "<p>Émulateur Entra ID de Visio RDV : saisissez l'identifiant d'objet Entra (GUID) "
        "ou l'adresse du conseiller.</p>"
        f'<form method="post" action="authorize">{hidden}'
        f'<label for="user">Compte</label> <input id="user" name="user" value="{hint}" '
        'required autocomplete="username"> <button type="submit">Se connecter</button>'
        "</form></body></html>"
    )
    return HTMLResponse(page, headers={"Cache-Control": "no-store"})


@router.post("/{tenant}/oauth2/v2.0/authorize", name="entra.authorize_submit")
async def authorize_submit(tenant: str, request: Request) -> Response:
    from visio_fakes.graph_emulator.entra import check_tenant

    state = _state(request)
    check_tenant(state, tenant)
    body = (await request.body()).decode("utf-8", errors="replace")
    form = dict(parse_qsl(body, keep_blank_values=True))
    _check_authorize(state, {**form, "code_challenge_method": "S256"})
    user = form.get("user", "").strip()
    if not user:
        raise EntraError(400, "invalid_request", 50126, "Enter the user's account.")
    code = secrets.token_urlsafe(32)
    _codes(state)[code] = IssuedCode(
        client_id=form["client_id"].lower(),
        redirect_uri=form["redirect_uri"],
        code_challenge=form["code_challenge"],
        nonce=form.get("nonce") or None,
        scope=form.get("scope", "openid profile"),
        oid=object_id(user),
        username=user_address(state, user),
        expires_at=state.now() + CODE_LIFETIME,
    )
    back = {"code": code, "session_state": secrets.token_hex(8)}
    if form.get("state"):
        back["state"] = form["state"]
    return RedirectResponse(f"{form['redirect_uri']}?{urlencode(back)}", status_code=302)


def redeem_code(state: EmulatorState, app: AppRegistration, form: dict[str, str]) -> dict[str, Any]:
    """The token response for an authorisation code (the client already authenticated)."""
    issued = _codes(state).pop(form.get("code", ""), None)
    if issued is None or issued.expires_at < state.now() or issued.client_id != app.client_id:
        raise EntraError(
            400,
            "invalid_grant",
            70008,
            "The provided authorization code or refresh token has expired or was already "
            "redeemed. Send a new interactive authorization request for this user.",
        )
    if form.get("redirect_uri") != issued.redirect_uri:
        raise EntraError(
            400, "invalid_grant", 50148, "The redirect_uri does not match the one authorised."
        )
    verifier = form.get("code_verifier", "")
    challenge = b64url_encode(hashlib.sha256(verifier.encode()).digest())
    if not verifier or not secrets.compare_digest(challenge, issued.code_challenge):
        raise EntraError(
            400, "invalid_grant", 501481, "The Code_Verifier does not match the code_challenge."
        )
    now = int(state.now().timestamp())
    lifetime = state.settings.token_lifetime_seconds
    tenant_id = state.settings.tenant_id
    claims = {
        "aud": app.client_id,
        "iss": f"{state.base_url}/{tenant_id}/v2.0",
        "iat": now,
        "nbf": now,
        "exp": now + lifetime,
        "name": f"Conseiller {issued.oid[:8]}",
        "oid": issued.oid,
        "preferred_username": issued.username,
        "sub": hashlib.sha256(f"{app.client_id}:{issued.oid}".encode()).hexdigest()[:43],
        "tid": tenant_id,
        "ver": "2.0",
        **({"nonce": issued.nonce} if issued.nonce else {}),
    }
    client_info = json.dumps({"uid": issued.oid, "utid": tenant_id}).encode()
    return {
        "token_type": "Bearer",
        "scope": issued.scope,
        "expires_in": lifetime,
        "ext_expires_in": lifetime,
        "access_token": secrets.token_urlsafe(32),
        "id_token": state.tokens.sign(claims),
        "client_info": base64.urlsafe_b64encode(client_info).decode().rstrip("="),
    }
