"""The email that confirms a new address the person typed on « Mon rendez-vous »
(ContactCorrectionRequested): sent to that address, with the link whose code booking will
recognise (`visio_shared.links.address_confirmation_code`, derived from the event's id: no code
is stored here either). Until it is followed nothing changes, and every other email still goes
to the current address.

Not part of the appointment's state (visio_notifications.decide): it answers one request, once.
At least once: the processed marker is written after the relay took the email, so a crash in
between sends it again, with the same Message-ID. A relay that refuses the address for good is
logged (without the address) and the request left to expire: the person's page still shows the
current address, and they may type another. The Message-ID starts with the appointment's id, as
every email's, so an erasure finds it in the local sink too.
"""

from __future__ import annotations

import html
import logging
from email.headerregistry import Address
from email.message import EmailMessage

from visio_runtime.db import mark_processed
from visio_shared import ContactCorrectionRequested
from visio_shared.links import address_confirmation_code, address_confirmation_url

from visio_notifications.compose import request_message_id, sender_address
from visio_notifications.deps import NotificationsDeps
from visio_notifications.letter_parts import clean
from visio_notifications.link_requests import done_or_erased
from visio_notifications.mailer import MailRejected, mail_of
from visio_notifications.settings import NotificationsSettings

log = logging.getLogger(__name__)

KIND = "address_confirmation"
SUBJECT = "Confirmez votre adresse électronique pour votre rendez-vous Caf"


async def on_correction_requested(
    deps: NotificationsDeps, event: ContactCorrectionRequested
) -> None:
    async with deps.pool.acquire() as conn:
        if await done_or_erased(conn, event):
            return
    message = compose(event, deps.settings)
    outcome = "not sent: no link keys"
    if message is not None:
        try:
            await deps.send_mail(mail_of(message))  # Transient: retried by the consumer
            outcome = "sent"
        except MailRejected as exc:
            outcome = f"refused by the relay ({exc.code}): left to expire"
    async with deps.pool.acquire() as conn:
        await mark_processed(conn, event.event_id, event.event_type)
    log.info(
        "address confirmation of %s r%d: %s",
        event.appointment_id,
        event.revision,
        outcome,
        extra={"correlation_id": str(event.correlation_id)},
    )


def compose(
    event: ContactCorrectionRequested, settings: NotificationsSettings
) -> EmailMessage | None:
    """The email, or None without link keys (there is then no link to give)."""
    keys = settings.link_ring()
    if keys is None:
        return None
    url = address_confirmation_url(
        settings.booking_public_url, address_confirmation_code(keys, event.event_id)
    )
    user = event.user
    message = EmailMessage()
    message["Subject"] = SUBJECT
    message["From"] = sender_address(settings)
    message["To"] = Address(
        display_name=clean(f"{user.first_name} {user.last_name}"), addr_spec=str(user.email)
    )
    message["Message-ID"] = request_message_id(event, KIND, settings.message_id_domain)
    hours = max(1, round((event.expires_at - event.occurred_at).total_seconds() / 3600))
    until = f"{hours} heure{'s' if hours > 1 else ''} après votre demande"
    message.set_content(
        f"Bonjour {clean(user.first_name)},\n\n"
        "Vous avez demandé que les messages de votre rendez-vous Caf en visio arrivent "
        "désormais à cette adresse. Pour le confirmer, ouvrez ce lien :\n\n"
        f"{url}\n\n"
        f"Ce lien fonctionne {until}. Si vous n'avez rien demandé, ignorez ce "
        "message : rien ne changera.\n\nLa Caf\n"
    )
    message.add_alternative(_html(user.first_name, url, until), subtype="html")
    return message


def _html(first_name: str, url: str, until: str) -> str:
    name, link = html.escape(clean(first_name)), html.escape(url, quote=True)
    return f"""<!DOCTYPE html>
<html lang="fr" dir="ltr">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>{html.escape(SUBJECT)}</title>
</head>
<body style="margin: 0; padding: 16px; background-color: #ffffff; color: #1e1e1e; \
font-family: Arial, Helvetica, sans-serif; font-size: 17px; line-height: 1.5;">
<main>
<h1 style="font-size: 22px; color: #0a4f96;">Confirmez votre adresse électronique</h1>
<p>Bonjour {name},</p>
<p>Vous avez demandé que les messages de votre rendez-vous Caf en visio arrivent désormais à \
cette adresse.</p>
<p><a href="{link}" style="color: #0a4f96; font-weight: bold;">Confirmer cette adresse</a></p>
<p>Ce lien fonctionne {until}. Si vous n'avez rien demandé, ignorez ce message&nbsp;: \
rien ne changera.</p>
<p>La Caf</p>
</main>
</body>
</html>
"""
