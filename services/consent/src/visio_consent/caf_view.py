"""Whose Caf a self-service page speaks for (visio_shared.caf_directory, with the deployment's
`CONSENT_CAF_CONTACTS`): its name (« Caf de La Réunion ») and what its configuration gives of
its contact page, phone and hours, mediator (CGU article 7) and right-of-access address (CGU
article 8) — never invented. An appointment recorded before consent kept its Caf (no
`caf_code`), or a Caf without a contact entry, gets the national caf.fr contact page; without a
known Caf the pages keep the national wording (« votre Caf »)."""

from __future__ import annotations

from typing import Any

from visio_shared.caf_directory import Caf, CafDirectory

CAF_MEDIATOR = "En cas de litige (article 7 des conditions générales d'utilisation) : {mediator}"
CAF_ACCESS = (
    "Pour accéder à vos données (article 8 des conditions générales d'utilisation), écrivez à : "
    "{address}"
)


def caf_of(directory: CafDirectory, caf_code: str | None) -> Caf | None:
    """The appointment's Caf, or None when consent does not know it (an old appointment)."""
    if caf_code is None or caf_code not in directory.cafs:
        return None
    return directory.get(caf_code)


def caf_view(directory: CafDirectory, caf_code: str | None) -> dict[str, Any]:
    """The pages' `caf_*` values: `caf_name` is None when the Caf is not known, and the page
    says « votre Caf »; `caf_contact_url` is always set (the national page at worst)."""
    caf = caf_of(directory, caf_code)
    if caf is None:
        return {
            "caf_name": None,
            "caf_contact_url": directory.national_contact_url,
            "caf_phone": None,
            "caf_hours": None,
            "caf_mediator": None,
            "caf_access": None,
        }
    return {
        "caf_name": caf.name,
        "caf_contact_url": caf.contact_url,
        "caf_phone": caf.phone,
        "caf_hours": caf.hours,
        "caf_mediator": CAF_MEDIATOR.format(mediator=caf.mediator) if caf.mediator else None,
        "caf_access": CAF_ACCESS.format(address=caf.access_address) if caf.access_address else None,
    }
