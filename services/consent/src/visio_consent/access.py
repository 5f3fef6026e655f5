"""The right of access (CGU article 8): every record of one person, in French for that person
to read (dates in the appointment's time zone), and as JSON with what re-checks each record: its
seq, its hash, the previous hash and the chained record itself. What they accepted, and what
happened: their consents, then their connections to each meeting and its recording's reference.

A person's records are those chained under their subject_ref and, for an appointment whose
address was corrected to theirs, that appointment's records before the correction: the consent
that governs their appointment was recorded under the old address.

Every export is recorded before it is made (`consent.access_requests`: who asked, for whose
subject_ref, when, by which channel) and each export lists them all, this one included: the
person sees who else looked at their records. `access_export` is the only way to an export and
takes the asker, so no path forgets it.
"""

from __future__ import annotations

import json
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Literal
from zoneinfo import ZoneInfo

import asyncpg
from pydantic import BaseModel
from visio_shared import OVERSEAS_CAFS
from visio_shared.caf_directory import caf_directory
from visio_shared.cafs import METROPOLITAN_TIME_LABEL, METROPOLITAN_TIMEZONE
from visio_shared.checkpoints import Checkpoint

LABELS = {
    "cgu_accepted": "Acceptation des conditions générales d'utilisation (CGU)",
    "recording_authorised": "Enregistrement de l'entretien autorisé",
    "recording_refused": "Enregistrement de l'entretien refusé",
    "recording_withdrawn": "Autorisation d'enregistrement retirée",
    "contact_corrected": "Adresse électronique corrigée",
    "connection": "Connexions à l'entretien",
    "recording_reference": "Enregistrement de l'entretien conservé",
    "personal_data_erased": "Coordonnées effacées",
    "access_exported": "Copie de vos données demandée",
}
# What each record means, said to the person.
_PLAIN = {
    "cgu_accepted": "Vous avez accepté les conditions générales d'utilisation de Visio RDV.",
    "recording_authorised": "Vous avez autorisé l'enregistrement de votre entretien vidéo.",
    "recording_refused": "Vous avez refusé l'enregistrement de votre entretien vidéo.",
    "recording_withdrawn": "Vous avez retiré votre autorisation d'enregistrer l'entretien : "
    "il ne sera pas enregistré.",
    "contact_corrected": "L'adresse électronique de votre rendez-vous a été corrigée.",
    "connection": "Ce que Microsoft Teams a relevé de vos connexions à l'entretien.",
    "recording_reference": "Votre entretien a été enregistré ; sa référence est gardée comme "
    "preuve.",
    "personal_data_erased": "Votre nom et votre adresse ont été effacés de tous nos services ; "
    "le registre ne garde que ces enregistrements, qui ne les contiennent pas.",
    "access_exported": "Vous (ou la Caf, à votre demande) avez demandé une copie de vos données.",
}
# The moment a record is about, when it names one; else the time it was chained.
_MOMENTS = (
    "accepted_at",
    "decided_at",
    "withdrawn_at",
    "corrected_at",
    "erased_at",
    "requested_at",
    "meeting_start",
    "recording_created_at",
)
_WHO = {
    "organizer": "Votre conseiller ou conseillère Caf",
    "public": "Vous",
    "other": "Un autre agent de la Caf",
}

# The channel of what the person did themselves from a self-service page.
SELF_SERVICE_CHANNEL = "self_service"

_DAYS = ("lundi", "mardi", "mercredi", "jeudi", "vendredi", "samedi", "dimanche")
_MONTHS = (
    "janvier", "février", "mars", "avril", "mai", "juin",
    "juillet", "août", "septembre", "octobre", "novembre", "décembre",
)  # fmt: skip
_ZONE_LABELS = {caf.timezone: caf.time_label for caf in OVERSEAS_CAFS.values()} | {
    METROPOLITAN_TIMEZONE: METROPOLITAN_TIME_LABEL,
    "UTC": "temps universel",
}

HOW_TO_VERIFY = (
    "Chaque enregistrement porte une empreinte (hash) : le SHA-256 de l'empreinte de "
    "l'enregistrement précédent (64 caractères hexadécimaux) suivie de l'enregistrement écrit "
    "en JSON canonique (RFC 8785). Chaque empreinte dépend donc de toutes les précédentes, et "
    "des points de contrôle signés (Ed25519) de ces empreintes sont publiés régulièrement : "
    "un enregistrement modifié, retiré ou déplacé ne se vérifie plus."
)


