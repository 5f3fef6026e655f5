"""Booking's API keys: its scopes, kept and checked by `visio_runtime.api_keys` (one
implementation for every service with an API). A key's name is the caller's identity: the
appointments a key books belong to that name, so a system can rotate its key (create a new one
with the same name, then revoke the old one by id) without losing sight of its appointments.
"""

from __future__ import annotations

from visio_runtime.api_keys import ApiKeys
from visio_shared.booking_requests import KAFKA_CALLER_PREFIX

WRITE, READ, ADMIN = "appointments:write", "appointments:read", "appointments:admin"
# Erase a person's data in every service: not implied by admin (an erasure cannot be undone).
ERASE = "personal-data:erase"
SCOPES = (WRITE, READ, ADMIN, ERASE)

API_KEYS = ApiKeys(
    service="booking",
    schema="booking",
    scopes=SCOPES,
    prefix="vrdv_",
    # The admin scope reads and changes everyone's appointments: it implies the others.
    implies={ADMIN: frozenset({WRITE, READ})},
    # Kafka callers own their appointments as `kafka:<system>`: a key of that name would be
    # taken for the partner, and see its appointments.
    reserved={KAFKA_CALLER_PREFIX: "that namespace is the Kafka partners'"},
)
