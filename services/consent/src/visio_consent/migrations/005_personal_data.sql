-- Consent, issue 25: erasure that stays erased, and the export of every service's data.

-- The appointments whose person was erased: their id and the erasure, nothing else. Every
-- handler looks here first, so no replayed or late event writes the person back.
CREATE TABLE erased_appointments (
    appointment_id uuid PRIMARY KEY,
    erasure_id     uuid NOT NULL,
    erased_at      timestamptz NOT NULL DEFAULT now()
);

GRANT SELECT, INSERT ON erased_appointments TO visio_consent;

-- A key for the full export of a person's data (every service's part), apart from consent:read.
ALTER TABLE api_keys DROP CONSTRAINT api_keys_scopes_check;
ALTER TABLE api_keys ADD CONSTRAINT api_keys_scopes_check
    CHECK (cardinality(scopes) > 0
           AND scopes <@ ARRAY['consent:read', 'consent:withdraw', 'consent:checkpoint',
                               'personal-data:export']);
