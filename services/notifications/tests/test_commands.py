"""`visio-rdv notifications preview`: every kind, for a device and a zone, written to a folder
as a person would look at it, without Kafka, a database or a relay; with the « Gérer mon
rendez-vous » links, or as sent without link keys."""

from __future__ import annotations

import email
import re
from email import policy

import icalendar
import pytest
from visio_notifications import commands
from visio_notifications.preview import PREVIEW_LINK_KEYS
from visio_shared.links import LinkKeys, LinkPurpose, read_any_link
from visio_testing.commands import run_commands

KINDS_WITH_ICS = {
    "confirmation": "REQUEST",
    "rescheduled": "REQUEST",
    "contact_corrected": "REQUEST",
    "advisor_changed": "REQUEST",
    "cancellation": "CANCEL",
}


@pytest.fixture(autouse=True)
def _no_link_keys_in_the_environment(monkeypatch) -> None:
    monkeypatch.delenv("NOTIFICATIONS_LINK_KEYS", raising=False)


def _preview(*args: str) -> int:
    with pytest.raises(SystemExit) as done:
        run_commands(commands, ["notifications", "preview", *args])
    return int(done.value.code or 0)


@pytest.mark.parametrize(
    "kind",
    [*KINDS_WITH_ICS, "reminder", "meeting_unavailable", "link_resent"],
)
def test_every_kind_is_written(tmp_path, capsys, kind) -> None:
    code = _preview(
        "--kind",
        kind,
        "--device",
        "tablet",
        "--timezone",
        "America/Cayenne",
        "--out",
        str(tmp_path),
    )
    assert code == 0
    expected = {f"{kind}.eml", f"{kind}.html", f"{kind}.txt"}
    if kind in KINDS_WITH_ICS:
        expected.add(f"{kind}.ics")
    if kind in ("confirmation", "rescheduled", "advisor_changed", "cancellation", "reminder"):
        expected.add(f"{kind}.sms.txt")  # and its text message, shown with its segments
    assert {path.name for path in tmp_path.iterdir()} == expected
    printed = [line for line in capsys.readouterr().out.splitlines() if not line.startswith("SMS")]
    assert sorted(printed) == sorted(str(tmp_path / n) for n in expected)

    message = email.message_from_bytes(
        (tmp_path / f"{kind}.eml").read_bytes(), policy=policy.default
    )
    assert message["Message-ID"].endswith("@visio-rdv.caf.fr>")
    text = (tmp_path / f"{kind}.txt").read_text()
    assert "heure de la Guyane" in text
    # Its Caf, by the sample's caf_code (973), and the CGU version the person accepted.
    assert "Caf de la Guyane" in text and "Votre Caf" not in text
    assert (
        "/cgu/1\n" in text
        and 'href="http://127.0.0.1:8083/cgu/1"' in (tmp_path / f"{kind}.html").read_text()
    )
    assert text == message.get_body(preferencelist=("plain",)).get_content()
    assert '<html lang="fr"' in (tmp_path / f"{kind}.html").read_text()
    if kind in KINDS_WITH_ICS:
        calendar = icalendar.Calendar.from_ical((tmp_path / f"{kind}.ics").read_bytes())
        assert calendar["METHOD"] == KINDS_WITH_ICS[kind]


def test_the_device_orders_the_guide(tmp_path) -> None:
    _preview("--device", "computer", "--out", str(tmp_path / "computer"))
    _preview("--device", "smartphone", "--out", str(tmp_path / "phone"))
    computer = (tmp_path / "computer" / "confirmation.txt").read_text()
    phone = (tmp_path / "phone" / "confirmation.txt").read_text()
    assert computer.index("Un ordinateur") < computer.index("Votre smartphone ou une tablette")
    assert phone.index("Votre smartphone ou une tablette") < phone.index("Un ordinateur")
    assert "heure de Paris" in computer  # the default zone


def test_the_links_section_is_shown_signed_with_the_preview_key(tmp_path) -> None:
    assert _preview("--kind", "link_resent", "--request", "fresh_link", "--out", str(tmp_path)) == 0
    text = (tmp_path / "link_resent.txt").read_text()
    assert "voici de nouveaux liens personnels" in text
    assert "GÉRER MON RENDEZ-VOUS" in text
    assert "Gérer mon rendez-vous" in (tmp_path / "link_resent.html").read_text()
    token = re.search(r"http://127\.0\.0\.1:8080/mon-rendez-vous/(\S+)", text)
    assert token is not None
    claims = read_any_link(LinkKeys.parse(PREVIEW_LINK_KEYS), token.group(1))
    assert (claims.purpose, claims.key_id) == (LinkPurpose.MANAGE, "preview")


@pytest.mark.parametrize(
    ("ended", "said"), [("over", "est passé."), ("cancelled", "a été annulé.")]
)
def test_a_fresh_link_after_the_appointment_is_previewed(tmp_path, ended, said) -> None:
    assert _preview("--kind", "link_resent", "--ended", ended, "--out", str(tmp_path)) == 0
    text = (tmp_path / "link_resent.txt").read_text()
    assert said in text and "GÉRER MON RENDEZ-VOUS" not in text
    [url] = [u for u in re.findall(r"http://127\.0\.0\.1:\d+/\S+", text) if "/cgu/" not in u]
    assert "/mes-consentements/" in url and "teams.microsoft.com" not in text


def test_without_self_service_the_email_as_sent_without_keys(tmp_path) -> None:
    assert _preview("--no-self-service", "--out", str(tmp_path)) == 0
    text = (tmp_path / "confirmation.txt").read_text()
    assert "Votre rendez-vous visio avec la Caf est confirmé." in text
    assert "GÉRER MON RENDEZ-VOUS" not in text and "mon-rendez-vous/" not in text


def test_an_unknown_zone_is_refused(tmp_path, capsys) -> None:
    assert _preview("--timezone", "Mars/Olympus", "--out", str(tmp_path)) == 2
    assert "unknown time zone" in capsys.readouterr().out
    assert not tmp_path.joinpath("confirmation.eml").exists()


def test_each_text_message_is_shown_with_its_segment_count(tmp_path, capsys) -> None:
    assert _preview("--kind", "confirmation", "--out", str(tmp_path)) == 0
    # Counted by hand: « Caf : votre rendez-vous en visio est confirmé le jeudi 3 décembre à
    # 10h00 (heure de Paris). Détails : » is 102 characters, all in GSM 03.38; the default
    # short link « http://127.0.0.1:8080/r/ » (7 + 14 + 3) + 16 is 40: 142 septets, one SMS.
    shown = capsys.readouterr().out
    assert "SMS [GSM-7, 142 septets, 1 SMS] Caf : votre rendez-vous en visio" in shown
    assert (tmp_path / "confirmation.sms.txt").read_text().startswith("[GSM-7, 142 septets")
    assert _preview("--kind", "meeting_unavailable", "--out", str(tmp_path / "none")) == 0
    assert "SMS [" not in capsys.readouterr().out  # no text for that kind