def french_datetime(moment: datetime, zone: str) -> str:
    """`samedi 1er mars 2025 à 13 h 15 (heure de La Réunion)`."""
    local = moment.astimezone(ZoneInfo(zone))
    label = _ZONE_LABELS.get(zone, f"heure de {zone}")
    return (
        f"{_DAYS[local.weekday()]} {french_date(moment, zone)} "
        f"à {local.hour} h {local.minute:02d} ({label})"
    )


def french_date(moment: datetime, zone: str) -> str:
    """`1er mars 2025`, the day it is in `zone`."""
    local = moment.astimezone(ZoneInfo(zone))
    day = "1er" if local.day == 1 else str(local.day)
    return f"{day} {_MONTHS[local.month - 1]} {local.year}"


class AccessRecord(BaseModel):
    seq: int
    hash: str
    prev_hash: str
    kind: str
    label: str
    appointment_id: uuid.UUID
    at: datetime
    timezone: str
    when: str
    record: dict[str, Any]  # exactly what was hashed
    # The appointment's Caf: its code and name (« Caf de La Réunion »); None for an appointment
    # recorded before consent kept it. Beside the record, never in it.
    caf_code: str | None = None
    caf: str | None = None

    @property
    def appointment(self) -> str:
        """`Rendez-vous n° <id>`, with its Caf when known."""
        with_caf = f" ({self.caf})" if self.caf else ""
        return f"Rendez-vous n° {self.appointment_id}{with_caf}"


class KeptData(BaseModel):
    """Personal data kept beside the chain for one appointment, until `retain_until`."""

    appointment_id: uuid.UUID
    email: str
    first_name: str
    last_name: str
    retain_until: datetime


Channel = Literal["api", "command", "self_service"]


@dataclass(frozen=True)
class Asker:
    """Who asks for an export, and how."""

    requested_by: str
    channel: Channel

    @classmethod
    def api(cls, key_name: str) -> Asker:
        return cls(key_name, "api")

    @classmethod
    def command(cls, operator: str) -> Asker:
        return cls(operator, "command")

    @classmethod
    def person(cls) -> Asker:
        return cls("the person, from their link", "self_service")


class AccessRequestSeen(BaseModel):
    """One recorded export of this person's records."""

    requested_at: datetime
    requested_by: str
    channel: Channel
    when: str  # in French, in the time zone of the export

    def describe(self) -> str:
        if self.channel == "self_service":
            return f"Le {self.when} : par vous, depuis votre lien personnel"
        if self.channel == "api":
            return f"Le {self.when} : par le système « {self.requested_by} » (API de la Caf)"
        return f"Le {self.when} : par « {self.requested_by} », agent de la Caf (ligne de commande)"


class AccessExport(BaseModel):
    subject_ref: str
    generated_at: datetime
    records: list[AccessRecord]
    personal_data: list[KeptData]
    # Every export of these records, this one included, oldest first.
    access_requests: list[AccessRequestSeen] = []
    how_to_verify: str = HOW_TO_VERIFY
    # The latest signed checkpoint: a record whose seq is at most its seq is sealed by it.
    checkpoint: Checkpoint | None = None

    def text(self) -> str:
        """The export in French, for the person."""
        zone = self.records[-1].timezone if self.records else METROPOLITAN_TIMEZONE
        lines = [
            "Registre des consentements de Visio RDV (Caf) — droit d'accès (article 8 des CGU)",
            "Ce que vous avez accepté, et ce qui s'est passé lors de vos rendez-vous.",
            f"Document établi le {french_datetime(self.generated_at, zone)}.",
            "",
            f"Votre référence pseudonyme : {self.subject_ref}",
            "Le registre ne contient ni votre nom ni votre adresse électronique, seulement cette "
            "référence, calculée à partir de votre adresse.",
            "",
        ]
        if not self.records:
            lines.append("Aucun enregistrement du registre ne correspond à cette adresse.")
        else:
            count = len(self.records)
            lines.append(
                f"{count} enregistrement{'s' if count > 1 else ''} du registre vous "
                f"concerne{'nt' if count > 1 else ''}, du plus ancien au plus récent :"
            )
        for number, item in enumerate(self.records, start=1):
            lines += ["", f"{number}. {record_title(item)}", f"   Le {item.when}"]
            lines.append(f"   {item.appointment}")
            lines += [f"   {detail}" for detail in record_details(item, self.subject_ref)]
            lines.append(f"   Preuve : enregistrement n° {item.seq}, empreinte {item.hash}")
        lines += ["", "Données personnelles conservées à côté du registre"]
        if not self.personal_data:
            lines.append("   Aucune (ou déjà effacées au terme de leur durée de conservation).")
        for kept in self.personal_data:
            lines.append(
                f"   Rendez-vous n° {kept.appointment_id} : {kept.first_name} {kept.last_name}, "
                f"{kept.email} — conservées jusqu'au {french_date(kept.retain_until, zone)}, "
                "puis effacées."
            )
        lines += ["", "Qui a demandé ces données"]
        lines += [f"   {seen.describe()}" for seen in self.access_requests]
        lines += ["", "Comment vérifier", HOW_TO_VERIFY, ""]
        return "\n".join(lines)


