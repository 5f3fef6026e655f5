"""Text messages: their segment counts (expectations counted by hand from the GSM 03.38 table,
character by character, never by the code under test), quiet hours, and the whole path on real
parts — PostgreSQL, the SMTP sink, and the Brevo emulator over HTTP — including a run with the
provider's faults that loses none and doubles none beyond the ambiguous sends it reports."""

from __future__ import annotations

import uuid
from collections import Counter
from datetime import UTC, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import httpx
import pytest
from visio_notifications import sms, sms_encoding, sms_receipts
from visio_notifications.decide import State
from visio_notifications.handlers import (
    on_appointment_changed,
    on_appointment_requested,
    on_meeting_event,
)
from visio_notifications.poller import poll_once
from visio_notifications.quiet_hours import release_at
from visio_shared import SmsFailed

# --- Counting, by hand ------------------------------------------------------------------------
#
# GSM-7: 160 septets alone, 153 a part; € [ ] { } ^ ~ \ | take 2 and never straddle two parts.
# UCS-2: 70 units alone, 67 a part. ê â î ô û ç œ « » ’ are not in GSM 03.38; é è à ù are.


@pytest.mark.parametrize(
    ("text", "encoding", "units", "segments"),
    [
        ("a" * 160, "GSM-7", 160, 1),
        ("a" * 161, "GSM-7", 161, 2),  # 153 + 8
        ("a" * 306, "GSM-7", 306, 2),  # 153 + 153
        ("a" * 307, "GSM-7", 307, 3),
        ("é" * 160, "GSM-7", 160, 1),  # é is in the default alphabet
        ("a" * 159 + "€", "GSM-7", 161, 2),  # € takes two septets
        ("a" * 152 + "€" + "a" * 152, "GSM-7", 306, 3),  # the € cannot straddle parts 1 and 2
        ("ê" * 70, "UCS-2", 70, 1),
        ("ê" + "a" * 70, "UCS-2", 71, 2),  # one ê turns all 71 characters to UCS-2
        ("ç" * 134, "UCS-2", 134, 2),  # 67 + 67
        ("œ" * 135, "UCS-2", 135, 3),
        ("« Bonjour »", "UCS-2", 11, 1),
        ("l’heure", "UCS-2", 7, 1),  # the typographic apostrophe; ' would be GSM-7
        ("l'heure", "GSM-7", 7, 1),
    ],
)
def test_segments_as_counted_by_hand(text: str, encoding: str, units: int, segments: int) -> None:
    assert sms_encoding.count(text) == sms_encoding.SmsCount(encoding, units, segments)


# Each message below counted by hand, piece by piece (see docs/sms.md): the test settings'
# short link « https://rdv.caf.example/booking/r/ » is 34 characters, its code 16.
URL_CHARS = 50


def _texts(make: Any, settings: Any, **fields: Any) -> dict[str, str]:
    appointment = make.appointment(**fields)
    state = State(appointment, 1, None, None, ())
    now = datetime(2026, 11, 20, 9, 0, tzinfo=UTC)
    return {
        "confirmation": sms.text_of("confirmation", state, settings, now),
        "reminder-2880": sms.text_of("reminder", state, settings, now, 2880),
        "reminder-60": sms.text_of("reminder", state, settings, now, 60),
        "cancellation": sms.text_of("cancellation", state, settings, now),
    }


def test_each_message_fits_the_segments_counted_by_hand(make: Any, settings: Any) -> None:
    texts = _texts(make, settings)
    # « Caf : votre rendez-vous en visio est confirmé le jeudi 3 décembre à 10h00 (heure de
    # Paris). Détails : » = 6+6+12+3+6+4+9+3+6+2+9+2+6+7+3+8+10 = 102, + 50: 152, GSM-7.
    assert len(texts["confirmation"]) == 102 + URL_CHARS
    assert sms_encoding.count(texts["confirmation"]).encoding == "GSM-7"
    assert sms_encoding.count(texts["confirmation"]).segments == 1
    # « Caf rappel : rendez-vous en visio le jeudi 3 décembre à 10h00 (heure de Paris).
    # Détails : » = 13+12+3+6+20+2+6+18+10 = 90, + 50: 140.
    assert len(texts["reminder-2880"]) == 90 + URL_CHARS
    assert sms_encoding.count(texts["reminder-2880"]).segments == 1
    # « Caf : votre rendez-vous en visio commence à 10h00 (heure de Paris). Pour le
    # rejoindre : » = 6+6+12+3+6+9+2+6+18+5+3+10+2 = 88, + 50: 138.
    assert len(texts["reminder-60"]) == 88 + URL_CHARS
    assert sms_encoding.count(texts["reminder-60"]).segments == 1
    # « Caf : votre rendez-vous en visio du jeudi 3 décembre à 10h00 (heure de Paris) est
    # annulé. Détails : » = 6+6+12+3+6+3+6+2+9+2+6+7+3+7+4+8+10 = 100, + 50: 150.
    assert len(texts["cancellation"]) == 100 + URL_CHARS
    assert sms_encoding.count(texts["cancellation"]).segments == 1


