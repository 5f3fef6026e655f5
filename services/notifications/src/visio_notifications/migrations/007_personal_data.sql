-- Notifications, issue 25: erasure that stays erased.

-- The appointments whose person was erased: their id and the erasure, nothing else. Every
-- handler looks here first, so no replayed or late event writes the person back.
CREATE TABLE erased_appointments (
    appointment_id uuid PRIMARY KEY,
    erasure_id     uuid NOT NULL,
    erased_at      timestamptz NOT NULL DEFAULT now()
);

GRANT SELECT, INSERT ON erased_appointments TO visio_notifications;
GRANT DELETE ON link_requests TO visio_notifications;
