-- Issue 24: the advisor's Outlook event says who is coming and how. Kept so every change
-- (contact correction, recording withdrawn, reschedule, new advisor) writes the event's body
-- again: the first name and the initial of the last name (what the person types when joining,
-- the name the advisor admits from the lobby) and the device they join with. The subject and
-- the recording choice are kept already (002). Erasure empties all three (personal data).

ALTER TABLE meetings
    ADD COLUMN first_name   text,
    ADD COLUMN last_initial text,
    ADD COLUMN device       text CHECK (device IN ('computer', 'smartphone', 'tablet'));
