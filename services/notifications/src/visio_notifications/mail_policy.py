"""How our messages are serialised: the default policy, with two fixes to how it folds
headers."""

from __future__ import annotations

from email.header import Header
from email.policy import EmailPolicy

# Headers of free French text, folded by us when they must be encoded (see `_MailPolicy`).
_ENCODED_TEXT = {"subject"}


class _MailPolicy(EmailPolicy):
    """The default policy, except:

    - Message-ID stays on one line (about 110 characters at most, far below the 998 limit):
      folded, Python and some clients read it back with a leading space.
    - A long non-ASCII Subject is encoded as a run of RFC 2047 encoded words by the older
      `email.header.Header`. The default folder leaves the space before a fold outside the
      encoded words (« aujourd'hui  à ») or drops it between two of them (« décembreà »).
      With SMTPUTF8 (`utf8=True`) nothing is encoded and the default is right.
    """

    def fold(self, name: str, value: str) -> str:
        if name.lower() == "message-id":
            return f"{name}: {str(value).strip()}{self.linesep}"
        text = str(value)
        if name.lower() in _ENCODED_TEXT and not self.utf8 and not text.isascii():
            encoded = Header(text, charset="utf-8", header_name=name).encode(linesep=self.linesep)
            return f"{name}: {encoded}{self.linesep}"
        folded: str = super().fold(name, value)
        return folded

    def fold_binary(self, name: str, value: str) -> bytes:
        if name.lower() == "message-id" or name.lower() in _ENCODED_TEXT:
            return self.fold(name, value).encode("utf-8" if self.utf8 else "ascii")
        return super().fold_binary(name, value)


MAIL_POLICY = _MailPolicy()
