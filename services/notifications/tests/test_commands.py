"""`visio-rdv notifications preview`: every kind, for a device and a zone, written to a folder
as a person would look at it, without Kafka, a database or a relay."""

from __future__ import annotations

import email
from email import policy

import icalendar
import pytest
from visio_deploy.cli import main

KINDS_WITH_ICS = {
    "confirmation": "REQUEST",
    "rescheduled": "REQUEST",
    "contact_corrected": "REQUEST",
    "advisor_changed": "REQUEST",
    "cancellation": "CANCEL",
}


def _preview(*args: str) -> int:
    with pytest.raises(SystemExit) as done:
        main(["notifications", "preview", *args])
    return int(done.value.code or 0)


@pytest.mark.parametrize(
    "kind",
    [*KINDS_WITH_ICS, "reminder", "meeting_unavailable"],
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
    assert {path.name for path in tmp_path.iterdir()} == expected
    assert sorted(capsys.readouterr().out.split()) == sorted(str(tmp_path / n) for n in expected)

    message = email.message_from_bytes(
        (tmp_path / f"{kind}.eml").read_bytes(), policy=policy.default
    )
    assert message["Message-ID"].endswith("@visio-rdv.caf.fr>")
    text = (tmp_path / f"{kind}.txt").read_text()
    assert "heure de la Guyane" in text
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


def test_an_unknown_zone_is_refused(tmp_path, capsys) -> None:
    assert _preview("--timezone", "Mars/Olympus", "--out", str(tmp_path)) == 2
    assert "unknown time zone" in capsys.readouterr().out
    assert not tmp_path.joinpath("confirmation.eml").exists()
