"""Topic names: `<prefix>.<stream>.v<N>`; the prefix is a setting so tests can share a broker."""

from __future__ import annotations

from dataclasses import dataclass

DEFAULT_PREFIX = "visio-rdv"
SERVICES = ("booking", "meetings", "notifications", "consent")


@dataclass(frozen=True)
class Topics:
    prefix: str = DEFAULT_PREFIX

    def _name(self, stream: str, version: int = 1) -> str:
        return f"{self.prefix}.{stream}.v{version}"

    @property
    def appointments(self) -> str:
        return self._name("appointments")

    @property
    def booking_requests(self) -> str:
        return self._name("booking-requests")

    @property
    def booking_replies(self) -> str:
        return self._name("booking-replies")

    @property
    def meetings(self) -> str:
        return self._name("meetings")

    @property
    def notifications(self) -> str:
        return self._name("notifications")

    @property
    def consents(self) -> str:
        return self._name("consents")

    @property
    def consent_checkpoints(self) -> str:
        return self._name("consent-checkpoints")

    def dlq(self, service: str) -> str:
        """The dead-letter topic of one service: `<prefix>.<service>.dlq`."""
        return f"{self.prefix}.{service}.dlq"

    def group(self, service: str) -> str:
        """The consumer group of one service."""
        return f"{self.prefix}.{service}"

    def streams(self) -> list[str]:
        """Every event stream of the system (dead-letter topics aside)."""
        return [
            self.booking_requests,
            self.booking_replies,
            self.appointments,
            self.meetings,
            self.notifications,
            self.consents,
            self.consent_checkpoints,
        ]

    def all(self, services: tuple[str, ...] = SERVICES) -> list[str]:
        """Every topic of the system: the streams and each service's dead-letter topic."""
        return self.streams() + [self.dlq(service) for service in services]
