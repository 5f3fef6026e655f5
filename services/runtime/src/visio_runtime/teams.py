"""Which join URLs may become a link: the emails (notifications) and « Mon rendez-vous »
(booking) show the person a Teams meeting's URL only if it passes this one check, so a page and
the message the person holds never disagree on it."""

from __future__ import annotations

import re
from collections.abc import Iterable
from urllib.parse import urlsplit

# The default of each service's `teams_url_allowlist` setting.
TEAMS_JOIN_URL_PREFIXES = (
    "https://teams.microsoft.com/l/meetup-join/",
    "https://teams.microsoft.com/meet/",
)

# Characters a URL may hold as is, in an href or a text part: nothing that would need escaping.
URL_CHARACTERS = re.compile(r"[A-Za-z0-9\-._~:/?#\[\]@!$&'()*+,;=%]+")


def join_url_allowed(url: str | None, allowlist: Iterable[str]) -> bool:
    """Only a Teams join URL becomes a link: https, a listed prefix on the same host, no
    credentials, no port, no character that would need escaping."""
    if not url or not URL_CHARACTERS.fullmatch(url):
        return False
    try:
        parts = urlsplit(url)
        if parts.scheme != "https" or parts.username or parts.password or parts.port:
            return False
    except ValueError:
        return False
    return any(
        url.startswith(prefix)
        and len(url) > len(prefix)
        and urlsplit(prefix).netloc.lower() == parts.netloc.lower()
        for prefix in allowlist
    )
