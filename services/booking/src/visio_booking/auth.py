"""Who is calling: `Authorization: Bearer <api key>`, looked up on every request (a revoked key
stops working at once). No key → 401; a key without the scope → 403."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import Depends, Request, Security
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from visio_runtime.problems import Problem

from visio_booking.appointments import Caller
from visio_booking.keys import ADMIN, holder_of

CHALLENGE = {"WWW-Authenticate": "Bearer"}
bearer = HTTPBearer(auto_error=False, description="Authorization: Bearer <api key>")


def require(scope: str) -> Any:
    async def check(
        request: Request,
        credentials: Annotated[HTTPAuthorizationCredentials | None, Security(bearer)],
    ) -> Caller:
        if credentials is None or credentials.scheme.lower() != "bearer":
            raise Problem(
                401, "unauthorized", "Unauthorized", "send Authorization: Bearer <key>", CHALLENGE
            )
        holder = await holder_of(request.app.state.runtime.db, credentials.credentials)
        if holder is None:
            raise Problem(
                401, "unauthorized", "Unauthorized", "unknown or revoked API key", CHALLENGE
            )
        if not holder.allows(scope):
            raise Problem(403, "forbidden", "Forbidden", f"this key lacks the scope {scope!r}")
        return Caller(
            name=holder.name, admin=ADMIN in holder.scopes, key_id=holder.key_id, channel="api"
        )

    return Depends(check)
