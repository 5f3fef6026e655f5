"""How many SMS a text costs: GSM 03.38 (3GPP TS 23.038) where every character allows it, UCS-2
otherwise, counted the way networks split it.

- GSM-7: 160 septets in one SMS; split, each part carries a 6-octet user-data header and so 153
  septets. The extension table's characters (€ [ ] { } ^ ~ \\ | and form feed) take two septets
  (an escape, then the character), and an escape is never separated from its character across
  two parts (so a part may carry 152).
- UCS-2: 70 UTF-16 code units in one SMS, 67 per part when split; a character beyond the Basic
  Multilingual Plane (an emoji) takes two units, never split across parts.

One character outside GSM-7 switches the whole text to UCS-2: in French that is ê, â, î, ô, û,
ç, œ, ë, ï, the guillemets « », the typographic apostrophe ’ and the non-breaking spaces. GSM-7
has é, è, à, ù, ì, ò, É and Ç (capital only). The texts are written for GSM-7
(`sms_wording`): a date in August (« août ») is the usual exception.
"""

from __future__ import annotations

from dataclasses import dataclass

# GSM 03.38 default alphabet, in table order (0x00-0x7F); 0x1B is the escape to the extension.
GSM7_BASIC = (
    "@£$¥èéùìòÇ\nØø\rÅå"
    "Δ_ΦΓΛΩΠΨΣΘΞ\x1bÆæßÉ"
    " !\"#¤%&'()*+,-./"
    "0123456789:;<=>?"
    "¡ABCDEFGHIJKLMNO"
    "PQRSTUVWXYZÄÖÑÜ§"
    "¿abcdefghijklmno"
    "pqrstuvwxyzäöñüà"
)
GSM7_EXTENSION = "\f^{}\\[~]|€"

_BASIC = frozenset(GSM7_BASIC) - {"\x1b"}
_EXTENSION = frozenset(GSM7_EXTENSION)

GSM7_SINGLE, GSM7_PART = 160, 153
UCS2_SINGLE, UCS2_PART = 70, 67


@dataclass(frozen=True)
class SmsCount:
    encoding: str  # 'GSM-7' | 'UCS-2'
    units: int  # septets (GSM-7) or UTF-16 code units (UCS-2)
    segments: int


def is_gsm7(text: str) -> bool:
    return all(char in _BASIC or char in _EXTENSION for char in text)


def _unit_sizes(text: str) -> tuple[str, list[int]]:
    if is_gsm7(text):
        return "GSM-7", [2 if char in _EXTENSION else 1 for char in text]
    return "UCS-2", [2 if ord(char) > 0xFFFF else 1 for char in text]


def count(text: str) -> SmsCount:
    """The encoding, the units and the number of SMS `text` is sent as."""
    encoding, sizes = _unit_sizes(text)
    single, part = (GSM7_SINGLE, GSM7_PART) if encoding == "GSM-7" else (UCS2_SINGLE, UCS2_PART)
    units = sum(sizes)
    if units <= single:
        return SmsCount(encoding, units, 1 if text else 0)
    # Packed part by part: a two-unit character that does not fit starts the next part.
    segments, room = 1, part
    for size in sizes:
        if size > room:
            segments, room = segments + 1, part
        room -= size
    return SmsCount(encoding, units, segments)
