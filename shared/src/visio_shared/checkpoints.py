"""The consent ledger's signed checkpoint, as published on `consent-checkpoints.v1` (and written,
the same line, to consent's checkpoint file): a contract, so it lives here with the events.

A checkpoint is one JSON line:

    {"format":"visio-rdv.consent-checkpoint.v1","head_hash":"<64 hex>","public_key":"<base64>",
     "seq":42,"signature":"<base64>","signed_at":"2025-03-01T09:30:00.000000+00:00"}

`signature` is Ed25519 (RFC 8032) by the key whose raw 32-byte public key is `public_key`, over
the RFC 8785 canonical JSON of the line without its `signature` field (`signed_bytes`). Signing
and checking a signature are consent's (`visio_consent.signing`).
"""

from __future__ import annotations

from typing import Literal

import rfc8785
from pydantic import BaseModel, ConfigDict, Field

# The `event_type` header of a checkpoint on its topic.
CHECKPOINT_EVENT_TYPE = "ConsentCheckpoint"


class Checkpoint(BaseModel):
    """One signed checkpoint. `signed_at` stays the string that was signed, byte for byte."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    format: Literal["visio-rdv.consent-checkpoint.v1"] = "visio-rdv.consent-checkpoint.v1"
    seq: int = Field(ge=0)
    head_hash: str = Field(pattern=r"^[0-9a-f]{64}$")
    signed_at: str
    public_key: str
    signature: str

    def signed_bytes(self) -> bytes:
        return rfc8785.dumps(self.model_dump(exclude={"signature"}))

    def line(self) -> str:
        """The checkpoint as written: RFC 8785 JSON, one line."""
        return rfc8785.dumps(self.model_dump()).decode("utf-8")
