-- The record of connections: after a meeting ends, meetings fetches its attendance report
-- (and, if recording was authorised, its recordings' metadata) once. The work is kept on the
-- meeting's row, so replicas share it (FOR UPDATE SKIP LOCKED) and a restart loses none.

ALTER TABLE meetings
    -- Lineage of the events the poller emits (the same across the appointment's story).
    ADD COLUMN correlation_id          uuid,
    -- When to ask Graph next: the meeting's end plus a grace period, then later after each
    -- report not yet available; NULL when there is nothing to ask (not ready, cancelled, done).
    ADD COLUMN attendance_due_at       timestamptz,
    ADD COLUMN attendance_attempts     int NOT NULL DEFAULT 0,
    ADD COLUMN attendance_last_error   text,
    -- 'recorded' or 'unavailable' once its event is published: never fetched again.
    ADD COLUMN attendance_outcome      text
        CHECK (attendance_outcome IN ('recorded', 'unavailable')),
    ADD COLUMN attendance_done_at      timestamptz;

CREATE INDEX meetings_attendance_due ON meetings (attendance_due_at)
    WHERE attendance_due_at IS NOT NULL;
