"""The exact bytes of every kind of email, for fixed inputs, against files in `golden/`.

Written before composition was made cheap (issue 20), so that the rewrite is proven to change
nothing a person or a mail client could see: headers, folding, encodings, the HTML with its
inlined styles, the text, the .ics. The only part normalised is the MIME boundaries (random
in the `email` package's generator; derived from the Message-ID since), each replaced by
`BOUNDARY-n` in order of appearance.

The bytes compared are those the relay receives: what the mailer hands to SMTP, checked once
more as the real SMTP sink stores them.

Written again when the CSS came to be inlined into the templates as they load instead of into
each page: the HTML's bytes changed (no implicit <tbody>, entities as Jinja escapes them), not
its tree, as an HTML5 parser builds it — checked then against the files before, and by the
tests at the end of this file against css_inline's inlining of each page.

To accept a deliberate change of wording or layout: `VISIO_GOLDEN_WRITE=1 uv run pytest
services/notifications/tests/test_golden_emails.py`, then read the diff of `golden/` before
committing it. The run that writes fails, so that it is never taken for a pass.
"""

from __future__ import annotations

import os
import re
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import css_inline
import pytest
from jinja2 import Environment, PackageLoader
from pydantic import SecretStr
from visio_notifications import compose as composing
from visio_notifications import styles
from visio_notifications.compose import PALETTE, Letter, compose_mail, context, render
from visio_notifications.decide import LinkRequest, Told, recipient_sha256
from visio_notifications.mailer import SmtpMailer
from visio_notifications.settings import NotificationsSettings
from visio_shared import AppointmentRequested, Device

GOLDEN = Path(__file__).parent / "golden"
WRITE = os.environ.get("VISIO_GOLDEN_WRITE") == "1"

NOW = datetime(2026, 11, 20, 9, 0, tzinfo=UTC)
PARIS_START = datetime(2026, 12, 3, 9, 0, tzinfo=UTC)  # 10 h 00 in Paris
LINK_KEYS = "g2:" + "c" * 40 + ",g1:" + "d" * 40
JOIN_URL = (
    "https://teams.microsoft.com/l/meetup-join/19%3ameeting_ZjA4NDk0%40thread.v2/0"
    "?context=%7b%22Tid%22%3a%22t1%22%2c%22Oid%22%3a%22o1%22%7d"
)
OLD_URL = "https://teams.microsoft.com/l/meetup-join/19%3ameeting_old%40thread.v2/0"
REQUEST_ID = uuid.UUID("1b2c3d4e-5f60-4718-9a2b-3c4d5e6f7081")


def golden_settings(**changes: Any) -> NotificationsSettings:
    """Every setting an email shows, given here: the environment must not change the bytes."""
    values: dict[str, Any] = {
        "mail_from": "Caf - Visio RDV <visio-rdv@caf.fr>",
        "reply_to": None,
        "message_id_domain": "visio-rdv.caf.fr",
        "new_appointment_url": "https://www.caf.fr/allocataires/mon-rendez-vous",
        "logo_url": None,
        "app_store_url": "https://apps.apple.com/fr/app/microsoft-teams/id1113153706",
        "google_play_url": "https://play.google.com/store/apps/details?id=com.microsoft.teams",
        "booking_public_url": "https://rdv.caf.example/booking",
        "consent_public_url": "https://consentement.caf.example",
        "link_keys": SecretStr(LINK_KEYS),
        "link_valid_days_after_appointment": 30,
    }
    return NotificationsSettings(**(values | changes))


@dataclass(frozen=True)
class Case:
    """One email: its kind, the appointment's fields (as `make.appointment` takes them), and
    what the letter says beyond the appointment."""

    name: str
    kind: str
    appointment: dict[str, Any] = field(default_factory=dict)
    revision: int = 1
    join_url: str | None = JOIN_URL
    now: datetime = NOW
    previous_start: datetime | None = None  # rescheduled: the time the person was told
    previous_duration: int | None = None
    told_before: bool = False  # advisor_changed, rescheduled: a previous email exists
    cancel_reason: str | None = None
    reminder_offset: int | None = None
    request_reason: str | None = None  # link_resent
    requested_at: datetime | None = None
    meeting_failed: bool = False
    ended: str | None = None
    settings: dict[str, Any] = field(default_factory=dict)
    dial_in: dict[str, str] | None = None  # MeetingReady's, when Graph gave one


