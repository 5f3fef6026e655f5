"""Every word the emails say, in one place, so reminders, updates and cancellations reuse them.

The guide, the prerequisites and the charter come from the seed text (the Caf's guide and CGU,
`seed/guide-et-cgu.txt`), in its own words; only obvious typos are fixed. Dates are written by
our own small formatter: no locale is installed or needed.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import date, datetime
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from visio_shared import Device

# --- Dates and times, the French way, without a locale ------------------------------------

WEEKDAYS = ("lundi", "mardi", "mercredi", "jeudi", "vendredi", "samedi", "dimanche")
MONTHS = (
    "janvier",
    "février",
    "mars",
    "avril",
    "mai",
    "juin",
    "juillet",
    "août",
    "septembre",
    "octobre",
    "novembre",
    "décembre",
)

PARIS = "Europe/Paris"

# The overseas Cafs live in their own time zone; the email says which.
CAF_ZONES = {
    "971": "America/Guadeloupe",
    "972": "America/Martinique",
    "973": "America/Cayenne",
    "974": "Indian/Reunion",
    "976": "Indian/Mayotte",
}

ZONE_LABELS = {
    PARIS: "heure de Paris",
    "America/Guadeloupe": "heure de la Guadeloupe",
    "America/Martinique": "heure de la Martinique",
    "America/Cayenne": "heure de la Guyane",
    "Indian/Reunion": "heure de La Réunion",
    "Indian/Mayotte": "heure de Mayotte",
}


def french_date(day: date, *, with_year: bool = False) -> str:
    """`jeudi 3 décembre`, `mardi 1er décembre 2026`."""
    number = "1er" if day.day == 1 else str(day.day)
    text = f"{WEEKDAYS[day.weekday()]} {number} {MONTHS[day.month - 1]}"
    return f"{text} {day.year}" if with_year else text


def french_time(moment: datetime) -> str:
    """`10 h 00`, `9 h 05`."""
    return f"{moment.hour} h {moment.minute:02d}"


def french_datetime(moment: datetime, *, with_year: bool = False) -> str:
    """`jeudi 3 décembre à 10 h 00`."""
    return f"{french_date(moment.date(), with_year=with_year)} à {french_time(moment)}"


def appointment_zone(timezone: str, caf_code: str) -> ZoneInfo:
    """The appointment's own time zone; if it is not a known zone, the Caf's, else Paris."""
    for name in (timezone, CAF_ZONES.get(caf_code), PARIS):
        if name:
            try:
                return ZoneInfo(name)
            except (ZoneInfoNotFoundError, ValueError):
                continue
    return ZoneInfo(PARIS)


def zone_label(zone: ZoneInfo) -> str:
    """`heure de La Réunion`; a zone we have no French name for is named as it is."""
    return ZONE_LABELS.get(zone.key, f"fuseau horaire {zone.key}")


def duration_text(minutes: int) -> str:
    hours, rest = divmod(minutes, 60)
    if not hours:
        return f"{minutes} minutes"
    text = f"{hours} heure" + ("s" if hours > 1 else "")
    return f"{text} {rest:02d}" if rest else text


# --- The confirmation email ---------------------------------------------------------------

CONFIRMATION_SUBJECT = "Votre rendez-vous visio avec la Caf le {when}"
CONFIRMATION_PREHEADER = (
    "Le {when} ({zone}), avec {advisor}. Le lien et le guide sont dans ce message."
)
GREETING = "Bonjour {first_name},"
CONFIRMATION_INTRO = "Votre rendez-vous visio avec la Caf est confirmé."
WHEN_LINE = "Le {date} à {time} ({zone})"

DETAILS_DATE = "Date"
DETAILS_TIME = "Heure"
DETAILS_DURATION = "Durée"
DETAILS_ADVISOR = "Votre conseiller Caf"
DETAILS_SUBJECT = "Objet du rendez-vous"
DETAILS_PLACE = "Lieu"
PLACE = "en visio, avec Microsoft Teams"

JOIN_BUTTON = "Rejoindre le rendez-vous"
JOIN_HINT = "Le jour du rendez-vous, à l'heure indiquée, cliquez sur ce bouton."
JOIN_LINK_INTRO = "Si le bouton ne fonctionne pas, copiez ce lien dans votre navigateur :"
JOIN_LINK_TEXT_INTRO = (
    "Le lien du rendez-vous (à ouvrir le jour du rendez-vous, à l'heure indiquée) :"
)

GUIDE_TITLE = "Guide d'accès au Visio Rendez-vous"
GUIDE_INTRO = "Le jour du rendez-vous, vous souhaitez utiliser :"

DEVICE_NOTE = {
    Device.COMPUTER: "Vous nous avez indiqué utiliser un ordinateur.",
    Device.SMARTPHONE: (
        "Vous nous avez indiqué utiliser un smartphone : installez l'application "
        "Microsoft Teams avant le rendez-vous."
    ),
    Device.TABLET: (
        "Vous nous avez indiqué utiliser une tablette : installez l'application "
        "Microsoft Teams avant le rendez-vous."
    ),
}


@dataclass(frozen=True)
class Store:
    label: str
    device: str
    url: str


@dataclass(frozen=True)
class Step:
    number: str
    title: str
    lines: tuple[str, ...]
    stores: tuple[Store, ...] = ()


@dataclass(frozen=True)
class GuidePath:
    """One way to join: with a computer, or with a smartphone or a tablet."""

    key: str
    title: str
    text: str
    steps: tuple[Step, ...] = field(default=())


COMPUTER_PATH_TITLE = "Un ordinateur"
COMPUTER_PATH_TEXT = (
    "C'est simple, il vous suffira de cliquer sur le lien du rendez-vous pour rejoindre "
    "votre conseiller Caf !"
)
MOBILE_PATH_TITLE = "Votre smartphone ou une tablette"
MOBILE_PATH_TEXT = (
    "Pensez à télécharger l'application Teams avant le rendez-vous et suivez le guide pour "
    "l'installation."
)
STEPS_TITLE = "Un guide étape par étape"


def guide_paths(device: Device, app_store_url: str, google_play_url: str) -> list[GuidePath]:
    """Both ways to join, the person's own device first."""
    computer = GuidePath("computer", COMPUTER_PATH_TITLE, COMPUTER_PATH_TEXT)
    mobile = GuidePath(
        "mobile",
        MOBILE_PATH_TITLE,
        MOBILE_PATH_TEXT,
        steps=(
            Step(
                "01",
                "SÉLECTION DU TYPE DE TÉLÉPHONE",
                (
                    "Cliquer sur l'icône correspondante à votre type de téléphone afin d'être "
                    "redirigé sur la page d'installation de l'application Teams (gratuite) :",
                ),
                stores=(
                    Store("App Store", "iPhone ou iPad", app_store_url),
                    Store("Google Play", "Android", google_play_url),
                ),
            ),
            Step("02", "INSTALLATION DE L'APPLICATION", ("Cliquer sur « Installer ».",)),
            Step(
                "03",
                "REJOINDRE LA RÉUNION",
                (
                    "Une fois l'application installée, cliquer sur le lien présent dans ce mail "
                    "de confirmation du rendez-vous.",
                    "Cliquer sur « Rejoindre la réunion » puis sur « Participer à la réunion ».",
                    "Renseigner votre nom puis cliquer sur le bouton « Participer à la réunion ».",
                ),
            ),
            Step(
                "04",
                "PARTICIPER À LA RÉUNION",
                (
                    "Autoriser Teams à utiliser votre micro.",
                    "Vous participez au rendez-vous visio.",
                ),
            ),
        ),
    )
    return [computer, mobile] if device == Device.COMPUTER else [mobile, computer]