def plain(item: AccessRecord) -> str:
    """What the record means, in one sentence for the person."""
    return _PLAIN.get(item.kind, item.label)


def channel(item: AccessRecord) -> str:
    """Through which channel it reached the ledger."""
    record = item.record
    if record.get("channel") == SELF_SERVICE_CHANNEL:
        return "Par vous-même, depuis le lien personnel reçu par courriel."
    if item.kind in ("cgu_accepted", "recording_authorised", "recording_refused"):
        by = record.get("calling_system", "la Caf")
        return f"Au moment de prendre rendez-vous, transmis par {by}."
    if item.kind in ("connection", "recording_reference"):
        return "Relevé par Microsoft Teams, à la fin de l'entretien."
    if record.get("calling_system"):
        return f"Transmis par {record['calling_system']}."
    return "Enregistré par Visio RDV."


def summary(export: AccessExport) -> list[str]:
    """What was accepted, and what was withdrawn, in a few lines."""
    lines = []
    for item in export.records:
        if item.kind == "cgu_accepted":
            version = item.record.get("cgu_version", "?")
            lines.append(f"Vous avez accepté les CGU (version {version}) le {item.when}.")
        elif item.kind in ("recording_authorised", "recording_refused", "recording_withdrawn"):
            lines.append(f"{plain(item)[:-1]} le {item.when}.")
        elif item.kind == "personal_data_erased":
            lines.append(f"Vos coordonnées ont été effacées le {item.when}.")
    return lines


def sealed(item: AccessRecord, checkpoint: Checkpoint | None) -> str:
    if checkpoint is not None and item.seq <= checkpoint.seq:
        return f"oui, par le point de contrôle n° {checkpoint.seq} signé le {checkpoint.signed_at}"
    return "pas encore (les points de contrôle sont signés régulièrement)"


def record_title(item: AccessRecord) -> str:
    label = item.label
    if item.kind == "cgu_accepted" and "cgu_version" in item.record:
        label += f", version {item.record['cgu_version']}"
    if item.kind == "connection" and item.record.get("attendance") == "unavailable":
        label += " : relevé indisponible"
    return label


def _clock(moment: str, zone: str) -> str:
    local = datetime.fromisoformat(moment).astimezone(ZoneInfo(zone))
    return f"{local.hour} h {local.minute:02d}"


def _duration(seconds: int) -> str:
    minutes, rest = divmod(seconds, 60)
    return f"{minutes} min {rest:02d} s" if minutes else f"{rest} s"


def _connections(record: dict[str, Any], zone: str) -> list[str]:
    """What the meeting's attendance report says, one line per participant."""
    if record.get("attendance") == "unavailable":
        return [f"Le relevé des connexions n'a pas pu être obtenu de Teams ({record['reason']})."]
    details = [
        "Vous vous êtes connecté(e) à l'entretien."
        if record.get("public_attended")
        else "Vous ne vous êtes pas connecté(e) à l'entretien."
    ]
    for participant in record.get("participants", []):
        spans = ", puis ".join(
            f"de {_clock(i['joined_at'], zone)} à {_clock(i['left_at'], zone)}"
            for i in participant["intervals"]
        )
        total = _duration(participant["total_attendance_seconds"])
        who = _WHO.get(participant["role"], participant["role"])
        details.append(f"{who} : connecté(e) {spans or '(heures inconnues)'}, {total} au total")
    details.append(f"Relevé de présence Microsoft Teams n° {record.get('report_id')}")
    return details


