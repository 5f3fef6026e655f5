-- Booking: appointments, their history, the transactional outbox and the callers' API keys.
-- Runs as visio_booking_owner with search_path = booking; the service logs in as visio_booking.

CREATE TABLE appointments (
    appointment_id        uuid PRIMARY KEY,
    correlation_id        uuid NOT NULL,
    revision              int NOT NULL DEFAULT 1,
    status                text NOT NULL,
    caf_code              text NOT NULL,
    advisor_id            text NOT NULL,
    advisor_name          text NOT NULL,
    start_at              timestamptz NOT NULL,
    duration_minutes      int NOT NULL,
    timezone              text NOT NULL,
    subject               text NOT NULL,
    first_name            text NOT NULL,
    last_name             text NOT NULL,
    email                 text NOT NULL,
    device                text NOT NULL,
    cgu_version           text NOT NULL,
    cgu_accepted_at       timestamptz NOT NULL,
    recording_authorised  boolean NOT NULL,
    calling_system        text NOT NULL,
    join_url              text,
    status_reason         text,
    created_at            timestamptz NOT NULL DEFAULT now(),
    updated_at            timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE appointment_history (
    id              bigserial PRIMARY KEY,
    appointment_id  uuid NOT NULL REFERENCES appointments (appointment_id),
    status          text NOT NULL,
    revision        int NOT NULL,
    at              timestamptz NOT NULL DEFAULT now(),
    detail          text,
    source_event_id uuid
);
CREATE INDEX appointment_history_by_appointment ON appointment_history (appointment_id, id);

CREATE TABLE outbox (
    id            bigserial PRIMARY KEY,
    event_id      uuid NOT NULL UNIQUE,
    topic         text NOT NULL,
    key           text NOT NULL,
    payload       text NOT NULL,
    headers       jsonb NOT NULL,
    created_at    timestamptz NOT NULL DEFAULT now(),
    published_at  timestamptz
);
CREATE INDEX outbox_unpublished ON outbox (id) WHERE published_at IS NULL;

CREATE TABLE api_keys (
    key_hash    text PRIMARY KEY,           -- SHA-256 of the key; the key itself is never stored
    name        text NOT NULL,
    scopes      text[] NOT NULL,
    created_at  timestamptz NOT NULL DEFAULT now(),
    revoked_at  timestamptz
);

CREATE TABLE processed_events (
    event_id      uuid PRIMARY KEY,
    event_type    text NOT NULL,
    processed_at  timestamptz NOT NULL DEFAULT now()
);

GRANT USAGE ON SCHEMA booking TO visio_booking;
GRANT SELECT, INSERT, UPDATE ON appointments, appointment_history, outbox TO visio_booking;
GRANT SELECT ON api_keys TO visio_booking;
GRANT SELECT, INSERT ON processed_events TO visio_booking;
GRANT USAGE ON ALL SEQUENCES IN SCHEMA booking TO visio_booking;
