"""The bytes of an email, written directly, as the relay receives them (CRLF line ends).

Building an `EmailMessage` and flattening it cost about three quarters of composing an email:
every `set_content` and `add_alternative` re-parses the Content-Type it has just written, and the
generator parses and refolds every header again on the way out. Here each header is folded once,
by the very functions the generator calls (`MAIL_POLICY.fold_binary` on the header object
`header_store_parse` makes), the ones that are the same in every email (From, Reply-To) once per
setting, and the bodies are encoded with the `email` package's own rules (its choice between
7bit, 8bit, quoted-printable and base64, its quoted-printable encoder, base64 in 76-character
lines), so the bytes are those the package would write: `tests/test_golden_emails.py` compares
them with the bytes written before this module existed.

The MIME boundaries are derived from the Message-ID instead of drawn at random: the same email
is the same bytes, which a resend after an ambiguous failure, the golden files and a reader of
two copies in a mailbox all like better.
"""

from __future__ import annotations

import base64
import binascii
import codecs
import hashlib
import re
from collections.abc import Sequence
from dataclasses import dataclass
from email import message_from_bytes
from email.headerregistry import Address
from email.message import EmailMessage
from email.policy import EmailPolicy
from email.quoprimime import quote
from functools import cache, lru_cache
from typing import cast

from visio_notifications.mail_policy import MAIL_POLICY

CRLF = b"\r\n"


@dataclass(frozen=True)
class Mail:
    """One email, ready for the relay: its envelope and its exact bytes."""

    message_id: str
    sender: str  # addr-spec
    recipients: tuple[str, ...]
    raw: bytes
    utf8: bool  # an address is not ASCII: sent with SMTPUTF8, headers in UTF-8

    def parsed(self) -> EmailMessage:
        """Read back with the standard library (previews and tests; never on the way out)."""
        return cast(EmailMessage, message_from_bytes(self.raw, policy=MAIL_POLICY))


@cache
def wire_policy(utf8: bool) -> EmailPolicy:
    """How headers are folded on the wire: CRLF, and raw UTF-8 only with SMTPUTF8."""
    return MAIL_POLICY.clone(linesep="\r\n", utf8=utf8)


def header(name: str, value: object, *, utf8: bool) -> bytes:
    """One header line (folded), exactly as `BytesGenerator` writes it."""
    stored_name, stored = MAIL_POLICY.header_store_parse(name, value)
    return wire_policy(utf8).fold_binary(stored_name, stored)


def plain_header(name: str, value: str) -> bytes:
    """A header whose value the policy would write back as it is — ASCII, one short line, no
    spaces to fold at (Date) — written without parsing it into a header object and folding
    it again (a third of the cost of the headers); any other value goes through `header`. A
    test compares the two on the values the composer gives."""
    line = f"{name}: {value}\r\n"
    if len(line) <= 80 and value.isascii() and value == value.strip() and "\r" not in value:
        if "\n" not in value:
            return line.encode("ascii")
    return header(name, value, utf8=False)


def message_id_header(identifier: str) -> bytes:
    """The Message-ID, `<dot-atom@dot-atom>` as `compose.message_id` makes it: with no space
    to fold at, the policy writes it as it is however long (most are over a line's 78
    characters, which sent them all through its parser); any other through `header`. A test
    compares the two."""
    if len(identifier) < 900 and _MESSAGE_ID.fullmatch(identifier):
        return b"Message-ID: " + identifier.encode("ascii") + CRLF
    return header("Message-ID", identifier, utf8=False)


# Words of atext (RFC 5322) but "=" and "?", which could read as an RFC 2047 encoded word, one
# space apart; a dot-atom address with a plain domain. Such a name and address the policy writes
# as they are: `Name <local@domain>`.
_PLAIN_NAME = re.compile(r"[A-Za-z0-9!#$%&'*+/^_`{|}~-]+(?: [A-Za-z0-9!#$%&'*+/^_`{|}~-]+)*")
_PLAIN_ADDRESS = re.compile(
    r"[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+(?:\.[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+)*"
    r"@[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)*"
)
_MESSAGE_ID = re.compile(
    r"<[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+(?:\.[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+)*"
    r"@[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)*>"
)