def _local(text: str) -> datetime:
    return datetime.fromisoformat(text)


REUNION = {"caf_code": "974", "timezone": "Indian/Reunion"}
GUADELOUPE = {"caf_code": "971", "timezone": "America/Guadeloupe"}
MARTINIQUE = {"caf_code": "972", "timezone": "America/Martinique"}
GUYANE = {"caf_code": "973", "timezone": "America/Cayenne"}
MAYOTTE = {"caf_code": "976", "timezone": "Indian/Mayotte"}

CASES = (
    Case("confirmation-paris-computer", "confirmation"),
    Case(
        "confirmation-reunion-smartphone",
        "confirmation",
        REUNION
        | {
            "start": _local("2026-12-03T10:00:00+04:00"),
            "first_name": "Hélène",
            "last_name": "Payet",
            "device": Device.SMARTPHONE,
        },
    ),
    Case(
        "confirmation-guadeloupe-tablet-link-pending",
        "confirmation",
        GUADELOUPE
        | {
            "start": _local("2026-12-04T14:30:00-04:00"),
            "device": Device.TABLET,
            "recording_authorised": False,
        },
        join_url=None,
    ),
    Case(
        "confirmation-guyane-long-subject-escaping",
        "confirmation",
        GUYANE
        | {
            "start": _local("2026-12-07T08:15:00-03:00"),
            "subject": "Révision de vos droits à l'allocation de soutien familial & à la prime "
            "d'activité <urgent>",
            "advisor_name": "Marie-Françoise Lefèvre-Dupont",
            "first_name": "Zoé <Léa>",
            "last_name": "N'Guessan & Fils",
            "duration_minutes": 45,
        },
    ),
    Case(
        "confirmation-mayotte-no-link-keys-reply-to-logo",
        "confirmation",
        MAYOTTE | {"start": _local("2026-12-03T09:00:00+03:00"), "device": Device.SMARTPHONE},
        settings={
            "link_keys": None,
            "reply_to": "Caf de Mayotte <contact@caf976.caf.fr>",
            "logo_url": "https://www.caf.fr/logo.png",
        },
    ),
    Case(
        "confirmation-utf8-address",
        "confirmation",
        {"email": "helene.payet@exémple.fr", "first_name": "Hélène", "last_name": "Payet"},
    ),
    Case("contact-corrected-paris", "contact_corrected", revision=2),
    Case(
        "confirmation-reunion-computer-dial-in-caf-contact",
        "confirmation",
        REUNION | {"start": _local("2026-12-03T10:00:00+04:00"), "device": Device.COMPUTER},
        dial_in={
            "conference_id": "418276539",
            "toll_number": "+33 1 70 00 00 00",
            "toll_free_number": "0 800 00 00 00",
        },
        settings={
            "caf_contacts": {
                "974": {
                    "contact_url": "https://www.caf.example/reunion/contact",
                    "phone": "3230",
                    "hours": "du lundi au vendredi, de 8 h 00 à 16 h 00",
                    "mediator": "Médiateur de la Caf, rue de l'Exemple, Saint-Denis",
                    "access_address": "Directeur de la Caf, rue de l'Exemple, Saint-Denis",
                }
            }
        },
    ),
    Case(
        "rescheduled-paris-across-summer-time",
        "rescheduled",
        {"revision": 2},
        revision=2,
        previous_start=datetime(2026, 10, 20, 8, 0, tzinfo=UTC),  # 10 h 00, summer time
        told_before=True,
    ),
    Case(
        "rescheduled-martinique-longer",
        "rescheduled",
        MARTINIQUE
        | {"revision": 3, "start": _local("2026-12-10T15:00:00-04:00"), "duration_minutes": 45},
        revision=3,
        previous_start=_local("2026-12-09T09:30:00-04:00"),
        previous_duration=30,
        told_before=True,
    ),
    Case(
        "advisor-changed-reunion",
        "advisor_changed",
        REUNION
        | {
            "revision": 2,
            "start": _local("2026-12-03T10:00:00+04:00"),
            "advisor_name": "Karim Benali",
        },
        revision=2,
        told_before=True,
    ),
    Case(
        "cancellation-user-paris",
        "cancellation",
        {"revision": 2},
        revision=2,
        join_url=None,
        cancel_reason="user",
    ),
    Case(
        "cancellation-administrative-guyane",
        "cancellation",
        GUYANE | {"revision": 2, "start": _local("2026-12-07T08:15:00-03:00")},
        revision=2,
        join_url=None,
        cancel_reason="administrative",
    ),
    Case(
        "cancellation-advisor-mayotte",
        "cancellation",
        MAYOTTE | {"revision": 3, "start": _local("2026-12-03T09:00:00+03:00")},
        revision=3,
        join_url=None,
        cancel_reason="advisor",
    ),
    Case(
        "reminder-60-paris",
        "reminder",
        now=PARIS_START - timedelta(minutes=60),
        reminder_offset=60,
    ),
    Case(
        "reminder-2880-reunion-smartphone",
        "reminder",
        REUNION | {"start": _local("2026-12-03T10:00:00+04:00"), "device": Device.SMARTPHONE},
        now=_local("2026-12-01T10:00:00+04:00"),
        reminder_offset=2880,
    ),
    Case(
        "reminder-1440-martinique-tablet",
        "reminder",
        MARTINIQUE | {"start": _local("2026-12-10T15:00:00-04:00"), "device": Device.TABLET},
        now=_local("2026-12-09T15:00:00-04:00"),
        reminder_offset=1440,
    ),
    Case("meeting-unavailable-paris", "meeting_unavailable", join_url=None, meeting_failed=True),
    Case(
        "link-resent-guyane",
        "link_resent",
        GUYANE | {"revision": 2, "start": _local("2026-12-07T08:15:00-03:00")},
        revision=2,
        request_reason="resend",
        told_before=True,
    ),
    Case(
        "link-resent-pending-after-failure-paris",
        "link_resent",
        join_url=None,
        request_reason="fresh_link",
        meeting_failed=True,
        told_before=True,
    ),
    Case(
        "link-resent-consents-only-over-paris",
        "link_resent",
        {"revision": 2},
        revision=2,
        join_url=None,
        now=PARIS_START + timedelta(days=45),
        request_reason="fresh_link",
        requested_at=PARIS_START + timedelta(days=45),
        ended="over",
    ),
    Case(
        "link-resent-consents-only-cancelled-reunion",
        "link_resent",
        REUNION | {"revision": 3, "start": _local("2026-12-03T10:00:00+04:00")},
        revision=3,
        join_url=None,
        now=_local("2026-12-20T18:00:00+04:00"),
        cancel_reason="user",
        request_reason="fresh_link",
        requested_at=_local("2026-12-20T18:00:00+04:00"),
        ended="cancelled",
    ),
)


