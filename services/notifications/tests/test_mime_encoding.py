"""The quoted-printable encoder of `mime` writes exactly what the `email` package's does, for
any body: the golden emails hold for the bodies they have, and this for all the others."""

from __future__ import annotations

import email.quoprimime
import uuid
from collections.abc import Callable
from datetime import datetime
from email.headerregistry import Address
from email.message import EmailMessage
from email.utils import format_datetime
from unittest import mock

from hypothesis import given
from hypothesis import settings as hypothesis_settings
from hypothesis import strategies as st
from visio_notifications import mime
from visio_notifications.compose import message_id
from visio_notifications.mail_policy import MAIL_POLICY
from visio_notifications.mime import (
    Mailbox,
    address_header,
    body_encode,
    encode_text,
    header,
    mailbox,
    message_id_header,
    plain_header,
    text_encode,
)

# Octets as the encoder receives them (a body's UTF-8 bytes read as latin-1), weighted towards
# what makes the folding hard: "=", spaces and tabs at the ends of lines, line ends of every
# kind, and runs long enough to be cut.
_OCTETS = st.one_of(
    st.characters(min_codepoint=0, max_codepoint=255),
    st.sampled_from(["=", " ", "\t", "\r", "\n", "\r\n", "é", "\x0b", "\x85", "a" * 70]),
)


@hypothesis_settings(max_examples=600, deadline=None)
@given(
    body=st.lists(_OCTETS, max_size=120).map("".join),
    maxlinelen=st.integers(min_value=4, max_value=100),
    eol=st.sampled_from(["\n", "\r\n"]),
)
def test_the_encoder_writes_the_email_packages_bytes(body: str, maxlinelen: int, eol: str) -> None:
    assert body_encode(body, maxlinelen, eol) == email.quoprimime.body_encode(body, maxlinelen, eol)


# Text as templates write it, weighted the same way, with what UTF-8 writes in two, three and
# four octets, and the control characters that send it the octets' way.
_CHARACTERS = st.one_of(
    st.characters(blacklist_categories=("Cs",)),
    st.sampled_from(["=", " ", "\t", "\r", "\n", "\r\n", "é", "«\u00a0", "’", "€", "😀", "a" * 70]),
    st.sampled_from(["\x0b", "\x85", "\u2028", "\x00", "\x7f", "=C3"]),
)


@hypothesis_settings(max_examples=600, deadline=None)
@given(
    text=st.lists(_CHARACTERS, max_size=120).map("".join),
    maxlinelen=st.integers(min_value=4, max_value=100),
    eol=st.sampled_from(["\n", "\r\n"]),
)
def test_text_is_quoted_as_the_email_package_quotes_its_octets(
    text: str, maxlinelen: int, eol: str
) -> None:
    octets = text.encode("utf-8").decode("latin-1")
    assert text_encode(text, maxlinelen, eol) == email.quoprimime.body_encode(
        octets, maxlinelen, eol
    )


# Bodies as templates write them: lines of those characters, some short, some long enough to
# need quoted-printable (or base64, for text that is mostly outside Latin letters), and lines
# repeated, as the guide's are in every email.
_FRENCH = st.sampled_from(
    ["Votre rendez-vous", " ", "  ", "\t", "=", "é", "à ", "«\u00a0", "’", "a" * 30, "x", "."]
)
_LINE = st.lists(st.one_of(*[_FRENCH] * 6, _CHARACTERS), max_size=30).map("".join)
_LONG = "Étape 1 : cliquez sur « Rejoindre la réunion » depuis votre ordinateur, à l’heure dite. "
_BODY_LINES = st.lists(st.one_of(_LINE, _LINE, st.just(_LONG)))


@hypothesis_settings(max_examples=400, deadline=None)
@given(lines=_BODY_LINES, repeated=st.integers(min_value=1, max_value=3))
def test_a_body_is_encoded_as_set_content_encodes_it(lines: list[str], repeated: int) -> None:
    """`encode_text` quotes each line on its own, and once per line it has met before:
    the whole body, written again and again, is what the `email` package writes of it."""
    text = "\n".join(lines * repeated) + "\n"
    message = EmailMessage(policy=MAIL_POLICY)
    message.set_content(text)
    expected = message.get_payload().replace("\n", "\r\n")
    for _ in range(2):  # the second time from the cache of lines
        cte, body = encode_text(text)
        assert cte == message["Content-Transfer-Encoding"]
        if cte in ("quoted-printable", "base64"):
            assert body == expected.encode("ascii")


