-- Consent, issue 23: API keys kept like booking's (one implementation, visio_runtime.api_keys),
-- a scope of its own for signing checkpoints, and every access export recorded.

-- 1. A short public id, to list keys and revoke one without ever showing its secret.
ALTER TABLE api_keys ADD COLUMN id bigint GENERATED ALWAYS AS IDENTITY;
ALTER TABLE api_keys ADD CONSTRAINT api_keys_id_unique UNIQUE (id);
CREATE INDEX api_keys_by_name ON api_keys (name);

-- 2. consent:checkpoint signs checkpoints (POST /v1/ledger/checkpoints). Signing changes no
-- record, but it is an act with the service's key, done on a schedule by one job: a key that
-- may read (verify, right of access) no longer may sign. Existing keys keep what they had; a
-- checkpoint job needs a key with this scope (visio-rdv consent api-key create …).
ALTER TABLE api_keys DROP CONSTRAINT api_keys_scopes_check;
ALTER TABLE api_keys ADD CONSTRAINT api_keys_scopes_check CHECK (
    cardinality(scopes) > 0
    AND scopes <@ ARRAY['consent:read', 'consent:withdraw', 'consent:checkpoint']
);

-- 3. Who asked for a person's records, for whom (their pseudonym: never an address), when and
-- how (api: an API key's name; command: an operator at the command line; self_service: the
-- person from their link). Shown in the person's own export. Pseudonymous like the chain, and
-- kept as long as it; the service may add rows, never change or remove one.
CREATE TABLE access_requests (
    id            bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    subject_ref   text NOT NULL,
    requested_by  text NOT NULL CHECK (requested_by <> ''),
    channel       text NOT NULL CHECK (channel IN ('api', 'command', 'self_service')),
    requested_at  timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX access_requests_subject_idx ON access_requests (subject_ref, requested_at);

GRANT SELECT, INSERT ON access_requests TO visio_consent;