def _letter(make: Any, case: Case) -> tuple[Letter, NotificationsSettings]:
    made: AppointmentRequested = make.appointment(**case.appointment)
    fixed = uuid.uuid5(uuid.NAMESPACE_URL, f"visio-rdv/golden/{case.name}")
    appointment = made.model_copy(update={"appointment_id": fixed, "correlation_id": fixed})
    previous = None
    if case.told_before:
        previous = Told(
            kind="confirmation",
            revision=1,
            status="sent",
            recipient_sha256=recipient_sha256(str(appointment.user.email)),
            device=str(appointment.user.device),
            start_at=case.previous_start,
            duration_minutes=case.previous_duration or appointment.duration_minutes,
            join_url=OLD_URL,
        )
    request = None
    if case.request_reason is not None:
        request = LinkRequest(REQUEST_ID, case.request_reason, case.requested_at or case.now)
    letter = Letter(
        kind=case.kind,
        revision=case.revision,
        appointment=appointment,
        join_url=case.join_url,
        previous=previous,
        cancellation=(
            make.cancelled(appointment, case.revision, case.cancel_reason)
            if case.cancel_reason
            else None
        ),
        reminder_offset_minutes=case.reminder_offset,
        link_sent_before=case.kind not in ("confirmation", "meeting_unavailable"),
        request=request,
        meeting_failed=case.meeting_failed,
        ended=case.ended,
        meeting=(
            make.meeting(appointment, join_url=case.join_url, **case.dial_in)
            if case.dial_in and case.join_url
            else None
        ),
    )
    return letter, golden_settings(**case.settings)


def wire_bytes(letter: Letter, settings: NotificationsSettings, now: datetime) -> bytes:
    """The bytes the mailer hands to SMTP for this letter."""
    return compose_mail(letter, settings, now=now).raw


_BOUNDARY = re.compile(rb"={15}\d{19}==(?:\.\d+)?")


