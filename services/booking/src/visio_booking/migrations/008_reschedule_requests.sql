-- Booking, issue 24: the person asks, from « Mon rendez-vous », to move their appointment. The
-- request is recorded (what they ticked, their short message), the owning partner is told on
-- its outcome stream and notifications mails the Caf's team (RescheduleRequested); nothing of
-- the appointment changes until the partner reschedules it through the normal path.
CREATE TABLE reschedule_requests (
    id             uuid PRIMARY KEY,            -- the RescheduleRequested event's id
    appointment_id uuid NOT NULL REFERENCES appointments (appointment_id) ON DELETE CASCADE,
    revision       integer NOT NULL,            -- the appointment as the person saw it
    preferences    jsonb NOT NULL,              -- days, times, from_date, message
    requested_at   timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX reschedule_requests_by_appointment ON reschedule_requests (appointment_id);

GRANT SELECT, INSERT, DELETE ON reschedule_requests TO visio_booking;