@dataclass(frozen=True)
class Mailbox:
    """A display name and a dot-atom address (`local@domain`), as `address_header` and the
    invitation read them: what an `email.headerregistry.Address` holds, without the header
    parser it runs on the address (a twentieth of composing an email). `mailbox` makes one."""

    display_name: str
    addr_spec: str


def mailbox(display_name: str, addr_spec: str) -> Mailbox | Address:
    """A `Mailbox`, or, for an address that is not a plain dot-atom one (a quoted local part,
    an address literal), the `Address` that parses and writes it as `email` does."""
    if _PLAIN_ADDRESS.fullmatch(addr_spec):
        return Mailbox(display_name, addr_spec)
    return Address(display_name=display_name, addr_spec=addr_spec)


def address_header(name: str, address: Mailbox | Address, *, utf8: bool) -> bytes:
    """A header of one address (To) on one short line, with a dot-atom address, written
    without the header parser (most of the cost of the headers): a plain ASCII name as it is,
    and, without SMTPUTF8, a name of words with accents in one RFC 2047 encoded word, as the
    policy writes it (`_accented_name`). Any other (a dot or a comma in the name, a long line)
    goes through `header`. A test compares the two on names and addresses of every kind."""
    display, spec = address.display_name, address.addr_spec
    if _PLAIN_ADDRESS.fullmatch(spec):
        if _PLAIN_NAME.fullmatch(display):
            line = f"{name}: {display} <{spec}>\r\n"
            if len(line) <= 80:
                return line.encode("ascii")
        elif not utf8 and _ACCENTED_NAME.fullmatch(display):
            line = f"{name}: {_accented_name(display)} <{spec}>\r\n"
            if len(line) <= 80:
                return line.encode("ascii")
    if isinstance(address, Mailbox):
        address = Address(display_name=display, addr_spec=spec)
    return header(name, address, utf8=utf8)


# Words of letters (of any script), digits, hyphens and apostrophes, one space apart: how most
# names are written, accents included ("Hélène", "Jean-François", "N'Diaye").
_ACCENTED_NAME = re.compile(r"(?:[^\W_]|['-])+(?: (?:[^\W_]|['-])+)*")
# The octets an encoded word in Q writes as they are (a space is "_"): the email package's set.
_Q_QUOTED = re.compile(rb"[^ A-Za-z0-9!*+\-/]")


def _accented_name(display: str) -> str:
    """A name of `_ACCENTED_NAME`'s shape as the policy folds it on one line: the words from
    the first to the last with a letter outside ASCII in one encoded word (UTF-8, in Q unless
    base64 is five or more characters shorter), the ASCII words around them as they are."""
    words = display.split(" ")
    outside = [index for index, word in enumerate(words) if not word.isascii()]
    first, last = outside[0], outside[-1]
    octets = " ".join(words[first : last + 1]).encode("utf-8")
    quoted = _Q_QUOTED.sub(lambda octet: b"=%02X" % octet.group()[0], octets)
    base64_length = (len(octets) + 2) // 3 * 4
    if len(quoted) - base64_length < 5:
        encoded = "=?utf-8?q?" + quoted.decode("ascii").replace(" ", "_") + "?="
    else:
        encoded = "=?utf-8?b?" + base64.b64encode(octets).decode("ascii") + "?="
    return " ".join([*words[:first], encoded, *words[last + 1 :]])


@cache
def constant_header(name: str, value: str, utf8: bool) -> bytes:
    """A header the same in every email (From, Reply-To): folded once per setting."""
    return header(name, value, utf8=utf8)


@lru_cache(maxsize=4096)
def subject_header(subject: str, utf8: bool) -> bytes:
    """The Subject, encoded in RFC 2047 words (`email.header.Header`, which weighs each
    character: about as costly as the rest of the headers together). Thousands of emails share
    a few hundred subjects (a kind, a day, a time), so each is encoded once."""
    return header("Subject", subject, utf8=utf8)


# --- Bodies ---------------------------------------------------------------------------------


