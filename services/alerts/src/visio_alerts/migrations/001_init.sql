-- Alerts: what the alerts process needs to tell a Caf that someone was left without a meeting
-- or an email. Runs as visio_alerts_owner with search_path = alerts; the process logs in as
-- visio_alerts. No one's name or address here: the appointment's Caf, advisor and time only.

-- Its own copy of each appointment (from appointments.v1), and how far it got.
CREATE TABLE appointments (
    appointment_id uuid PRIMARY KEY,
    revision       int NOT NULL,
    caf_code       text NOT NULL,
    advisor_id     text NOT NULL,
    advisor_name   text NOT NULL,
    start_at       timestamptz NOT NULL,
    timezone       text NOT NULL,
    requested_at   timestamptz NOT NULL,
    confirmed_at   timestamptz,
    cancelled_at   timestamptz,
    updated_at     timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX appointments_unconfirmed ON appointments (requested_at)
    WHERE confirmed_at IS NULL AND cancelled_at IS NULL;

-- One alert per appointment and cause, ever: the primary key is the dedupe.
CREATE TABLE alerts (
    appointment_id  uuid NOT NULL,
    cause           text NOT NULL CHECK (cause IN ('meeting_failed', 'notification_failed', 'stuck')),
    reason          text NOT NULL,
    detail          text NOT NULL DEFAULT '',
    source_event_id uuid,
    recorded_at     timestamptz NOT NULL DEFAULT now(),
    start_at        timestamptz,  -- the appointment's, once known: the purge's clock
    sent_at         timestamptz,
    recipient       text,         -- the Caf team's address, not a person's
    PRIMARY KEY (appointment_id, cause)
);
CREATE INDEX alerts_pending ON alerts (recorded_at) WHERE sent_at IS NULL;

GRANT USAGE ON SCHEMA alerts TO visio_alerts;
GRANT SELECT, INSERT, UPDATE ON appointments, alerts TO visio_alerts;