def normalised(raw: bytes) -> bytes:
    """Each MIME boundary replaced by `BOUNDARY-n`, n counting them in order of appearance."""
    seen: dict[bytes, bytes] = {}

    def name(match: re.Match[bytes]) -> bytes:
        return seen.setdefault(match.group(0), b"BOUNDARY-%d" % (len(seen) + 1))

    return _BOUNDARY.sub(name, raw)


def _check(case: Case, raw: bytes) -> None:
    path = GOLDEN / f"{case.name}.eml"
    if WRITE:
        GOLDEN.mkdir(exist_ok=True)
        path.write_bytes(normalised(raw))
        pytest.fail(f"wrote {path.name}: read the diff, then run again without VISIO_GOLDEN_WRITE")
    assert path.exists(), f"no golden file for {case.name}: run once with VISIO_GOLDEN_WRITE=1"
    expected = path.read_bytes()
    actual = normalised(raw)
    if actual != expected:
        # The first differing line, to read; the whole comparison is on bytes.
        for number, (want, got) in enumerate(
            zip(expected.split(b"\r\n"), actual.split(b"\r\n"), strict=False), 1
        ):
            assert got == want, f"{case.name}, line {number}"
        assert actual == expected, f"{case.name}: lengths differ"


def test_the_cases_cover_every_kind_and_every_overseas_zone() -> None:
    kinds = {case.kind for case in CASES}
    assert kinds == {
        "confirmation",
        "contact_corrected",
        "rescheduled",
        "advisor_changed",
        "cancellation",
        "reminder",
        "meeting_unavailable",
        "link_resent",
    }
    zones = {case.appointment.get("timezone", "Europe/Paris") for case in CASES}
    assert zones == {
        "Europe/Paris",
        "Indian/Reunion",
        "Indian/Mayotte",
        "America/Guadeloupe",
        "America/Martinique",
        "America/Cayenne",
    }
    assert len({case.name for case in CASES}) == len(CASES)
    if not WRITE:  # no stale file from a case that was renamed or removed
        assert sorted(path.stem for path in GOLDEN.glob("*.eml")) == sorted(
            case.name for case in CASES
        )


@pytest.mark.parametrize("case", CASES, ids=lambda case: case.name)
def test_the_bytes_are_the_golden_ones(make: Any, case: Case) -> None:
    letter, settings = _letter(make, case)
    _check(case, wire_bytes(letter, settings, case.now))


def test_a_changed_byte_is_caught(make: Any) -> None:
    """The comparison itself, broken on purpose: one letter of the advisor's name differs."""
    [case] = [case for case in CASES if case.name == "confirmation-paris-computer"]
    changed = Case(case.name, case.kind, {"advisor_name": "Claire Martín"})
    letter, settings = _letter(make, changed)
    with pytest.raises(AssertionError, match="confirmation-paris-computer, line"):
        _check(changed, wire_bytes(letter, settings, case.now))


async def test_the_sink_stores_the_golden_bytes(make: Any, sink: Any) -> None:
    """Through the real mailer and SMTP sink: what lands in the mailbox is byte for byte the
    golden file (ASCII addresses: the sink does not speak SMTPUTF8)."""
    sent = [case for case in CASES if case.name != "confirmation-utf8-address"]
    for case in sent:
        letter, settings = _letter(make, case)
        relay = settings.model_copy(update={"smtp_port": sink.port, "smtp_timeout_s": 10})
        await SmtpMailer(relay).send(compose_mail(letter, relay, now=case.now))
    stored = {path.name: path for path in sink.handler.mail_dir.glob("*.eml")}
    assert len(stored) == len(sent)
    for case in sent:
        [path] = [path for name, path in stored.items() if name.startswith(str(_id(case)))]
        _check(case, path.read_bytes())


def _id(case: Case) -> uuid.UUID:
    return uuid.uuid5(uuid.NAMESPACE_URL, f"visio-rdv/golden/{case.name}")