def encode_text(text: str) -> tuple[str, bytes]:
    """(Content-Transfer-Encoding, body) of a UTF-8 text part, by the rules of
    `email.contentmanager` (`set_content` of a str): 7bit or 8bit when every line fits in the
    policy's 78 characters, else quoted-printable unless base64 is shorter on the first ten
    lines."""
    lines = text.encode("utf-8").splitlines()
    limit = MAIL_POLICY.max_line_length
    assert limit is not None
    if max(map(len, lines), default=0) <= limit:
        body = CRLF.join(lines) + CRLF
        return ("7bit" if body.isascii() else "8bit"), body
    quoted = [quoted_line(line) for line in lines[:10]]
    # The first ten lines as `email` weighs them: "\n" at each line's end and soft break.
    sniff_qp = (b"\n".join(quoted) + b"\n").replace(CRLF, b"\n")
    if len(sniff_qp) > len(binascii.b2a_base64(b"\n".join(lines[:10]) + b"\n")):
        return "base64", encode_base64(b"\n".join(lines) + b"\n")
    quoted += map(quoted_line, lines[10:])
    return "quoted-printable", CRLF.join(quoted) + CRLF


@lru_cache(maxsize=4096)
def quoted_line(line: bytes) -> bytes:
    """One line of a body, quoted and folded (CRLF soft breaks). Quoted-printable works line by
    line, and most lines of an email (the guide, the CGU block, the styles) are the same in
    thousands of emails, so each is quoted once: a part then costs a quarter to a sixth of
    what it did. A line of one person's (a name, a date) is pushed out by those of the emails
    that follow; the cache is in memory only. A property test compares the result with the
    body quoted whole by the `email` package."""
    limit = MAIL_POLICY.max_line_length
    assert limit is not None
    return text_encode(line.decode("utf-8"), limit, "\r\n").encode("ascii")


# What quoted-printable quotes in a body besides "=": octets outside printable ASCII, but tab and
# line ends. Runs of them (an accented letter is two octets) are quoted at once.
_QP_UNSAFE_RUN = re.compile(r"[^\t\n\r -~]+")
# The ASCII ones among them: control characters but tab and line ends.
_QP_UNSAFE_ASCII = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]")


def _quoted_run(found: re.Match[str]) -> str:
    return "=" + found.group().encode("latin-1").hex("=").upper()


def _quote_utf8(error: UnicodeError) -> tuple[str, int]:
    """The ASCII codec's error handler `visio-qp`: a run of characters outside ASCII, written
    as the quoted-printable escapes of its UTF-8 octets."""
    assert isinstance(error, UnicodeEncodeError)
    run = error.object[error.start : error.end]
    return "=" + run.encode("utf-8").hex("=").upper(), error.end


codecs.register_error("visio-qp", _quote_utf8)


def body_encode(body: str, maxlinelen: int = 76, eol: str = "\n") -> str:
    """`email.quoprimime.body_encode`, the same output (a property test compares them), for a
    body of octets as a latin-1 string: the stdlib quotes every character through a 256-entry
    `str.translate` table, looked up in Python one character at a time — most of the cost of
    encoding an email's two parts. Here "=" is replaced in one pass and a regular expression
    quotes the runs of other octets (accented letters); the line folding is the stdlib's."""
    if maxlinelen < 4:
        raise ValueError("maxlinelen must be at least 4")
    if not body:
        return body
    return _fold(_QP_UNSAFE_RUN.sub(_quoted_run, body.replace("=", "=3D")), maxlinelen, eol)


def text_encode(text: str, maxlinelen: int = 76, eol: str = "\n") -> str:
    """`body_encode` of the text's UTF-8 octets (the same output: a property test compares
    them), quoted from the text itself: the ASCII codec runs through what needs no quoting in
    C and hands each run of other characters to `_quote_utf8`, twice as fast as the regular
    expression over the octets. A text holding a control character goes the octets' way."""
    if maxlinelen < 4:
        raise ValueError("maxlinelen must be at least 4")
    if not text:
        return text
    quoted = text.replace("=", "=3D")
    if _QP_UNSAFE_ASCII.search(quoted) is not None:
        return body_encode(text.encode("utf-8").decode("latin-1"), maxlinelen, eol)
    return _fold(quoted.encode("ascii", "visio-qp").decode("ascii"), maxlinelen, eol)


