"""Visio RDV notifications: the emails of an appointment's life (confirmation with the guide,
charter and .ics; changes; cancellation; reminders), each sent once."""
