"""Advisors sign in with Entra ID: OpenID Connect authorisation code with PKCE, through msal
(`initiate_auth_code_flow`, then `acquire_token_by_auth_code_flow`, which checks the state and
the nonce and redeems the code with the PKCE verifier and the client secret, server-side).

The flow in progress and, once signed in, the session live in two cookies that booking signs
(HMAC-SHA256 under BOOKING_ADVISOR_SESSION_KEY): HttpOnly, SameSite=Lax, Secure whenever the
redirect URI is https (always in production). No server state: a session says who (the `oid`
claim, the advisor's Entra object id), until when, and a random id the forms' CSRF tokens are
bound to. The id_token comes straight from the token endpoint over TLS, so msal's checks of its
issuer, audience, expiry and nonce are the ones OpenID Connect asks for (Core 3.1.3.7).
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import json
import secrets
import threading
import time
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

import msal
import requests
from fastapi import Request
from fastapi.responses import Response

from visio_booking.settings import BookingSettings

SESSION_COOKIE = "visio_conseiller"
FLOW_COOKIE = "visio_conseiller_connexion"
FLOW_SECONDS = 600
MICROSOFT_AUTHORITY_HOSTS = frozenset({"login.microsoftonline.com", "login.microsoftonline.us"})


class SignInFailed(Exception):
    """The sign-in did not come back as it left (state, nonce, code) or Entra refused it."""


@dataclass(frozen=True)
class AdvisorSession:
    oid: str
    name: str
    sid: str  # random, what the forms' CSRF tokens are bound to
    expires_at: int


class AdvisorSignIn:
    """One msal application per process (its constructor reads the authority's discovery
    document), made on first use; msal is blocking, so it runs in a worker thread."""

    def __init__(self, settings: BookingSettings) -> None:
        self.settings = settings
        self._key = settings.advisor_session_key.get_secret_value().encode()
        self._app: msal.ConfidentialClientApplication | None = None
        self._lock = threading.Lock()

    @property
    def secure(self) -> bool:
        return urlsplit(self.settings.advisor_redirect_uri).scheme == "https"

    def _application(self) -> msal.ConfidentialClientApplication:
        with self._lock:
            if self._app is None:
                settings = self.settings
                session = requests.Session()
                session.trust_env = False  # only the settings decide (REQUESTS_CA_BUNDLE…)
                ca = settings.advisor_ca_bundle
                session.verify = str(ca) if ca else True
                host = urlsplit(settings.advisor_authority).hostname or ""
                self._app = msal.ConfidentialClientApplication(
                    settings.advisor_client_id,
                    client_credential=settings.advisor_client_secret.get_secret_value(),
                    authority=settings.advisor_authority,
                    http_client=session,
                    instance_discovery=None if host in MICROSOFT_AUTHORITY_HOSTS else False,
                )
            return self._app

    async def start(self, back_to: str) -> tuple[str, str]:
        """The authorize URL to send the browser to, and the flow's signed cookie value."""

        def initiate() -> dict[str, Any]:
            flow: dict[str, Any] = self._application().initiate_auth_code_flow(
                scopes=[], redirect_uri=self.settings.advisor_redirect_uri
            )
            return flow

        flow = await asyncio.to_thread(initiate)
        cookie = self.sign({"flow": flow, "back": back_to, "exp": int(time.time()) + FLOW_SECONDS})
        return str(flow["auth_uri"]), cookie

    async def finish(self, flow_cookie: str | None, answer: dict[str, str]) -> tuple[str, str]:
        """The new session's cookie value and where to go back to; raises SignInFailed."""
        started = self.read(flow_cookie)
        if started is None:
            raise SignInFailed("no sign-in in progress in this browser (or it took too long)")

        def redeem() -> dict[str, Any]:
            result: dict[str, Any] = self._application().acquire_token_by_auth_code_flow(
                started["flow"], answer
            )
            return result

        try:
            result = await asyncio.to_thread(redeem)
        except (ValueError, requests.RequestException) as exc:  # msal: state or nonce mismatch
            raise SignInFailed(f"{type(exc).__name__}: {exc}") from exc
        claims = result.get("id_token_claims") or {}
        if "error" in result or not claims.get("oid"):
            raise SignInFailed(str(result.get("error_description") or result.get("error")))
        hours = self.settings.advisor_session_hours
        session = {
            "oid": str(claims["oid"]).lower(),
            "name": str(claims.get("name") or claims.get("preferred_username") or ""),
            "sid": secrets.token_urlsafe(16),
            "exp": int(time.time()) + hours * 3600,
        }
        return self.sign(session), str(started["back"])

    def session(self, request: Request) -> AdvisorSession | None:
        data = self.read(request.cookies.get(SESSION_COOKIE))
        if data is None:
            return None
        return AdvisorSession(data["oid"], data["name"], data["sid"], data["exp"])

    def csrf(self, session: AdvisorSession, appointment_id: str) -> str:
        message = f"csrf:{session.sid}:{appointment_id}".encode()
        return hmac.new(self._key, message, hashlib.sha256).hexdigest()

    def check_csrf(self, session: AdvisorSession, appointment_id: str, token: str) -> bool:
        return hmac.compare_digest(self.csrf(session, appointment_id), token)

    # --- signed cookie values ---------------------------------------------------------------

    def sign(self, data: dict[str, Any]) -> str:
        body = base64.urlsafe_b64encode(json.dumps(data, separators=(",", ":")).encode())
        mac = hmac.new(self._key, body, hashlib.sha256).hexdigest()
        return f"{body.decode()}.{mac}"

    def read(self, value: str | None) -> dict[str, Any] | None:
        """The data of a value this process's key signed and that has not expired; else None."""
        if not value or "." not in value:
            return None
        body, _, mac = value.rpartition(".")
        expected = hmac.new(self._key, body.encode(), hashlib.sha256).hexdigest()
        if not hmac.compare_digest(expected, mac):
            return None
        try:
            data: dict[str, Any] = json.loads(base64.urlsafe_b64decode(body.encode()))
        except ValueError:
            return None
        return data if int(data.get("exp", 0)) > time.time() else None

    def set_cookie(self, response: Response, name: str, value: str, seconds: int) -> None:
        response.set_cookie(
            name,
            value,
            max_age=seconds,
            path="/conseiller",
            secure=self.secure,
            httponly=True,
            samesite="lax",
        )
