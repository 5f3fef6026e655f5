"""The CSS of the HTML emails, inlined once per template as it is read instead of once per email.

Inlining each page with css_inline cost about half a millisecond an email (parse, match,
serialise again) for styles that never change: the palette is constant, and every selector of
layout.html's stylesheet is a tag, classes, or those with ancestors (`.header img`). The style
an element gets thus depends on its tag, classes, own `style` and ancestors, all written in the
template source. So, as an HTML template's source is loaded, each literal start tag gets the
`style` css_inline gives it (css_inline itself, on the tag under its ancestors as the source
writes them, in a document holding the stylesheet), and the `<style>` block becomes what
css_inline keeps of it (the @media rules, at the top of `<head>`, where css_inline puts them).
Jinja in a tag survives: only `style` is written, before the `>` or in place of the tag's own.
Every tag is in a template: the values bring text, and the static blocks are templates too.

What cannot be done safely fails as the template loads, not as an unstyled email: a selector of
another shape (an attribute, a pseudo-class, `>`: its match would depend on more than the
source says), a `class` or `style` written by Jinja or inside `{% if %}`, an expression where
an attribute's name goes, a tag named by Jinja, a tag a selector with ancestors may match in a
file whose ancestors come from another (a partial, a child's block), an element closed in
another `{% if %}` branch than it opened in (with such selectors), a second stylesheet, tags
out of order. tests/test_golden_emails.py compares every kind of email, as trees, with
css_inline's inlining of the page rendered from the templates as written.
"""

from __future__ import annotations

import html
import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from html.parser import HTMLParser
from typing import Any

import css_inline
from jinja2 import BaseLoader, Environment

# The options each page was inlined with, now each tag.
INLINER = css_inline.CSSInliner(keep_at_rules=True, load_remote_stylesheets=False)
MARK = "data-visio-inline"  # the element whose style is asked for, in a probe document

_JINJA = (
    r"\{\{(?:[^}'\"]|'[^']*'|\"[^\"]*\"|\}(?!\}))*\}\}"
    r"|\{%(?:[^%'\"]|'[^']*'|\"[^\"]*\"|%(?!\}))*%\}"
    r"|\{#.*?#\}"
)
_TOKEN = re.compile(
    "(?P<jinja>" + _JINJA + r")|<!--.*?-->|(?P<dynamic></?\{[{%])"
    r"|</(?P<end>[a-zA-Z][a-zA-Z0-9]*)\s*>|<(?P<start>[a-zA-Z][a-zA-Z0-9]*)",
    re.S,
)
_ATTRIBUTE = re.compile(
    r"\s*(?:(?P<jinja>" + _JINJA + r")|(?P<close>/?>)|(?P<name>[^\s\"'<>/={]+)"
    r"(?:\s*=\s*(?P<value>\"(?:" + _JINJA + r"|[^\"])*\"|'(?:" + _JINJA + r"|[^'])*'"
    r"|(?:" + _JINJA + r"|[^\s\"'=<>`{])+))?)",
    re.S,
)
_HAS_JINJA = re.compile(r"\{[{%#]")
_COMPOUND = re.compile(r"(?P<tag>[a-zA-Z][a-zA-Z0-9]*|\*)?(?P<classes>(?:\.[-_a-zA-Z][-\w]*)*)")

VOID = {"area", "base", "br", "col", "embed", "hr", "img", "input", "meta", "source", "wbr"}
HEAD_ONLY = {"base", "meta", "title"}
# Where a table's parts must sit for an HTML parser to keep them (a partial starts at a row).
_TABLE_CONTEXT = {"tr": "<table>", "td": "<table><tr>", "th": "<table><tr>"} | {
    part: "<table>" for part in ("tbody", "thead", "tfoot", "caption", "colgroup")
}


@dataclass(frozen=True)
class Element:
    """A literal start tag, as far as a selector of the accepted shapes can see it."""

    name: str
    classes: str = ""
    branch: int = 0  # the Jinja branch it opens in (`_Branches`)

    def markup(self, extra: str = "") -> str:
        classes = f' class="{html.escape(self.classes)}"' if self.classes else ""
        return f"<{self.name}{classes}{extra}>"


@dataclass(frozen=True)
class Compound:
    """A tag and classes, or either: one step of a selector."""

    tag: str | None
    classes: frozenset[str]

    def matches(self, element: Element) -> bool:
        return self.tag in (None, element.name) and self.classes <= set(element.classes.split())


