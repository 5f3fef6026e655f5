-- Issue 20: the creation keys a create was sent for (or was about to be). Before a create,
-- meetings looks the advisor's events up by the key, in case an earlier attempt made the event
-- and its answer was lost; a key not in this table never reached Graph, so its first create
-- goes without that look-up (one Graph request and one $batch round less per meeting). The key
-- is written, and committed, before the create is sent; it is forgotten once the meeting is
-- made. A key is a UUID derived from the appointment id: nothing personal.

CREATE TABLE create_attempts (
    key          text PRIMARY KEY,
    attempted_at timestamptz NOT NULL DEFAULT now()
);

GRANT SELECT, INSERT, DELETE ON create_attempts TO visio_meetings;
