"""What a deployment says of each Caf beyond the packaged directory (visio_shared.caf_directory):
contact page, phone and hours, mediator, right-of-access address — never guessed, so only what
this setting gives. Taken by every service that writes to the public under its own prefix
(`NOTIFICATIONS_CAF_CONTACTS`, `BOOKING_CAF_CONTACTS`), and said at start: the Cafs left on the
national contact page are named in one warning."""

from __future__ import annotations

import logging

from pydantic import Field, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict
from visio_shared.caf_directory import (
    CafContact,
    CafDirectory,
    caf_directory,
    missing_contacts_warning,
)


class CafSettings(BaseSettings):
    model_config = SettingsConfigDict(extra="ignore", env_file=None)

    caf_contacts: dict[str, CafContact] = Field(
        default_factory=dict,
        description='Each Caf\'s contact, by caf_code, JSON: {"974": {"contact_url": '
        '"https://…", "phone": "…", "hours": "…", "mediator": "…", '
        '"access_address": "…", "booking_portal_url": "https://…", '
        '"team_address": "visio@caf974.fr"}}; every field optional. A Caf without '
        "contact_url gets the national caf.fr contact page; team_address (never shown to the "
        "public) is where notifications sends the Caf's team what it must act on.",
    )

    @field_validator("caf_contacts")
    @classmethod
    def _known_cafs(cls, value: dict[str, CafContact]) -> dict[str, CafContact]:
        caf_directory().with_contacts(value)  # an unknown code is refused at start
        return value

    def cafs(self) -> CafDirectory:
        return caf_directory().with_contacts(self.caf_contacts)

    def team_address_of(self, caf_code: str) -> str | None:
        """The Caf's own team address, if its contact entry gives one."""
        given = self.caf_contacts.get(caf_code)
        return None if given is None or given.team_address is None else str(given.team_address)

    def warn_missing_contacts(self, log: logging.Logger) -> None:
        warning = missing_contacts_warning(self.cafs())
        if warning is not None:
            log.warning("%s", warning)
