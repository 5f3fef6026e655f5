"""The CSS inlined into the templates as they load (`visio_notifications.styles`), on small
templates of its own: Jinja inside tags comes through, the result is css_inline's inlining of
the rendered page, and what cannot be inlined safely fails as the template loads.
tests/test_golden_emails.py makes the same comparison on every kind of email."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import css_inline
import pytest
from jinja2 import DictLoader, Environment
from visio_notifications import compose
from visio_notifications.compose import environment
from visio_notifications.styles import InliningLoader

PAGE_INLINER = css_inline.CSSInliner(keep_at_rules=True, load_remote_stylesheets=False)

BASE = """<!DOCTYPE html>
<html lang="fr">
<head>
<title>{{ title }}</title>
<style>
body { margin: 0; }
p, li { margin: 0 0 {{ colors.gap }} 0; }
.note { color: {{ colors.ink }}; font-family: "Segoe UI", Arial; }
.head img { display: block; border: 0; }
td { padding: 4px; }
@media (max-width: 480px) {
  .note { color: black !important; }
}
</style>
</head>
<body>
<table role="presentation"><tr><td class="head">
{% if logo %}<img src="{{ logo }}" alt="{{ alt }}"{% if w %} width="{{ w }}"{% endif %}>{% endif %}
</td></tr>
{% block content %}{% endblock %}
</table>
</body>
</html>
"""
PAGE = """{% extends "base.html" %}
{% block content %}
<tr><td>
<p class="note extra" {% if h %}hidden{% else %}data-x="{{ '>' }}"{% endif %}>{{ text }}</p>
<p style="margin-top: 2px;" title='{{ "a > b" }}'>{{ text }}</p>
{% include "_item.html" %}
</td></tr>
{% endblock %}
"""
ITEM = '<ul><li class="note"><a href="{{ url }}?a=1&amp;b=2">{{ text }}</a></li></ul>\n'
SHEET_VALUES = {"colors": {"gap": "12px", "ink": "#4a4a4a"}}
VALUES: dict[str, Any] = {
    "title": "Rendez-vous <urgent> & « Caf »",
    "logo": "https://example.org/logo.png?x=1&y=2",
    "alt": 'Le logo "Caf"',
    "w": 160,
    "text": "Prime d'activité <b>",
    "url": "https://example.org/a b",
    "h": False,
}


def _inlined(templates: dict[str, str]) -> Environment:
    loader = InliningLoader(DictLoader(templates), "base.html", SHEET_VALUES)
    return environment(loader)


def test_jinja_in_tags_survives_and_the_page_is_css_inlines(tree) -> None:
    templates = {"base.html": BASE, "page.html": PAGE, "_item.html": ITEM}
    styled = _inlined(templates)
    plain = environment(DictLoader(templates))
    source, _, _ = styled.loader.get_source(styled, "page.html")  # type: ignore[union-attr]
    assert "{% if h %}hidden{% else %}data-x=\"{{ '>' }}\"{% endif %}" in source
    assert "title='{{ \"a > b\" }}'" in source
    for values in (VALUES, VALUES | {"h": True, "w": None}, VALUES | {"logo": None}):
        page = styled.get_template("page.html").render(values | SHEET_VALUES)
        expected = PAGE_INLINER.inline(
            plain.get_template("page.html").render(values | SHEET_VALUES)
        )
        assert tree(page) == tree(expected)
        assert page.count("<style>") == 1 and "@media" in page and ".head img" not in page
    img = styled.get_template("base.html").render(VALUES | SHEET_VALUES)
    assert 'width="160" style="display: block;border: 0;">' in img  # `.head img`: an ancestor


@pytest.mark.parametrize(
    ("page", "error"),
    [
        ('<p class="{{ kind }}">x</p>', "class must be written once, without Jinja"),
        ('<p style="color: {{ ink }}">x</p>', "style must be written once, without Jinja"),
        ('<p {% if x %}class="a"{% endif %}>x</p>', "class must be written once"),
        ('<p class="a" class="b">x</p>', "class must be written once"),
        ("<p {{ attributes }}>x</p>", "may write any attribute"),
        ("<p {% set a = 1 %}>x</p>", "may write any attribute"),
        ('<img src="x">', "ancestors are in another template"),
        ("<p>x</div>", "closes no open <div>"),
        ("<div><p>x</p>", "<div> is never closed"),
        ("<style>p { color: red; }</style>", "<style> here"),
        ('<link rel="stylesheet" href="x.css">', "<link> here"),
        ('<p data-css-inline="ignore">x</p>', "<p> here"),
        ("{% raw %}<p>x</p>{% endraw %}", "raw"),
        ("<{{ tag }}>x</{{ tag }}>", "a tag named by Jinja"),
        ('<p {% if x %}class="a">x</p>{% endif %}', "<p> ends inside an {% if %}"),
        ("{% if x %}<div>{% endif %}x{% if x %}</div>{% endif %}", "different {% if %} branches"),
        ("{% if x %}<div>{% else %}<div>{% endif %}x</div>", "different {% if %} branches"),
    ],
)
def test_what_cannot_be_inlined_safely_fails_as_the_template_loads(page, error) -> None:
    styled = _inlined({"base.html": BASE, "page.html": page})
    with pytest.raises(ValueError, match=error) as failure:
        styled.get_template("page.html")
    assert str(failure.value).startswith("page.html: ")


@pytest.mark.parametrize(
    "rule",
    ["a:hover { color: red; }", "td > p { margin: 0; }", "[hidden] { display: none; }", "#x {}"],
)
def test_a_selector_not_made_of_tags_and_classes_fails(rule) -> None:
    """Its match could depend on what the source does not say (a state, a sibling, a value)."""
    base = BASE.replace("body { margin: 0; }", f"body {{ margin: 0; }}\n{rule}")
    styled = _inlined({"base.html": base, "page.html": "<p>x</p>"})
    with pytest.raises(ValueError, match="not made of tags and classes"):
        styled.get_template("page.html")


def test_the_stylesheet_is_one_style_block() -> None:
    base = BASE.replace("</head>", "<style>p { color: red; }</style>\n</head>")
    styled = _inlined({"base.html": base, "page.html": "<p>x</p>"})
    with pytest.raises(ValueError, match="must hold one <style>, not 2"):
        styled.get_template("page.html")


def test_every_template_of_the_service_loads_inlined_as_the_service_starts() -> None:
    """What the service does at its start (`compose.load_templates`): each template read
    through the inliner, so one it cannot handle stops the start, not the first email."""
    count = compose.load_templates()
    assert count == len(list(Path(compose.__file__).parent.joinpath("templates").iterdir()))
