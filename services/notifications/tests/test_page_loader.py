"""The templates' sources with partials and wording written in (visio_notifications.page_loader):
the page renders what the templates as written render, and what cannot be written in safely is
left to the render. The golden emails hold every real page to its bytes."""

from __future__ import annotations

from types import ModuleType

import pytest
from jinja2 import DictLoader
from visio_notifications.compose import environment, french_spacing
from visio_notifications.page_loader import PageLoader

PAGES = {
    "page.html": (
        "<h1>{{ w.TITLE }}</h1>\n"
        "{% if name %}\n"
        '{% include "_part.html" %}\n'
        "{% endif %}\n"
        "<p>{{ w.QUESTION | french_spacing }} {{ name }}</p>\n"
        "<p>{{ w.SYNTAX }}|{{ w.PADDED }}|{{ w.NUMBER }}|{{ w.TITLE | upper }}</p>\n"
    ),
    "_part.html": "<b>{{ w.QUESTION | french_spacing }}</b>\n{% include 'other.html' %}\n",
    "other.html": "<i>{{ name }}</i>\n",
    "page.txt": '{{ w.TITLE }}\n{% include "_part.txt" %}\n{{ w.QUESTION | french_spacing }}\n',
    "_part.txt": "« {{ name }} »\n",
}


def _wording() -> ModuleType:
    wording = ModuleType("wording")
    wording.TITLE = "Vous & nous <ensemble>"  # type: ignore[attr-defined]
    wording.QUESTION = "Une question ?"  # type: ignore[attr-defined]
    wording.SYNTAX = "a {{ b }}"  # type: ignore[attr-defined]
    wording.PADDED = " espace"  # type: ignore[attr-defined]
    wording.NUMBER = 3  # type: ignore[attr-defined]
    return wording


@pytest.fixture
def loaders() -> tuple[PageLoader, DictLoader]:
    written = DictLoader(PAGES)
    return PageLoader(written, _wording(), {"french_spacing": french_spacing}), written


@pytest.mark.parametrize("page", ["page.html", "page.txt"])
@pytest.mark.parametrize("name", ["Zoé <3", ""])
def test_a_page_renders_what_the_templates_as_written_render(
    loaders: tuple[PageLoader, DictLoader], page: str, name: str
) -> None:
    loader, written = loaders
    values = {"w": _wording(), "name": name}
    expected = environment(written).get_template(page).render(values)
    assert environment(loader).get_template(page).render(values) == expected


def test_partials_and_wording_are_written_in_and_the_rest_left_to_the_render(
    loaders: tuple[PageLoader, DictLoader],
) -> None:
    loader, _ = loaders
    env = environment(loader)
    source, _, _ = loader.get_source(env, "page.html")
    # The partial's source in place of its tag, the wording escaped and spaced as rendered.
    assert '{% include "_part.html" %}' not in source
    assert "<b>Une question\u00a0?</b>" in source
    assert "<h1>Vous &amp; nous &lt;ensemble&gt;</h1>" in source
    # Left: an include of another shape, Jinja syntax, whitespace at an end, not a string,
    # a filter the loader was not given.
    assert "{% include 'other.html' %}" in source
    for kept in ("{{ w.SYNTAX }}", "{{ w.PADDED }}", "{{ w.NUMBER }}", "{{ w.TITLE | upper }}"):
        assert kept in source
    text, _, _ = loader.get_source(env, "page.txt")
    assert text.startswith("Vous & nous <ensemble>\n« {{ name }} »\n")
