"""The settings reference (docs/settings.md), generated from the settings models themselves.

Every setting of every process: its environment variable, its type, its default and what it is
for. What it is for comes from the field's `description`, else from the comment lines written
just above the field in its class — the comment a developer reads is the one an operator reads.
`tests/test_settings_reference.py` fails when the page and the models drift apart.

    uv run python -m visio_deploy.settings_reference          # rewrite docs/settings.md
    uv run python -m visio_deploy.settings_reference --check  # exit 1 if it is out of date
"""

from __future__ import annotations

import argparse
import ast
import inspect
import sys
import textwrap
from collections.abc import Iterator
from dataclasses import dataclass
from functools import cache
from pathlib import Path

from pydantic import BaseModel, SecretStr
from pydantic.fields import FieldInfo
from pydantic_core import PydanticUndefined
from pydantic_settings import BaseSettings
from visio_runtime.settings import ServiceSettings

PAGE = Path(__file__).resolve().parents[3] / "docs" / "settings.md"


@dataclass(frozen=True)
class Process:
    title: str
    what: str
    settings: type[BaseSettings]


def processes() -> list[Process]:
    """The processes whose settings are documented, in the order a reader meets them."""
    from visio_alerts.settings import AlertsSettings
    from visio_booking.settings import BookingSettings
    from visio_consent.settings import ConsentSettings
    from visio_fakes.graph_emulator.settings import EmulatorSettings
    from visio_fakes.smtp_sink import SmtpSinkSettings
    from visio_meetings.settings import MeetingsSettings
    from visio_notifications.settings import NotificationsSettings

    from visio_deploy.acls import AclSettings
    from visio_deploy.ops.settings import OpsSettings
    from visio_deploy.up import UpSettings

    return [
        Process("booking", "the front door: HTTP API, partner topics, outbox", BookingSettings),
        Process("meetings", "Teams meetings through Microsoft Graph", MeetingsSettings),
        Process("notifications", "the person's emails", NotificationsSettings),
        Process("consent", "the CGU ledger and the right of access", ConsentSettings),
        Process("alerts", "emails to the Caf's team", AlertsSettings),
        Process("visio-rdv (ops, proof, consent commands)", "the command line", OpsSettings),
        Process("visio-rdv ops acls", "the Kafka ACLs, from the AsyncAPI document", AclSettings),
        Process("visio-rdv up", "the local stack", UpSettings),
        Process("Graph emulator (local only)", "stands in for Microsoft 365", EmulatorSettings),
        Process("SMTP sink (local only)", "stands in for the mail relay", SmtpSinkSettings),
    ]


def render() -> str:
    out = [
        "# Settings reference",
        "",
        "Generated from the settings models by `uv run python -m visio_deploy.settings_reference`;",
        "do not edit by hand (a test fails when this page and the code differ). Each process reads",
        "its settings from environment variables with its own prefix; a service's console script",
        "also takes `--database-url` for its migrations.",
        "",
    ]
    common = ServiceSettings.model_fields
    out += [
        "## Every service",
        "",
        "Booking, meetings, notifications, consent and alerts each read these with their own",
        "prefix (`BOOKING_`, `MEETINGS_`, `NOTIFICATIONS_`, `CONSENT_`, `ALERTS_`), so one",
        "environment can hold all of them side by side; the `visio-rdv` command reads them",
        "with `VISIO_`. A service's own default, where it differs, is in its section.",
        "",
        *_table(ServiceSettings, common, prefix="<PREFIX>_"),
    ]
    for process in processes():
        own = {
            name: field
            for name, field in process.settings.model_fields.items()
            if name not in common or _default(field) != _default(common[name])
        }
        out += [f"## {process.title}", "", f"{process.what[0].upper()}{process.what[1:]}.", ""]
        out += _table(process.settings, own)
    return "\n".join(out)