def test_a_french_letter_line_is_quoted_and_folded_as_the_email_package_does() -> None:
    line = "Votre rendez-vous du jeudi 3 décembre à 10 h 00 (heure de La Réunion) = confirmé. \n"
    body = (line * 3).encode().decode("latin-1")
    ours = body_encode(body, 76, "\r\n")
    assert ours == email.quoprimime.body_encode(body, 76, "\r\n")
    assert text_encode(line * 3, 76, "\r\n") == ours
    assert "=C3=A9" in ours and "=3D" in ours and "=20\r\n" in ours


@hypothesis_settings(max_examples=300, deadline=None)
@given(
    moment=st.datetimes(
        min_value=datetime(2000, 1, 1), max_value=datetime(2100, 1, 1), timezones=st.timezones()
    ),
    appointment_id=st.uuids(),
    revision=st.integers(min_value=1, max_value=10_000),
    kind=st.sampled_from(["confirmation", "rescheduled", "reminder", "link_resent", "cancelled"]),
    offset=st.one_of(st.none(), st.integers(min_value=0, max_value=100_000)),
    request_id=st.one_of(st.none(), st.uuids()),
)
def test_date_and_message_id_are_written_as_the_policy_folds_them(
    moment: datetime,
    appointment_id: uuid.UUID,
    revision: int,
    kind: str,
    offset: int | None,
    request_id: uuid.UUID | None,
) -> None:
    date = format_datetime(moment)
    identifier = message_id(appointment_id, revision, kind, "visio-rdv.caf.fr", offset, request_id)
    for utf8 in (False, True):
        assert plain_header("Date", date) == header("Date", date, utf8=utf8)
        assert message_id_header(identifier) == header("Message-ID", identifier, utf8=utf8)


_ATEXT = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789!#$%&'*+/=?^_`{|}~-"


@hypothesis_settings(max_examples=600, deadline=None)
@given(
    local=st.one_of(
        st.lists(st.text(alphabet=_ATEXT, min_size=1, max_size=60), min_size=1, max_size=4).map(
            ".".join
        ),
        # Not a dot-atom (dots at an end or doubled, specials, a space): the policy's way.
        st.text(alphabet=_ATEXT + '.(),[]\\" ', min_size=1, max_size=150).filter(
            lambda t: t.strip(". ") != ""
        ),
    ),
    domain=st.sampled_from(["visio-rdv.caf.fr", "x", "a-b.example.org"]),
)
def test_a_message_id_of_any_length_is_written_as_the_policy_folds_it(
    local: str, domain: str
) -> None:
    identifier = f"<{local}@{domain}>"
    assert _outcome(message_id_header, identifier) == _outcome(
        header, "Message-ID", identifier, utf8=False
    )


def _outcome(write: Callable[..., bytes], *args: object, **kwargs: object) -> object:
    """What `write` writes, or the kind of error it raises (the parser fails on some values)."""
    try:
        return write(*args, **kwargs)
    except Exception as error:
        return type(error)


def test_a_message_id_takes_the_short_way_and_any_other_the_policys() -> None:
    identifier = message_id(uuid.uuid4(), 12, "advisor_changed", "visio-rdv.caf.fr", 1440)
    assert len(f"Message-ID: {identifier}") > 78
    with mock.patch.object(mime, "header", side_effect=AssertionError("parsed")):
        assert message_id_header(identifier) == f"Message-ID: {identifier}\r\n".encode()
    odd = "<a..b@visio-rdv.caf.fr>"  # not a dot-atom: the parser says what it makes of it
    assert message_id_header(odd) == header("Message-ID", odd, utf8=False)


