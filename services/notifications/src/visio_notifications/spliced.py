"""A text part's body written from pieces: the static blocks (the guide for a device, the
charter and CGU block: `compose.STATIC_BLOCKS`) encoded once per block, the rest of the page
per email.

`mime.encode_text` quotes a page line by line, each line looked up in a cache: the lookups
themselves (hashing each line, comparing it with the one cached, joining the results) were the
largest single cost of composing an email — an eighth of notifications' CPU in the catch-up
bench. The static blocks are half the HTML and two thirds of the text, the same bytes in
thousands of emails, and each stands on lines of its own in its page (`{{ blocks.guide }}`
alone on its line). Quoted-printable, 7bit and 8bit encode each line on its own, so a page's
body is its lines' encodings joined by CRLF, whatever the pieces they came from: here each
block's lines are encoded once (`_block`) and spliced between the page's other lines.

The result is `mime.encode_text` of the whole page, byte for byte: the choice of encoding
weighs every line (the longest of the blocks' lines is kept with them) and the first ten; a
page whose pieces do not meet on line ends, or which base64 would encode, is encoded whole.
`tests/test_spliced.py` compares the two on pages of every shape, and the golden emails are
unchanged.
"""

from __future__ import annotations

import binascii
from collections.abc import Sequence
from dataclasses import dataclass
from functools import lru_cache

from visio_notifications import mime
from visio_notifications.mail_policy import MAIL_POLICY
from visio_notifications.mime import CRLF

_LIMIT: int = MAIL_POLICY.max_line_length or 78  # the policy's 78, as `mime.encode_text`


@dataclass(frozen=True)
class _Block:
    """A static block's lines (its last one ended by the newline after its tag), encoded."""

    lines: tuple[bytes, ...]
    longest: int
    raw: bytes  # 7bit or 8bit: the lines CRLF-joined
    quoted: bytes  # quoted-printable: each line quoted, CRLF-joined


@lru_cache(maxsize=64)
def _block(text: str) -> _Block:
    lines = tuple((text + "\n").encode("utf-8").splitlines())
    return _Block(
        lines,
        max(map(len, lines)),
        CRLF.join(lines),
        CRLF.join(map(mime.quoted_line, lines)),
    )


def encode_pieces(pieces: Sequence[str]) -> tuple[str, bytes]:
    """`mime.encode_text("".join(pieces))`, where the odd pieces are static blocks."""
    groups = _groups(pieces)
    if groups is None:
        return mime.encode_text("".join(pieces))
    longest = max(
        (group.longest if isinstance(group, _Block) else max(map(len, group), default=0))
        for group in groups
    )
    if longest <= _LIMIT:
        chunks = [group.raw if isinstance(group, _Block) else CRLF.join(group) for group in groups]
        body = CRLF.join(chunk for chunk, group in zip(chunks, groups, strict=True) if group)
        body += CRLF
        return ("7bit" if body.isascii() else "8bit"), body
    if _base64_shorter(groups):
        return mime.encode_text("".join(pieces))
    chunks = [
        group.quoted if isinstance(group, _Block) else CRLF.join(map(mime.quoted_line, group))
        for group in groups
        if isinstance(group, _Block) or group
    ]
    return "quoted-printable", CRLF.join(chunks) + CRLF


def _groups(pieces: Sequence[str]) -> list[_Block | list[bytes]] | None:
    """The page's lines, grouped: the lines of each piece between the blocks, and each block;
    None if a block does not stand on lines of its own (the page is then encoded whole)."""
    groups: list[_Block | list[bytes]] = []
    for index, piece in enumerate(pieces):
        if index % 2:
            before, after = pieces[index - 1], pieces[index + 1 : index + 2]
            if (before and not before.endswith("\n")) or not after or after[0][:1] != "\n":
                return None
            groups.append(_block(piece))
        else:
            # After a block, the newline that ends the block's last line is the block's.
            groups.append((piece[1:] if index else piece).encode("utf-8").splitlines())
    return groups


def _base64_shorter(groups: Sequence[_Block | list[bytes]]) -> bool:
    """`mime.encode_text`'s weighing of the first ten lines: base64 if shorter than quoted."""
    first: list[bytes] = []
    for group in groups:
        first += (group.lines if isinstance(group, _Block) else group)[: 10 - len(first)]
        if len(first) == 10:
            break
    quoted = (b"\n".join(map(mime.quoted_line, first)) + b"\n").replace(CRLF, b"\n")
    return len(quoted) > len(binascii.b2a_base64(b"\n".join(first) + b"\n"))
