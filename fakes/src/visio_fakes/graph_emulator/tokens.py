"""Access tokens the emulator issues and Graph accepts, and client assertions it checks.

Tokens look like Entra's v1 app-only tokens (a JWT with aud, iss, appid, tid, roles, exp)
so a curious client can decode them, but are HMAC-signed with a per-process key: clients
must treat Graph tokens as opaque anyway, and this keeps the emulator dependency-free.
"""

from __future__ import annotations

import base64
import binascii
import datetime as dt
import hashlib
import hmac
import json
import secrets
import time
import uuid
from dataclasses import dataclass
from typing import Any

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import padding, rsa

from visio_fakes.graph_emulator.errors import EntraError, GraphError
from visio_fakes.graph_emulator.settings import AppRegistration

GRAPH_RESOURCE = "https://graph.microsoft.com"
GRAPH_APP_ID = "00000003-0000-0000-c000-000000000000"
CLIENT_ASSERTION_TYPE = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"
# Entra tolerates this much clock difference on client assertions.
ASSERTION_CLOCK_SKEW = 300


def b64url_decode(segment: str) -> bytes:
    return base64.urlsafe_b64decode(segment + "=" * (-len(segment) % 4))


def b64url_encode(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


def decode_jwt_part(segment: str) -> dict[str, Any]:
    value = json.loads(b64url_decode(segment))
    if not isinstance(value, dict):
        raise ValueError("JWT part is not a JSON object")
    return value


@dataclass(frozen=True)
class TokenClaims:
    app_id: str
    tenant_id: str
    roles: frozenset[str]
    expires_at: int


class TokenService:
    def __init__(self, tenant_id: str, signing_key: bytes | None = None) -> None:
        self.tenant_id = tenant_id
        self._key = signing_key or secrets.token_bytes(32)
        # Tokens whose signature and audience were checked, by their text: a client sends the
        # same token with each of its calls, and checking it again is the same work for the
        # same answer (its expiry is still checked each time, on the emulator's clock).
        self._checked: dict[str, TokenClaims] = {}

    def issue(
        self, app: AppRegistration, *, now: dt.datetime, lifetime: int, with_certificate: bool
    ) -> str:
        issued_at = int(now.timestamp())
        header = {"typ": "JWT", "alg": "HS256", "kid": "visio-rdv-graph-emulator"}
        payload = {
            "aud": GRAPH_RESOURCE,
            "iss": f"https://sts.windows.net/{self.tenant_id}/",
            "iat": issued_at,
            "nbf": issued_at,
            "exp": issued_at + lifetime,
            "app_displayname": app.display_name,
            "appid": app.client_id,
            "appidacr": "2" if with_certificate else "1",
            "idp": f"https://sts.windows.net/{self.tenant_id}/",
            "idtyp": "app",
            "oid": str(uuid.uuid5(uuid.NAMESPACE_URL, f"sp:{app.client_id}")),
            "roles": sorted(app.roles),
            "sub": str(uuid.uuid5(uuid.NAMESPACE_URL, f"sp:{app.client_id}")),
            "tid": self.tenant_id,
            "uti": b64url_encode(secrets.token_bytes(16)),
            "ver": "1.0",
        }
        signing_input = ".".join(
            b64url_encode(json.dumps(part, separators=(",", ":")).encode())
            for part in (header, payload)
        )
        signature = hmac.new(self._key, signing_input.encode(), hashlib.sha256).digest()
        return f"{signing_input}.{b64url_encode(signature)}"

    def sign(self, claims: dict[str, Any]) -> str:
        """A JWT of these claims, HMAC-signed like the access tokens (an id_token: its client
        takes it from the token endpoint over TLS, OpenID Connect Core 3.1.3.7)."""
        header = {"typ": "JWT", "alg": "HS256", "kid": "visio-rdv-graph-emulator"}
        signing_input = ".".join(
            b64url_encode(json.dumps(part, separators=(",", ":")).encode())
            for part in (header, claims)
        )
        signature = hmac.new(self._key, signing_input.encode(), hashlib.sha256).digest()
        return f"{signing_input}.{b64url_encode(signature)}"

    def verify(self, authorization: str | None, *, now: dt.datetime) -> TokenClaims:
        """Check a Graph `Authorization` header; raise Graph's 401 on any problem."""
        if not authorization or not authorization.strip():
            raise _unauthenticated("Access token is empty.")
        scheme, _, token = authorization.strip().partition(" ")
        token = token.strip()
        if scheme.lower() != "bearer" or not token:
            raise _unauthenticated("Access token is empty.")
        claims = self._checked.get(token)
        if claims is None:
            claims = self._check(token)
            if len(self._checked) >= 1024:
                self._checked.clear()  # a bound, not a policy: old tokens are checked again
            self._checked[token] = claims
        # No clock-skew allowance on purpose: tests move the emulator clock past expiry
        # and expect the very next call to be refused.
        if claims.expires_at <= int(now.timestamp()):
            raise _unauthenticated("Lifetime validation failed, the token is expired.")
        return claims

    def _check(self, token: str) -> TokenClaims:
        """The claims of a token this service signed for Graph (else Graph's 401)."""
        parts = token.split(".")
        if len(parts) != 3:
            raise _unauthenticated("IDX14100: JWT is not well formed, there are no dots (.).")
        expected = hmac.new(self._key, f"{parts[0]}.{parts[1]}".encode(), hashlib.sha256).digest()
        try:
            valid_signature = hmac.compare_digest(b64url_decode(parts[2]), expected)
            payload = decode_jwt_part(parts[1])
        except (ValueError, binascii.Error):
            raise _unauthenticated("Invalid JWT token. The token is malformed.") from None
        if not valid_signature:
            raise _unauthenticated("Access token validation failure. Invalid signature.")
        if payload.get("aud") != GRAPH_RESOURCE or payload.get("tid") != self.tenant_id:
            raise _unauthenticated("Access token validation failure. Invalid audience.")
        return TokenClaims(
            app_id=str(payload.get("appid")),
            tenant_id=str(payload.get("tid")),
            roles=frozenset(payload.get("roles") or ()),
            expires_at=int(payload.get("exp", 0)),
        )


def _unauthenticated(message: str) -> GraphError:
    return GraphError(
        401,
        "InvalidAuthenticationToken",
        message,
        headers={
            "WWW-Authenticate": 'Bearer realm="", '
            'authorization_uri="https://login.microsoftonline.com/common/oauth2/authorize", '
            f'client_id="{GRAPH_APP_ID}"'
        },
    )


def check_client_assertion(
    assertion: str, app: AppRegistration, *, accepted_audiences: set[str]
) -> None:
    """Validate a private_key_jwt client assertion like Entra does (raises EntraError).

    Lifetimes are checked against the real clock: the client minted the assertion with
    it, even when a test moved the emulator's clock.
    """
    parts = assertion.split(".")
    try:
        if len(parts) != 3:
            raise ValueError("not three parts")
        header = decode_jwt_part(parts[0])
        claims = decode_jwt_part(parts[1])
        signature = b64url_decode(parts[2])
    except (ValueError, binascii.Error):
        raise _invalid_client(50027, "JWT token is invalid or malformed.") from None
    if claims.get("aud") not in accepted_audiences:
        raise _invalid_client(
            700023,
            "Client assertion audience claim does not match Realm issuer. "
            f"Review the documentation at https://aka.ms/certCredentials . "
            f"Audience: '{claims.get('aud')}'.",
        )
    if claims.get("iss") != app.client_id or claims.get("sub") != app.client_id:
        raise _invalid_client(
            700021,
            "Client assertion application identifier doesn't match 'client_id' parameter.",
        )
    now = time.time()
    expires = claims.get("exp")
    not_before = claims.get("nbf", 0)
    if (
        not isinstance(expires, int | float)
        or expires + ASSERTION_CLOCK_SKEW < now
        or not isinstance(not_before, int | float)
        or not_before - ASSERTION_CLOCK_SKEW > now
    ):
        raise _invalid_client(700024, "Client assertion is not within its valid time range.")
    if app.certificate_pem is not None:
        _check_signature(header, f"{parts[0]}.{parts[1]}".encode(), signature, app)


def _check_signature(
    header: dict[str, Any], signing_input: bytes, signature: bytes, app: AppRegistration
) -> None:
    assert app.certificate_pem is not None
    cert = x509.load_pem_x509_certificate(app.certificate_pem.encode())
    # msal names the certificate by its SHA-256 (x5t#S256) or SHA-1 (x5t) thumbprint.
    known = {
        b64url_encode(cert.fingerprint(hashes.SHA256())),
        b64url_encode(cert.fingerprint(hashes.SHA1())),  # noqa: S303 - a thumbprint, not security
    }
    # base64url, with or without padding (msal pads).
    thumbprint = str(header.get("x5t#S256") or header.get("x5t") or "").rstrip("=")
    if thumbprint not in known:
        raise _invalid_client(
            700027,
            f"The certificate with identifier used to sign the client assertion is not "
            f"registered on application. [Reason - The key was not found., "
            f"Thumbprint of key used by client: '{thumbprint}']",
        )
    public_key = cert.public_key()
    algorithm = header.get("alg")
    try:
        if not isinstance(public_key, rsa.RSAPublicKey):
            raise InvalidSignature
        if algorithm == "RS256":
            public_key.verify(signature, signing_input, padding.PKCS1v15(), hashes.SHA256())
        elif algorithm == "PS256":
            pss = padding.PSS(mgf=padding.MGF1(hashes.SHA256()), salt_length=padding.PSS.AUTO)
            public_key.verify(signature, signing_input, pss, hashes.SHA256())
        else:
            raise InvalidSignature
    except InvalidSignature:
        raise _invalid_client(700027, "Client assertion failed signature validation.") from None


def _invalid_client(aadsts: int, description: str) -> EntraError:
    return EntraError(401, "invalid_client", aadsts, description)
