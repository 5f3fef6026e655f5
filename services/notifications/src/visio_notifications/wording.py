"""Every word the emails say, in one place, so each kind of email reuses the same phrases.

The guide, the prerequisites and the charter come from the seed text (the Caf's guide and CGU,
`docs/reference/guide-et-cgu.txt`), in its own words; only obvious typos are fixed. Dates and
times are written by `visio_runtime.french_dates` (Babel).
"""

from __future__ import annotations

from visio_runtime.guide import (  # the templates say the guide's words through `w.`
    COMPUTER_PATH_TEXT as COMPUTER_PATH_TEXT,
)
from visio_runtime.guide import (
    COMPUTER_PATH_TITLE as COMPUTER_PATH_TITLE,
)
from visio_runtime.guide import (
    FREE_OF_CHARGE as FREE_OF_CHARGE,
)
from visio_runtime.guide import (
    GUIDE_INTRO as GUIDE_INTRO,
)
from visio_runtime.guide import (
    GUIDE_TITLE as GUIDE_TITLE,
)
from visio_runtime.guide import (
    MOBILE_PATH_TEXT as MOBILE_PATH_TEXT,
)
from visio_runtime.guide import (
    MOBILE_PATH_TITLE as MOBILE_PATH_TITLE,
)
from visio_runtime.guide import (
    STEPS_TITLE as STEPS_TITLE,
)
from visio_shared import Device
from visio_shared.links import LinkPurpose

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
CGU_LINK = "Lire les conditions générales d'utilisation que vous avez acceptées (version {version})"
# The charter's closing sentence, as the seed text says it (CGU article 5).
CHARTER_CLOSING = (
    "D'une façon générale, tout acte d'incivilité probant expose l'utilisateur à des poursuites."
)
# For computer users (CGU article 4.2).
BROWSER_NOTE = (
    "Teams fonctionne aussi dans votre navigateur : sur ordinateur, le lien ouvre le rendez-vous "
    "sans rien installer (article 4.2 des conditions générales d'utilisation)."
)

# When Graph gives a dial-in (the advisor has Audio Conferencing).
DIAL_IN_TITLE = "Si la vidéo ne fonctionne pas"
DIAL_IN_CALL = "Vous pouvez rejoindre le rendez-vous par téléphone : appelez le {number}{free}."
DIAL_IN_FREE = " (appel gratuit)"
DIAL_IN_ID = "Quand on vous le demande, tapez le numéro de conférence {conference_id} suivi de #."
DIAL_IN_OTHER_NUMBERS = "Autres numéros :"

RECORDING = {
    True: (
        "Vous avez autorisé l'enregistrement : vos connexions et la session du rendez-vous sont "
        "enregistrées, comme le prévoit l'article 9 des conditions générales d'utilisation."
    ),
    False: (
        "Vous avez refusé l'enregistrement : la session ne sera pas enregistrée. Seules vos "
        "connexions au service sont enregistrées, comme le prévoit l'article 9 des conditions "
        "générales d'utilisation."
    ),
}

# Each Caf speaks for itself (visio_shared.caf_directory): « La Caf de La Réunion ».
CAF_CONTACT_TITLE = "Contacter {caf}"
CAF_CONTACT_PAGE = "Sur internet :"
CAF_PHONE = "Par téléphone : {phone}"
CAF_HOURS = "({hours})"
CAF_MEDIATOR = "En cas de litige (article 7 des conditions générales d'utilisation) : {mediator}"
CAF_ACCESS = (
    "Pour accéder à vos données (article 8 des conditions générales d'utilisation), écrivez à : "
    "{address}"
)
FOOTER = {
    # With a Reply-To, a reply reaches a Caf mailbox; without, it would go nowhere.
    True: (
        "Ce message vous est envoyé automatiquement. Pour toute question, vous pouvez y répondre."
    ),
    False: "Ce message vous est envoyé automatiquement. Merci de ne pas y répondre.",
}
HEADER = "Caf · Visio RDV"
LOGO_ALT = "Caf – Visio RDV"

# --- The calendar invitation (.ics) -------------------------------------------------------

