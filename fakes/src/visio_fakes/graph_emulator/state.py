"""In-memory state of the emulator: mailboxes' events, Teams meetings, policy, stats, clock."""

from __future__ import annotations

import datetime as dt
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from typing import Any, Literal
from urllib.parse import unquote

from visio_fakes.graph_emulator.artifacts import Artifacts
from visio_fakes.graph_emulator.faults import FaultInjector
from visio_fakes.graph_emulator.settings import AppRegistration, EmulatorSettings
from visio_fakes.graph_emulator.tokens import TokenService


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
    in_flight_total: int = 0
    # The client ends (address, port) Graph calls came from: one per TCP connection, so a
    # client that keeps its connections alive shows few, one that reconnects shows many.
    connections: set[tuple[str, int]] = field(default_factory=set)
    batches: int = 0  # POST /$batch envelopes
    batched_requests: int = 0  # the requests they carried
    # Outlook requests of a batch past its first four: each waited a round of Graph's latency.
    outlook_requests_queued: int = 0
    # Messages Outlook sent attendees of events (invitation, update, cancellation: one per
    # attendee), and online events whose body was written without its Teams block.
    attendee_messages: Counter[str] = field(default_factory=Counter)
    teams_blocks_removed: int = 0

    def enter(self, mailbox: str) -> int:
        """Count a request arriving for `mailbox`; returns how many are now in flight."""
        self.in_flight[mailbox] += 1
        self.in_flight_total += 1
        now = self.in_flight[mailbox]
        if now > self.max_in_flight[mailbox]:
            self.max_in_flight[mailbox] = now
        if self.in_flight_total > self.max_in_flight_total:
            self.max_in_flight_total = self.in_flight_total
        return now

    def leave(self, mailbox: str) -> None:
        self.in_flight[mailbox] -= 1
        self.in_flight_total -= 1


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
        # Authorisation codes of the users' sign-in (signin.py), by code: one use each.
        self.sign_in_codes: dict[str, Any] = {}
        self.reset()

    def reset(self) -> None:
        """Back to how the emulator started: no data, the configured faults and licences."""
        settings = self.settings
        self.events: dict[str, StoredEvent] = {}
        self.meetings: dict[str, StoredMeeting] = {}
        # Indexes, keyed by what Graph's look-ups ask for, so that no call scans the tenant:
        # a mailbox's live events in creation order; a live event per (mailbox, transactionId);
        # live events per (mailbox, extended property, value); meetings per join URL and id.
        self._user_events: dict[str, dict[str, StoredEvent]] = {}
        self._by_transaction: dict[tuple[str, str], StoredEvent] = {}
        self._by_property: dict[tuple[str, str, str], dict[str, StoredEvent]] = {}
        self._by_join_url: dict[str, StoredMeeting] = {}
        self._by_join_id: dict[str, StoredMeeting] = {}
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

    # --- the indexes: every change of an event or a meeting goes through these ------------

    def add_event(self, event: StoredEvent) -> None:
        self.events[event.id] = event
        user = event.user_id.lower()
        self._user_events.setdefault(user, {})[event.id] = event
        if event.transaction_id is not None:
            self._by_transaction[(user, event.transaction_id)] = event
        for prop_id, value in event.extended_properties.items():
            key = (user, property_key(prop_id), value.lower())
            self._by_property.setdefault(key, {})[event.id] = event

    def index_properties(self, event: StoredEvent, properties: dict[str, str]) -> None:
        """Set `properties` on a live event and index them (new ones, or new values)."""
        user = event.user_id.lower()
        for prop_id, value in properties.items():
            old = event.extended_properties.get(prop_id)
            if old is not None:
                self._by_property.get((user, property_key(prop_id), old.lower()), {}).pop(
                    event.id, None
                )
            event.extended_properties[prop_id] = value
            key = (user, property_key(prop_id), value.lower())
            self._by_property.setdefault(key, {})[event.id] = event

    def forget_event(self, event: StoredEvent) -> None:
        """Drop a deleted (or cancelled) event from the live indexes; it stays in `events`."""
        user = event.user_id.lower()
        self._user_events.get(user, {}).pop(event.id, None)
        if event.transaction_id is not None:
            if self._by_transaction.get((user, event.transaction_id)) is event:
                del self._by_transaction[(user, event.transaction_id)]
        for prop_id, value in event.extended_properties.items():
            self._by_property.get((user, property_key(prop_id), value.lower()), {}).pop(
                event.id, None
            )
        meeting = self.meetings.get(event.online_meeting_id or "")
        if meeting is not None:
            self.forget_meeting(meeting)

    def add_meeting(self, meeting: StoredMeeting) -> None:
        self.meetings[meeting.id] = meeting
        self._by_join_url[unquote(meeting.join_web_url)] = meeting
        self._by_join_id[meeting.join_meeting_id] = meeting

    def forget_meeting(self, meeting: StoredMeeting) -> None:
        self._by_join_url.pop(unquote(meeting.join_web_url), None)
        self._by_join_id.pop(meeting.join_meeting_id, None)

    def live_events_of(self, user_id: str) -> list[StoredEvent]:
        """The mailbox's live events, oldest first."""
        return list(self._user_events.get(user_id.lower(), {}).values())

    def live_events_with_property(
        self, user_id: str, prop_id: str, value: str
    ) -> list[StoredEvent]:
        """The mailbox's live events whose property `prop_id` is `value` (any case)."""
        found = self._by_property.get((user_id.lower(), property_key(prop_id), value.lower()))
        return sorted(found.values(), key=lambda e: e.created_at) if found else []

    def live_meeting_by_join_url(self, join_url: str) -> StoredMeeting | None:
        """The live meeting behind a join URL, whatever its percent-encoding."""
        return self._by_join_url.get(unquote(join_url))

    def live_meeting_by_join_id(self, join_meeting_id: str) -> StoredMeeting | None:
        return self._by_join_id.get(join_meeting_id)

    def live_event_by_transaction(self, user_id: str, transaction_id: str) -> StoredEvent | None:
        return self._by_transaction.get((user_id.lower(), transaction_id))

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


def property_key(prop_id: str) -> str:
    """What identifies an extended property for Graph: its set and type in any case, its
    Name exactly (see `events.same_property_id`)."""
    head, _, name = prop_id.partition(" Name ")
    return f"{head.lower()} Name {name}" if name else head.lower()
