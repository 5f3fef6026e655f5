-- Text messages (issue 26): the SMS dispatch log and schedule, one row per text decided.
-- Key: (appointment, kind, revision, reminder offset), as for emails; a reminder also names the
-- start it reminds of, so a later revision that keeps the time does not remind twice.
-- `client_ref` is given to the provider (Brevo's tag) to find the text after a lost answer.
-- `ambiguous` counts the sends whose answer was lost and that were then resent or given up
-- (counted apart, like emails resent after an ambiguous SMTP failure). No number is kept here:
-- it is read from the appointment when the text goes; `recipient_sha256` says which it was.
CREATE TABLE IF NOT EXISTS sms_messages (
    id                      bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    appointment_id          uuid NOT NULL,
    kind                    text NOT NULL,
    revision                integer NOT NULL,
    reminder_offset_minutes integer,
    start_at                timestamptz NOT NULL,
    client_ref              text NOT NULL UNIQUE,
    promise                 text NOT NULL CHECK (promise IN ('at_least_once', 'at_most_once')),
    fallback                boolean NOT NULL DEFAULT false,
    status                  text NOT NULL CHECK (status IN ('pending', 'sent', 'failed',
                                                            'unknown', 'cancelled', 'expired')),
    due_at                  timestamptz NOT NULL,
    attempts                integer NOT NULL DEFAULT 0,
    in_doubt                boolean NOT NULL DEFAULT false,
    ambiguous               integer NOT NULL DEFAULT 0,
    retry_at                timestamptz,
    last_error              text,
    provider_id             text,
    encoding                text,
    segments                integer,
    recipient_sha256        text,
    sent_at                 timestamptz,
    delivery                text,
    delivery_at             timestamptz,
    failure_event           jsonb,
    published_at            timestamptz,
    recorded_at             timestamptz NOT NULL DEFAULT now(),
    UNIQUE NULLS NOT DISTINCT (appointment_id, kind, revision, reminder_offset_minutes)
);

CREATE INDEX IF NOT EXISTS sms_messages_due ON sms_messages (due_at) WHERE status = 'pending';
CREATE INDEX IF NOT EXISTS sms_messages_provider_id ON sms_messages (provider_id);
CREATE INDEX IF NOT EXISTS sms_messages_unpublished
    ON sms_messages (id) WHERE failure_event IS NOT NULL AND published_at IS NULL;

GRANT SELECT, INSERT, UPDATE, DELETE ON sms_messages TO visio_notifications;
