-- Booking, issue 24: the advisor's report of how the appointment went (the advisor's page): who
-- said it (their Entra object id, as signed in) and when. Once set, Graph's attendance report no longer
-- moves the status (both stay in the history and in consent's ledger as proof); a later report
-- by the advisor replaces the earlier one.
ALTER TABLE appointments
    ADD COLUMN outcome_reported_by text,
    ADD COLUMN outcome_reported_at timestamptz,
    ADD COLUMN outcome_comment     text;
