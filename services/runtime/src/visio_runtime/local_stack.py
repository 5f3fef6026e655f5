"""The stack `visio-rdv up` runs, as it records it in `var/stack.json`, so that a command typed
in a second terminal reaches the same broker and database with no setting at all.

`up` writes the file once the stack is ready — mode 0600, since it holds the owner connection
string — and removes it when it stops. A command looks for it in `$VISIO_VAR_DIR`, else in the
`var/` of its working directory or of the nearest directory above that has one, never above the
checkout's root. What the file holds only fills what no setting or flag gave: explicit settings
win, and production, which has no such file, runs as before. Each command says on stderr, in
one line, which stack it talks to and where each part came from."""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any, Literal, TypeVar
from urllib.parse import parse_qs, urlsplit

from pydantic import (
    AliasChoices,
    BaseModel,
    ConfigDict,
    SecretStr,
    ValidationError,
    field_serializer,
)
from pydantic_settings import BaseSettings

from visio_runtime.settings import ServiceSettings

STACK_FILE = "stack.json"
VAR_DIR_SETTING = "VISIO_VAR_DIR"
OWNER_URL_SETTINGS = ("VISIO_DATABASE_URL", "DATABASE_URL")
# Where a value came from, besides a setting's or a flag's own name.
FROM_STACK = "stack"
FROM_DEFAULT = "default"

S = TypeVar("S", bound=BaseSettings)


class LocalStack(BaseModel):
    """What `up` started and how to reach it."""

    model_config = ConfigDict(frozen=True, extra="ignore")

    format: Literal["visio-rdv.stack.v1"] = "visio-rdv.stack.v1"
    pid: int
    # When that process started (Linux clock ticks since boot): a pid reused after the stack
    # died is not taken for it. None where the system does not say.
    process_started: int | None = None
    started_at: datetime
    var_dir: Path
    kafka_bootstrap_servers: str
    broker: Literal["tansu", "external"]
    topic_prefix: str
    # The owner connection (migrations, API keys, ops and consent commands): in the file, never
    # in a repr or a log line.
    database_url: SecretStr
    database_label: str  # the same without secrets, as a person reads it
    http: dict[str, str]  # each process (booking, …, alerts) → its base URL
    # Each process → where its /metrics, /docs and OpenAPI answer (its admin port); a file
    # written before admin ports existed has none.
    admin: dict[str, str] = {}
    graph_url: str
    smtp: str
    # The SMS provider's emulator API (docs/sms.md); none in production mode or older files.
    sms_emulator: str | None = None
    api_key_file: Path
    link_keys_file: Path
    mail_dir: Path
    consent_var_dir: Path
    log_dir: Path

    @field_serializer("database_url", when_used="json")
    def _written_out(self, url: SecretStr) -> str:
        return url.get_secret_value()

    @property
    def path(self) -> Path:
        return self.var_dir / STACK_FILE

    def write(self) -> Path:
        """Write the file whole (readers never see half of it), readable by its owner only."""
        temporary = self.path.with_name(f".{STACK_FILE}.{os.getpid()}")
        descriptor = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(descriptor, "w") as out:
            out.write(self.model_dump_json(indent=2) + "\n")
        temporary.chmod(0o600)  # in case an older file of that name had another mode
        temporary.replace(self.path)
        return self.path

    def remove(self) -> None:
        """Remove the file if it still describes this stack (not one started after it)."""
        current = read_stack_file(self.path)
        if current is not None and (current.pid, current.started_at) == (
            self.pid,
            self.started_at,
        ):
            self.path.unlink(missing_ok=True)

    def running(self) -> bool:
        try:
            os.kill(self.pid, 0)
        except ProcessLookupError:
            return False
        except PermissionError:
            pass  # someone else's process: it exists
        started = process_started(self.pid)
        return self.process_started is None or started is None or started == self.process_started

    def describe(self) -> str:
        since = self.started_at.astimezone().strftime("%Y-%m-%d %H:%M")
        return f"the stack in {self.var_dir} (visio-rdv up, pid {self.pid}, since {since})"


