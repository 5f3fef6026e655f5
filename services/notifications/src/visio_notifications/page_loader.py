"""The source of each email template as Jinja compiles it: what a page's render did the same way
in every email is done once, as the template is read.

- `{% include "_partial.ext" %}` on a line of its own is replaced by the partial's source (its
  CSS inlined on its own, as it was: `styles`). The page renders the same — the newline after
  the tag went with it (trim_blocks), the partial keeps its own last one, and no partial sets a
  variable — without a template look-up and a new context per partial.
- `{{ w.NAME }}` and `{{ w.NAME | french_spacing }}` (the wording, constant for the process) are
  written in as the render would write them: spaced, and escaped in the HTML templates. A value
  that is not a string, that Jinja could read as its own syntax, or that begins or ends with
  whitespace (trim_blocks and lstrip_blocks would then treat it otherwise) is left to the
  render, as is any other expression.

Together a fifth of composing an email. The golden emails, and css_inline's inlining of every
page rendered from the templates as written, hold the result to what it was."""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from types import ModuleType

from jinja2 import BaseLoader, Environment
from markupsafe import escape

# As every page writes them: the tag on a line of its own.
_INCLUDE = re.compile(r'^\{% include "(?P<name>_\w+\.(?:html|txt))" %\}\n', re.MULTILINE)
_WORDING = re.compile(r"\{\{ w\.(?P<name>[A-Z][A-Z0-9_]*)(?: \| (?P<filter>\w+))? \}\}")
_JINJA_SYNTAX = re.compile(r"\{[{%#]|[}%#]\}")


class PageLoader(BaseLoader):
    """`loader`'s templates, partials and wording written in (module docstring); `filters`
    are those a wording constant may go through."""

    def __init__(
        self, loader: BaseLoader, wording: ModuleType, filters: Mapping[str, Callable[[str], str]]
    ) -> None:
        self.loader = loader
        self.wording = wording
        self.filters = filters

    def get_source(
        self, environment: Environment, template: str
    ) -> tuple[str, str | None, Callable[[], bool] | None]:
        source, filename, uptodate = self.loader.get_source(environment, template)

        def partial(found: re.Match[str]) -> str:
            return self.get_source(environment, found["name"])[0]

        source = _INCLUDE.sub(partial, source)
        html = template.endswith(".html")
        source = _WORDING.sub(lambda found: self._written(found, html=html), source)
        return source, filename, uptodate

    def _written(self, found: re.Match[str], *, html: bool) -> str:
        value = getattr(self.wording, found["name"], None)
        apply = self.filters.get(found["filter"]) if found["filter"] else str
        if not isinstance(value, str) or apply is None:
            return found[0]
        text = apply(value)
        written = str(escape(text)) if html else str(text)
        if not written or written != written.strip() or _JINJA_SYNTAX.search(written):
            return found[0]
        return written

    def list_templates(self) -> list[str]:
        return self.loader.list_templates()
