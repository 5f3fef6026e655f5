-- Changes after creation: what a change of advisor needs to make a new meeting (the schedule,
-- the recording consent), the dial-in details, cancelled meetings, and the events that
-- arrived before their appointment, held until it is known.

ALTER TABLE meetings
    ADD COLUMN subject              text,
    ADD COLUMN start_at             timestamptz,
    ADD COLUMN duration_minutes     int,
    ADD COLUMN timezone             text,
    ADD COLUMN recording_authorised boolean NOT NULL DEFAULT false,
    ADD COLUMN join_meeting_id      text,
    ADD COLUMN passcode             text,
    ADD COLUMN conference_id        text,
    ADD COLUMN dial_in_url          text;

ALTER TABLE meetings DROP CONSTRAINT meetings_status_check;
ALTER TABLE meetings ADD CONSTRAINT meetings_status_check
    CHECK (status IN ('ready', 'failed', 'cancelled'));

-- A change or a withdrawal whose appointment meetings has not seen yet (another topic, or its
-- AppointmentRequested still waiting in the dead-letter topic): applied, in revision order,
-- once the appointment arrives. Nothing personal: ids, times, a pseudonymous subject_ref.
CREATE TABLE pending_events (
    event_id       uuid PRIMARY KEY,
    appointment_id uuid NOT NULL,
    event_type     text NOT NULL,
    revision       int NOT NULL,
    payload        jsonb NOT NULL,
    received_at    timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX pending_events_by_appointment ON pending_events (appointment_id, revision);

GRANT SELECT, INSERT, DELETE ON pending_events TO visio_meetings;
