"""Visio RDV notifications: the confirmation email (guide, charter, .ics) once an appointment
and its Teams meeting are both known."""
