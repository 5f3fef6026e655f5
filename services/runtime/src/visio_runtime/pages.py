"""Server-rendered pages for the public (booking's « Mon rendez-vous », consent's
« Enregistrement » and « Mes consentements »): one layout, one stylesheet, the same headers.

No JavaScript, no external resource: the stylesheet is inlined and allowed by its hash, so the
Content-Security-Policy forbids everything else. Pages reached through a personal link are never
cached, never framed, and never tell the next site where the person came from.
"""

from __future__ import annotations

import base64
import hashlib
from importlib import resources
from typing import Any

from fastapi import APIRouter
from fastapi.responses import HTMLResponse
from jinja2 import ChoiceLoader, Environment, PackageLoader, StrictUndefined, select_autoescape

_CSS = resources.files("visio_runtime").joinpath("pages/style.css").read_text(encoding="utf-8")
_CSS_HASH = base64.b64encode(hashlib.sha256(_CSS.encode()).digest()).decode()

PAGE_HEADERS = {
    "Content-Security-Policy": (
        f"default-src 'none'; style-src 'sha256-{_CSS_HASH}'; img-src 'self' data:; "
        "form-action 'self'; frame-ancestors 'none'; base-uri 'none'"
    ),
    "Cache-Control": "no-store",
    "Referrer-Policy": "no-referrer",
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
}


def french_spacing(text: str) -> str:
    """A no-break space before « : ; ! ? » and inside « », as French typography wants."""
    for mark in (" :", " ;", " !", " ?", " »"):
        text = text.replace(mark, "\u00a0" + mark[1:])
    return text.replace("« ", "«\u00a0")


class Pages:
    """The templates of one service's pages (its package's `pages/` folder), on the shared
    layout `page.html`."""

    def __init__(self, package: str) -> None:
        self.env = Environment(
            loader=ChoiceLoader(
                [PackageLoader(package, "pages"), PackageLoader("visio_runtime", "pages")]
            ),
            autoescape=select_autoescape(["html"]),
            undefined=StrictUndefined,
            trim_blocks=True,
            lstrip_blocks=True,
        )
        self.env.filters["french_spacing"] = french_spacing

    def render(self, template: str, status_code: int = 200, **context: Any) -> HTMLResponse:
        html = self.env.get_template(template).render(css=_CSS, **context)
        return HTMLResponse(html, status_code=status_code, headers=PAGE_HEADERS)


ACCESSIBILITY_PATH = "/accessibilite"
# When the statement was last written (RGAA asks for its date); change it with the statement.
ACCESSIBILITY_STATEMENT_DATE = "6 décembre 2026"


def accessibility_router() -> APIRouter:
    """« Déclaration d'accessibilité », on every service that serves pages to the public, so the
    layout's footer can link it relatively whatever the page's origin."""
    router = APIRouter()
    pages = Pages("visio_runtime")

    @router.get(ACCESSIBILITY_PATH, response_class=HTMLResponse, include_in_schema=False)
    async def accessibility_statement() -> HTMLResponse:
        return pages.render(
            "accessibilite.html",
            title="Déclaration d'accessibilité",
            established=ACCESSIBILITY_STATEMENT_DATE,
        )

    return router
