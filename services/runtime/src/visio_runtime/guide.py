"""The access guide to Visio RDV, in the Caf's own words (docs/reference/guide-et-cgu.txt): the
emails carry it, and so does the appointment's page. Only obvious typos are fixed."""

from __future__ import annotations

from dataclasses import dataclass, field

from visio_shared import Device

# Where to get Microsoft Teams (step 01); services take them as settings, these are the defaults.
APP_STORE_URL = "https://apps.apple.com/fr/app/microsoft-teams/id1113153706"
GOOGLE_PLAY_URL = "https://play.google.com/store/apps/details?id=com.microsoft.teams"

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


def guide_paths(
    device: Device,
    app_store_url: str,
    google_play_url: str,
    where_the_link_is: str = "présent dans ce mail",
) -> list[GuidePath]:
    """Both ways to join, the person's own device first. `where_the_link_is` ends step 03:
    the email says « présent dans ce mail », a page says where on the page."""
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
                    "Une fois l'application installée, cliquer sur le lien du rendez-vous "
                    f"{where_the_link_is}.",
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
