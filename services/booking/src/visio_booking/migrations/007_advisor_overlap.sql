-- Booking, issue 24: no two live appointments of one advisor overlap, whoever books them and
-- however many requests race. A PostgreSQL exclusion constraint decides, not a read-then-write:
-- the second of two concurrent overlapping bookings waits for the first to commit, then fails
-- (booking answers 409 `advisor-unavailable`, or a BookingRejected reply on Kafka).
--
-- `advisor_id WITH =` on text needs btree_gist's operator class. It is a trusted extension
-- (PostgreSQL 13+), so the login that migrates (the database's owner, docs/production.md)
-- may create it; the owner role of the schema, which runs these files, may not (no CREATE on
-- the database), hence the role switch around that one statement.
RESET ROLE;
CREATE EXTENSION IF NOT EXISTS btree_gist WITH SCHEMA public;
SET LOCAL ROLE visio_booking_owner;
SET LOCAL search_path = booking;

-- The slot an appointment takes: [start, start + duration). Half-open, so back-to-back
-- appointments (one ends when the next starts) do not overlap. Adding minutes to a timestamptz
-- does not depend on the time zone setting, so the function is truly immutable.
CREATE FUNCTION appointment_slot(start_at timestamptz, duration_minutes int)
    RETURNS tstzrange
    LANGUAGE sql IMMUTABLE PARALLEL SAFE
    RETURN tstzrange(start_at, start_at + make_interval(mins => duration_minutes), '[)');

-- Appointments booked before this rule may already overlap: the constraint must not make this
-- migration fail in production. Such a row that overlaps a live row of the same advisor created
-- before it is marked `overlap_grandfathered` and left out of the constraint (the earliest one
-- of each overlap stays under it, so the rows under it are pairwise disjoint). A grandfathered
-- appointment that is rescheduled or reassigned leaves that state: its new slot is checked.
-- Find them with: SELECT appointment_id FROM booking.appointments WHERE overlap_grandfathered;
ALTER TABLE appointments ADD COLUMN overlap_grandfathered boolean NOT NULL DEFAULT false;

UPDATE appointments later
   SET overlap_grandfathered = true
 WHERE later.status <> 'cancelled'
   AND EXISTS (
       SELECT 1 FROM appointments earlier
        WHERE earlier.advisor_id = later.advisor_id
          AND earlier.status <> 'cancelled'
          AND (earlier.created_at, earlier.appointment_id)
              < (later.created_at, later.appointment_id)
          AND appointment_slot(earlier.start_at, earlier.duration_minutes)
              && appointment_slot(later.start_at, later.duration_minutes));

-- Live: anything not cancelled (a past appointment, held or missed, still took its slot).
ALTER TABLE appointments
    ADD CONSTRAINT appointments_advisor_no_overlap
    EXCLUDE USING gist (
        advisor_id WITH =,
        appointment_slot(start_at, duration_minutes) WITH &&
    ) WHERE (status <> 'cancelled' AND NOT overlap_grandfathered);
