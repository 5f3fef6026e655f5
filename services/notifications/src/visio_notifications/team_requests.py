"""The Caf team's email when a person asks, from « Mon rendez-vous », to move an appointment
booked over HTTP (RescheduleRequested): slots are the Caf's, so its team must find one and
reschedule through the normal path, which sends the person the update email with the same link.

An appointment a partner created over Kafka gets no email here: booking told that partner on
its outcome stream (`reschedule_requested`). The address is configuration's, never a guess: the
Caf's `team_address` in the Caf contacts, else `NOTIFICATIONS_CAF_TEAM_ADDRESS`; with neither,
the request is logged as a warning and counted (`visio_team_requests_total{outcome="no_address"}`)
— booking keeps it in its own table and the appointment's history.

As little personal data as the team needs: the person's first name and the initial of their last
name, the appointment's id (the team finds the rest in its own tools), when it is, and what the
person said would suit them. Once per event (its processed marker, written after the relay took
the email; a crash in between sends it again with the same Message-ID). The Message-ID starts
with the appointment's id, as every email's, so an erasure finds it in the local sink too.
"""

from __future__ import annotations

import logging
from datetime import datetime
from email.message import EmailMessage

from visio_runtime import french_dates as dates
from visio_runtime.db import mark_processed
from visio_runtime.metrics import Metrics
from visio_shared import AppointmentRequested, RescheduleRequested
from visio_shared.booking_requests import kafka_system
from visio_shared.events import DAY_PART_LABELS

from visio_notifications.compose import request_message_id, sender_address
from visio_notifications.deps import NotificationsDeps
from visio_notifications.letter_parts import clean
from visio_notifications.link_requests import done_or_erased
from visio_notifications.mailer import MailRejected, mail_of
from visio_notifications.settings import NotificationsSettings

log = logging.getLogger(__name__)

KIND = "reschedule_request"
OUTCOMES = ("sent", "partner", "no_address", "refused", "unknown")


class TeamMetrics:
    """What ops watch (docs/operations.md)."""

    def __init__(self, metrics: Metrics) -> None:
        self.metrics = metrics
        self.requests = metrics.outcomes(
            "team_requests_total",
            "Requests to move an appointment, by what became of the Caf team's email: sent; "
            "partner (the partner was told on Kafka, no email); no_address (no team address "
            "configured: nobody was mailed); refused (by the relay); unknown (appointment not "
            "known here).",
            OUTCOMES,
        )


async def on_reschedule_requested(
    deps: NotificationsDeps, event: RescheduleRequested, metrics: TeamMetrics
) -> None:
    async with deps.pool.acquire() as conn:
        if await done_or_erased(conn, event):
            return
        stored = await conn.fetchval(
            "SELECT payload::text FROM appointments WHERE appointment_id = $1",
            event.appointment_id,
        )
    outcome = await _tell_the_team(deps, event, stored)
    async with deps.pool.acquire() as conn:
        await mark_processed(conn, event.event_id, event.event_type)
    metrics.requests.labels(outcome).inc()
    say = log.warning if outcome in ("no_address", "refused", "unknown") else log.info
    say(
        "request to move %s r%d: %s",
        event.appointment_id,
        event.revision,
        DESCRIBED[outcome],
        extra={"correlation_id": str(event.correlation_id)},
    )


DESCRIBED = {
    "sent": "the Caf's team is mailed",
    "partner": "its partner was told on its outcome stream, no email",
    "no_address": "NO team address configured (the Caf's team_address in "
    "NOTIFICATIONS_CAF_CONTACTS, or NOTIFICATIONS_CAF_TEAM_ADDRESS): nobody was mailed",
    "refused": "the relay refused the team's address: nobody was mailed",
    "unknown": "the appointment is not known here: nobody was mailed",
}


async def _tell_the_team(
    deps: NotificationsDeps, event: RescheduleRequested, stored: str | None
) -> str:
    if kafka_system(event.calling_system) is not None:
        return "partner"
    if stored is None:
        return "unknown"
    appointment = AppointmentRequested.model_validate_json(stored)
    address = team_address(deps.settings, appointment.caf_code)
    if address is None:
        return "no_address"
    try:
        await deps.send_mail(mail_of(compose(event, appointment, address, deps.settings)))
    except MailRejected:  # Transient is raised on: the consumer tries again
        return "refused"
    return "sent"


def team_address(settings: NotificationsSettings, caf_code: str) -> str | None:
    own = settings.team_address_of(caf_code)
    if own is not None:
        return own
    return None if settings.caf_team_address is None else str(settings.caf_team_address)


def compose(
    event: RescheduleRequested,
    appointment: AppointmentRequested,
    address: str,
    settings: NotificationsSettings,
) -> EmailMessage:
    """Plain French text: who (first name and initial), which appointment, when it is now, and
    what would suit the person."""
    caf = settings.cafs().get(appointment.caf_code)
    person = f"{clean(appointment.user.first_name)} {clean(appointment.user.last_name)[:1]}."
    message = EmailMessage()
    message["Subject"] = f"Demande de changement de créneau – {caf.name}"
    message["From"] = sender_address(settings)
    message["To"] = address
    message["Message-ID"] = request_message_id(event, KIND, settings.message_id_domain)
    message.set_content(body(event, appointment, person, caf.name))
    return message


def body(
    event: RescheduleRequested, appointment: AppointmentRequested, person: str, caf: str
) -> str:
    wanted = event.preferences
    zone = dates.appointment_zone(appointment.timezone, appointment.caf_code)
    start: datetime = appointment.start.astimezone(zone)
    when = f"{dates.french_datetime(start, with_year=True)} ({dates.zone_label(zone)})"
    lines = [
        "Bonjour,",
        "",
        f"{person} demande à déplacer son rendez-vous visio ({caf}) prévu le {when}.",
        "",
        f"Rendez-vous : {event.appointment_id}",
        f"Jours qui lui conviennent : {', '.join(wanted.days)}",
        "Moments de la journée : "
        + ", ".join(DAY_PART_LABELS[part].lower() for part in wanted.times),
    ]
    if wanted.from_date is not None:
        lines.append(f"À partir du : {dates.french_date(wanted.from_date, with_year=True)}")
    if wanted.message:
        lines.append(f"Son message : « {clean(wanted.message)} »")
    lines += [
        "",
        "Le rendez-vous actuel reste prévu tant qu'il n'est pas déplacé. Pour le déplacer, "
        "changez-le dans l'outil où il a été pris : la personne recevra un email avec la "
        "nouvelle date, et le lien pour se connecter ne changera pas.",
        "",
        "Visio RDV",
    ]
    return "\n".join(lines) + "\n"
