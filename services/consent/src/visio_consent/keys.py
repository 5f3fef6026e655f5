"""Consent's API keys: its scopes, kept and checked by `visio_runtime.api_keys` (one
implementation for every service with an API).

- `consent:read`: verify the ledger, and the right of access (each export is recorded);
- `consent:checkpoint`: sign a checkpoint of the verified head — the act of a scheduled job
  with the service's signing key, not of whoever may read;
- `consent:withdraw`: withdraw an appointment's recording authorisation;
- `personal-data:export`: a person's whole data, assembled from every service (recorded too).
"""

from __future__ import annotations

from visio_runtime.api_keys import ApiKeys

READ, CHECKPOINT, WITHDRAW = "consent:read", "consent:checkpoint", "consent:withdraw"
# A person's whole data, assembled from every service (a Caf operator answering a request).
EXPORT = "personal-data:export"
SCOPES = (READ, CHECKPOINT, WITHDRAW, EXPORT)

API_KEYS = ApiKeys(service="consent", schema="consent", scopes=SCOPES, prefix="vrdv_consent_")
