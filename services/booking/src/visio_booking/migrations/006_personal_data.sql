-- Booking, issue 25: the person's rights across every service. Erasure that stays erased, the
-- person's own correction of their details (confirmed from the new address), and the export.

-- The appointments whose person was erased: their id and the erasure, nothing else. Every
-- handler looks here first, so no replayed or late event writes the person back.
CREATE TABLE erased_appointments (
    appointment_id uuid PRIMARY KEY,
    erasure_id     uuid NOT NULL,
    erased_at      timestamptz NOT NULL DEFAULT now()
);

GRANT SELECT, INSERT ON erased_appointments TO visio_booking;

ALTER TABLE appointments ADD COLUMN erased_at timestamptz;

-- One erasure request: who asked, why, when (the reason is the operator's, about the request;
-- it must not repeat the person's details). Its appointments, and each service's confirmation.
CREATE TABLE erasures (
    erasure_id    uuid PRIMARY KEY,
    reason        text NOT NULL CHECK (reason <> ''),
    requested_by  text NOT NULL,
    requested_at  timestamptz NOT NULL DEFAULT now()
);
CREATE TABLE erasure_appointments (
    erasure_id     uuid NOT NULL REFERENCES erasures (erasure_id),
    appointment_id uuid NOT NULL,
    PRIMARY KEY (erasure_id, appointment_id)
);
CREATE TABLE erasure_confirmations (
    erasure_id     uuid NOT NULL REFERENCES erasures (erasure_id),
    appointment_id uuid NOT NULL,
    service        text NOT NULL,
    confirmed_at   timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (erasure_id, appointment_id, service)
);

-- A correction of the address asked by the person from « Mon rendez-vous »: held until the
-- link sent to the new address is followed. The code itself is never stored, only its SHA-256.
CREATE TABLE contact_corrections (
    code_sha256    text PRIMARY KEY,
    appointment_id uuid NOT NULL REFERENCES appointments (appointment_id),
    revision       int NOT NULL,   -- the appointment's revision when asked: a change voids it
    first_name     text NOT NULL,
    last_name      text NOT NULL,
    email          text NOT NULL,
    requested_at   timestamptz NOT NULL DEFAULT now(),
    expires_at     timestamptz NOT NULL,
    confirmed_at   timestamptz
);
CREATE INDEX contact_corrections_by_appointment ON contact_corrections (appointment_id);

GRANT SELECT, INSERT ON erasures, erasure_appointments, erasure_confirmations TO visio_booking;
GRANT SELECT, INSERT, UPDATE, DELETE ON contact_corrections TO visio_booking;
GRANT DELETE ON appointment_history TO visio_booking;
