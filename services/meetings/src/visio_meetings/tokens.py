"""Application tokens for Microsoft Graph, from Entra ID (client credentials, msal).

One `ConfidentialClientApplication` per process, so msal's in-memory cache is shared by every
Graph call: since msal 1.23 `acquire_token_for_client` answers from that cache until the token
nears expiry and only then asks the token endpoint. msal is blocking (requests), so each call
runs in a worker thread; the application itself is built on first use, in that thread, because
its constructor fetches the authority's OpenID configuration.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any
from urllib.parse import urlsplit

import msal
import requests
from visio_runtime.errors import Transient

from visio_meetings.settings import MeetingsSettings

log = logging.getLogger(__name__)

# Entra ID's own hosts (public and national clouds). For any other host (the emulator, an ADFS)
# msal's instance discovery would ask login.microsoftonline.com about it, and fail.
MICROSOFT_AUTHORITY_HOSTS = frozenset(
    {
        "login.microsoftonline.com",
        "login.microsoft.com",
        "login.windows.net",
        "sts.windows.net",
        "login.microsoftonline.us",
        "login.partner.microsoftonline.cn",
        "login.chinacloudapi.cn",
    }
)

# Entra ID errors worth another try; anything else is a configuration fault.
_TRANSIENT_ERRORS = frozenset({"temporarily_unavailable", "server_error"})


class TokenError(Exception):
    """Entra ID refused a token: wrong secret, client id or tenant. Not the appointment's fault;
    the consumer retries, then dead-letters, and ops replay once the configuration is fixed."""


class _Session(requests.Session):
    """A requests session with a default timeout: msal applies its own `timeout` only to the
    session it builds itself, and a token call must never hang a consumer."""

    def __init__(self, timeout: float) -> None:
        super().__init__()
        self._timeout = timeout

    def request(self, method: Any, url: Any, *args: Any, **kwargs: Any) -> Any:
        kwargs.setdefault("timeout", self._timeout)
        return super().request(method, url, *args, **kwargs)


class TokenProvider:
    def __init__(self, settings: MeetingsSettings) -> None:
        self._settings = settings
        self._scopes = [settings.graph_scope]
        self._app: msal.ConfidentialClientApplication | None = None
        self._session: requests.Session | None = None
        # One acquisition at a time: concurrent handlers at start-up share one token request.
        self._lock = asyncio.Lock()
        # The last token and until when (monotonic) it is fresh enough: every Graph call asks,
        # and msal's cache look-up, off the loop behind the lock, cost more than the call
        # itself in the bench profile. msal is asked again once the margin is reached.
        self._fresh: tuple[str, float] | None = None

    async def token(self) -> str:
        """A bearer token for Graph: the last one while it is fresh enough, else msal's (from
        its cache, or a new one)."""
        fresh = self._fresh
        if fresh is not None and time.monotonic() < fresh[1]:
            return fresh[0]
        async with self._lock:
            fresh = self._fresh
            if fresh is not None and time.monotonic() < fresh[1]:
                return fresh[0]
            asked_at = time.monotonic()
            token, expires_in = await asyncio.to_thread(self._acquire)
            fresh_for = expires_in - self._settings.token_refresh_margin_s
            self._fresh = (token, asked_at + fresh_for) if fresh_for > 0 else None
            return token

    def invalidate(self, token: str) -> None:
        """Drop `token` from msal's cache (Graph answered 401), so the next call gets a new one.

        Only that token: another call may already have replaced it with a good one.
        """
        if self._fresh is not None and self._fresh[0] == token:
            self._fresh = None
        if self._app is not None:
            self._remove_from_cache(self._app, token)

    def close(self) -> None:
        if self._session is not None:
            self._session.close()
        self._app = None
        self._session = None
        self._fresh = None

    def _acquire(self) -> tuple[str, float]:
        """The token and the seconds it still has to live."""
        app = self._application()
        result = self._call(app)
        if (
            "access_token" in result
            and result.get("token_source") == "cache"
            and int(result.get("expires_in", 0)) < self._settings.token_refresh_margin_s
        ):
            # msal keeps a token until 5 minutes before expiry; a larger margin is ours to keep.
            self._remove_from_cache(app, result["access_token"])
            result = self._call(app)
        token = result.get("access_token")
        if not isinstance(token, str):
            error = str(result.get("error", "unknown_error"))
            description = str(result.get("error_description", "")).splitlines()[0:1]
            message = f"Entra ID refused a token: {error}: {' '.join(description)}"
            if error in _TRANSIENT_ERRORS:
                raise Transient(message, dependency="graph")
            raise TokenError(message)
        if result.get("token_source") != "cache":
            log.info("meetings: new Graph token, valid %ss", result.get("expires_in"))
        return token, float(result.get("expires_in", 0))

    def _call(self, app: msal.ConfidentialClientApplication) -> dict[str, Any]:
        try:
            result: dict[str, Any] = app.acquire_token_for_client(scopes=self._scopes)
        except requests.RequestException as exc:
            raise Transient(
                f"Entra ID unreachable: {type(exc).__name__}", dependency="graph"
            ) from exc
        return result

    def _application(self) -> msal.ConfidentialClientApplication:
        if self._app is not None:
            return self._app
        settings = self._settings
        session = _Session(settings.graph_timeout_s)
        # REQUESTS_CA_BUNDLE (set on these machines) would override `verify` otherwise.
        session.trust_env = False
        session.verify = str(settings.ca_bundle) if settings.ca_bundle else True
        if settings.proxy_url:
            session.proxies = {"https": settings.proxy_url}
        host = urlsplit(settings.authority).hostname or ""
        try:
            app = msal.ConfidentialClientApplication(
                settings.client_id,
                client_credential=settings.client_credential(),
                authority=settings.authority,
                http_client=session,
                instance_discovery=None if host in MICROSOFT_AUTHORITY_HOSTS else False,
            )
        except requests.RequestException as exc:
            session.close()
            raise Transient(
                f"Entra ID unreachable: {type(exc).__name__}", dependency="graph"
            ) from exc
        except ValueError as exc:
            # msal's word for an authority whose discovery document is missing (wrong tenant).
            session.close()
            raise TokenError(str(exc)) from exc
        self._app, self._session = app, session
        return app

    def _remove_from_cache(self, app: msal.ConfidentialClientApplication, token: str) -> None:
        cache = app.token_cache
        kind = cache.CredentialType.ACCESS_TOKEN
        # search() holds the cache's lock while it yields: collect first, then remove.
        stale = [entry for entry in cache.search(kind) if entry.get("secret") == token]
        for entry in stale:
            cache.remove_at(entry)
