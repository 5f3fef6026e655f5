"""Visio RDV alerts: tells the Caf's team, by email, of appointments that failed or whose
emails are late."""

# The modules `deploy` (the `visio-rdv` command, proofs, bench) may import; any other is this
# service's own, free to change (tests/test_structure.py checks deploy's imports).
# `ops alerts` runs `main`; the settings reference and ops read `settings`; `ops purge` asks
# `retention`.
PUBLIC_MODULES = ("main", "settings", "retention")