FREE_OF_CHARGE = (
    "Le service de rendez-vous visio ainsi que l'installation de l'application Teams sont "
    "totalement gratuits (Hors coûts liés à votre opérateur pour l'accès internet)."
)

PREREQUISITES_INTRO = "Le jour de l'entretien, assurez-vous de disposer :"
PREREQUISITES = ("d'un micro", "d'une webcam", "d'une connexion internet suffisante")

CHARTER_TITLE = "Charte du rendez-vous"
CHARTER_INTRO = "Recommandations pour un rendez-vous efficace et agréable :"
CHARTER = (
    ("Ponctualité", "Je me connecte à l'heure indiquée pour mon rendez-vous en visio"),
    (
        "Environnement calme",
        "Je m'assure que les bruits aux alentours ne peuvent pas parasiter la conversation",
    ),
    (
        "Disponibilité",
        "je m'assure que l'on ne sera pas dérangé lors de la conversation avec le conseiller "
        "de la Caf",
    ),
    ("Politesse", "je me présente dans une tenue correcte"),
    (
        "Préparation",
        "je me munis de toutes les pièces utiles au traitement de mon dossier (en version "
        "numérique ou papier)",
    ),
    ("Expression", "je parle calmement et distinctement"),
    (
        "Équipement",
        "j'ai un matériel numérique (PC, tablette ou Smartphone) avec suffisamment de batterie "
        "et équipé d'une webcam et d'un microphone",
    ),
)

CGU_TITLE = "Conditions générales d'utilisation"
CGU_LINE = (
    "Vous avez accepté les conditions générales d'utilisation du service de Visio RDV des Caf "
    "(version {version}), que vous pouvez relire à tout moment :"
)
CGU_LINK = "Lire les conditions générales d'utilisation"

RECORDING = {
    True: (
        "Vous avez autorisé l'enregistrement : comme le prévoit l'article 9 des conditions "
        "générales d'utilisation, tout ou partie des échanges lors du rendez-vous pourra être "
        "enregistré."
    ),
    False: (
        "Vous avez refusé l'enregistrement : la session ne sera pas enregistrée. Seules les "
        "connexions au service sont conservées, comme le prévoit l'article 9 des conditions "
        "générales d'utilisation."
    ),
}

SIGNATURE = "Votre Caf"
FOOTER = "Ce message vous est envoyé automatiquement. Merci de ne pas y répondre."

# --- The calendar invitation (.ics) -------------------------------------------------------

ICS_SUMMARY = "Rendez-vous visio avec la Caf"
ICS_LOCATION = "Microsoft Teams"
ICS_DESCRIPTION = (
    "Rendez-vous visio avec la Caf : {subject}\n"
    "Votre conseiller Caf : {advisor}\n\n"
    "Pour rejoindre le rendez-vous, le jour J à l'heure indiquée, ouvrez ce lien :\n"
    "{join_url}\n\n"
    "Sur smartphone ou tablette, installez l'application Microsoft Teams avant le rendez-vous."
)
ICS_FILENAME = "rendez-vous-caf.ics"
