"""The Caf team's email when a person asks to move an appointment booked over HTTP, on real
parts: PostgreSQL with the service's migrations, the real mailer into the project's SMTP sink.
Which address (the Caf's own, the default, none: a warning and a count, never a guess), once per
event, as little of the person as the team needs; a partner's appointment gets no email."""

from __future__ import annotations

import logging
from dataclasses import replace
from datetime import date

import pytest
from visio_notifications.handlers import on_appointment_requested
from visio_notifications.team_requests import TeamMetrics, on_reschedule_requested
from visio_runtime.metrics import Metrics
from visio_shared import ReschedulePreferences, RescheduleRequested
from visio_shared.caf_directory import CafContact

TEAM_974 = "visio@caf974.example"
DEFAULT_TEAM = "visio-rdv-equipes@caf.example"


def asked(appointment, calling_system: str = "caf.fr") -> RescheduleRequested:
    return RescheduleRequested(
        appointment_id=appointment.appointment_id,
        correlation_id=appointment.correlation_id,
        revision=appointment.revision,
        calling_system=calling_system,
        preferences=ReschedulePreferences(
            days=["mardi", "jeudi"],
            times=["matin", "fin-de-journee"],
            from_date=date(2026, 12, 7),
            message="Je travaille le lundi et le mercredi.",
        ),
    )


def with_teams(deps, *, own: str | None = None, default: str | None = None):
    contacts = {} if own is None else {"974": CafContact(team_address=own)}
    settings = deps.settings.model_copy(
        update={"caf_contacts": contacts, "caf_team_address": default}
    )
    return replace(deps, settings=settings)


def counted(metrics: TeamMetrics, outcome: str) -> float | None:
    return metrics.metrics.registry.get_sample_value(
        "visio_team_requests_total", {"outcome": outcome}
    )


@pytest.fixture
def metrics() -> TeamMetrics:
    return TeamMetrics(Metrics("notifications"))


async def test_the_cafs_own_team_gets_one_plain_email_with_no_more_than_it_needs(
    deps, make, mailbox, parts, metrics
) -> None:
    appointment = make.appointment(caf_code="974", timezone="Indian/Reunion")
    deps = with_teams(deps, own=TEAM_974, default=DEFAULT_TEAM)
    await on_appointment_requested(deps, appointment)
    event = asked(appointment)

    await on_reschedule_requested(deps, event, metrics)
    await on_reschedule_requested(deps, event, metrics)  # redelivered: nothing more

    [mail] = mailbox.messages(appointment.appointment_id)
    assert mail["To"].addresses[0].addr_spec == TEAM_974  # the Caf's own, over the default
    assert str(mail["Subject"]) == "Demande de changement de créneau – Caf de La Réunion"
    assert f"{appointment.appointment_id}.r1.reschedule_request-" in str(mail["Message-ID"])
    text = parts.text(mail)
    assert "Amina H. demande à déplacer son rendez-vous visio (Caf de La Réunion)" in text
    assert "le jeudi 3 décembre 2026 à 13 h 00 (heure de La Réunion)" in text
    assert f"Rendez-vous : {appointment.appointment_id}" in text
    assert "Jours qui lui conviennent : mardi, jeudi" in text
    assert "le matin (8 h – 12 h), en fin de journée (17 h – 19 h)" in text
    assert "À partir du : lundi 7 décembre 2026" in text
    assert "« Je travaille le lundi et le mercredi. »" in text
    assert "le lien pour se connecter ne changera pas" in text
    # Nothing more of the person: not their last name, address or subject.
    for personal in ("Hoarau", "amina.hoarau@example.org", "Prime d'activité"):
        assert personal not in mail.as_string(), personal
    assert mail.get_body(preferencelist=("html",)) is None  # plain text for a team
    assert counted(metrics, "sent") == 1


async def test_a_caf_without_its_own_team_address_uses_the_default(
    deps, make, mailbox, metrics
) -> None:
    appointment = make.appointment()  # 075: no entry
    deps = with_teams(deps, own=TEAM_974, default=DEFAULT_TEAM)
    await on_appointment_requested(deps, appointment)
    await on_reschedule_requested(deps, asked(appointment), metrics)
    [mail] = mailbox.messages(appointment.appointment_id)
    assert mail["To"].addresses[0].addr_spec == DEFAULT_TEAM
    assert "Caf de Paris" in str(mail["Subject"])


async def test_no_team_address_configured_mails_no_one_and_says_so(
    deps, make, mailbox, metrics, caplog
) -> None:
    appointment = make.appointment(caf_code="974", timezone="Indian/Reunion")
    deps = with_teams(deps)
    await on_appointment_requested(deps, appointment)
    with caplog.at_level(logging.WARNING, logger="visio_notifications.team_requests"):
        await on_reschedule_requested(deps, asked(appointment), metrics)
    assert mailbox.messages(appointment.appointment_id) == []
    [warning] = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert "NO team address configured" in warning.getMessage()
    assert "NOTIFICATIONS_CAF_TEAM_ADDRESS" in warning.getMessage()
    assert counted(metrics, "no_address") == 1
    assert counted(metrics, "sent") == 0
    done = await deps.pool.fetchval("SELECT count(*) FROM processed_events")
    assert done >= 1  # marked: a redelivery does not warn again


async def test_a_partners_appointment_gets_no_email_its_partner_was_told_on_kafka(
    deps, make, mailbox, metrics
) -> None:
    appointment = make.appointment(caf_code="974", timezone="Indian/Reunion")
    deps = with_teams(deps, own=TEAM_974, default=DEFAULT_TEAM)
    await on_appointment_requested(deps, appointment)
    await on_reschedule_requested(
        deps, asked(appointment, calling_system="kafka:national-scheduler"), metrics
    )
    assert mailbox.messages(appointment.appointment_id) == []
    assert counted(metrics, "partner") == 1


def test_a_team_address_that_is_no_address_is_refused_at_start() -> None:
    with pytest.raises(ValueError, match="team_address"):
        CafContact.model_validate({"team_address": "pas une adresse"})
