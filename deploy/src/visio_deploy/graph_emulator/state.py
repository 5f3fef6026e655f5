"""In-memory state of the emulator: mailboxes' events, Teams meetings, policy, stats, clock."""

from __future__ import annotations

import datetime as dt
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from typing import Any, Literal

from visio_deploy.graph_emulator.artifacts import Artifacts
from visio_deploy.graph_emulator.faults import FaultInjector
from visio_deploy.graph_emulator.settings import AppRegistration, EmulatorSettings
from visio_deploy.graph_emulator.tokens import TokenService


@dataclass
class StoredEvent:
    id: str
    user_id: str
    ical_uid: str
    transaction_id: str | None
    start: dt.datetime  # UTC
    end: dt.datetime  # UTC
    start_zone: str  # as the client sent it: originalStartTimeZone
    end_zone: str
    fields: dict[str, Any]  # the other Graph properties the client set (subject, body...)
    extended_properties: dict[str, str]  # singleValueExtendedProperties, id -> value
    created_at: dt.datetime
    updated_at: dt.datetime
    change_key: str
    online_meeting_id: str | None = None
    deleted_at: dt.datetime | None = None
    cancel_comment: str | None = None  # set when the organiser cancelled it (POST …/cancel)

    @property
    def is_deleted(self) -> bool:
        return self.deleted_at is not None


@dataclass
class StoredMeeting:
    id: str
    user_id: str
    event_id: str
    join_web_url: str
    thread_id: str
    join_meeting_id: str
    passcode: str
    conference_id: str | None  # dial-in, when the organiser has Audio Conferencing
    start: dt.datetime
    end: dt.datetime
    subject: str | None
    created_at: dt.datetime
    options: dict[str, Any]  # allowRecording, lobbyBypassSettings, ... (updatable options)
    deleted_at: dt.datetime | None = None


def default_meeting_options() -> dict[str, Any]:
    """What Teams gives a meeting created from a calendar event, absent tenant policies."""
    return {
        "allowedPresenters": "everyone",
        "allowAttendeeToEnableCamera": True,
        "allowAttendeeToEnableMic": True,
        "allowMeetingChat": "enabled",
        "allowRecording": True,
        "allowTranscription": True,
        "allowTeamworkReactions": True,
        "isEntryExitAnnounced": True,
        "lobbyBypassSettings": {"scope": "organization", "isDialInBypassEnabled": False},
        "recordAutomatically": False,
    }


@dataclass
class AccessPolicy:
    """Application access policy; None means granted for every user (a global grant)."""

    calendar_user_ids: frozenset[str] | None = None
    online_meeting_user_ids: frozenset[str] | None = None

    @staticmethod
    def _allows(allowed: frozenset[str] | None, user_id: str) -> bool:
        return allowed is None or user_id.lower() in allowed

    def allows_calendar(self, user_id: str) -> bool:
        return self._allows(self.calendar_user_ids, user_id)

    def allows_online_meetings(self, user_id: str) -> bool:
        return self._allows(self.online_meeting_user_ids, user_id)


def normalize_ids(user_ids: list[str] | None) -> frozenset[str] | None:
    return None if user_ids is None else frozenset(u.lower() for u in user_ids)


@dataclass
class Mailbox:
    """What the tenant's admins decided for one user (licences), and whether the tenant has
    the user at all (any GUID or address is a user unless told otherwise)."""

    teams_enabled: bool = True
    audio_conferencing: bool = True
    exists: bool = True


@dataclass
class Stats:
    calls: Counter[str] = field(default_factory=Counter)
    responses: defaultdict[str, Counter[str]] = field(default_factory=lambda: defaultdict(Counter))
    transaction_replays: Counter[str] = field(default_factory=Counter)
    # Requests being served per mailbox (from arrival to answer), and the highest seen.
    in_flight: Counter[str] = field(default_factory=Counter)
    max_in_flight: Counter[str] = field(default_factory=Counter)
    max_in_flight_total: int = 0
    concurrency_throttled: Counter[str] = field(default_factory=Counter)

    def enter(self, mailbox: str) -> int:
        """Count a request arriving for `mailbox`; returns how many are now in flight."""
        self.in_flight[mailbox] += 1
        now = self.in_flight[mailbox]
        self.max_in_flight[mailbox] = max(self.max_in_flight[mailbox], now)
        self.max_in_flight_total = max(self.max_in_flight_total, sum(self.in_flight.values()))
        return now

    def leave(self, mailbox: str) -> None:
        self.in_flight[mailbox] -= 1


class EmulatorState:
    def __init__(self, settings: EmulatorSettings) -> None:
        self.settings = settings
        self.base_url = settings.public_base_url
        # The signing key survives resets so clients' cached tokens stay valid.
        self.tokens = TokenService(settings.tenant_id)
        self.apps: dict[str, AppRegistration] = {
            app.client_id.lower(): app for app in settings.app_registrations()
        }
        self.clock_offset = dt.timedelta(0)
        self.reset()

    def reset(self) -> None:
        """Back to how the emulator started: no data, the configured faults and licences."""
        settings = self.settings
        self.events: dict[str, StoredEvent] = {}
        self.meetings: dict[str, StoredMeeting] = {}
        self.artifacts = Artifacts()  # attendance reports and recordings, as scripted
        self.stats = Stats()
        self.faults = FaultInjector()
        self.faults.configure(settings.faults)
        allowed = normalize_ids(settings.allowed_user_ids)
        self.access_policy = AccessPolicy(allowed, allowed)
        self.join_url_style: Literal["classic", "short"] = settings.join_url_style
        self.mailboxes: dict[str, Mailbox] = {
            user.lower(): Mailbox(teams_enabled=False, audio_conferencing=False)
            for user in settings.teams_disabled_user_ids
        }
        self.clock_offset = dt.timedelta(0)

    def mailbox(self, user_id: str) -> Mailbox:
        default = Mailbox(audio_conferencing=self.settings.audio_conferencing)
        return self.mailboxes.get(user_id.lower(), default)

    def now(self) -> dt.datetime:
        return dt.datetime.now(dt.UTC) + self.clock_offset

    def advance_clock(self, seconds: float) -> None:
        self.clock_offset += dt.timedelta(seconds=seconds)

    def live_event_by_transaction(self, user_id: str, transaction_id: str) -> StoredEvent | None:
        for event in self.events.values():
            if (
                event.transaction_id == transaction_id
                and event.user_id.lower() == user_id.lower()
                and not event.is_deleted
            ):
                return event
        return None

    def user_event(self, user_id: str, event_id: str) -> StoredEvent | None:
        event = self.events.get(event_id)
        if event is None or event.is_deleted or event.user_id.lower() != user_id.lower():
            return None
        return event

    def user_meeting(self, user_id: str, meeting_id: str) -> StoredMeeting | None:
        meeting = self.meetings.get(meeting_id)
        if meeting is None or meeting.deleted_at is not None:
            return None
        if meeting.user_id.lower() != user_id.lower():
            return None
        return meeting

    def external_id_of(self, event: StoredEvent) -> str | None:
        suffix = f" name {self.settings.external_id_property_name}".lower()
        for prop_id, value in event.extended_properties.items():
            if prop_id.lower().endswith(suffix):
                return value
        return None