def test_a_date_in_august_turns_the_text_to_ucs2(make: Any, settings: Any) -> None:
    texts = _texts(make, settings, start=datetime(2026, 8, 13, 8, 0, tzinfo=UTC))
    # « août » has û: the confirmation (« jeudi 13 août », 149 characters) is UCS-2, and
    # 149 > 2 × 67: three parts.
    assert len(texts["confirmation"]) == 149
    assert sms_encoding.count(texts["confirmation"]) == sms_encoding.SmsCount("UCS-2", 149, 3)


def test_overseas_the_zone_is_named(make: Any, settings: Any) -> None:
    texts = _texts(make, settings, timezone="Indian/Reunion", caf_code="974")
    assert "à 13h00 (heure de La Réunion)" in texts["confirmation"]
    # « La Réunion » is 5 characters longer than « Paris »: 157, still one GSM-7 SMS.
    assert sms_encoding.count(texts["confirmation"]) == sms_encoding.SmsCount("GSM-7", 157, 1)


# --- Quiet hours ------------------------------------------------------------------------------

PARIS = ZoneInfo("Europe/Paris")


def _paris(day: int, hour: int, minute: int = 0) -> datetime:
    return datetime(2026, 12, day, hour, minute, tzinfo=PARIS)


@pytest.mark.parametrize(
    ("kind", "planned", "start", "now", "expected"),
    [
        # In the day: at once.
        ("confirmation", _paris(3, 10), _paris(5, 10), _paris(3, 10), _paris(3, 10)),
        # A confirmation at 22:00 waits for 08:00.
        ("confirmation", _paris(3, 22), _paris(5, 10), _paris(3, 22), _paris(4, 8)),
        # The 48-hour reminder due at 07:00 goes the evening before, at 19:00.
        ("reminder", _paris(3, 7), _paris(5, 7), _paris(1, 12), _paris(2, 19)),
        # The 1-hour reminder of a 07:30 appointment goes at 06:30: due within two hours.
        ("reminder", _paris(5, 6, 30), _paris(5, 7, 30), _paris(1, 12), _paris(5, 6, 30)),
        # A change of an appointment at 09:00 tomorrow, announced at 23:00: at once.
        ("rescheduled", _paris(3, 23), _paris(4, 9), _paris(3, 23), _paris(3, 23)),
        # A change of an appointment in a week, announced at 23:00: at 08:00.
        ("rescheduled", _paris(3, 23), _paris(10, 9), _paris(3, 23), _paris(4, 8)),
    ],
)
def test_quiet_hours(
    kind: str, planned: datetime, start: datetime, now: datetime, expected: datetime
) -> None:
    assert release_at(kind, planned, start, now, PARIS) == expected


def test_quiet_hours_are_the_persons_own() -> None:
    reunion = ZoneInfo("Indian/Reunion")
    # 21:00 in Paris is 23:00... no: 00:00 in La Réunion in December (UTC+4 vs UTC+1).
    planned = datetime(2026, 12, 3, 17, 0, tzinfo=UTC)  # 18:00 Paris, 21:00 Réunion
    start = datetime(2026, 12, 10, 6, 0, tzinfo=UTC)
    assert release_at("confirmation", planned, start, planned, PARIS) == planned
    assert release_at("confirmation", planned, start, planned, reunion) == datetime(
        2026, 12, 4, 8, 0, tzinfo=reunion
    )


# --- On real parts ----------------------------------------------------------------------------