def test_the_static_blocks_are_rendered_once_and_cannot_miss_a_value(make, monkeypatch) -> None:
    """The guide and the charter/CGU block come from a cache keyed by the values they read:
    the second email of the same device and CGU reuses them; a block reading a value its key
    does not hold (here `recording`, removed from the key on purpose) fails instead of showing
    another person's choice."""
    from jinja2 import UndefinedError
    from visio_notifications import compose as composing

    composing._static_block.cache_clear()
    for case in CASES[:2]:
        letter, settings = _letter(make, case)
        compose_mail(letter, settings, now=case.now)
    hits = composing._static_block.cache_info().hits
    letter, settings = _letter(make, CASES[0])
    compose_mail(letter, settings, now=CASES[0].now)
    assert composing._static_block.cache_info().hits == hits + 4  # guide, charter: txt, html

    composing._static_block.cache_clear()
    monkeypatch.setitem(composing.STATIC_BLOCKS, "charter_cgu", ("cgu_line", "cgu_url", "cgu_link"))
    with pytest.raises(UndefinedError, match="recording"):
        compose_mail(letter, settings, now=CASES[0].now)
    composing._static_block.cache_clear()


# --- The CSS inlined once per template ------------------------------------------------------

# The pages were inlined one by one with these options; the templates are now inlined as they
# load (`visio_notifications.styles`). Each email must be, as a tree, what css_inline made of
# its page rendered from the templates as written.
PAGE_INLINER = css_inline.CSSInliner(keep_at_rules=True, load_remote_stylesheets=False)


@pytest.fixture
def render_with(monkeypatch: pytest.MonkeyPatch) -> Iterator[Callable[..., str]]:
    """`render`'s HTML, the templates (the static blocks' too) read from another environment."""

    def html(environment: Environment, letter: Letter, values: dict[str, Any]) -> str:
        composing._static_block.cache_clear()
        with monkeypatch.context() as patch:
            patch.setattr(composing, "_templates", lambda: environment)
            _, page = render(letter, values)
        composing._static_block.cache_clear()
        return page

    yield html
    composing._static_block.cache_clear()


def written() -> PackageLoader:
    return PackageLoader("visio_notifications", "templates")


def _variants(make: Any) -> Iterator[tuple[str, Letter, NotificationsSettings, datetime]]:
    """Every golden case, and what they do not show: a text that could not reach the mobile
    (on each device), a logo on an update."""
    for case in CASES:
        letter, settings = _letter(make, case)
        yield case.name, letter, settings, case.now
        if case.kind in ("confirmation", "reminder", "link_resent") and settings.link_keys:
            person = letter.appointment.user.model_copy(update={"mobile": "+33612345678"})
            failed = replace(
                letter,
                number_failed=True,
                appointment=letter.appointment.model_copy(update={"user": person}),
            )
            yield f"{case.name}-number-failed", failed, settings, case.now
    [case] = [case for case in CASES if case.name == "rescheduled-martinique-longer"]
    letter, settings = _letter(make, case)
    logo = settings.model_copy(update={"logo_url": "https://www.caf.fr/logo.png?a=1&b=2"})
    yield f"{case.name}-logo", letter, logo, case.now


def test_every_email_is_css_inlines_inlining_of_its_page(make, render_with, tree) -> None:
    """Kinds, devices, Cafs and options of the golden cases and a few more: the same tree,
    texts, attributes and each style's declarations in their order, as css_inline made of the
    page rendered from the templates as written."""
    plain = composing.environment(written())
    checked = []
    for name, letter, settings, now in _variants(make):
        values = context(letter, settings, now)
        _, html = render(letter, values)
        expected = PAGE_INLINER.inline(render_with(plain, letter, values))
        assert tree(html) == tree(expected), name
        checked.append(name)
    assert len(checked) > len(CASES) + 5


class OneRuleShort(styles.InliningLoader):
    """The templates inlined with a stylesheet without `.zone` (the zone's name by the time)."""

    def css(self, environment: Environment) -> str:
        whole = super().css(environment)
        short = re.sub(r"\n\.zone \{[^}]*\}", "", whole)
        assert short != whole
        return short


def test_the_comparison_sees_a_rule_missing_from_the_stylesheet(make, render_with, tree) -> None:
    """Broken on purpose: with one rule fewer at load time, the zone's <span> alone differs."""
    [case] = [case for case in CASES if case.name == "confirmation-paris-computer"]
    letter, settings = _letter(make, case)
    values = context(letter, settings, case.now)
    plain = composing.environment(written())
    expected = tree(PAGE_INLINER.inline(render_with(plain, letter, values)))
    short = composing.environment(OneRuleShort(written(), "layout.html", {"colors": PALETTE}))
    got = tree(render_with(short, letter, values))
    assert len(got) == len(expected)
    differing = [node for node, want in zip(got, expected, strict=True) if node != want]
    assert [node[1:] for node in differing] == [("span", [("class", "zone")])]
