-- Why an email is still owed: the relay's last answer (addresses redacted), beside the time of
-- the next try, so `visio-rdv ops appointments --stuck` and the chaos proof can say where a
-- late email is. Cleared once the appointment is settled.
ALTER TABLE appointments ADD COLUMN IF NOT EXISTS settle_error text;
