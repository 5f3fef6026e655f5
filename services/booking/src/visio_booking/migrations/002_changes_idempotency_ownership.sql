-- Booking, issue 3: changes after booking (reschedule, cancel, contact correction, change of
-- advisor), idempotent requests, callers owning their appointments, revocable keys by id.

-- calling_system is the owner: the API key's name, or the Kafka request's calling system.
ALTER TABLE appointments
    ADD COLUMN api_key_id        bigint,                 -- the key that booked it (NULL: Kafka)
    ADD COLUMN status_revision   int NOT NULL DEFAULT 1, -- the revision the status speaks of
    ADD COLUMN join_url_revision int NOT NULL DEFAULT 0, -- the revision the link belongs to
    ADD COLUMN cancelled_at      timestamptz;
CREATE INDEX appointments_by_caller ON appointments (calling_system);

-- A short public id, to list keys and revoke one without ever showing its secret.
ALTER TABLE api_keys ADD COLUMN id bigint GENERATED ALWAYS AS IDENTITY;
ALTER TABLE api_keys ADD CONSTRAINT api_keys_id_unique UNIQUE (id);
CREATE INDEX api_keys_by_name ON api_keys (name);

-- One row per (caller, key): HTTP's Idempotency-Key and Kafka's request_id alike. Written in
-- the transaction of the effect, so a repeat finds either nothing (the first one failed and
-- left no trace) or the complete first answer. Requests that were refused are not remembered.
CREATE TABLE idempotency_keys (
    caller        text NOT NULL,
    key           text NOT NULL,
    fingerprint   text NOT NULL,   -- SHA-256 of request type, target and canonical payload
    request_type  text NOT NULL,
    status_code   int,
    response      text,           -- the first answer's JSON, byte for byte
    created_at    timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (caller, key)
);
CREATE INDEX idempotency_keys_by_age ON idempotency_keys (created_at);

-- The relay reads the oldest unpublished rows first; published ones are purged after a while.
CREATE INDEX outbox_published ON outbox (published_at) WHERE published_at IS NOT NULL;

GRANT SELECT, INSERT, UPDATE, DELETE ON idempotency_keys TO visio_booking;
GRANT DELETE ON outbox TO visio_booking;
