"""Users as Graph names them in paths: object ids (GUIDs) or user principal names."""

from __future__ import annotations

import uuid

from visio_fakes.graph_emulator.state import EmulatorState


def is_guid(value: str) -> bool:
    try:
        uuid.UUID(value)
    except ValueError:
        return False
    return True


def object_id(user_id: str) -> str:
    """The user's Entra object id: the id itself when a GUID, else a stable stand-in."""
    return user_id.lower() if is_guid(user_id) else str(uuid.uuid5(uuid.NAMESPACE_DNS, user_id))


def user_address(state: EmulatorState, user_id: str) -> str:
    return user_id if "@" in user_id else f"{user_id}@{state.settings.tenant_domain}"
