-- Issue 26: a text message that can never reach the person (a number refused, or unknown to
-- the network) is told to their Caf like a failed email.
ALTER TABLE alerts DROP CONSTRAINT alerts_cause_check;
ALTER TABLE alerts ADD CONSTRAINT alerts_cause_check
    CHECK (cause IN ('meeting_failed', 'notification_failed', 'stuck', 'email_late',
                     'sms_failed'));
