"""A part's body from pieces (`spliced.encode_pieces`) is the body of the whole page
(`mime.encode_text`), byte for byte and with the same encoding, for pages of every shape: blocks
on lines of their own or not, long lines and short, accents, dots and equals signs, blank
lines, base64's choice; and the emails' pages are cut at their blocks."""

from __future__ import annotations

import uuid

from hypothesis import given
from hypothesis import settings as hypothesis_settings
from hypothesis import strategies as st
from visio_notifications import compose, mime, spliced

# Lines of a page: short, long (past 78 octets: quoted-printable), accented, CR and LF alone,
# trailing spaces, "=" and ".", and lines of characters base64 writes shorter.
_LINE = st.one_of(
    st.text(st.characters(codec="utf-8", exclude_characters="\r\n"), max_size=30),
    st.text("abcdéà « » =.\t ", min_size=70, max_size=200),
    st.sampled_from(["", " ", ".", "=", "\u00a0", "\x00\x01\x7f", "€€€€€€€€€€€€€€€€€€€€€€€€€€€"]),
    st.text(st.characters(min_codepoint=0x4E00, max_codepoint=0x4FFF), min_size=30, max_size=60),
)
_ENDS = st.sampled_from(["\n", "\n", "\n", "\r\n", "\r", ""])
_TEXT = st.lists(st.tuples(_LINE, _ENDS), max_size=14).map(
    lambda lines: "".join(line + end for line, end in lines)
)


@hypothesis_settings(max_examples=1500, deadline=None)
@given(st.lists(_TEXT, min_size=1, max_size=7))
def test_any_page_is_encoded_as_it_would_be_whole(texts: list[str]) -> None:
    # Odd pieces play the blocks; most pages put them on lines of their own, some do not.
    pieces = list(texts) if len(texts) % 2 else [*texts, "\n"]
    assert spliced.encode_pieces(pieces) == mime.encode_text("".join(pieces))


@hypothesis_settings(max_examples=500, deadline=None)
@given(st.lists(_TEXT, min_size=3, max_size=7).filter(lambda texts: len(texts) % 2 == 1))
def test_blocks_on_lines_of_their_own_are_spliced_and_the_same(texts: list[str]) -> None:
    pieces = [
        (text if index % 2 else ("\n" if index else "") + text.rstrip("\r\n") + "\n")
        for index, text in enumerate(texts)
    ]
    assert spliced._groups(pieces) is not None
    assert spliced.encode_pieces(pieces) == mime.encode_text("".join(pieces))


def test_each_email_is_cut_at_its_blocks_and_encoded_as_before(make, settings) -> None:  # type: ignore[no-untyped-def]
    """Every kind of email, both parts: the pieces make the page `render` gives, a page with
    blocks keeps them on lines of their own (so they are spliced, not re-encoded whole), and
    the body is the whole page's."""
    appointment = make.appointment()
    spliced_pages = 0
    for kind in ("confirmation", "reminder", "rescheduled", "advisor_changed", "cancellation"):
        letter = compose.Letter(
            kind=kind,
            revision=1,
            appointment=appointment,
            join_url="https://teams.microsoft.com/l/meetup-join/19%3ameeting_x%40thread.v2/0",
            reminder_offset_minutes=60 if kind == "reminder" else None,
            previous=None,
        )
        values = compose.context(letter, settings, appointment.start)
        for page, whole in zip(
            compose.render_pieces(letter, values), compose.render(letter, values), strict=True
        ):
            assert "".join(page) == whole
            if len(page) > 1:
                assert spliced._groups(page) is not None, (kind, [p[:40] for p in page])
                spliced_pages += 1
            assert spliced.encode_pieces(page) == mime.encode_text(whole)
    assert spliced_pages >= 8  # the guide in four kinds, the charter in the confirmation


def test_a_value_holding_the_mark_renders_the_page_whole(make, settings) -> None:  # type: ignore[no-untyped-def]
    """A page whose text holds the cut mark (it cannot, the mark is the process's own; but
    if it did) is rendered whole rather than cut in the wrong place."""
    appointment = make.appointment()
    letter = compose.Letter(kind="confirmation", revision=1, appointment=appointment)
    values = compose.context(letter, settings, appointment.start)
    values["subject"] = compose._MARK + str(uuid.uuid4()) + compose._MARK  # the HTML's title
    text, html = compose.render_pieces(letter, values)
    assert len(html) == 1 and values["subject"] in html[0]
    assert len(text) == 5  # the text does not show the subject: cut at its two blocks


def test_the_first_ten_lines_are_weighed_across_the_blocks() -> None:
    """Nine short ASCII lines favour quoted-printable, a tenth of ideographs tips the weighing
    to base64 (`email`'s rule, on the first ten lines): a block among the ten counts with them."""
    block = "\n".join(["a" * 50] * 5)
    pieces = ["\n".join(["a" * 50] * 4) + "\n", block, "\n" + "\u4e00" * 100 + "\nfin\n"]
    whole = "".join(pieces)
    assert mime.encode_text(whole)[0] == "base64"
    assert mime.encode_text(whole.replace("\u4e00" * 100, "b" * 100))[0] == "quoted-printable"
    assert spliced._groups(pieces) is not None
    assert spliced.encode_pieces(pieces) == mime.encode_text(whole)
    nine = ["\n".join(["a" * 50] * 4) + "\n", block, "\nb\n" + "\u4e00" * 100 + "\n"]
    assert spliced.encode_pieces(nine) == mime.encode_text("".join(nine))
