"""The body of the advisor's Outlook event: who is coming (the first name and the initial of
the last name, what the person types when joining and the advisor admits from the lobby), with
which device, about what, whether recording is authorised, and the link to the advisor's page
in booking (where they say how it went). Plain French, every value the public or a partner
wrote HTML-escaped. Graph appends its Teams block (join link, meeting id) below it."""

from __future__ import annotations

import html
import uuid
from dataclasses import dataclass

from visio_shared import Person

DEVICE_LABELS = {"computer": "ordinateur", "smartphone": "smartphone", "tablet": "tablette"}
ADVISOR_PAGE_PATH = "/conseiller/rendez-vous/"


def last_initial(last_name: str) -> str:
    """« Dupont » → « D. »: the first letter or digit, upper case."""
    letter = next((c for c in last_name if c.isalnum()), "")
    return f"{letter.upper()}." if letter else ""


@dataclass(frozen=True)
class Visitor:
    """Who the advisor admits from the lobby, and how they join."""

    first_name: str
    last_initial: str
    device: str  # visio_shared.Device's value

    @classmethod
    def of(cls, person: Person) -> Visitor:
        return cls(person.first_name.strip(), last_initial(person.last_name), person.device.value)

    @property
    def lobby_name(self) -> str:
        """What the person types at step 03 of the guide: « Jeanne D. »."""
        return f"{self.first_name} {self.last_initial}".strip()


def advisor_page(booking_public_url: str, appointment_id: uuid.UUID) -> str:
    return f"{booking_public_url.rstrip('/')}{ADVISOR_PAGE_PATH}{appointment_id}"


@dataclass(frozen=True)
class AdvisorNote:
    """What the event's body says; `visitor` is None once the person's data is erased."""

    appointment_id: uuid.UUID
    subject: str
    recording_authorised: bool
    visitor: Visitor | None
    advisor_page: str


def _e(value: str) -> str:
    return html.escape(value, quote=True)


def note_html(note: AdvisorNote) -> str:
    """The body's HTML. The reference comes last: a later rewrite keeps what follows it (the
    Teams block, see `event_updates.teams_block`)."""
    who = note.visitor
    if who is None:
        person = "données personnelles effacées"
        lobby = "La personne attend dans la salle d'attente"
    else:
        person = f"<strong>{_e(who.lobby_name)}</strong> (le nom saisi en rejoignant la réunion)"
        lobby = f"La personne attend dans la salle d'attente sous le nom « {_e(who.lobby_name)} »"
    recording = (
        "autorisé par la personne (prévenez-la avant de lancer l'enregistrement)"
        if note.recording_authorised
        else "non autorisé : Teams ne propose pas d'enregistrer"
    )
    details = [f"Personne attendue : {person}"]
    if who is not None:
        details.append(f"Appareil : {_e(DEVICE_LABELS.get(who.device, who.device))}")
    details += [f"Objet : {_e(note.subject)}", f"Enregistrement : {recording}"]
    page = _e(note.advisor_page)
    return (
        f"<p><strong>{_e(note.subject)}</strong></p>"
        "<p>Rendez-vous Visio RDV avec une personne allocataire.</p>"
        "<ul>" + "".join(f"<li>{line}</li>" for line in details) + "</ul>"
        "<ol>"
        "<li>Quelques minutes avant l'heure, ouvrez ce rendez-vous et cliquez sur "
        "« Rejoindre » (ou sur le lien de la réunion Teams ci-dessous).</li>"
        f"<li>{lobby} : admettez-la depuis la liste des participants.</li>"
        "<li>Vous êtes seul présentateur.</li>"
        "</ol>"
        f'<p>Après le rendez-vous, dites comment il s\'est passé : <a href="{page}">{page}</a></p>'
        "<p>Ne transférez pas ce rendez-vous : la personne a reçu son lien par courriel.</p>"
        f"<p>Référence : {note.appointment_id}</p>"
    )
