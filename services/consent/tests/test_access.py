"""The right of access: every record of one person, readable in French with dates in the
appointment's time zone, and as JSON from which anyone can re-check each hash."""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from datetime import UTC, datetime
from typing import TYPE_CHECKING

import asyncpg
import rfc8785
from pydantic import SecretStr
from visio_consent.access import Asker, access_export, french_datetime
from visio_consent.handlers import record_consent, record_contact_correction
from visio_consent.ledger import subject_ref
from visio_consent.settings import ConsentSettings
from visio_consent.withdrawal import withdraw_recording
from visio_shared import AppointmentRequested, ContactCorrected, Topics

if TYPE_CHECKING:
    from conftest import FakePublisher

SETTINGS = ConsentSettings(subject_key=SecretStr("test-subject-key"))
TOPICS = Topics("visio-rdv-test")
MakeEvent = Callable[..., AppointmentRequested]

ASKER = Asker.command("dpo")


def test_dates_are_said_in_french_in_the_appointments_zone() -> None:
    moment = datetime(2025, 3, 1, 9, 15, tzinfo=UTC)
    assert french_datetime(moment, "Indian/Reunion") == (
        "samedi 1er mars 2025 à 13 h 15 (heure de La Réunion)"
    )
    assert (
        french_datetime(moment, "Europe/Paris") == "samedi 1er mars 2025 à 10 h 15 (heure de Paris)"
    )
    assert french_datetime(moment, "America/Cayenne") == (
        "samedi 1er mars 2025 à 6 h 15 (heure de la Guyane)"
    )
    # Past midnight in Paris: the local day is the one said.
    assert french_datetime(datetime(2025, 8, 14, 22, 5, tzinfo=UTC), "Europe/Paris") == (
        "vendredi 15 août 2025 à 0 h 05 (heure de Paris)"
    )


async def test_an_export_lists_every_record_of_the_person_and_proves_each(
    pool: asyncpg.Pool, publisher: FakePublisher, make_event: MakeEvent
) -> None:
    mine = make_event(timezone="Indian/Reunion", recording_authorised=True)
    await record_consent(mine, pool, publisher, SETTINGS, TOPICS)
    await record_consent(
        make_event(email="someone.else@example.org"), pool, publisher, SETTINGS, TOPICS
    )
    await withdraw_recording(pool, publisher, TOPICS, mine.appointment_id, calling_system="caf.fr")
    ref = subject_ref("test-subject-key", mine.user.email)

    async with pool.acquire() as conn:
        export = await access_export(conn, ref, ASKER)

    assert export.subject_ref == ref
    assert [(r.seq, r.kind) for r in export.records] == [
        (1, "cgu_accepted"),
        (2, "recording_authorised"),
        (5, "recording_withdrawn"),
    ]
    for item in export.records:
        # What anyone can recompute from the export alone.
        digest = hashlib.sha256(item.prev_hash.encode() + rfc8785.dumps(item.record)).hexdigest()
        assert digest == item.hash
        assert item.timezone == "Indian/Reunion"
        assert item.appointment_id == mine.appointment_id
    accepted = export.records[0]
    assert accepted.when == "samedi 1er mars 2025 à 13 h 15 (heure de La Réunion)"
    assert [(k.email, k.first_name) for k in export.personal_data] == [
        (mine.user.email, mine.user.first_name)
    ]

    text = export.text()
    assert "Acceptation des conditions générales d'utilisation (CGU), version 1" in text
    assert "Le samedi 1er mars 2025 à 13 h 15 (heure de La Réunion)" in text
    assert "Enregistrement de l'entretien autorisé" in text
    assert "Autorisation d'enregistrement retirée" in text
    assert f"Preuve : enregistrement n° 5, empreinte {export.records[2].hash}" in text
    assert "3 enregistrements du registre vous concernent" in text
    assert f"{mine.user.first_name} {mine.user.last_name}, {mine.user.email}" in text
    assert "someone.else" not in text
    assert "Qui a demandé ces données" in text
    assert "par « dpo », agent de la Caf (ligne de commande)" in text


async def test_after_a_correction_the_new_address_sees_its_appointments_history(
    pool: asyncpg.Pool, publisher: FakePublisher, make_event: MakeEvent
) -> None:
    event = make_event()
    await record_consent(event, pool, publisher, SETTINGS, TOPICS)
    user = event.user.model_copy(update={"email": "new@example.org"})
    correction = ContactCorrected(
        **event.caused(appointment_id=event.appointment_id, revision=2), user=user
    )
    await record_contact_correction(correction, pool, publisher, SETTINGS, TOPICS)

    async with pool.acquire() as conn:
        new = await access_export(conn, subject_ref("test-subject-key", "new@example.org"), ASKER)
        old = await access_export(conn, subject_ref("test-subject-key", event.user.email), ASKER)
        nobody = await access_export(conn, subject_ref("test-subject-key", "no@example.org"), ASKER)

    assert [r.kind for r in new.records] == [
        "cgu_accepted",
        "recording_authorised",
        "contact_corrected",
    ]
    assert "Enregistré sous votre adresse précédente, corrigée depuis." in new.text()
    assert [r.kind for r in old.records] == ["cgu_accepted", "recording_authorised"]
    assert nobody.records == [] and nobody.personal_data == []
    assert "Aucun enregistrement du registre ne correspond à cette adresse." in nobody.text()
