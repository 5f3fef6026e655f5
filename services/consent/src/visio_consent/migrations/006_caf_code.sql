-- Consent, issue 24: each Caf speaks for itself on the self-service pages.

-- The appointment's Caf (the front door's code, `974`), from its AppointmentRequested: the pages
-- « Enregistrement » and « Mes consentements » name it and give its contact, mediator and
-- right-of-access address (visio_shared.caf_directory). Not personal data: a department's code.
-- Null for appointments recorded before this migration (and those a rebuild could not find the
-- request of): their pages keep the national wording and the national contact page.
ALTER TABLE appointments ADD COLUMN caf_code text;