def _fold(body: str, maxlinelen: int, eol: str) -> str:
    """The stdlib's folding of a quoted body (printable ASCII, tabs and line ends): lines of at
    most `maxlinelen` with soft breaks, whitespace at a line's end quoted."""
    soft_break = "=" + eol
    maxlinelen1 = maxlinelen - 1
    encoded_body: list[str] = []
    append = encoded_body.append
    for line in body.splitlines():
        # Pieces no longer than maxlinelen - 1, never cutting an escape sequence.
        start = 0
        laststart = len(line) - 1 - maxlinelen
        while start <= laststart:
            stop = start + maxlinelen1
            if line[stop - 2] == "=":
                append(line[start : stop - 1])
                start = stop - 2
            elif line[stop - 1] == "=":
                append(line[start:stop])
                start = stop - 1
            else:
                append(line[start:stop] + "=")
                start = stop
        # The rest of the line; whitespace at its end is quoted (or kept before a soft break).
        if line and line[-1] in " \t":
            room = start - laststart
            if room >= 3:
                end = quote(line[-1])
            elif room == 2:
                end = line[-1] + soft_break
            else:
                end = soft_break + quote(line[-1])
            append(line[start:-1] + end)
        else:
            append(line[start:])
    if body[-1] in "\r\n":
        append("")
    return eol.join(encoded_body)


def encode_base64(data: bytes) -> bytes:
    """Base64 in lines of 76 characters (57 bytes, as `email` cuts them for 78), CRLF."""
    return base64.encodebytes(data).replace(b"\n", CRLF)


def text_part(text: str, subtype: str, *, first: bool) -> bytes:
    """A text/plain or text/html part. The first part of a message keeps the message's own
    MIME-Version; each added alternative carries one (as `add_alternative` writes them)."""
    return encoded_part(*encode_text(text), subtype, first=first)


def encoded_part(cte: str, body: bytes, subtype: str, *, first: bool) -> bytes:
    """`text_part` of a body already encoded (`encode_text`, `spliced.encode_pieces`)."""
    head = (
        f'Content-Type: text/{subtype}; charset="utf-8"\r\n'
        f"Content-Transfer-Encoding: {cte}\r\n" + ("" if first else "MIME-Version: 1.0\r\n")
    )
    return head.encode("ascii") + CRLF + body


def calendar_part(ics_base64: bytes, method: str, filename: str | None = None) -> bytes:
    """The .ics (`encode_base64` of it: the same bytes in both places, encoded once) as a
    text/calendar alternative or, with a filename, as an attachment."""
    disposition = f'Content-Disposition: attachment; filename="{filename}"\r\n' if filename else ""
    head = (
        "Content-Transfer-Encoding: base64\r\n"
        + disposition
        + f'Content-Type: text/calendar; method="{method}"; charset="utf-8"\r\n'
        "MIME-Version: 1.0\r\n"
    )
    return head.encode("ascii") + CRLF + ics_base64


# --- Multipart ------------------------------------------------------------------------------


def boundary(message_id: str, level: int, inside: bytes) -> str:
    """`===============<19 digits>==`, the shape `email` draws, with digits from the
    Message-ID; a suffix, as `email` adds one, if that line already stands in the parts."""
    digest = hashlib.sha256(f"{message_id}/{level}".encode()).digest()
    value = "=" * 15 + f"{int.from_bytes(digest[:8], 'big') % 10**19:019d}" + "=="
    candidate, counter = value, 0
    while b"--" + candidate.encode("ascii") in inside:
        candidate, counter = f"{value}.{counter}", counter + 1
    return candidate


def multipart_body(mark: str, parts: Sequence[bytes]) -> bytes:
    """The parts between their boundary lines, as `Generator._handle_multipart` lays them."""
    line = b"--" + mark.encode("ascii")
    return line + CRLF + (CRLF + line + CRLF).join(parts) + CRLF + line + b"--" + CRLF


_TEMPLATE_MARK = "=" * 15 + "0" * 19 + "=="


def multipart_type(subtype: str, mark: str) -> bytes:
    """The Content-Type line of a multipart, folded by the policy (once per subtype for a
    boundary of `email`'s own length: the digits do not change how it folds)."""
    if len(mark) == len(_TEMPLATE_MARK):
        return _multipart_type(subtype).replace(_TEMPLATE_MARK.encode(), mark.encode("ascii"))
    return header("Content-Type", f'multipart/{subtype}; boundary="{mark}"', utf8=False)


@cache
def _multipart_type(subtype: str) -> bytes:
    return header("Content-Type", f'multipart/{subtype}; boundary="{_TEMPLATE_MARK}"', utf8=False)