async def _book(deps: Any, make: Any, mobile: str = "+33612345678", **fields: Any) -> Any:
    appointment = make.appointment(**fields)
    appointment = appointment.model_copy(
        update={"user": appointment.user.model_copy(update={"mobile": mobile, "sms_opt_in": True})}
    )
    await on_appointment_requested(deps, appointment)
    await on_meeting_event(deps, make.meeting(appointment))
    return appointment


def _received(emulator: Any) -> list[dict[str, Any]]:
    return list(emulator.state.messages)


async def test_confirmation_and_reminders_arrive_once_each_with_their_segments(
    sms_deps: Any, make: Any, clock: Any, emulator: Any, mailbox: Any
) -> None:
    deps = sms_deps
    appointment = await _book(deps, make)
    assert mailbox.keys(appointment.appointment_id) == ["r1.confirmation"]
    await poll_once(deps)
    await poll_once(deps)  # nothing more
    start = appointment.start
    clock.set(start - timedelta(hours=48))
    await poll_once(deps)
    clock.set(start - timedelta(minutes=60))
    await poll_once(deps)
    await poll_once(deps)
    received = _received(emulator)
    assert [m["recipient"] for m in received] == ["33612345678"] * 3
    assert [(m["encoding"], m["smsCount"]) for m in received] == [("GSM-7", 1)] * 3
    assert received[0]["content"].startswith("Caf : votre rendez-vous en visio est confirmé")
    assert "Caf rappel : rendez-vous en visio le jeudi 3 décembre à 10h00" in received[1]["content"]
    assert "commence à 10h00 (heure de Paris)" in received[2]["content"]
    assert all("/booking/r/" in m["content"] for m in received)
    rows = await deps.pool.fetch(
        "SELECT kind, reminder_offset_minutes, status, segments, encoding, ambiguous "
        "FROM sms_messages ORDER BY id"
    )
    assert [tuple(row) for row in rows] == [
        ("confirmation", None, "sent", 1, "GSM-7", 0),
        ("reminder", 2880, "sent", 1, "GSM-7", 0),
        ("reminder", 60, "sent", 1, "GSM-7", 0),
    ]
    assert deps.sms_metrics.metrics.value("sms_segments_total", encoding="GSM-7") == 3


async def test_a_person_without_texts_gets_none(sms_deps: Any, make: Any, emulator: Any) -> None:
    appointment = make.appointment()
    await on_appointment_requested(sms_deps, appointment)
    await on_meeting_event(sms_deps, make.meeting(appointment))
    await poll_once(sms_deps)
    assert _received(emulator) == []


async def test_texts_about_the_old_time_are_called_off_and_none_are_looked_for_in_vain(
    sms_deps: Any, make: Any, emulator: Any
) -> None:
    """A move calls off the texts still waiting about the old time and plans the new time's; an
    appointment with no text waiting is settled without a statement on the texts to call off
    (the state says none wait: most emails)."""
    statements: list[str] = []

    def note(record: Any) -> None:
        statements.append(record.query)

    async with sms_deps.pool.acquire() as conn:
        conn.add_query_logger(note)  # the pool hands this connection back to the handlers
    try:
        appointment = await _book(sms_deps, make)  # confirmation text and reminders, pending
        calling_off = [q for q in statements if q.startswith("UPDATE sms_messages SET status")]
        assert calling_off == []  # nothing waited before the first email
        statements.clear()
        later = appointment.start + timedelta(days=1)
        await on_appointment_changed(sms_deps, make.rescheduled(appointment, 2, later))
        assert [q for q in statements if q.startswith("UPDATE sms_messages SET status")]
    finally:
        async with sms_deps.pool.acquire() as conn:
            conn.remove_query_logger(note)
    rows = await sms_deps.pool.fetch(
        "SELECT kind, status, start_at FROM sms_messages WHERE appointment_id = $1 ORDER BY id",
        appointment.appointment_id,
    )
    waiting = {(row["kind"], row["start_at"]) for row in rows if row["status"] == "pending"}
    assert waiting and all(start == later for _, start in waiting)
    assert {row["status"] for row in rows if row["start_at"] == appointment.start} <= {
        "cancelled",
        "sent",
    }
    assert any(r["status"] == "cancelled" for r in rows if r["start_at"] == appointment.start)


