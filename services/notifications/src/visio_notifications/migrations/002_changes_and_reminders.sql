-- The appointment's later life (reschedule, contact correction, new advisor, cancellation),
-- meetings that fail, reminders, and a dispatch log that remembers what each email told.

-- The appointment as it stands. `advisor_revision`: the revision that gave it its current
-- advisor (a meeting older than that is the cancelled one of the previous advisor).
-- `settle_after`: an email may be owed from then on (set with each change, cleared once
-- settled, pushed back while the relay cannot take it) — the poller's to-do list.
ALTER TABLE appointments
    ADD COLUMN IF NOT EXISTS advisor_revision integer NOT NULL DEFAULT 1,
    ADD COLUMN IF NOT EXISTS cancellation jsonb,
    ADD COLUMN IF NOT EXISTS settle_after timestamptz,
    ADD COLUMN IF NOT EXISTS settle_attempts integer NOT NULL DEFAULT 0,
    ADD COLUMN IF NOT EXISTS settle_cause uuid;

CREATE INDEX IF NOT EXISTS appointments_unsettled
    ON appointments (settle_after) WHERE settle_after IS NOT NULL;

-- Meetings' latest word: a link, or a failure for good (no link then).
ALTER TABLE meetings
    ALTER COLUMN join_url DROP NOT NULL,
    ADD COLUMN IF NOT EXISTS status text NOT NULL DEFAULT 'ready'
        CHECK (status IN ('ready', 'failed'));

-- One email per (appointment, kind, revision, reminder offset); NULLS NOT DISTINCT so that the
-- offset, null for every kind but reminders, still counts in the key (PostgreSQL 15+).
-- What it told the person (time, link, device) is kept to say what changed next time.
ALTER TABLE dispatches
    ADD COLUMN IF NOT EXISTS reminder_offset_minutes integer,
    ADD COLUMN IF NOT EXISTS smtp_code integer,
    ADD COLUMN IF NOT EXISTS device text,
    ADD COLUMN IF NOT EXISTS start_at timestamptz,
    ADD COLUMN IF NOT EXISTS duration_minutes integer,
    ADD COLUMN IF NOT EXISTS join_url text,
    DROP CONSTRAINT IF EXISTS dispatches_appointment_id_revision_kind_key;

ALTER TABLE dispatches
    ADD CONSTRAINT dispatches_one_email_per_key
        UNIQUE NULLS NOT DISTINCT (appointment_id, kind, revision, reminder_offset_minutes);

CREATE TABLE IF NOT EXISTS reminders (
    appointment_id uuid NOT NULL,
    offset_minutes integer NOT NULL,
    revision       integer NOT NULL,
    start_at       timestamptz NOT NULL,
    due_at         timestamptz NOT NULL,
    status         text NOT NULL
        CHECK (status IN ('pending', 'sent', 'failed', 'skipped', 'cancelled', 'expired')),
    attempts       integer NOT NULL DEFAULT 0,
    retry_at       timestamptz,
    last_error     text,
    updated_at     timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (appointment_id, offset_minutes)
);

CREATE INDEX IF NOT EXISTS reminders_due ON reminders (due_at) WHERE status = 'pending';

CREATE INDEX IF NOT EXISTS appointments_start ON appointments (start_at);

GRANT SELECT, INSERT, UPDATE ON reminders TO visio_notifications;
-- Personal data has an end date: the service deletes what it kept of past appointments.
GRANT DELETE ON appointments, meetings, reminders TO visio_notifications;
