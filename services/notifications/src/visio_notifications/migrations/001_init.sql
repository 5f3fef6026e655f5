-- Notifications' own state: a copy of each appointment and of its meeting (they arrive on two
-- topics, in either order), and the log of what was mailed. Runs as the schema owner role with
-- search_path = notifications.

-- Events already handled: the effect and this marker commit in one transaction.
CREATE TABLE IF NOT EXISTS processed_events (
    event_id     uuid PRIMARY KEY,
    event_type   text NOT NULL,
    processed_at timestamptz NOT NULL DEFAULT now()
);

-- The latest revision of each appointment, as AppointmentRequested carried it.
CREATE TABLE IF NOT EXISTS appointments (
    appointment_id uuid PRIMARY KEY,
    revision       integer NOT NULL,
    start_at       timestamptz NOT NULL,
    payload        jsonb NOT NULL,
    correlation_id uuid NOT NULL,
    event_id       uuid NOT NULL,
    updated_at     timestamptz NOT NULL DEFAULT now()
);

-- The latest MeetingReady of each appointment; may arrive before the appointment itself.
CREATE TABLE IF NOT EXISTS meetings (
    appointment_id uuid PRIMARY KEY,
    revision       integer NOT NULL,
    join_url       text NOT NULL,
    payload        jsonb NOT NULL,
    event_id       uuid NOT NULL,
    updated_at     timestamptz NOT NULL DEFAULT now()
);

-- One row per email decided: sent, or failed for good. `event` is the NotificationSent /
-- NotificationFailed to publish; `published_at` stays null until Kafka has it (a small outbox).
-- No address here: the recipient is kept as a SHA-256 of the normalised address.
CREATE TABLE IF NOT EXISTS dispatches (
    id               bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    appointment_id   uuid NOT NULL,
    revision         integer NOT NULL,
    kind             text NOT NULL,
    message_id       text NOT NULL,
    recipient_sha256 text NOT NULL,
    status           text NOT NULL CHECK (status IN ('sent', 'failed')),
    reason           text,
    detail           text NOT NULL DEFAULT '',
    sent_at          timestamptz,
    recorded_at      timestamptz NOT NULL DEFAULT now(),
    event            jsonb NOT NULL,
    published_at     timestamptz,
    UNIQUE (appointment_id, revision, kind)
);

CREATE INDEX IF NOT EXISTS dispatches_unpublished
    ON dispatches (recorded_at) WHERE published_at IS NULL;

GRANT USAGE ON SCHEMA notifications TO visio_notifications;
GRANT SELECT, INSERT, UPDATE ON processed_events, appointments, meetings, dispatches
    TO visio_notifications;
GRANT USAGE ON ALL SEQUENCES IN SCHEMA notifications TO visio_notifications;
