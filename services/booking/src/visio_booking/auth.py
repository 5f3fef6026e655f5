"""Who is calling: `Authorization: Bearer <api key>`, looked up on every request (a revoked key
stops working at once) by `visio_runtime.api_keys` — except a booking's: its key is checked by
the statement that writes it (store.book), so its holder may come from memory. No key → 401; a
key without the scope → 403."""

# No `from __future__ import annotations`: FastAPI reads `check`'s annotation, which names a
# dependency made in `require`, at runtime.

from typing import Annotated, Any

from fastapi import Depends
from visio_runtime.api_keys import KeyHolder

from visio_booking.appointments import Caller
from visio_booking.keys import ADMIN, API_KEYS


def require(scope: str, checked_by_the_write: bool = False) -> Any:
    """`checked_by_the_write`: the endpoint's write checks that the key is unrevoked
    (`Caller.key_checked` False), and looks it up before any other answer."""
    authenticated = API_KEYS.authenticator(scope, kept=checked_by_the_write)

    async def check(holder: Annotated[KeyHolder, Depends(authenticated)]) -> Caller:
        return Caller(
            name=holder.name,
            admin=ADMIN in holder.scopes,
            key_id=holder.key_id,
            channel="api",
            key_checked=holder.checked,
        )

    return Depends(check)
