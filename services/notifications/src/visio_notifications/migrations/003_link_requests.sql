-- « Recevoir à nouveau le lien »: the person's requests for the email again, and a dispatch key
-- that lets one appointment get that email more than once at the same revision.

-- One row per AppointmentLinkRequested; `outcome` stays null until it is answered: 'sent' or
-- 'failed' (its dispatch), or why no email went ('appointment_cancelled', '_unknown', '_over').
CREATE TABLE IF NOT EXISTS link_requests (
    event_id       uuid PRIMARY KEY,
    appointment_id uuid NOT NULL,
    revision       integer NOT NULL,
    reason         text NOT NULL,
    requested_at   timestamptz NOT NULL,
    outcome        text CHECK (outcome IN ('sent', 'failed', 'appointment_cancelled',
                                           'appointment_unknown', 'appointment_over')),
    decided_at     timestamptz
);

CREATE INDEX IF NOT EXISTS link_requests_pending
    ON link_requests (appointment_id) WHERE outcome IS NULL;

-- A `link_resent` email is one per request, not one per (appointment, kind, revision): a person
-- may ask twice, hours apart. `request_id` joins the key (null for every other kind, which
-- keeps their key as it was) and is required for that kind alone.
ALTER TABLE dispatches
    ADD COLUMN IF NOT EXISTS request_id uuid,
    DROP CONSTRAINT IF EXISTS dispatches_one_email_per_key;

ALTER TABLE dispatches
    ADD CONSTRAINT dispatches_one_email_per_key
        UNIQUE NULLS NOT DISTINCT (appointment_id, kind, revision, reminder_offset_minutes,
                                   request_id),
    ADD CONSTRAINT dispatches_request_of_link_resent
        CHECK ((kind = 'link_resent') = (request_id IS NOT NULL));

GRANT SELECT, INSERT, UPDATE ON link_requests TO visio_notifications;
