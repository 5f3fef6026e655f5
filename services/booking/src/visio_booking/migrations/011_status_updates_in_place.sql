-- Booking, issue 20: a change of status or of join link rewrites the row in place (a HOT
-- update: no new entry in any index, no new check of the advisor's slots).
--
-- The exclusion constraint of 007 read `status` in its predicate, so every status change
-- (requested → confirmed, then held or missed) and every join link was a new version of the row
-- in each of the table's five indexes, and a new search of the advisor's slots in the GiST
-- index: about 45 pages read per row (pg_stat_statements over a bench run), the costliest
-- statements of the status follower. The predicate now reads a column that changes only when
-- the appointment is cancelled, and the pages keep room for the new versions.
--
-- Adding a stored column rewrites the table once, under an exclusive lock: a few seconds for
-- a year of appointments.
ALTER TABLE appointments
    ADD COLUMN holds_slot boolean GENERATED ALWAYS AS (status <> 'cancelled') STORED;

ALTER TABLE appointments DROP CONSTRAINT appointments_advisor_no_overlap;
ALTER TABLE appointments
    ADD CONSTRAINT appointments_advisor_no_overlap
    EXCLUDE USING gist (
        advisor_id WITH =,
        appointment_slot(start_at, duration_minutes) WITH &&
    ) WHERE (holds_slot AND NOT overlap_grandfathered);

-- Room on each page for a row's next versions (status, link, outcome) beside it.
ALTER TABLE appointments SET (fillfactor = 70);
