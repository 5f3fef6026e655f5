"""`visio-rdv ops`: what operations need at 3 a.m. — topics, consumer lag, dead letters and
their replay, a readable tail of any topic, stuck and failed appointments, the purge of expired
personal data, and the alerts that tell a Caf about a person left without a meeting or email."""
