"""Visio RDV booking: the appointments, their HTTP API and Kafka requests, and the self-service
pages."""

# The modules `deploy` (the `visio-rdv` command, proofs, bench) may import; any other is this
# service's own, free to change (tests/test_structure.py checks deploy's imports).
# `settings` (the settings reference, production compose), `keys` (its API-key scopes), `erasure`
# (`ops erasure`), `retention` (`ops purge`).
# `commands`: `visio-rdv booking …`, which deploy's cli loads by name (COMMAND_PACKAGES).
PUBLIC_MODULES = ("commands", "settings", "keys", "erasure", "retention")