async def test_a_refused_number_fails_for_good_and_the_caf_is_told(
    sms_deps: Any, make: Any, emulator: Any, publisher: Any
) -> None:
    await _book(sms_deps, make, mobile="+3361")  # slipped past: the provider refuses it
    await poll_once(sms_deps)
    failed = [e for e in publisher.events() if isinstance(e, SmsFailed)]
    assert [(e.kind, e.reason) for e in failed] == [("confirmation", "rejected")]
    await poll_once(sms_deps)
    assert len([e for e in publisher.events() if isinstance(e, SmsFailed)]) == 1


async def test_a_hard_bounce_receipt_fails_the_text_and_tells_the_caf(
    sms_deps: Any, make: Any, emulator: Any, publisher: Any
) -> None:
    appointment = await _book(sms_deps, make)
    await poll_once(sms_deps)
    provider_id = str(_received(emulator)[0]["messageId"])
    now = datetime.now(UTC)
    counters = sms_deps.sms_metrics
    assert await sms_receipts.on_receipt(
        sms_deps.pool, provider_id, "hard_bounce", "", now, counters
    )
    assert not await sms_receipts.on_receipt(sms_deps.pool, "999", "delivered", "", now, counters)
    await poll_once(sms_deps)
    failed = [e for e in publisher.events() if isinstance(e, SmsFailed)]
    assert [(e.appointment_id, e.reason) for e in failed] == [
        (appointment.appointment_id, "hard_bounce")
    ]


async def test_with_provider_faults_none_is_lost_and_none_doubled_beyond_the_ambiguous(
    sms_deps: Any, make: Any, clock: Any, emulator: Any
) -> None:
    """Chaos: every fault the emulator has, drawn at random (seeded), on the sends and on
    the look-ups that settle lost answers."""
    deps = sms_deps
    async with httpx.AsyncClient() as client:
        await client.post(
            emulator.base_url.removesuffix("/v3") + "/_emulator/faults",
            json={
                "rates": {
                    "429": 0.1,
                    "503": 0.1,
                    "502": 0.1,
                    "timeout_after": 0.15,
                    "timeout_before": 0.05,
                },
                "seed": 26,
                "find": ["500", "500", "500"],
                "hang_s": 2,
            },
        )
    booked = [await _book(deps, make) for _ in range(12)]
    start = booked[0].start
    for moment in [clock() + timedelta(seconds=s * 3) for s in range(40)] + [
        start - timedelta(hours=48) + timedelta(seconds=s * 3) for s in range(40)
    ]:
        clock.set(moment)
        await poll_once(deps)
    rows = await deps.pool.fetch(
        "SELECT client_ref, kind, status, ambiguous FROM sms_messages ORDER BY id"
    )
    received = Counter(m["tag"] for m in _received(emulator))
    confirmations = [row for row in rows if row["kind"] == "confirmation"]
    assert len(confirmations) == 12
    for row in rows:
        copies = received[row["client_ref"]]
        if row["status"] == "sent":
            assert copies >= 1, row  # none lost
        elif row["kind"] == "reminder" and row["status"] == "pending":
            continue  # the 1-hour one: not due yet
        else:
            assert row["status"] == "unknown" and row["kind"] == "reminder", row
            assert copies <= 1
        assert copies <= 1 + row["ambiguous"], row  # doubled only where reported
    assert all(row["status"] == "sent" for row in confirmations)
    faults = Counter(emulator.state.faults_served)
    assert faults["timeout_after"] and faults["429"] and faults["503"]
    duplicates = sum(copies - 1 for copies in received.values())
    reported = sum(row["ambiguous"] for row in rows)
    print(
        f"chaos: {len(rows)} texts, faults {dict(faults)}, duplicates {duplicates}, "
        f"ambiguous reported {reported}"
    )
    assert duplicates <= reported


def test_client_refs_differ_per_text() -> None:
    appointment_id = uuid.uuid4()
    refs = {
        sms.client_ref(appointment_id, "reminder", 1, 60),
        sms.client_ref(appointment_id, "reminder", 1, 2880),
        sms.client_ref(appointment_id, "confirmation", 1, None),
        sms.client_ref(appointment_id, "confirmation", 2, None),
    }
    assert len(refs) == 4