def process_started(pid: int) -> int | None:
    """When a process started, in clock ticks since boot (Linux `/proc/<pid>/stat`, field 22);
    None where /proc does not say."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    # Field 2, the command name, is in parentheses and may hold spaces: count after it.
    fields = stat.rpartition(")")[2].split()
    return int(fields[19]) if len(fields) > 19 else None


def read_stack_file(path: Path) -> LocalStack | None:
    try:
        return LocalStack.model_validate_json(path.read_bytes())
    except (OSError, ValidationError):
        return None


def checkout_root(start: Path | None = None) -> Path | None:
    """The nearest directory at or above `start` that holds the workspace (`pyproject.toml`
    beside `uv.lock`), or None outside a checkout."""
    here = (start or Path.cwd()).resolve()
    for directory in (here, *here.parents):
        if (directory / "pyproject.toml").is_file() and (directory / "uv.lock").is_file():
            return directory
    return None


def default_var_dir(start: Path | None = None) -> Path:
    """`var/` at the checkout's root, wherever in the checkout a command runs; outside a
    checkout, `var/` of the working directory."""
    root = checkout_root(start)
    return root / "var" if root is not None else Path("var")


@dataclass(frozen=True)
class Lookup:
    """The running stack a command found, or why it found none."""

    stack: LocalStack | None
    why_not: str = ""


def path_base(lookup: Lookup | None = None, start: Path | None = None) -> Path:
    """Where a relative path in a setting is taken from, whatever the working directory: the
    checkout the running stack records (the folder holding its `var/`), else the checkout's
    root around `start` (the working directory), else, outside any checkout, that directory."""
    if lookup is not None and lookup.stack is not None:
        return lookup.stack.var_dir.resolve().parent
    here = (start or Path.cwd()).resolve()
    return checkout_root(here) or here


def find_local_stack(start: Path | None = None) -> Lookup:
    here = (start or Path.cwd()).resolve()
    if var := os.environ.get(VAR_DIR_SETTING):
        path = (here / var) / STACK_FILE
        if not path.is_file():
            return Lookup(None, f"none recorded in {VAR_DIR_SETTING} ({path.parent})")
    else:
        found = _stack_file_above(here)
        if found is None:
            return Lookup(None, f"no var/{STACK_FILE} in {here} or above")
        path = found
    stack = read_stack_file(path)
    if stack is None:
        return Lookup(None, f"{path} is not a stack file this version reads")
    if not stack.running():
        return Lookup(None, f"the stack recorded in {path} has stopped (pid {stack.pid} is gone)")
    return Lookup(stack)


def _stack_file_above(here: Path) -> Path | None:
    root = checkout_root(here)
    # Never the filesystem's root: its var/ is the system's.
    for directory in (here, *here.parents)[:-1]:
        candidate = directory / "var" / STACK_FILE
        if candidate.is_file():
            return candidate
        if directory == root:
            break
    return None


# --- Settings: the stack fills what nothing else gave ----------------------------------------


def fill_unset(settings: S, values: Mapping[str, Any]) -> tuple[S, frozenset[str]]:
    """`settings` with `values` for the fields no source (environment, arguments) set, and the
    names of the fields filled that way."""
    given_fields = settings.model_fields_set
    missing = {name: value for name, value in values.items() if name not in given_fields}
    if not missing:
        return settings, frozenset()
    given = {name: getattr(settings, name) for name in given_fields}
    return type(settings)(**given, **missing), frozenset(missing)


def fill_from_stack(settings: S, lookup: Lookup, **fields: str) -> tuple[S, frozenset[str]]:
    """`settings` with the running stack's broker and topic prefix, and each of `fields` (a
    field of the settings → the stack's attribute that fills it), for whatever no source set;
    unchanged without a running stack."""
    stack = lookup.stack
    if stack is None:
        return settings, frozenset()
    values = {
        "kafka_bootstrap_servers": stack.kafka_bootstrap_servers,
        "topic_prefix": stack.topic_prefix,
        **{field: getattr(stack, attribute) for field, attribute in fields.items()},
    }
    return fill_unset(settings, values)


def setting_source(settings: BaseSettings, field: str) -> str:
    """The environment variable that gave a field its value, or 'default'."""
    if field not in settings.model_fields_set:
        return FROM_DEFAULT
    alias = type(settings).model_fields[field].validation_alias
    if isinstance(alias, AliasChoices):
        names = [str(choice) for choice in alias.choices]
    elif isinstance(alias, str):
        names = [alias]
    else:
        names = [f"{settings.model_config.get('env_prefix', '')}{field}"]
    present = {name.upper() for name in os.environ}
    return next((name.upper() for name in names if name.upper() in present), "a setting")


def owner_database_url(flag: str | None, lookup: Lookup) -> tuple[str | None, str]:
    """The owner connection a command uses, and where it came from: `--database-url`, else
    VISIO_DATABASE_URL or DATABASE_URL, else the running stack's."""
    if flag:
        return flag, "--database-url"
    for name in OWNER_URL_SETTINGS:
        if os.environ.get(name):
            return os.environ[name], name
    if lookup.stack is not None:
        return lookup.stack.database_url.get_secret_value(), FROM_STACK
    return None, FROM_DEFAULT


