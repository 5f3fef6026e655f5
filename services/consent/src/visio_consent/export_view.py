"""The whole export, for the person to read: each service's part in plain French, dates in the
appointment's own time zone, the ledger's proof elements folded away (the JSON has it all)."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from visio_shared.cafs import METROPOLITAN_TIMEZONE

from visio_consent.access import (
    channel,
    french_datetime,
    plain,
    record_details,
    record_title,
    sealed,
)
from visio_consent.export import PersonalDataExport

_STEPS = {
    "requested": "Rendez-vous demandé",
    "meeting_ready": "Réunion Teams prête",
    "meeting_rescheduled": "Réunion Teams déplacée",
    "meeting_cancelled": "Réunion Teams annulée",
    "meeting_failed": "Réunion Teams impossible à créer",
    "confirmed": "Courriel de confirmation envoyé",
    "notification_sent": "Courriel envoyé",
    "notification_failed": "Courriel non envoyé",
    "rescheduled": "Rendez-vous déplacé",
    "cancelled": "Rendez-vous annulé",
    "contact_corrected": "Coordonnées corrigées",
    "advisor_reassigned": "Conseiller ou conseillère changé(e)",
    "held": "Entretien tenu",
    "no_show": "Entretien manqué",
    "personal_data_erased": "Coordonnées effacées",
}
_EMAILS = {
    "confirmation": "Confirmation du rendez-vous",
    "rescheduled": "Rendez-vous déplacé",
    "contact_corrected": "Coordonnées corrigées",
    "advisor_changed": "Changement de conseiller ou conseillère",
    "cancellation": "Annulation",
    "reminder": "Rappel",
    "meeting_unavailable": "Réunion indisponible",
    "link_resent": "Lien envoyé à nouveau",
}
_EMAIL_STATUS = {"sent": "envoyé", "failed": "non envoyé"}


def _when(value: str | None, zone: str) -> str:
    return french_datetime(datetime.fromisoformat(value), zone) if value else "—"


def everything_view(export: PersonalDataExport) -> dict[str, Any]:
    parts = {part.service: part.data or {} for part in export.services if part.answered}
    booking = parts.get("booking", {})
    zones = {a["appointment_id"]: a["timezone"] for a in booking.get("appointments", [])}

    def zone(appointment_id: str) -> str:
        return str(zones.get(appointment_id, METROPOLITAN_TIMEZONE))

    appointments = [
        {
            "id": a["appointment_id"],
            "who": f"{a['first_name']} {a['last_name']}",
            "email": a["email"] or "(effacée)",
            "device": a["device"],
            "when": _when(a["start_at"], a["timezone"]),
            "duration": a["duration_minutes"],
            "advisor": a["advisor_name"],
            "subject": a["subject"],
            "status": _STEPS.get(a["status"], a["status"]),
            "by": a["calling_system"],
            "history": [
                {
                    "step": _STEPS.get(h["step"], h["step"]),
                    "at": _when(h["at"], a["timezone"]),
                    "revision": h["revision"],
                }
                for h in booking.get("history", [])
                if h["appointment_id"] == a["appointment_id"]
            ],
        }
        for a in booking.get("appointments", [])
    ]
    emails = [
        {
            "kind": _EMAILS.get(e["kind"], e["kind"]),
            "at": _when(e["sent_at"] or e["recorded_at"], zone(e["appointment_id"])),
            "status": _EMAIL_STATUS.get(e["status"], e["status"]),
            "appointment_id": e["appointment_id"],
        }
        for e in parts.get("notifications", {}).get("emails", [])
    ]
    meetings = [
        {
            "appointment_id": m["appointment_id"],
            "when": _when(m["start_at"], m["timezone"] or "UTC"),
            "status": m["status"],
            "recording": "autorisé" if m["recording_authorised"] else "non autorisé",
        }
        for m in parts.get("meetings", {}).get("meetings", [])
    ]
    consent = export.consent
    records = [
        {
            "title": record_title(item),
            "appointment_id": item.appointment_id,
            "appointment": item.appointment,
            "this_appointment": False,
            "plain": plain(item),
            "when": item.when,
            "channel": channel(item),
            "details": record_details(item, consent.subject_ref),
            "seq": item.seq,
            "hash": item.hash,
            "prev_hash": item.prev_hash,
            "sealed": sealed(item, consent.checkpoint),
        }
        for item in consent.records
    ]
    return {
        "incomplete": export.incomplete,
        "generated": french_datetime(export.generated_at, METROPOLITAN_TIMEZONE),
        "appointments": appointments,
        "emails": emails,
        "meetings": meetings,
        "records": records,
        "recorded": export.recorded,
        "subject_ref": consent.subject_ref,
    }
