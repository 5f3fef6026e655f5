"""Topic names: `<prefix>.<stream>.v<N>`; the prefix is a setting so tests can share a broker."""

from __future__ import annotations

import re
from dataclasses import dataclass

DEFAULT_PREFIX = "visio-rdv"
SERVICES = ("booking", "meetings", "notifications", "consent")

# A partner system's name, as it appears in its topics' names and its broker principal: lower
# case letters, digits and inner hyphens, so a topic name reads back to one system only.
PARTNER_NAME = re.compile(r"[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?")
PARTNER_REQUESTS = "booking-requests"
PARTNER_REPLIES = "booking-replies"


def check_partner_name(name: str) -> str:
    """The name, if it can name a partner's topics; else a ValueError saying why."""
    if not PARTNER_NAME.fullmatch(name):
        raise ValueError(
            f"{name!r} cannot name a partner: use 1 to 63 lower-case letters, digits and inner "
            "hyphens (it becomes part of the partner's topic names)"
        )
    return name


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

    def partner_requests(self, partner: str) -> str:
        """Where one partner system writes its requests, and it alone (its broker principal's
        ACL): `<prefix>.booking-requests.<partner>.v1`. Booking takes the topic as the caller."""
        return self._name(f"{PARTNER_REQUESTS}.{check_partner_name(partner)}")

    def partner_replies(self, partner: str) -> str:
        """Where one partner system reads the answers to its requests and the outcome of each
        appointment it created: `<prefix>.booking-replies.<partner>.v1`."""
        return self._name(f"{PARTNER_REPLIES}.{check_partner_name(partner)}")

    def partner_topics(self, partners: list[str] | tuple[str, ...]) -> list[str]:
        """Each partner's request and reply topics, in the order the partners are given."""
        return [
            topic
            for partner in partners
            for topic in (self.partner_requests(partner), self.partner_replies(partner))
        ]

    def partner_of(self, topic: str) -> tuple[str, str] | None:
        """`(stream, partner)` of a partner topic (`booking-requests` or `booking-replies`),
        None for any other topic (the shared `booking-requests.v1` included)."""
        for stream in (PARTNER_REQUESTS, PARTNER_REPLIES):
            head = f"{self.prefix}.{stream}."
            if topic.startswith(head) and topic.endswith(".v1"):
                partner = topic[len(head) : -len(".v1")]
                if PARTNER_NAME.fullmatch(partner):
                    return stream, partner
        return None

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