def _table(
    settings: type[BaseSettings], fields: dict[str, FieldInfo], prefix: str | None = None
) -> list[str]:
    rows = ["| variable | type | default | what it is for |", "|---|---|---|---|"]
    for name, field in fields.items():
        variable = f"{prefix}{name.upper()}" if prefix else _variable(settings, name, field)
        rows.append(
            f"| `{variable}` | {_cell(_type(field))} | {_cell(_default(field))} "
            f"| {_cell(_meaning(settings, name, field))} |"
        )
    return [*rows, ""]


def _variable(settings: type[BaseSettings], name: str, field: FieldInfo) -> str:
    alias = field.validation_alias if isinstance(field.validation_alias, str) else field.alias
    if alias:
        return alias.upper()
    return f"{settings.model_config.get('env_prefix', '')}{name}".upper()


def _type(field: FieldInfo) -> str:
    annotation = field.annotation
    text = getattr(annotation, "__name__", None) if annotation is not None else None
    if text is None or "[" in str(annotation) or "|" in str(annotation):
        text = str(annotation).replace("typing.", "").replace("pathlib.", "")
        text = text.replace("pydantic.types.", "").replace("NoneType", "None")
    return f"`{text}`"


def _default(field: FieldInfo) -> str:
    if field.is_required():
        return "**required**"
    value = field.default_factory() if field.default_factory else field.default  # type: ignore[call-arg]
    if value is PydanticUndefined:
        return "**required**"
    if isinstance(value, SecretStr):
        return "*(a development value)*" if value.get_secret_value() else "*(empty)*"
    if isinstance(value, BaseModel):
        return "*(see the model)*"
    if isinstance(value, Path):
        # A default computed from where the checkout is (up's var/) is shown relative to it,
        # so the page reads the same in every checkout.
        root = PAGE.parents[1]
        value = (
            str(value.relative_to(root))
            if value.is_absolute() and value.is_relative_to(root)
            else str(value)
        )
    text = repr(value)
    return f"`{text}`" if len(text) <= 60 else f"`{text[:57]}…`"


def _meaning(settings: type[BaseSettings], name: str, field: FieldInfo) -> str:
    """The field's description, else the comment above it, in the class that sets it or, for a
    field a service only gives another default, in the class that declares it."""
    if field.description:
        return " ".join(field.description.split())
    for cls in settings.__mro__:
        if name in getattr(cls, "__annotations__", {}):
            comment = _comments(cls).get(name)
            if comment:
                return comment
            inherited = getattr(cls, "model_fields", {}).get(name)
            if inherited is not None and inherited.description:
                return " ".join(inherited.description.split())
    return "(undocumented)"


@cache
def _comments(cls: type) -> dict[str, str]:
    """The comment block right above each field of `cls`, and a trailing comment on its line."""
    try:
        source = textwrap.dedent(inspect.getsource(cls))
    except (OSError, TypeError):
        return {}
    lines = source.splitlines()
    found: dict[str, str] = {}
    for node in _fields(ast.parse(source)):
        first = node.lineno - 1
        above: list[str] = []
        row = first - 1
        while row >= 0 and lines[row].strip().startswith("#"):
            above.insert(0, lines[row].strip().lstrip("#").strip())
            row -= 1
        trailing = lines[first].split("#", 1)[1].strip() if "  # " in lines[first] else ""
        text = " ".join(part for part in [*above, trailing] if part)
        if text:
            found[node.target.id] = text  # type: ignore[union-attr]
    return found


def _fields(tree: ast.Module) -> Iterator[ast.AnnAssign]:
    for cls in tree.body:
        if isinstance(cls, ast.ClassDef):
            for node in cls.body:
                if isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name):
                    yield node


def _cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Write (or check) docs/settings.md.")
    parser.add_argument("--check", action="store_true", help="exit 1 if the page is out of date")
    args = parser.parse_args(argv)
    page = render() + "\n"
    if args.check:
        current = PAGE.read_text(encoding="utf-8") if PAGE.exists() else ""
        if current != page:
            print(f"{PAGE} is out of date: run python -m visio_deploy.settings_reference")
            return 1
        return 0
    PAGE.write_text(page, encoding="utf-8")
    print(f"wrote {PAGE}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
