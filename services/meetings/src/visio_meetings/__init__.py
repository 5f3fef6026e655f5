"""Visio RDV meetings: a Teams meeting in the advisor's calendar for each appointment
(Microsoft Graph)."""

# The modules `deploy` (the `visio-rdv` command, proofs, bench) may import; any other is this
# service's own, free to change (tests/test_structure.py checks deploy's imports).
# `settings` (the settings reference); `graph`, `meeting`, `payloads`, `provisioning`: the Graph
# bench drives the real client.
PUBLIC_MODULES = ("settings", "graph", "meeting", "payloads", "provisioning")