@dataclass
class Stylesheet:
    """The rendered stylesheet, what css_inline keeps of it, and each element's style, asked of
    css_inline once per tag, classes, own style and ancestors."""

    css: str
    kept: str  # the <style> element css_inline leaves in <head>, or ""
    subjects: tuple[Compound, ...]  # the last step of each selector with ancestors
    _styles: dict[str, str | None] = field(default_factory=dict)

    @classmethod
    def read(cls, css: str) -> Stylesheet:
        page = INLINER.inline(f"<html><head><style>{css}</style></head><body></body></html>")
        kept = re.search(r"<head>(<style>.*?</style>)", page, re.S)
        if kept and _HAS_JINJA.search(kept[1]):
            raise ValueError(f"the rules kept in <style> read as Jinja: {kept[1]!r}")
        return cls(css, kept[1] if kept else "", _subjects(css))

    def style(self, ancestors: list[Element], element: Element, own: str | None) -> str | None:
        if (ancestors[0] if ancestors else element).name != "html":  # ancestors in another file
            for subject in self.subjects:
                if subject.matches(element):
                    raise ValueError(
                        f"<{element.name} class={element.classes!r}> may match a selector with "
                        "ancestors, and its ancestors are in another template"
                    )
        own_style = f' style="{html.escape(own)}"' if own is not None else ""
        probe = _probe(ancestors, element, own_style, self.css)
        if probe not in self._styles:
            finder = _Marked()
            finder.feed(INLINER.inline(probe))
            if len(finder.styles) != 1:
                raise ValueError(f"<{element.name}> cannot be placed in a document to inline")
            self._styles[probe] = finder.styles[0]
        return self._styles[probe]


def _subjects(css: str) -> tuple[Compound, ...]:
    """The last compound of each selector with ancestors; any selector not made of tags and
    classes (with descendants) fails."""
    subjects = []
    for prelude in _rule_preludes(css):
        for selector in prelude.split(","):
            steps = selector.split()
            compounds = [_COMPOUND.fullmatch(step) for step in steps]
            if not steps or not all(match and match[0] for match in compounds):
                raise ValueError(
                    f"selector {selector.strip()!r}: not made of tags and classes, so its "
                    "match may depend on more than the template source says"
                )
            if len(steps) > 1:
                last = compounds[-1]
                assert last is not None
                tag = last["tag"].lower() if last["tag"] not in (None, "*") else None
                subjects.append(Compound(tag, frozenset(last["classes"].split(".")[1:])))
    return tuple(subjects)


def _rule_preludes(css: str) -> Iterable[str]:
    """The selectors of each top-level rule; at-rules (kept as they are) skipped."""
    css = re.sub(r"/\*.*?\*/", "", css, flags=re.S)
    depth, start = 0, 0
    for index, char in enumerate(css):
        if char == "{":
            if depth == 0 and not css[start:index].strip().startswith("@"):
                yield css[start:index]
            depth += 1
        elif char == "}":
            depth -= 1
            start = index + 1 if depth == 0 else start
        elif char == ";" and depth == 0:
            start = index + 1


def _probe(ancestors: list[Element], element: Element, own_style: str, css: str) -> str:
    """A document with the stylesheet and the element, marked, under its ancestors; html, head
    and body at their places, a table around a row or cell."""
    path = [*ancestors, element]
    marked = len(path) - 1
    tags = [e.markup(f"{own_style} {MARK}" if i == marked else "") for i, e in enumerate(path)]
    outer = {e.name: tags[i] for i, e in enumerate(path) if e.name in ("html", "head", "body")}
    inner = [tags[i] for i, e in enumerate(path) if e.name not in ("html", "head", "body")]
    first = next((e.name for e in path if e.name not in ("html", "head", "body")), "")
    document = outer.get("html", "<html>") + outer.get("head", "<head>") + f"<style>{css}</style>"
    end = f"</{element.name}>" if element.name in ("title", "textarea") else ""
    if "head" in outer or first in HEAD_ONLY:
        return f"<!DOCTYPE html>{document}{''.join(inner)}{end}</head><body></body></html>"
    body = outer.get("body", "<body>") + _TABLE_CONTEXT.get(first, "") + "".join(inner)
    return f"<!DOCTYPE html>{document}</head>{body}{end}</body></html>"


class _Marked(HTMLParser):
    """The style attribute of each marked element of css_inline's output."""

    def __init__(self) -> None:
        super().__init__()
        self.styles: list[str | None] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        found = dict(attrs)
        if MARK in found:
            self.styles.append(found.get("style"))


@dataclass(frozen=True)
class Attribute:
    name: str
    value: str | None  # as written, quotes removed
    span: tuple[int, int]  # of the value, quotes included; empty at the name's end without one
    conditional: bool  # inside an {% if %} or {% for %} of the tag


