"""What the chaos run does to each appointment, not only booking it: a share is rescheduled (some
twice), some cancelled, some have their recording withdrawn, some ask for their link again, some
start soon enough that a reminder falls due during the run, and — on purpose — some are booked
with an advisor whose calendar Graph refuses for good. All of it while the faults are on.

Each appointment's part is drawn from (seed, its number) (`plan`), and each step waits for the
effect of the one before (the email that announces it), so the run knows exactly what must be
true at the end (`Story`, judged by `verdict`): an update sent for each reschedule, never one
email standing for two changes. A step that cannot be taken within `step_timeout_s` stops that
appointment's story, and the verdict says so.
"""

from __future__ import annotations

import asyncio
import email
import email.policy
import json
import random
import re
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from email.message import EmailMessage
from pathlib import Path
from typing import TYPE_CHECKING, Any
from zoneinfo import ZoneInfo

import asyncpg
import httpx
from aiokafka import AIOKafkaProducer

from visio_deploy.proof import bookings
from visio_deploy.proof.partners import ReplyReader

if TYPE_CHECKING:
    from visio_deploy.proof.chaos import ChaosOptions

# One appointment in ten of each part; `refused` only when the run plans permanent faults.
ROLES = (
    "plain",
    "reschedule",
    "reschedule_twice",
    "cancel",
    "withdraw",
    "link_again",
    "reminder",
    "reschedule",
    "refused",
    "plain",
)
# Graph refuses this advisor's calendar (the emulator's access policy): a permanent fault.
REFUSED_ADVISOR = "0badc0de-0000-4000-8000-000000000403"
FAILED = ("meeting_failed", "notification_failed")
# A reminder due this close to the confirmation may go or be skipped, by a second either way.
REMINDER_MARGIN_S = 15.0
_ZONE = ZoneInfo("Indian/Reunion")
_PAGE_LINK = re.compile(r"(https?://\S+/mon-rendez-vous/[A-Za-z0-9_.~-]+)")
# How many times a person reloads a page that does not offer the resend form yet (a second
# apart).
FORMLESS_RELOADS = 30
_RESEND_TOKEN = re.compile(r'action="[^"]*/renvoyer".*?name="jeton"\s+value="([^"]+)"', re.DOTALL)


@dataclass(frozen=True)
class Plan:
    number: int
    key: str  # the booking's Idempotency-Key or request_id
    channel: str  # "http" or "kafka"
    role: str
    body: dict[str, Any]


def advisor_of(options: ChaosOptions, number: int) -> str:
    """The advisor of the run's appointment `number`: one each, drawn from (seed, number), so
    the run can tell Graph's access policy which calendars to open."""
    return bookings.drawn_id(f"{options.seed}:advisor:{number}")


