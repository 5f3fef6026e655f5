"""Each Caf as the public knows it, read from `caf_directory.json` (data, not code): its name
(« Caf de La Réunion »), its time zone, its booking portal and — only where a deployment's
configuration gives them — how to reach it: contact page, phone and hours, the mediator (CGU
article 7) and the address for right-of-access requests (CGU article 8). A Caf without them
gets the national caf.fr contact page; `missing_contacts` names them so a service can warn at
start.

The codes are the front door's: the department's on three characters (`075`, `02A`, `974`).
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, replace
from functools import cache
from importlib import resources
from typing import Annotated, Any

from pydantic import AfterValidator, BaseModel, ConfigDict, EmailStr, Field, HttpUrl

from visio_shared.events import CAF_CODE_PATTERN


class CafContact(BaseModel):
    """What a deployment's configuration says of one Caf (every field optional, none guessed)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    contact_url: HttpUrl | None = Field(default=None, description="The Caf's contact page.")
    phone: str | None = Field(default=None, max_length=40)
    hours: str | None = Field(default=None, max_length=200, description="When the phone answers.")
    mediator: str | None = Field(
        default=None, max_length=300, description="The mediator to write to (CGU article 7)."
    )
    access_address: str | None = Field(
        default=None,
        max_length=300,
        description="Where right-of-access requests are sent (CGU article 8).",
    )
    booking_portal_url: HttpUrl | None = None
    team_address: EmailStr | None = Field(
        default=None,
        description="The Caf's team, for the requests it must act on (a person asking to move "
        "an appointment booked over HTTP); never shown to the public.",
    )


@dataclass(frozen=True)
class Caf:
    code: str
    name: str  # « Caf de La Réunion »
    timezone: str
    booking_portal_url: str
    contact_url: str  # the Caf's own, or the national contact page
    own_contact: bool  # False: `contact_url` is the national page
    phone: str | None = None
    hours: str | None = None
    mediator: str | None = None
    access_address: str | None = None


@dataclass(frozen=True)
class CafDirectory:
    cafs: Mapping[str, Caf]
    national_contact_url: str
    national_portal_url: str

    def get(self, code: str) -> Caf:
        """The Caf of `code`; an unknown code (an event from before the directory) gets the
        national entry, named « votre Caf »."""
        caf = self.cafs.get(code)
        if caf is not None:
            return caf
        return Caf(
            code=code,
            name="votre Caf",
            timezone="Europe/Paris",
            booking_portal_url=self.national_portal_url,
            contact_url=self.national_contact_url,
            own_contact=False,
        )

    def with_contacts(self, contacts: Mapping[str, CafContact]) -> CafDirectory:
        """This directory with what configuration says of each Caf; an unknown code is an
        error (a typo would otherwise leave a Caf on the national page, silently)."""
        unknown = sorted(set(contacts) - set(self.cafs))
        if unknown:
            raise ValueError(f"unknown Caf code(s) in the Caf contacts: {', '.join(unknown)}")
        cafs = dict(self.cafs)
        for code, given in contacts.items():
            caf = cafs[code]
            cafs[code] = replace(
                caf,
                contact_url=str(given.contact_url or caf.contact_url),
                own_contact=given.contact_url is not None or caf.own_contact,
                booking_portal_url=str(given.booking_portal_url or caf.booking_portal_url),
                phone=given.phone,
                hours=given.hours,
                mediator=given.mediator,
                access_address=given.access_address,
            )
        return replace(self, cafs=cafs)

    def missing_contacts(self) -> list[str]:
        """The codes of the Cafs that send people to the national contact page."""
        return sorted(code for code, caf in self.cafs.items() if not caf.own_contact)


def from_data(data: Mapping[str, Any]) -> CafDirectory:
    national = data["national"]
    cafs = {
        code: Caf(
            code=code,
            name=entry["name"],
            timezone=entry["timezone"],
            booking_portal_url=entry.get("booking_portal_url", national["booking_portal_url"]),
            contact_url=entry.get("contact_url", national["contact_url"]),
            own_contact="contact_url" in entry,
        )
        for code, entry in data["cafs"].items()
    }
    return CafDirectory(cafs, national["contact_url"], national["booking_portal_url"])


@cache
def caf_directory() -> CafDirectory:
    """The packaged directory, without any deployment's contacts."""
    text = resources.files("visio_shared").joinpath("caf_directory.json").read_text("utf-8")
    return from_data(json.loads(text))


CAF_CODES: frozenset[str] = frozenset(caf_directory().cafs)


def missing_contacts_warning(directory: CafDirectory) -> str | None:
    """The start-up warning line naming the Cafs without a contact entry, or None."""
    missing = directory.missing_contacts()
    if not missing:
        return None
    return (
        f"{len(missing)} Caf without a contact entry (their emails and pages give the national "
        f"contact page {directory.national_contact_url}): {', '.join(missing)}"
    )


def known_caf_code(value: str) -> str:
    """A code of the directory, or the error the front door answers."""
    if value not in CAF_CODES:
        raise ValueError(
            f"unknown Caf code {value!r}: give the department's code on three characters "
            "(075, 02A, 974)"
        )
    return value


# A Caf code as the front door accepts it: the pattern, then one of the directory's codes.
CafCode = Annotated[
    str,
    Field(
        pattern=CAF_CODE_PATTERN,
        description="The Caf's code: its department's on three characters (`075` for Paris, "
        "`02A` for Corse-du-Sud, `974` for La Réunion); one of the 101 of the Caf directory.",
    ),
    AfterValidator(known_caf_code),
]