# Names as people have them and as they are typed: accents, hyphens, apostrophes, dots, commas,
# quotes, several spaces, encoded-word lookalikes, and long ones.
_NAME_PIECES = st.one_of(
    st.text(alphabet="abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789", max_size=12),
    st.sampled_from([" ", "  ", "-", "'", ".", ",", '"', "é", "Ç", "ß", "=?utf-8?q?x?=", "(", "@"]),
    st.sampled_from(["!#$%&*+/^_`{|}~", "=", "?", "Marie-Hélène", "O'Neil", "x" * 40]),
)
_LOCAL = st.sampled_from(["jeanne", "j.dupont", "a+b", "o'neil", "x" * 60, "é", "a..b", '"q q"'])
_DOMAIN = st.sampled_from(["example.fr", "sub.example.org", "xn--caf-dma.fr", "café.fr"])


@hypothesis_settings(max_examples=600, deadline=None)
@given(
    name=st.lists(_NAME_PIECES, max_size=8).map("".join),
    local=_LOCAL,
    domain=_DOMAIN,
    utf8=st.booleans(),
)
def test_an_address_header_is_written_as_the_policy_folds_it(
    name: str, local: str, domain: str, utf8: bool
) -> None:
    try:
        address = Address(display_name=name, addr_spec=f"{local}@{domain}")
    except ValueError:  # not an address at all: nothing to write
        return
    written = header("To", address, utf8=utf8)
    assert address_header("To", address, utf8=utf8) == written
    # As the composer gives it: a Mailbox for a dot-atom address, unparsed; else the Address.
    assert address_header("To", mailbox(name, f"{local}@{domain}"), utf8=utf8) == written


# Names of words one space apart, in letters of any script: where the short way writes an
# encoded word itself. Hyphens, apostrophes and digits inside; ASCII words around and between.
_WORD = st.text(
    alphabet=st.one_of(
        st.characters(categories=("Lu", "Ll", "Lo", "Nd")),
        st.sampled_from(["-", "'", "é", "É", "ç", "ï", "ß", "a", "Z", "0"]),
    ),
    min_size=1,
    max_size=14,
)


@hypothesis_settings(max_examples=1500, deadline=None)
@given(words=st.lists(st.one_of(_WORD, st.sampled_from(["de", "N'Diaye", "Hélène"])), max_size=6))
def test_a_name_with_accents_is_encoded_as_the_policy_folds_it(words: list[str]) -> None:
    address = Address(display_name=" ".join(words), addr_spec="p.nom@example.fr")
    written = header("To", address, utf8=False)
    assert address_header("To", address, utf8=False) == written
    assert address_header("To", mailbox(" ".join(words), "p.nom@example.fr"), utf8=False) == written


def test_a_mailbox_only_for_a_dot_atom_address() -> None:
    assert mailbox("Jeanne", "j.dupont@example.fr") == Mailbox("Jeanne", "j.dupont@example.fr")
    quoted = mailbox("Jeanne", '"j dupont"@example.fr')
    assert isinstance(quoted, Address)
    assert quoted.addr_spec == '"j dupont"@example.fr'
    # A long name with a Mailbox still goes through the policy (folded), from an Address.
    long = mailbox("Jeanne " * 20, "j@example.fr")
    assert address_header("To", long, utf8=False) == header(
        "To", Address(display_name="Jeanne " * 20, addr_spec="j@example.fr"), utf8=False
    )


def test_a_plain_name_takes_the_short_way_and_the_rest_the_policys() -> None:
    plain = Address(display_name="Jeanne Dupont", addr_spec="jeanne.dupont@example.fr")
    assert (
        address_header("To", plain, utf8=False)
        == b"To: Jeanne Dupont <jeanne.dupont@example.fr>\r\n"
    )
    accented = Address(display_name="Hélène Dupont", addr_spec="helene@example.fr")
    assert address_header("To", accented, utf8=False) == header("To", accented, utf8=False)
    assert (
        address_header("To", accented, utf8=False)
        == b"To: =?utf-8?q?H=C3=A9l=C3=A8ne?= Dupont <helene@example.fr>\r\n"
    )
    # The short way, not the parser's: it costs a fiftieth of it.
    with mock.patch.object(mime, "header", side_effect=AssertionError("parsed")):
        address_header("To", accented, utf8=False)
        address_header("To", plain, utf8=False)
