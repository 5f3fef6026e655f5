-- Text messages (issue 26): the person's mobile, in E.164 as booking checked it, and whether
-- they chose to receive texts there. Both travel in AppointmentRequested / ContactCorrected.
ALTER TABLE appointments
    ADD COLUMN IF NOT EXISTS mobile text,
    ADD COLUMN IF NOT EXISTS sms_opt_in boolean NOT NULL DEFAULT false;
