-- Late emails (issue 16): every email a person is owed — the confirmation, an update, a
-- cancellation, the link asked for again — from the event that called for it, and every email
-- notifications says it sent or gave up on. One owed and not told past
-- VISIO_EMAIL_LATE_AFTER_MINUTES raises an 'email_late' alert, one per occasion.

-- 'r<revision>': the appointment as it stands at that revision (told by any email of that
-- revision or a later one); 'request-<event id>': one request for the link again (told by the
-- email that answers it, whose causation id is the request).
CREATE TABLE emails_owed (
    appointment_id uuid NOT NULL,
    occasion       text NOT NULL,
    email          text NOT NULL,  -- the kind the person waits for: confirmation, cancellation…
    revision       int NOT NULL,
    request_id     uuid,
    reason         text,           -- a link request's: 'resend' or 'fresh_link'
    owed_since     timestamptz NOT NULL,
    told_at        timestamptz,    -- set once an email tells it (or fails for good)
    PRIMARY KEY (appointment_id, occasion)
);
CREATE INDEX emails_owed_waiting ON emails_owed (owed_since) WHERE told_at IS NULL;

-- NotificationSent and NotificationFailed, as far as lateness needs them (no address).
CREATE TABLE emails_told (
    event_id       uuid PRIMARY KEY,
    appointment_id uuid NOT NULL,
    revision       int NOT NULL,
    kind           text NOT NULL,
    causation_id   uuid,
    told_at        timestamptz NOT NULL
);
CREATE INDEX emails_told_by_appointment ON emails_told (appointment_id);

-- An appointment may be late more than once (its confirmation, later its cancellation): the
-- occasion joins the key. 'stuck' stays for the rows written before it was replaced.
ALTER TABLE alerts DROP CONSTRAINT alerts_cause_check;
ALTER TABLE alerts ADD CONSTRAINT alerts_cause_check
    CHECK (cause IN ('meeting_failed', 'notification_failed', 'stuck', 'email_late'));
ALTER TABLE alerts ADD COLUMN occasion text NOT NULL DEFAULT '';
ALTER TABLE alerts DROP CONSTRAINT alerts_pkey;
ALTER TABLE alerts ADD PRIMARY KEY (appointment_id, cause, occasion);

GRANT SELECT, INSERT, UPDATE ON emails_owed, emails_told TO visio_alerts;
