-- Consent, third step: the self-service pages « Enregistrement » and « Mes consentements »,
-- reached from signed links in the emails.

-- 1. Rate limits of those pages, per link (visio_runtime.ratelimit): the bucket is the link's
-- fingerprint, never the link.
CREATE TABLE rate_limits (
    bucket        text NOT NULL,
    window_start  timestamptz NOT NULL,
    hits          int NOT NULL,
    PRIMARY KEY (bucket, window_start)
);

-- 2. What the recording page needs to know of each appointment beside the chain: when it
-- starts (the authorisation can be withdrawn from the page until then) and whether it was
-- cancelled. Kept current from AppointmentRescheduled and AppointmentCancelled. Appointments
-- recorded before this migration have no known start: their page sends the person to their Caf.
--
-- withdrawal_pending_since: a withdrawal committed to the chain whose announcement
-- (RecordingConsentWithdrawn, ConsentRecorded) has not reached Kafka yet. Cleared once
-- published; a background sweep publishes again what stayed pending, so meetings always learns
-- of it, and a second click on the page publishes nothing when the first was announced.
ALTER TABLE appointments
    ADD COLUMN starts_at timestamptz,
    ADD COLUMN cancelled_at timestamptz,
    ADD COLUMN withdrawal_pending_since timestamptz;

CREATE INDEX appointments_withdrawal_pending_idx ON appointments (withdrawal_pending_since)
    WHERE withdrawal_pending_since IS NOT NULL;

GRANT SELECT, INSERT, UPDATE, DELETE ON rate_limits TO visio_consent;
