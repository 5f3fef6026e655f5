"""Each CGU version, published where every email and page links it: `/cgu/<version>`, the exact
text the person accepted (visio_shared.cgu_versions: the bytes booking validated and the ledger
proves), with its SHA-256 so anyone can check it, readable on a phone. Public: no link key, no
personal data; an unknown version answers a French 404 page."""

from __future__ import annotations

from fastapi import APIRouter
from fastapi.responses import HTMLResponse
from visio_runtime.pages import Pages
from visio_shared import CGU_VERSIONS

CGU_PATH = "/cgu/{version}"


def router() -> APIRouter:
    routes = APIRouter(include_in_schema=False)
    pages = Pages("visio_consent")

    @routes.get(CGU_PATH, response_class=HTMLResponse)
    async def cgu(version: str) -> HTMLResponse:
        found = CGU_VERSIONS.get(version)
        if found is None:
            return pages.render(
                "cgu_unknown.html",
                404,
                title="Version introuvable",
                version=version[:20],
                versions=sorted(CGU_VERSIONS),
            )
        paragraphs = [block.strip() for block in found.text().split("\n\n") if block.strip()]
        return pages.render(
            "cgu.html",
            title=f"Conditions générales d'utilisation, version {found.version}",
            version=found.version,
            effective_from=found.effective_from.strftime("%d/%m/%Y"),
            sha256=found.sha256,
            paragraphs=paragraphs,
        )

    return routes