@dataclass(frozen=True)
class Tag:
    name: str
    start: int
    close: int  # where `>` or `/>` is
    end: int
    attributes: tuple[Attribute, ...]

    def literal(self, name: str) -> str | None:
        """The value of the `name` attribute, which must be plain HTML (no Jinja, unconditional,
        once), unescaped."""
        found = [a for a in self.attributes if a.name == name]
        if not found:
            return None
        [attribute, *more] = found
        value = attribute.value or ""
        if more or attribute.conditional or _HAS_JINJA.search(value):
            raise ValueError(f"<{self.name}>'s {name} must be written once, without Jinja")
        return html.unescape(value)


def read_tag(source: str, name: str, start: int) -> Tag:
    """The start tag `<name` at `start`, read up to its `>`: attributes, their values (which
    may hold Jinja), and Jinja between them (`{% if %}`, `{% for %}` only)."""
    attributes: list[Attribute] = []
    depth, position = 0, start + 1 + len(name)
    while True:
        match = _ATTRIBUTE.match(source, position)
        if match is None:
            raise ValueError(f"cannot read <{name}> at offset {start}")
        position = match.end()
        if match["close"]:
            if depth:
                raise ValueError(f"<{name}> ends inside an {{% if %}} or {{% for %}}")
            return Tag(name.lower(), start, match.start("close"), position, tuple(attributes))
        if match["jinja"]:
            depth += _jinja_in_tag(match["jinja"], name)
            continue
        value = match["value"]
        quoted = value is not None and value[:1] in "\"'"
        attributes.append(
            Attribute(
                match["name"].lower(),
                value[1:-1] if quoted else value,
                match.span("value") if value is not None else (position, position),
                conditional=depth > 0,
            )
        )


def _jinja_in_tag(jinja: str, name: str) -> int:
    """How the nesting of conditions in a tag changes; what could write attributes fails."""
    if jinja.startswith("{#"):
        return 0
    keyword = re.match(r"\{%[-+]?\s*(\w+)", jinja)
    word = keyword[1] if keyword else ""
    if word in ("if", "for"):
        return 1
    if word in ("endif", "endfor"):
        return -1
    if word in ("elif", "else"):
        return 0
    raise ValueError(f"{jinja!r} in <{name}> may write any attribute, `class` and `style` too")


class InliningLoader(BaseLoader):
    """`loader`'s templates; the HTML ones with their CSS inlined (see the module). The
    stylesheet is the `<style>` of the `stylesheet` template, rendered with `values`."""

    def __init__(self, loader: BaseLoader, stylesheet: str, values: Mapping[str, Any]) -> None:
        self.loader = loader
        self.stylesheet = stylesheet
        self.values = values
        self._sheet: Stylesheet | None = None

    def get_source(
        self, environment: Environment, template: str
    ) -> tuple[str, str | None, Callable[[], bool] | None]:
        source, filename, uptodate = self.loader.get_source(environment, template)
        if template.endswith(".html"):
            sheet = self.sheet(environment)
            try:
                source = inline(source, sheet, holds_stylesheet=template == self.stylesheet)
            except ValueError as error:
                raise ValueError(f"{template}: {error}") from error
        return source, filename, uptodate

    def list_templates(self) -> list[str]:
        return self.loader.list_templates()

    def css(self, environment: Environment) -> str:
        """The stylesheet as each page carried it: its template's `<style>`, rendered."""
        source, _, _ = self.loader.get_source(environment, self.stylesheet)
        blocks = _style_blocks(source)
        if len(blocks) != 1:
            raise ValueError(f"{self.stylesheet} must hold one <style>, not {len(blocks)}")
        return environment.from_string(blocks[0]).render(self.values)

    def sheet(self, environment: Environment) -> Stylesheet:
        if self._sheet is None:
            self._sheet = Stylesheet.read(self.css(environment))
        return self._sheet


def inline(source: str, sheet: Stylesheet, *, holds_stylesheet: bool) -> str:
    """The template source with each literal start tag's style written in; in the template
    holding the stylesheet, its `<style>` replaced by what css_inline keeps, at the top of
    `<head>`."""
    scan = _Scan(source, sheet, holds_stylesheet)
    position = 0
    while match := _TOKEN.search(source, position):
        position = match.end()
        if match["dynamic"]:
            raise ValueError(f"a tag named by Jinja at offset {match.start()}")
        if match["jinja"]:
            scan.branches.step(match["jinja"])
        elif match["end"]:
            scan.end_tag(match["end"].lower())
        elif match["start"]:
            position = scan.start_tag(read_tag(source, match["start"], match.start()))
    if scan.ancestors:
        raise ValueError(f"<{scan.ancestors[-1].name}> is never closed")
    if holds_stylesheet and sheet.kept and not scan.kept:
        raise ValueError("no <head> to keep the stylesheet's at-rules in")
    for start, end, text in sorted(scan.edits, reverse=True):
        source = source[:start] + text + source[end:]
    return source


