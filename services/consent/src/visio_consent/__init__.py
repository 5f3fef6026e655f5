"""Visio RDV consent: the append-only, hash-chained ledger of CGU acceptances and recording
choices."""

# The modules `deploy` (the `visio-rdv` command, proofs, bench) may import; any other is this
# service's own, free to change (tests/test_structure.py checks deploy's imports).
# `settings` (the settings reference, production compose), `keys` (its API-key scopes), `ledger`
# (the hash chain's `record_hash`, which the tamper proof recomputes).
# `commands`: `visio-rdv consent …`, which deploy's cli loads by name (COMMAND_PACKAGES).
PUBLIC_MODULES = ("commands", "settings", "keys", "ledger")
