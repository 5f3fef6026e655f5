"""« Gérer mon rendez-vous », the section every email carries: signed links to the person's own
pages — booking's « Mon rendez-vous », consent's « Enregistrement » and « Mes consentements ».

Each link is signed (`visio_shared.links`) for one page, the appointment, and the revision the
email shows, and expires `link_valid_days_after_appointment` days after the appointment's end
(or, for « Mes consentements » asked for again after the appointment, after the request). Its
URL is the page's public address and the token, nothing else: no name, no address, no id in
clear, and no character that would need escaping.

The links are personal — whoever holds « Mon rendez-vous » may cancel — so they stay in the
email's body. The .ics never carries them: a calendar event is shared, delegated and synced to
other people's calendars far more readily than an email is forwarded.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import datetime, timedelta

from visio_shared import AppointmentRequested
from visio_shared.links import LinkPurpose, page_url, sign_link

from visio_notifications import wording
from visio_notifications.decide import appointment_end
from visio_notifications.settings import NotificationsSettings

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class PageLink:
    purpose: LinkPurpose
    title: str
    text: str
    url: str


@dataclass(frozen=True)
class Section:
    links: tuple[PageLink, ...]
    expires_at: datetime


def links_expire_at(appointment: AppointmentRequested, settings: NotificationsSettings) -> datetime:
    return appointment_end(appointment) + timedelta(days=settings.link_valid_days_after_appointment)


def section(
    appointment: AppointmentRequested, settings: NotificationsSettings, *, cancelled: bool
) -> Section | None:
    """The section for this appointment as it stands; None without link keys. A cancelled
    appointment keeps what still makes sense: its page (which says it is cancelled) and the
    consents, not the recording choice of an appointment that will not take place."""
    purposes = (
        (LinkPurpose.MANAGE, LinkPurpose.CONSENTS)
        if cancelled
        else (LinkPurpose.MANAGE, LinkPurpose.RECORDING, LinkPurpose.CONSENTS)
    )
    return _signed(
        appointment, settings, purposes, links_expire_at(appointment, settings), cancelled
    )


def consents_section(
    appointment: AppointmentRequested, settings: NotificationsSettings, requested_at: datetime
) -> Section | None:
    """After the appointment, for the person who asked: « Mes consentements » alone (the right
    of access outlives the appointment), good for the usual number of days from the request."""
    expires_at = requested_at + timedelta(days=settings.link_valid_days_after_appointment)
    return _signed(appointment, settings, (LinkPurpose.CONSENTS,), expires_at, cancelled=False)


def _signed(
    appointment: AppointmentRequested,
    settings: NotificationsSettings,
    purposes: tuple[LinkPurpose, ...],
    expires_at: datetime,
    cancelled: bool,
) -> Section | None:
    keys = settings.link_ring()
    if keys is None:
        return None
    bases = {
        LinkPurpose.MANAGE: settings.booking_public_url,
        LinkPurpose.RECORDING: settings.consent_public_url,
        LinkPurpose.CONSENTS: settings.consent_public_url,
    }
    links = []
    for purpose in purposes:
        token = sign_link(
            keys, purpose, appointment.appointment_id, appointment.revision, expires_at
        )
        title, text = wording.SELF_SERVICE_PAGES[purpose]
        if cancelled and purpose is LinkPurpose.MANAGE:
            text = wording.SELF_SERVICE_MANAGE_CANCELLED
        links.append(PageLink(purpose, title, text, page_url(bases[purpose], purpose, token)))
    return Section(tuple(links), expires_at)


def warn_if_off(settings: NotificationsSettings) -> None:
    """Said once at start: emails go out without the section until keys are set."""
    if settings.link_keys is None:
        log.warning(
            "NOTIFICATIONS_LINK_KEYS is not set: emails carry no « Gérer mon rendez-vous » links"
        )
