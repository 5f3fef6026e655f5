-- Booking, issue 11: « Mon rendez-vous », the person's own page reached from a signed link.

-- Fixed-window rate limits (visio_runtime.ratelimit): a bucket names a link's fingerprint or an
-- address's keyed hash, never the link or the address itself.
CREATE TABLE rate_limits (
    bucket        text NOT NULL,
    window_start  timestamptz NOT NULL,
    hits          int NOT NULL,
    PRIMARY KEY (bucket, window_start)
);
CREATE INDEX rate_limits_by_window ON rate_limits (window_start);

-- When the person last asked for the email with the links (resend or fresh link): at most one
-- per appointment per `resend_interval_s`, decided with the appointment's row locked.
ALTER TABLE appointments ADD COLUMN link_requested_at timestamptz;

-- « Recevoir un nouveau lien » finds a person's appointments by the address they type.
CREATE INDEX appointments_by_email ON appointments (lower(email));

GRANT SELECT, INSERT, UPDATE, DELETE ON rate_limits TO visio_booking;