def owner_url_argument(parser: argparse.ArgumentParser) -> None:
    """`--database-url`, read when the command runs (not when the parser is built)."""
    parser.add_argument(
        "--database-url",
        help="owner connection string (default: VISIO_DATABASE_URL or DATABASE_URL, else the "
        "stack `visio-rdv up` runs in this checkout)",
    )


def command_owner_url(flag: str | None, command: str) -> str | None:
    """The owner connection a command uses (`owner_database_url`), named on stderr; None when
    there is none, with what to do about it on stderr."""
    lookup = find_local_stack()
    owner, source = owner_database_url(flag, lookup)
    if owner is None:
        print(
            f"{command}: give --database-url, set VISIO_DATABASE_URL or DATABASE_URL, or start "
            "the stack in this checkout (uv run visio-rdv up)",
            file=sys.stderr,
        )
        return None
    announce(lookup, [database_part(owner, source, lookup)])
    return owner


# --- The line each command prints ----------------------------------------------------------


@dataclass(frozen=True)
class Part:
    """One thing a command talks to, as its line names it, and where its value came from."""

    what: str
    sources: tuple[str, ...]  # FROM_STACK, FROM_DEFAULT, or the settings or flags that gave it


def sources_of(settings: BaseSettings, filled: Iterable[str], *fields: str) -> tuple[str, ...]:
    taken = set(filled)
    found = [FROM_STACK if field in taken else setting_source(settings, field) for field in fields]
    return tuple(dict.fromkeys(found))


def kafka_part(settings: ServiceSettings, filled: Iterable[str]) -> Part:
    return Part(
        f"Kafka {settings.kafka_bootstrap_servers}, topics {settings.topic_prefix}.*",
        sources_of(settings, filled, "kafka_bootstrap_servers", "topic_prefix"),
    )


def database_part(url: str, source: str, lookup: Lookup) -> Part:
    stack = lookup.stack
    label = stack.database_label if source == FROM_STACK and stack else database_label(url)
    return Part(f"PostgreSQL {label}", (source,))


def database_label(url: str) -> str:
    """A connection string as a person may read it on a screen: no password."""
    parts = urlsplit(url)
    database = parts.path.lstrip("/") or "(default database)"
    user = f"{parts.username}@" if parts.username else ""
    if parts.hostname:
        port = f":{parts.port}" if parts.port else ""
        return f"{user}{parts.hostname}{port}/{database}"
    socket = parse_qs(parts.query).get("host", ["the default socket"])[0]
    return f"{user}{database} on {socket}"


def reach_line(lookup: Lookup, parts: Iterable[Part], prog: str = "visio-rdv") -> str:
    """`visio-rdv: the stack in /…/var (visio-rdv up, pid 4242, since …) — Kafka …; PostgreSQL
    …`, each part that did not come from the stack tagged with what it came from."""
    shown = [
        part.what
        if part.sources == (FROM_STACK,)
        else f"{part.what} [{', '.join(s for s in part.sources if s != FROM_STACK)}]"
        for part in parts
    ]
    every_part_set = all(FROM_DEFAULT not in part.sources for part in parts)
    if lookup.stack is not None:
        head = lookup.stack.describe()
    elif every_part_set:
        head = ""  # production: settings say it all
    else:
        head = f"no running stack ({lookup.why_not}; `uv run visio-rdv up` starts one)"
    body = "; ".join(shown)
    return f"{prog}: {head} — {body}" if head else f"{prog}: {body}"


def announce(lookup: Lookup, parts: Iterable[Part]) -> None:
    """Say on stderr which stack a command talks to (stdout stays the command's answer)."""
    print(reach_line(lookup, list(parts)), file=sys.stderr, flush=True)