_OPENING = frozenset(
    ("if", "for", "block", "with", "macro", "call", "filter", "autoescape", "trans")
)


class _Branches:
    """Where a scan is in the template's Jinja statements: an id per branch of each open one
    (`{% else %}` starts another), so that an element is known to open and close in the same."""

    def __init__(self) -> None:
        self.open: list[tuple[str, int]] = [("", 0)]
        self.count = 0

    @property
    def current(self) -> int:
        return self.open[-1][1]

    def step(self, jinja: str) -> None:
        statement = re.match(r"\{%[-+]?\s*(\w+)", jinja)
        word = statement[1] if statement else ""
        if word == "raw":
            raise ValueError("{% raw %} would hide tags from the inliner")
        if word in _OPENING or (word == "set" and "=" not in jinja):
            self.count += 1
            self.open.append((word, self.count))
        elif word in ("elif", "else"):
            self.count += 1
            self.open[-1] = (self.open[-1][0], self.count)
        elif word.startswith("end"):
            if self.open[-1][0] != word[3:]:
                raise ValueError(f"{jinja!r} closes no {{% {word[3:]} %}}")
            self.open.pop()


class _Scan:
    """The state of `inline` over one source: the open elements, the Jinja branch, the edits."""

    def __init__(self, source: str, sheet: Stylesheet, holds_stylesheet: bool) -> None:
        self.source = source
        self.sheet = sheet
        self.holds_stylesheet = holds_stylesheet
        self.ancestors: list[Element] = []
        self.branches = _Branches()
        self.edits: list[tuple[int, int, str]] = []
        self.kept = False

    def end_tag(self, name: str) -> None:
        if not self.ancestors or self.ancestors[-1].name != name:
            raise ValueError(f"</{name}> closes no open <{name}>")
        # With selectors reading ancestors, which elements are ancestors must not depend on
        # values: an element closes in the Jinja branch it opened in.
        if self.sheet.subjects and self.ancestors[-1].branch != self.branches.current:
            raise ValueError(f"<{name}> opens and closes in different {{% if %}} branches")
        self.ancestors.pop()

    def start_tag(self, tag: Tag) -> int:
        """Writes the tag's style in; where the scan goes on."""
        if tag.name == "style" and self.holds_stylesheet:
            end = _end_tag(self.source, tag).end()
            self.edits.append((tag.start, end, ""))
            return end
        if tag.name in ("style", "script", "link") or any(
            a.name in (MARK, "data-css-inline") for a in tag.attributes
        ):
            raise ValueError(f"<{tag.name}> here: css_inline would treat it apart")
        element = Element(tag.name, tag.literal("class") or "", self.branches.current)
        self.edits += _style_edit(
            tag, self.sheet.style(self.ancestors, element, tag.literal("style"))
        )
        if tag.name == "head" and self.holds_stylesheet:
            self.edits.append((tag.end, tag.end, self.sheet.kept))
            self.kept = True
        if tag.name in ("title", "textarea"):  # text up to the end tag, never tags
            return _end_tag(self.source, tag).end()
        if tag.name not in VOID:
            self.ancestors.append(element)
        return tag.end


def _end_tag(source: str, tag: Tag) -> re.Match[str]:
    """The end tag of a tag whose content is text (`<style>`, `<title>`)."""
    closing = re.compile(rf"</{tag.name}\s*>", re.I).search(source, tag.end)
    if closing is None:
        raise ValueError(f"<{tag.name}> is never closed")
    return closing


def _style_blocks(source: str) -> list[str]:
    """What each `<style>` of a template source holds; tags read as `inline` reads them (not
    inside Jinja: a comment may speak of a <style>)."""
    blocks, position = [], 0
    while match := _TOKEN.search(source, position):
        position = match.end()
        if (match["start"] or "").lower() == "style":
            tag = read_tag(source, match["start"], match.start())
            closing = _end_tag(source, tag)
            blocks.append(source[tag.end : closing.start()])
            position = closing.end()
    return blocks


def _style_edit(tag: Tag, style: str | None) -> list[tuple[int, int, str]]:
    """Where the style css_inline gave goes: in place of the tag's own, else before its `>`."""
    if style is None:
        return []
    if _HAS_JINJA.search(style):
        raise ValueError(f"<{tag.name}>'s style reads as Jinja: {style!r}")
    value = '"' + html.escape(style, quote=False).replace('"', "&quot;") + '"'
    own = next((a for a in tag.attributes if a.name == "style"), None)
    if own is None:
        return [(tag.close, tag.close, f" style={value}")]
    start, end = own.span
    return [(start, end, value if start != end else f"={value}")]
