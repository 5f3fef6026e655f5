-- Bounces (issue 26): an email the relay accepted that bounced later. Each email leaves with the
-- envelope sender bounce+<bounce_tag>@<NOTIFICATIONS_BOUNCE_DOMAIN> (VERP), `bounce_tag` being
-- derived from its Message-ID (the dispatch's key): the DSN that comes back to that address
-- names the dispatch it is about. Older rows have none.
ALTER TABLE dispatches ADD COLUMN IF NOT EXISTS bounce_tag text;
CREATE INDEX IF NOT EXISTS dispatches_bounce_tag ON dispatches (bounce_tag)
    WHERE bounce_tag IS NOT NULL;

-- Every DSN received, read or not: what it said, which dispatch it failed, and the
-- NotificationFailed to publish (`event`, a small outbox: `published_at` null until Kafka has
-- it). `raw` is kept only for a DSN that could not be read or tied to a dispatch, for ops to
-- look at; it holds an address, so it is cleared after the retention period.
CREATE TABLE IF NOT EXISTS bounces (
    id              bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    received_at     timestamptz NOT NULL DEFAULT now(),
    outcome         text NOT NULL CHECK (outcome IN ('failed', 'duplicate', 'delayed',
                                                     'unknown_dispatch', 'unreadable')),
    why             text NOT NULL DEFAULT '',
    bounce_tag      text,
    dispatch_id     bigint REFERENCES dispatches (id),
    appointment_id  uuid,
    status          text,
    diagnostic      text,
    raw             bytea,
    event           jsonb,
    published_at    timestamptz
);

CREATE INDEX IF NOT EXISTS bounces_unpublished
    ON bounces (id) WHERE event IS NOT NULL AND published_at IS NULL;

GRANT SELECT, INSERT, UPDATE ON bounces TO visio_notifications;