def plan(options: ChaosOptions, number: int, now: datetime) -> Plan:
    rng = random.Random(f"{options.seed}:booking:{number}")
    role = ROLES[(number + options.seed) % len(ROLES)] if options.story else "plain"
    if role == "refused" and not options.permanent_faults:
        role = "plain"
    body = bookings.booking_body(rng)
    if role == "reminder":
        # Starts just after the shortest reminder lead: that reminder falls due in the run.
        lead = min(options.reminder_offsets_minutes)
        start = now + timedelta(minutes=lead, seconds=options.reminder_due_s)
        start = start.replace(second=0, microsecond=0) + timedelta(minutes=1)
    else:
        # Three days ahead at least: no reminder of the usual leads falls due during the run.
        start = (now + timedelta(days=rng.randint(3, 60))).astimezone(_ZONE)
        start = start.replace(hour=rng.randint(8, 15), minute=rng.choice((0, 30)), second=0)
        start = start.replace(microsecond=0)
    if role == "refused":
        # All on the one advisor Graph refuses: an hour of its own each (one refused appointment
        # in len(ROLES)), so none overlaps another, within booking's horizon.
        slot = number // len(ROLES)
        start = (now + timedelta(days=3 + slot % 170)).astimezone(_ZONE)
        start = start.replace(hour=8 + slot // 170 % 8, minute=0, second=0, microsecond=0)
    body["start"] = start.astimezone(_ZONE).isoformat()
    # An advisor of its own: booking refuses two live appointments of one advisor that overlap,
    # and the story moves appointments (and books its reminders at one time) as it goes.
    body["advisor"] = {"id": advisor_of(options, number), "display_name": "Claire Martin"}
    if role == "withdraw":
        body["consent"]["recording_authorised"] = True
    if role == "refused":
        body["advisor"] = {"id": REFUSED_ADVISOR, "display_name": "Calendrier refusé"}
    channel = "http" if number % 2 == 0 else "kafka"
    return Plan(number, f"chaos-{options.seed}-{number}", channel, role, body)


@dataclass
class Story:
    """What the run did to one appointment, and what booking answered each time."""

    plan: Plan
    appointment_id: str | None = None
    revision: int = 1
    start: datetime = field(default_factory=lambda: datetime.now(UTC))
    duration_minutes: int = 30
    rescheduled: list[int] = field(default_factory=list)  # the revisions booking answered
    cancelled_at: int | None = None  # the revision of the cancellation
    withdrawn: bool = False
    link_asked: bool = False
    requests: list[str] = field(default_factory=list)  # Kafka request ids sent
    stopped: str | None = None  # why the story could not go on
    refused_why: str | None = None  # the booking itself was refused

    def __post_init__(self) -> None:
        self.start = datetime.fromisoformat(self.plan.body["start"])
        self.duration_minutes = int(self.plan.body["duration_minutes"])

    @property
    def recording(self) -> bool:
        """Whether the Teams meeting must allow recording: the latest consent's choice."""
        return bool(self.plan.body["consent"]["recording_authorised"]) and not self.withdrawn


@dataclass
class Actor:
    """What the stories act through: booking's API and a partner's topics, consent's API, the
    sink's mail folder and booking's rows (to stop waiting when an appointment failed)."""

    options: ChaosOptions
    http: httpx.AsyncClient
    consent: httpx.AsyncClient
    producer: AIOKafkaProducer
    request_topic: str
    replies: ReplyReader
    mail_dir: Path
    pool: asyncpg.Pool
    gate: asyncio.Semaphore
    deadline: float

    async def tell(self, story: Story) -> None:
        """Play one appointment's story to its end, or to the step it cannot take."""
        try:
            async with self.gate:
                if not await self._book(story):
                    return
            await self._play(story)
        except StoryStopped as stop:
            story.stopped = str(stop)

    async def _play(self, story: Story) -> None:
        role = story.plan.role
        if role == "refused":
            await self._wait_status(story, "meeting_failed")
            return
        await self._wait_mail(story, f"r{story.revision}.confirmation@", "the confirmation")
        if role in ("reschedule", "reschedule_twice"):
            for step in range(2 if role == "reschedule_twice" else 1):
                moved = story.start + timedelta(hours=1)
                body = {"start": moved.isoformat()}
                answer = await self._change(story, "RescheduleAppointment", body, step)
                story.revision, story.start = int(answer["revision"]), moved
                story.rescheduled.append(story.revision)
                await self._wait_mail(
                    story, f"r{story.revision}.rescheduled@", f"update r{story.revision}"
                )
        elif role == "cancel":
            answer = await self._change(story, "CancelAppointment", {"reason": "user"}, 0)
            story.revision = story.cancelled_at = int(answer["revision"])
            await self._wait_mail(story, f"r{story.revision}.cancellation@", "the cancellation")
        elif role == "withdraw":
            await self._withdraw(story)
        elif role == "link_again":
            await self._link_again(story)
            await self._wait_mail(story, f"r{story.revision}.link_resent-", "the link again")
        elif role == "reminder":
            await self._wait_reminder(story)

    # --- steps ------------------------------------------------------------------------------

    async def _book(self, story: Story) -> bool:
        plan = story.plan
        if plan.channel == "http":
            appointment, why = await bookings.book_over_http(
                self.http, plan.body, plan.key, self.deadline
            )
            story.appointment_id, story.refused_why = appointment, None if appointment else why
            return appointment is not None
        value = bookings.kafka_request(plan.body, plan.key)
        answer = await self._over_kafka(story, plan.key, value)
        story.appointment_id = str(answer["appointment_id"])
        return True

    async def _change(
        self, story: Story, request_type: str, body: dict[str, Any], step: int
    ) -> dict[str, Any]:
        assert story.appointment_id is not None
        key = f"{story.plan.key}-{request_type}-{step}"
        if story.plan.channel == "http":
            verb = "reschedule" if request_type == "RescheduleAppointment" else "cancel"
            path = f"/v1/appointments/{story.appointment_id}/{verb}"
            answer, why = await bookings.post_over_http(self.http, path, body, key, self.deadline)
            if answer is None:
                raise StoryStopped(f"{request_type} refused: {why}")
            return answer
        value = bookings.kafka_request(body, key, request_type, story.appointment_id)
        return await self._over_kafka(story, key, value)

    async def _over_kafka(self, story: Story, key: str, value: bytes) -> dict[str, Any]:
        """Send a request as the partner does, and read its answer where the partner reads it;
        no answer there (a reply lost): booking's own idempotency record, to go on with the
        story, which the verdict still holds against the run."""
        story.requests.append(key)
        sent = await bookings.send_over_kafka(
            self.producer, self.request_topic, value, key, self.deadline
        )
        if not sent:
            raise StoryStopped(f"request {key}: the broker never acknowledged it")
        # A partner waits for its answer; past `reply_within_s` it also looks at booking's own
        # record (a reply lost), and goes on waiting for either as long as a step may take (or
        # the run's deadline): a request booking takes minutes to reach under chaos is late,
        # not refused.
        give_up = min(self.deadline, time.monotonic() + self.options.step_s)
        while True:
            replies = await self.replies.wait(key, self.options.reply_within_s)
            for reply in replies:
                if reply.get("event_type") == "BookingRejected":
                    raise StoryStopped(f"request {key} rejected: {reply.get('detail')}")
                if reply.get("event_type") == "BookingAccepted":
                    return reply
            async with self.pool.acquire() as conn:
                recorded = await conn.fetchval(
                    "SELECT response FROM booking.idempotency_keys WHERE caller = $1 AND key = $2",
                    bookings.KAFKA_CALLER,
                    key,
                )
            if recorded is not None:
                answer: dict[str, Any] = json.loads(recorded)
                return answer
            if time.monotonic() >= give_up:
                raise StoryStopped(f"request {key}: no reply, and booking holds no answer")

    async def _withdraw(self, story: Story) -> None:
        path = f"/v1/appointments/{story.appointment_id}/recording-withdrawal"
        why = "deadline"
        while time.monotonic() < self.deadline:
            try:
                answer = await self.consent.post(path)
            except httpx.HTTPError as exc:
                why = type(exc).__name__
            else:
                if answer.status_code in (200, 201):
                    story.withdrawn = True
                    return
                why = f"{answer.status_code} {answer.text[:200]}"
                if answer.status_code not in (404, 429) and answer.status_code < 500:
                    break  # 404: consent has not read the appointment yet
            await asyncio.sleep(1)  # a client's backoff
        raise StoryStopped(f"recording withdrawal: {why}")

    async def _link_again(self, story: Story) -> None:
        """« Recevoir à nouveau le lien », from the link in the person's confirmation."""
        [confirmation] = sorted(self.mail_dir.glob(f"{story.appointment_id}.r1.confirmation@*"))[:1]
        message = email.message_from_bytes(confirmation.read_bytes(), policy=email.policy.default)
        assert isinstance(message, EmailMessage)
        text = message.get_body(("plain",))
        found = _PAGE_LINK.search(str(text.get_content()) if text is not None else "")
        if found is None:
            raise StoryStopped("no « Mon rendez-vous » link in the confirmation")
        page = found.group(1)
        why = "deadline"
        retried = False
        # The email and the page read different topics: the page may not know the link the
        # email already carries for a moment (booking records MeetingReady after notifications
        # has sent it). A person reloads; a page that never offers the form still stops.
        formless = 0
        while time.monotonic() < self.deadline:
            try:
                opened = await self.http.get(page)
                if opened.status_code >= 500:  # a cut database connection, say: reloaded
                    why, retried = f"page {opened.status_code}", True
                    await asyncio.sleep(1)  # a person reloads the page
                    continue
                token = _RESEND_TOKEN.search(opened.text)
                if token is None and opened.status_code == 200 and formless < FORMLESS_RELOADS:
                    formless += 1
                    await asyncio.sleep(1)  # a person reloads the page
                    continue
                if token is None:
                    raise StoryStopped(
                        f"no resend form on the page ({opened.status_code}, "
                        f"after {formless} reloads)"
                    )
                answer = await self.http.post(
                    page + "/renvoyer", data={"jeton": token.group(1)}, headers={}
                )
            except httpx.HTTPError as exc:
                why, retried = type(exc).__name__, True
            else:
                if answer.status_code == 200 or (answer.status_code == 429 and retried):
                    story.link_asked = True
                    return
                why = str(answer.status_code)
                retried = answer.status_code >= 500
                if not retried:
                    break
            await asyncio.sleep(1)  # a person clicks again
        raise StoryStopped(f"link again: {why}")

    # --- waits ------------------------------------------------------------------------------

    async def _wait_mail(self, story: Story, pattern: str, what: str) -> None:
        """Until the sink holds the email (`<appointment>.<pattern>…`), or the appointment
        failed, or the step's time is up."""
        deadline = time.monotonic() + self.options.step_s
        glob = f"{story.appointment_id}.{pattern}*"
        polls = 0
        while time.monotonic() < deadline:
            if any(self.mail_dir.glob(glob)):
                return
            polls += 1
            if polls % 4 == 0 and (status := await self._status(story)) in FAILED:
                raise StoryStopped(f"waiting for {what}: the appointment ended {status}")
            await asyncio.sleep(0.5)  # the sink writes files; nothing to subscribe to
        raise StoryStopped(f"{what} not in the sink after {self.options.step_s:g} s")

    async def _wait_reminder(self, story: Story) -> None:
        """The reminder goes if the person held their link before it fell due (else it is
        skipped, and the verdict owes none): wait for it then."""
        lead = min(self.options.reminder_offsets_minutes)
        due = (story.start - timedelta(minutes=lead)).timestamp()
        confirmations = self.mail_dir.glob(f"{story.appointment_id}.r1.confirmation@*")
        confirmed = min((p.stat().st_mtime for p in confirmations), default=None)
        if confirmed is None or confirmed >= due - REMINDER_MARGIN_S:
            return
        await asyncio.sleep(max(0.0, due - time.time()))  # the reminder's own time
        await self._wait_mail(story, f"r1.reminder-{lead}@", "the reminder")

    async def _wait_status(self, story: Story, status: str) -> None:
        deadline = time.monotonic() + self.options.step_s
        while time.monotonic() < deadline:
            if await self._status(story) == status:
                return
            await asyncio.sleep(1)
        raise StoryStopped(f"not {status} after {self.options.step_s:g} s")

    async def _status(self, story: Story) -> str | None:
        async with self.pool.acquire() as conn:
            status: str | None = await conn.fetchval(
                "SELECT status FROM booking.appointments WHERE appointment_id = $1::uuid",
                story.appointment_id,
            )
        return status


class StoryStopped(Exception):
    """A step of an appointment's story could not be taken: the verdict reports why."""
