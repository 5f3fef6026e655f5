"""Visio RDV notifications: the emails of an appointment's life (confirmation with the guide,
charter and .ics; changes; cancellation; reminders), each sent once."""

# The modules `deploy` (the `visio-rdv` command, proofs, bench) may import; any other is this
# service's own, free to change (tests/test_structure.py checks deploy's imports).
# `settings` (the settings reference, `up`); `compose`, `mailer`, `mime`: the mail bench drives
# the real composer and mailer; `retention` (`ops purge`).
# `commands`: `visio-rdv notifications …`, which deploy's cli loads by name (COMMAND_PACKAGES).
PUBLIC_MODULES = ("commands", "settings", "compose", "mailer", "mime", "retention")
