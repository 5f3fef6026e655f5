-- Meetings: one Teams meeting per appointment, and the events already handled.
-- Applied as visio_meetings_owner with search_path = meetings; the service logs in as
-- visio_meetings, which may read and write rows but never change the schema.

CREATE TABLE processed_events (
    event_id     uuid PRIMARY KEY,
    event_type   text NOT NULL,
    processed_at timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE meetings (
    appointment_id    uuid PRIMARY KEY,
    revision          int NOT NULL,
    advisor_id        text NOT NULL,
    transaction_id    text NOT NULL,
    graph_event_id    text,
    online_meeting_id text,
    join_url          text,
    status            text NOT NULL CHECK (status IN ('ready', 'failed')),
    failure_reason    text,
    created_at        timestamptz NOT NULL DEFAULT now(),
    updated_at        timestamptz NOT NULL DEFAULT now()
);

GRANT USAGE ON SCHEMA meetings TO visio_meetings;
GRANT SELECT, INSERT, UPDATE ON processed_events, meetings TO visio_meetings;