ICS_SUMMARY = "Rendez-vous visio avec la {caf}"
ICS_DESCRIPTION_HEAD = (
    "Rendez-vous visio avec la {caf} : {subject}\nVotre conseiller Caf : {advisor}\n\n"
)
ICS_JOIN = (
    "Pour rejoindre le rendez-vous, le jour J à l'heure indiquée, ouvrez ce lien :\n"
    "{join_url}\n\n"
    "Sur smartphone ou tablette, installez l'application Microsoft Teams avant le rendez-vous."
)
ICS_CANCELLED = "Ce rendez-vous est annulé."
ICS_ALARM = "Votre rendez-vous visio avec la Caf commence dans 15 minutes."
ICS_FILENAME = "rendez-vous-caf.ics"

# --- Contact corrected: the confirmation again, to the corrected address -------------------

CONTACT_CORRECTED_INTRO = (
    "Vos coordonnées ont été corrigées. Voici à nouveau la confirmation de votre rendez-vous "
    "visio avec la Caf."
)

# --- Rescheduled ---------------------------------------------------------------------------

RESCHEDULED_SUBJECT = "Votre rendez-vous visio avec la Caf est déplacé au {when}"
RESCHEDULED_PREHEADER = "Nouvel horaire : le {when} ({zone}). Le lien reste le même."
RESCHEDULED_INTRO = "L'horaire de votre rendez-vous visio avec la Caf a changé."
CHANGE_TITLE = "Ce qui change"
CHANGE_BEFORE = "Avant"
CHANGE_NOW = "Désormais"
SAME_LINK = "Le lien pour rejoindre le rendez-vous ne change pas."

# --- Advisor changed: a new meeting, a new link --------------------------------------------

ADVISOR_CHANGED_SUBJECT = "Nouveau lien pour votre rendez-vous visio avec la Caf le {when}"
ADVISOR_CHANGED_PREHEADER = (
    "Votre rendez-vous du {when} aura lieu avec {advisor}, avec un nouveau lien."
)
ADVISOR_CHANGED_INTRO = "Votre rendez-vous visio avec la Caf sera assuré par {advisor}."
NEW_LINK = (
    "Voici le nouveau lien du rendez-vous. Il remplace celui du message précédent, qui ne "
    "fonctionne plus."
)

# --- Cancellation: by whom, in words the reason allows -------------------------------------

CANCELLATION_SUBJECT = "Votre rendez-vous visio avec la Caf du {when} est annulé"
CANCELLED_BY = {
    "user": "Comme vous l'avez demandé, votre rendez-vous visio avec la Caf du {when} ({zone}) "
    "est annulé.",
    "advisor": "Votre conseiller Caf ne peut pas assurer votre rendez-vous visio du {when} "
    "({zone}) : ce rendez-vous est annulé. Nous vous prions de nous en excuser.",
    "administrative": "{caf} a annulé votre rendez-vous visio du {when} ({zone}).",
}
CANCELLED_TITLE = "Rendez-vous annulé"
CANCELLED_LINK = "Le lien du rendez-vous ne fonctionnera plus."
NEW_APPOINTMENT = {
    "user": "Si vous le souhaitez, vous pouvez prendre un nouveau rendez-vous :",
    "advisor": "Pour prendre un nouveau rendez-vous :",
    "administrative": "Pour prendre un nouveau rendez-vous :",
}
NEW_APPOINTMENT_LINK = "Prendre un nouveau rendez-vous"

# --- Reminder ------------------------------------------------------------------------------

REMINDER_SUBJECT = "Rappel : votre rendez-vous visio avec la Caf {day} à {time}"
REMINDER_PREHEADER = "{day} à {time} ({zone}), avec {advisor}. Le lien est dans ce message."
REMINDER_INTRO = "Nous vous rappelons votre rendez-vous visio avec la Caf {day} à {time} ({zone})."
REMINDER_CHECKLIST_TITLE = "Avant le rendez-vous"
REMINDER_MOBILE = "Vérifiez que l'application Microsoft Teams est installée sur votre {device}."
REMINDER_DEVICE_NAMES = {Device.SMARTPHONE: "smartphone", Device.TABLET: "tablette"}
REMINDER_CHECKLIST = (
    "Vérifiez que vous disposez d'un micro, d'une webcam et d'une connexion internet suffisante.",
    "Chargez la batterie de votre ordinateur, tablette ou smartphone.",
    "Préparez les pièces utiles à votre dossier (en version numérique ou papier).",
    "Connectez-vous à l'heure indiquée, dans un endroit calme.",
)

# --- Meeting unavailable: nobody waits for a link that will never come ---------------------

