"""The alert email to a Caf's team: which appointment, with which advisor, when, and why — and
what to do. Never the person's name or address: the team finds them by the appointment id."""

from __future__ import annotations

import ssl
from datetime import datetime
from email.message import EmailMessage
from email.utils import formatdate
from zoneinfo import ZoneInfo

import aiosmtplib
from visio_runtime.errors import Transient

from visio_alerts.store import PendingAlert

CAUSES = {
    "meeting_failed": (
        "réunion Teams non créée",
        "La réunion Teams de ce rendez-vous n'a pas pu être créée : la personne n'a pas de lien "
        "pour se connecter. Merci de la recontacter ou de reprogrammer le rendez-vous.",
    ),
    "notification_failed": (
        "email non envoyé",
        "L'email destiné à la personne n'a pas pu être envoyé ou n'est pas arrivé (adresse "
        "refusée, invalide, ou email revenu en erreur) : elle n'a peut-être pas les "
        "informations du rendez-vous. Merci de la recontacter.",
    ),
    "sms_failed": (
        "SMS non remis",
        "Le numéro de mobile donné pour ce rendez-vous ne reçoit pas les SMS (numéro refusé ou "
        "inexistant) : la personne ne recevra pas les rappels par SMS. Ses emails l'invitent à "
        "vérifier son numéro ; merci de la recontacter si besoin.",
    ),
    "stuck": (  # replaced by email_late; kept for alerts recorded before
        "rendez-vous non confirmé",
        "Ce rendez-vous n'est toujours pas confirmé à la personne. L'exploitation Visio RDV est "
        "prévenue ; merci de vérifier que la personne a bien les informations du rendez-vous.",
    ),
    "email_late": (
        "email en retard",
        "La personne attend un email de Visio RDV depuis plus longtemps que prévu. L'envoi est "
        "retenté automatiquement et l'exploitation Visio RDV est prévenue ; merci de vérifier "
        "que la personne a bien les informations du rendez-vous (date, lien de connexion) et, "
        "si besoin, de la recontacter.",
    ),
}

# What the person waits for, by the kind of email notifications would send.
WAITED_FOR = {
    "confirmation": "la confirmation du rendez-vous (avec le lien de connexion)",
    "rescheduled": "l'email du nouvel horaire",
    "contact_corrected": "la confirmation à sa nouvelle adresse",
    "advisor_changed": "l'email du changement de conseiller (nouveau lien)",
    "cancellation": "l'email d'annulation",
    "link_resent": "le lien qu'elle a redemandé",
}


def compose(alert: PendingAlert, sender: str, recipient: str) -> EmailMessage:
    short, explanation = CAUSES[alert.cause]
    when = _when(alert)
    message = EmailMessage()
    message["From"] = sender
    message["To"] = recipient
    message["Subject"] = f"[Visio RDV] {short} — Caf {alert.caf_code or '?'} — {when}"
    message["Date"] = formatdate(localtime=False)
    # One Message-ID per (appointment, cause, occasion): a relay or mailbox sees a resend as the
    # same.
    occasion = f".{alert.occasion}" if alert.occasion else ""
    message["Message-ID"] = (
        f"<alert.{alert.appointment_id}.{alert.cause}{occasion}@visio-rdv.caf.fr>"
    )
    advisor = f"{alert.advisor_name} ({alert.advisor_id})" if alert.advisor_name else "(inconnu)"
    reason = f"{alert.reason} — {alert.detail}" if alert.detail else alert.reason
    if alert.cause == "email_late":
        reason = _late_email(alert)
    message.set_content(
        "Bonjour,\n\n"
        f"{explanation}\n\n"
        f"Rendez-vous : {alert.appointment_id}\n"
        f"Caf : {alert.caf_code or '(inconnue)'}\n"
        f"Conseiller : {advisor}\n"
        f"Date : {when}\n"
        f"Motif : {reason}\n\n"
        "Message automatique de Visio RDV (exploitation) ; un seul par rendez-vous et motif.\n"
    )
    return message


def _when(alert: PendingAlert) -> str:
    if alert.start_at is None:
        return "date inconnue"
    return _local(alert, alert.start_at)


def _local(alert: PendingAlert, moment: datetime) -> str:
    zone = alert.timezone or "Europe/Paris"
    return f"{moment.astimezone(ZoneInfo(zone)):%d/%m/%Y %H:%M} ({zone})"


def _late_email(alert: PendingAlert) -> str:
    """`reason` is the kind of email owed; `detail`, 'owed since <ISO time>'."""
    waited_for = WAITED_FOR.get(alert.reason, alert.reason)
    since = alert.detail.removeprefix("owed since ")
    try:
        since = f"depuis le {_local(alert, datetime.fromisoformat(since))}"
    except ValueError:
        since = alert.detail
    return f"{waited_for}, en attente {since}"


async def send(
    message: EmailMessage,
    host: str,
    port: int,
    *,
    starttls: bool = False,
    username: str | None = None,
    password: str | None = None,
    timeout_s: float = 30.0,
) -> None:
    """Sends, or raises Transient for what may succeed later (the relay away, a 4xx)."""
    try:
        await aiosmtplib.send(
            message,
            hostname=host,
            port=port,
            start_tls=starttls,
            username=username,
            password=password,
            timeout=timeout_s,
            tls_context=ssl.create_default_context() if starttls else None,
        )
    except aiosmtplib.SMTPResponseException as exc:
        if 400 <= exc.code < 500:
            raise Transient(f"SMTP {exc.code}") from exc
        raise
    except (aiosmtplib.SMTPConnectError, aiosmtplib.SMTPServerDisconnected, OSError) as exc:
        raise Transient(f"SMTP unreachable: {type(exc).__name__}") from exc