def _recording(record: dict[str, Any]) -> list[str]:
    return [
        f"Identifiant de l'enregistrement : {record['recording_id']}",
        f"Référence de son contenu : {record.get('content_correlation_id') or 'non fournie'}",
        "Le contenu de l'enregistrement n'est pas dans ce registre : seule sa référence y est.",
    ]


def record_details(item: AccessRecord, ref: str) -> list[str]:
    record = item.record
    details = []
    if item.kind == "cgu_accepted" and "cgu_sha256" in record:
        details.append(f"Texte des CGU accepté : empreinte SHA-256 {record['cgu_sha256']}")
    if item.kind == "connection":
        details += _connections(record, item.timezone)
    if item.kind == "recording_reference":
        details += _recording(record)
    if record.get("channel") == SELF_SERVICE_CHANNEL:
        details.append("Fait par vous, depuis votre lien personnel.")
    elif record.get("calling_system"):
        details.append(f"Transmis par : {record['calling_system']}")
    if record.get("subject_ref") != ref:
        details.append("Enregistré sous votre adresse précédente, corrigée depuis.")
    return details


_RECORDS = """
WITH mine AS (
    SELECT seq FROM ledger WHERE payload ->> 'subject_ref' = $1
    UNION
    SELECT earlier.seq
    FROM ledger moved
    JOIN ledger earlier
        ON earlier.appointment_id = moved.appointment_id AND earlier.seq < moved.seq
    WHERE moved.payload ->> 'subject_ref' = $1 AND moved.kind = 'contact_corrected'
)
SELECT l.seq, l.prev_hash, l.hash, l.kind, l.appointment_id, l.payload, a.timezone, a.caf_code
FROM mine JOIN ledger l USING (seq) LEFT JOIN appointments a USING (appointment_id)
ORDER BY l.seq
"""


def _caf_name(code: str | None) -> str | None:
    cafs = caf_directory().cafs
    return cafs[code].name if code is not None and code in cafs else None


async def access_export(
    conn: asyncpg.Connection, ref: str, asker: Asker, checkpoint: Checkpoint | None = None
) -> AccessExport:
    """Record that `asker` asked for `ref`'s records, then export them (the request included),
    with the latest signed `checkpoint` that seals the older ones."""
    async with conn.transaction():
        await conn.execute(
            "INSERT INTO access_requests (subject_ref, requested_by, channel) VALUES ($1, $2, $3)",
            ref,
            asker.requested_by,
            asker.channel,
        )
        return await _read_export(conn, ref, checkpoint)


async def _read_export(
    conn: asyncpg.Connection, ref: str, checkpoint: Checkpoint | None
) -> AccessExport:
    records = []
    for row in await conn.fetch(_RECORDS, ref):
        record = json.loads(row["payload"])
        zone = row["timezone"] or "UTC"
        moment = next((record[key] for key in _MOMENTS if key in record), record["recorded_at"])
        at = datetime.fromisoformat(moment)
        records.append(
            AccessRecord(
                seq=row["seq"],
                hash=row["hash"],
                prev_hash=row["prev_hash"],
                kind=row["kind"],
                label=LABELS.get(row["kind"], row["kind"]),
                appointment_id=row["appointment_id"],
                at=at,
                timezone=zone,
                when=french_datetime(at, zone),
                record=record,
                caf_code=row["caf_code"],
                caf=_caf_name(row["caf_code"]),
            )
        )
    kept = await conn.fetch(
        "SELECT appointment_id, email, first_name, last_name, retain_until FROM subjects "
        "WHERE subject_ref = $1 ORDER BY retain_until",
        ref,
    )
    zone = records[-1].timezone if records else METROPOLITAN_TIMEZONE
    asked = await conn.fetch(
        "SELECT requested_at, requested_by, channel FROM access_requests "
        "WHERE subject_ref = $1 ORDER BY requested_at, id",
        ref,
    )
    return AccessExport(
        subject_ref=ref,
        generated_at=datetime.now(UTC),
        records=records,
        personal_data=[KeptData(**dict(row)) for row in kept],
        access_requests=[
            AccessRequestSeen(**dict(row), when=french_datetime(row["requested_at"], zone))
            for row in asked
        ],
        checkpoint=checkpoint,
    )