UNAVAILABLE_SUBJECT = "Votre rendez-vous avec la Caf du {when} : votre Caf va vous contacter"
UNAVAILABLE_INTRO = (
    "Nous n'avons pas pu préparer la visio de votre rendez-vous avec la Caf du {when} ({zone})."
)
UNAVAILABLE_TITLE = "{caf} va vous contacter"
UNAVAILABLE_NEXT = (
    "{caf} vous contactera pour convenir de la suite. Vous n'avez rien à faire d'ici là."
)
UNAVAILABLE_OLD_LINK = "N'utilisez pas le lien reçu dans un message précédent."

# --- « Gérer mon rendez-vous »: the self-service links of every email ----------------------

SELF_SERVICE_TITLE = "Gérer mon rendez-vous"
SELF_SERVICE_INTRO = "Ces liens sont personnels : ne les transférez pas."
SELF_SERVICE_VALID_UNTIL = "Ils fonctionnent jusqu'au {date}."
SELF_SERVICE_PAGES = {
    LinkPurpose.MANAGE: ("Mon rendez-vous", "Voir, annuler ou recevoir à nouveau le lien"),
    LinkPurpose.RECORDING: ("Enregistrement", "Mon choix sur l'enregistrement de l'entretien"),
    LinkPurpose.CONSENTS: ("Mes consentements", "Mes consentements et leurs preuves"),
}
SELF_SERVICE_MANAGE_CANCELLED = "Voir mon rendez-vous annulé"
# Above the links, once a text to the person's number failed for good (docs/sms.md).
SMS_NUMBER_FAILED = (
    "Nous n'avons pas pu vous envoyer de SMS au numéro se terminant par {last_digits} : il "
    "n'existe pas ou ne reçoit pas de SMS. Vérifiez-le, ou donnez-en un autre, dans « Mon "
    "rendez-vous »."
)

# --- Link resent: the person asked for the email again --------------------------------------

LINK_RESENT_SUBJECT = "Le lien de votre rendez-vous visio avec la Caf le {when}"
LINK_RESENT_SUBJECT_NO_LINK = "Votre rendez-vous visio avec la Caf le {when}"
LINK_RESENT_PREHEADER_PENDING = (
    "Le {when} ({zone}), avec {advisor}. Le lien vous sera envoyé dès qu'il sera prêt."
)
LINK_RESENT_INTRO = {
    "resend": (
        "Comme vous l'avez demandé, voici à nouveau les informations de votre rendez-vous "
        "visio avec la Caf."
    ),
    "fresh_link": (
        "Comme vous l'avez demandé, voici de nouveaux liens personnels pour votre rendez-vous "
        "visio avec la Caf."
    ),
}
LINK_PENDING = (
    "Le lien pour rejoindre le rendez-vous n'est pas encore prêt. Nous vous l'enverrons par "
    "email dès qu'il le sera."
)
# Where step 03 of the guide finds the link when this email does not carry it yet.
LINK_PENDING_WHERE = "que vous recevrez par email"

# --- A fresh link after the appointment: the right of access, « Mes consentements » alone ----

CONSENTS_ONLY_SUBJECT = "Vos consentements pour votre rendez-vous visio avec la Caf du {when}"
CONSENTS_ONLY_PREHEADER = (
    "Comme vous l'avez demandé, le lien vers « Mes consentements » : vos consentements et leurs "
    "preuves."
)
CONSENTS_ONLY_INTRO = "Comme vous l'avez demandé, voici un nouveau lien vers vos consentements."
# Said as « Mon rendez-vous » says it: « passé » holds whether or not the person came.
CONSENTS_ONLY_ENDED = {
    "over": "Votre rendez-vous visio avec la Caf du {when} ({zone}) est passé.",
    "cancelled": "Votre rendez-vous visio avec la Caf du {when} ({zone}) a été annulé.",
}
CONSENTS_ONLY_WHAT = (
    "Ce lien ouvre « Mes consentements » : les consentements que vous avez donnés et leurs "
    "preuves, à consulter ou à télécharger. C'est votre droit d'accès (article 8 des conditions "
    "générales d'utilisation)."
)
CONSENTS_ONLY_PERSONAL = "Ce lien est personnel : ne le transférez pas."
CONSENTS_ONLY_VALID_UNTIL = "Il fonctionne jusqu'au {date}."
