"""Every email, built the same way: Jinja2 templates (autoescaped HTML, hand-written text),
CSS inlined for mail clients (into the templates, as they load: `styles`), headers through
`email.message.EmailMessage` only, and, for the emails that change the person's calendar, the
.ics both as a `text/calendar` alternative (what Outlook and Gmail act on) and as an attachment
(what a person can open). Every email ends with « Gérer mon rendez-vous » (`self_service`) when
link keys are set; the .ics never carries it. A fresh link asked for after the appointment is the
exception: a short email with « Mes consentements » alone.

    multipart/mixed
      multipart/alternative
        text/plain
        text/html
        text/calendar; method=REQUEST|CANCEL      (confirmation, updates, cancellation)
      text/calendar attachment rendez-vous-caf.ics (the same bytes, the same method)
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from email.headerregistry import Address
from email.message import EmailMessage
from email.utils import format_datetime, parseaddr
from functools import cache, lru_cache
from typing import Any

from jinja2 import BaseLoader, Environment, PackageLoader, StrictUndefined, select_autoescape
from markupsafe import Markup
from visio_shared import (
    AppointmentCancelled,
    AppointmentEvent,
    AppointmentRequested,
    MeetingReady,
)

from visio_notifications import dispatches, letter_parts, mime, spliced, styles, wording
from visio_notifications.decide import LinkRequest, Told
from visio_notifications.invitation import Method, build_invitation
from visio_notifications.letter_parts import clean
from visio_notifications.mime import Mail
from visio_notifications.page_loader import PageLoader
from visio_notifications.settings import NotificationsSettings

# Colours of the HTML emails; every pair a text is shown on passes WCAG AA (tested).
PALETTE = {
    "brand": "#0a4f96",  # Caf blue: headings, button, links
    "brand_light": "#e8f0fa",  # the date card
    "text": "#1e1e1e",
    "muted": "#4a4a4a",
    "page": "#eef1f5",
    "card": "#ffffff",
    "footer": "#f3f4f6",
    "border": "#d5deea",
    "alert": "#9b1c1c",  # « annulé »
    "alert_light": "#fdecec",
}

# The emails that change the person's calendar. Not `link_resent`: it repeats what the calendar
# already holds, and a person who asks for the link again has the event already.
CALENDAR_METHOD: dict[str, Method] = {
    "confirmation": "REQUEST",
    "contact_corrected": "REQUEST",
    "rescheduled": "REQUEST",
    "advisor_changed": "REQUEST",
    "cancellation": "CANCEL",
}


def message_id(
    appointment_id: object,
    revision: int,
    kind: str,
    domain: str,
    offset: int | None = None,
    request_id: uuid.UUID | None = None,
) -> str:
    """Deterministic per dispatch key, so a resend after an ambiguous SMTP failure carries the
    same id and the mailbox can tell it is the same message."""
    suffix = f"-{offset}" if offset is not None else ""
    if request_id is not None:
        suffix += f"-{request_id.hex}"
    return f"<{appointment_id}.r{revision}.{kind}{suffix}@{domain}>"


@dataclass(frozen=True)
class Letter:
    """One email to write: its kind, its key, and what it is about."""

    kind: str
    revision: int
    appointment: AppointmentRequested  # as it stands
    join_url: str | None = None  # checked against the allow-list before
    previous: Told | None = None  # what the person was told before (updates)
    cancellation: AppointmentCancelled | None = None
    reminder_offset_minutes: int | None = None
    link_sent_before: bool = False
    request: LinkRequest | None = None  # link_resent: the request it answers
    meeting_failed: bool = False  # meetings could not create the current meeting
    # link_resent after the appointment ('over' or 'cancelled'): « Mes consentements » alone
    ended: str | None = None
    number_failed: bool = False  # a text to the person's mobile failed for good
    meeting: MeetingReady | None = None  # the current meeting (its dial-in, when Graph gave one)


def request_message_id(event: AppointmentEvent, kind: str, domain: str) -> str:
    """The Message-ID of the one email answering `event` (a request answered once)."""
    return message_id(event.appointment_id, event.revision, kind, domain, request_id=event.event_id)


# --- Content --------------------------------------------------------------------------------

_NBSP = "\u00a0"


_KEEP_TOGETHER = re.compile(
    r"(\d{1,2}) h (\d{2})"  # 10 h 00
    r"|(\d{1,2}(?:er)?) (janvier|février|mars|avril|mai|juin|juillet|août|septembre|octobre"
    r"|novembre|décembre)"  # 3 décembre
)


def _glue(match: re.Match[str]) -> str:
    return match.group(0).replace(" ", _NBSP)


@lru_cache(maxsize=4096)
def french_spacing(text: str) -> str:
    """Non-breaking spaces inside « », before : ! ? and within « 10 h 00 » and « 3 décembre »,
    so a narrow screen never strands a sign or splits a time. Most texts it is given are the
    same in thousands of emails (the wording, a Caf's contact, a date): each is spaced once."""
    for before, after in (("« ", "«" + _NBSP), (" »", _NBSP + "»")):
        text = text.replace(before, after)
    for sign in ":!?":
        text = text.replace(f" {sign}", _NBSP + sign)
    return _KEEP_TOGETHER.sub(_glue, text)


@cache
def _templates() -> Environment:
    # The HTML templates with the CSS inlined into their tags as they are read: the palette is
    # constant, so the styles are too (inlining each page took half a millisecond an email).
    written = PackageLoader("visio_notifications", "templates")
    inlined = styles.InliningLoader(written, "layout.html", {"colors": PALETTE})
    filters: dict[str, Callable[[str], str]] = {
        "french_spacing": french_spacing,
        "upper": str.upper,
    }
    return environment(PageLoader(inlined, wording, filters))


def load_templates() -> int:
    """Every template read (and its CSS inlined) now, at the service's start: one the inliner
    cannot handle fails the start, not the first email of its kind. Returns how many."""
    env = _templates()
    names = env.list_templates(extensions=["html", "txt"])
    for name in names:
        env.get_template(name)
    return len(names)


def environment(loader: BaseLoader) -> Environment:
    """The emails' Jinja settings on `loader` (the tests render the plain templates too, to
    compare with css_inline's inlining of each page)."""
    env = Environment(
        loader=loader,
        autoescape=select_autoescape(["html"]),
        undefined=StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
        keep_trailing_newline=True,
        # Package data: they change with a deploy, not while the process runs (and checking
        # each file's date cost a dozen stat calls an email).
        auto_reload=False,
    )
    env.filters["french_spacing"] = french_spacing
    # Jinja's own globals (range, dict, lipsum, …), which no template uses: each render copied
    # them out of a ChainMap in Python, a tenth of rendering a page.
    env.globals.clear()
    return env


# The blocks the same in thousands of emails, and the only values each may read (beside the
# wording and the palette): rendered once per template version (the process's: templates are
# read once) and these values, then reused. A block that read anything else would fail on
# StrictUndefined, so a value cannot be forgotten from the key.
STATIC_BLOCKS: dict[str, tuple[str, ...]] = {
    "guide": ("device_note", "guide_paths", "browser_note"),  # by device, stores, link's place
    # by CGU version (its address), recording choice
    "charter_cgu": ("cgu_line", "cgu_url", "cgu_link", "recording"),
}


def _static_blocks(values: dict[str, Any], extension: str) -> dict[str, str]:
    return {
        name: _static_block(name, extension, tuple((key, _frozen(values[key])) for key in keys))
        for name, keys in STATIC_BLOCKS.items()
    }


def _frozen(value: Any) -> Any:
    return tuple(value) if isinstance(value, list) else value


@lru_cache(maxsize=512)
def _static_block(name: str, extension: str, inputs: tuple[tuple[str, Any], ...]) -> str:
    template = _templates().get_template(f"_{name}.{extension}")
    text = template.render({"w": wording, "colors": PALETTE, **dict(inputs)})
    # `{% include %}` swallowed the newline after its tag; `{{ block }}` keeps it.
    assert text.endswith("\n"), f"_{name}.{extension} must end with a newline"
    text = text[:-1]
    # Already escaped: rendered by the autoescaping environment, like any include.
    return Markup(text) if extension == "html" else text  # noqa: S704


def context(letter: Letter, settings: NotificationsSettings, now: datetime) -> dict[str, Any]:
    """What the templates show, already in words (`letter_parts`), with the wording and the
    palette."""
    return {"w": wording, "colors": PALETTE} | letter_parts.values(letter, settings, now)


def render(letter: Letter, values: dict[str, Any]) -> tuple[str, str]:
    """(text, html) of one email, the HTML's CSS inlined in its templates (`styles`)."""
    text, html = render_pieces(letter, values)
    return "".join(text), "".join(html)


Pieces = tuple[str, ...]


def render_pieces(letter: Letter, values: dict[str, Any]) -> tuple[Pieces, Pieces]:
    """`render`'s (text, html), each cut at its static blocks: the page's own text, a block,
    the page's text, … (the odd pieces are the blocks, as `_static_block` keeps them), so each
    block is encoded once for all the emails that show it (`spliced`)."""
    name = "confirmation" if letter.kind == "contact_corrected" else letter.kind
    if letter.ended is not None:
        name = "consents_only"
    return _pieces(f"{name}.txt", values), _pieces(f"{name}.html", values)


# Where each block goes, rendered in its place and cut there: no text of a page holds it.
_MARK = f"\x00{uuid.uuid4().hex}\x00"
_MARKED = {
    "txt": {name: f"{_MARK}{name}{_MARK}" for name in STATIC_BLOCKS},
    "html": {name: Markup(f"{_MARK}{name}{_MARK}") for name in STATIC_BLOCKS},  # noqa: S704
}


def _pieces(template_name: str, values: dict[str, Any]) -> Pieces:
    extension = template_name.rsplit(".", 1)[1]
    template = _templates().get_template(template_name)
    parts = template.render(values, blocks=_MARKED[extension]).split(_MARK)
    names = parts[1::2]
    if len(parts) % 2 == 0 or any(name not in STATIC_BLOCKS for name in names):
        return (template.render(values, blocks=_static_blocks(values, extension)),)
    blocks = _static_blocks(values, extension) if names else {}
    return tuple(blocks[part] if index % 2 else part for index, part in enumerate(parts))


# --- The message ----------------------------------------------------------------------------


def sender_address(settings: NotificationsSettings) -> Address:
    return _address(settings.mail_from)


@lru_cache(maxsize=16)
def _address(mail_from: str) -> Address:
    """Parsed once per setting (the `Address` parses its parts again: a tenth of a ms)."""
    display_name, addr_spec = parseaddr(mail_from)
    return Address(display_name=display_name, addr_spec=addr_spec)


def recipient_address(appointment: AppointmentRequested) -> mime.Mailbox | Address:
    user = appointment.user
    return mime.mailbox(clean(f"{user.first_name} {user.last_name}"), str(user.email))


def compose(letter: Letter, settings: NotificationsSettings, *, now: datetime) -> EmailMessage:
    """The email read back as an `EmailMessage`: for previews and tests, which look into it.
    What is sent is `compose_mail`'s bytes, the very ones this message is parsed from."""
    return compose_mail(letter, settings, now=now).parsed()


def compose_mail(letter: Letter, settings: NotificationsSettings, *, now: datetime) -> Mail:
    """The email as the relay receives it (see `mime` for how the bytes are written)."""
    values = context(letter, settings, now)
    text, html = render_pieces(letter, values)
    sender = sender_address(settings)
    recipient = recipient_address(letter.appointment)
    utf8 = not (sender.addr_spec.isascii() and recipient.addr_spec.isascii())
    identifier = message_id(
        letter.appointment.appointment_id,
        letter.revision,
        letter.kind,
        settings.message_id_domain,
        letter.reminder_offset_minutes,
        letter.request.event_id if letter.request else None,
    )
    head = [
        mime.constant_header("From", settings.mail_from, utf8),
        mime.address_header("To", recipient, utf8=utf8),
    ]
    if settings.reply_to:
        head.append(mime.constant_header("Reply-To", settings.reply_to, utf8))
    head += [
        mime.subject_header(values["subject"], utf8),
        mime.plain_header("Date", format_datetime(now)),
        mime.message_id_header(identifier),
        _FIXED_HEADERS,
    ]
    alternatives = [
        mime.encoded_part(*spliced.encode_pieces(text), "plain", first=True),
        mime.encoded_part(*spliced.encode_pieces(html), "html", first=False),
    ]
    method = CALENDAR_METHOD.get(letter.kind)
    if method is None:
        mark = mime.boundary(identifier, 1, b"".join(alternatives))
        content_type = mime.multipart_type("alternative", mark)
        body = mime.multipart_body(mark, alternatives)
    else:
        # The join link only: the self-service links are personal, a calendar is shared.
        ics = build_invitation(
            letter.appointment,
            letter.join_url,
            method=method,
            start=values["start"],
            organizer=sender,
            attendee=recipient,
            domain=settings.message_id_domain,
            now=now,
        )
        ics_base64 = mime.encode_base64(ics)
        alternatives.append(mime.calendar_part(ics_base64, method))
        inner_mark = mime.boundary(identifier, 2, b"".join(alternatives))
        inner = (
            mime.multipart_type("alternative", inner_mark)
            + mime.CRLF
            + mime.multipart_body(inner_mark, alternatives)
        )
        parts = [inner, mime.calendar_part(ics_base64, method, filename=wording.ICS_FILENAME)]
        mark = mime.boundary(identifier, 1, b"".join(parts))
        content_type = mime.multipart_type("mixed", mark)
        body = mime.multipart_body(mark, parts)
    raw = b"".join(head) + content_type + _LANGUAGE + mime.CRLF + body
    # The envelope sender: where a later bounce goes back to, naming this dispatch (VERP).
    envelope = dispatches.return_path(settings.bounce_domain, identifier) or sender.addr_spec
    return Mail(identifier, envelope, (recipient.addr_spec,), raw, utf8)


# After the addresses, subject, date and id; the Content-Type comes between the two groups.
_FIXED_HEADERS = (
    b"Auto-Submitted: auto-generated\r\nX-Auto-Response-Suppress: All\r\nMIME-Version: 1.0\r\n"
)
_LANGUAGE = b"Content-Language: fr\r\n"
