"""The stack file `visio-rdv up` writes and the commands of a second terminal read: found from
any directory below it and never above the checkout, readable by its owner only, ignored once
its process is gone, and only ever filling what settings and flags leave unset — each command
saying which stack it talks to, without a password."""

from __future__ import annotations

import os
import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path

import pytest
from pydantic_settings import SettingsConfigDict
from visio_runtime.local_stack import (
    STACK_FILE,
    VAR_DIR_SETTING,
    LocalStack,
    Lookup,
    database_label,
    database_part,
    default_var_dir,
    fill_unset,
    find_local_stack,
    kafka_part,
    owner_database_url,
    process_started,
    reach_line,
)
from visio_runtime.settings import ServiceSettings

OWNER = "postgresql://owner:s3cret-pw@db.example:5433/visio_e2e"


class ProbeSettings(ServiceSettings):
    model_config = SettingsConfigDict(env_prefix="PROBE_", extra="ignore")


def a_stack(var: Path, pid: int | None = None, **changes: object) -> LocalStack:
    pid = os.getpid() if pid is None else pid
    fields: dict[str, object] = {
        "pid": pid,
        "process_started": process_started(pid),
        "started_at": datetime(2026, 12, 6, 9, 30, tzinfo=UTC),
        "var_dir": var,
        "kafka_bootstrap_servers": "127.0.0.1:19092",
        "broker": "tansu",
        "topic_prefix": "mine",
        "database_url": OWNER,
        "database_label": database_label(OWNER),
        "http": {"booking": "http://127.0.0.1:18080"},
        "graph_url": "https://127.0.0.1:18443",
        "smtp": "127.0.0.1:11025",
        "api_key_file": var / "dev-api-key",
        "link_keys_file": var / "link-keys",
        "mail_dir": var / "mail",
        "consent_var_dir": var / "consent",
        "log_dir": var / "log",
    }
    return LocalStack.model_validate({**fields, **changes})


@pytest.fixture
def clean(monkeypatch: pytest.MonkeyPatch) -> pytest.MonkeyPatch:
    """No setting that would say where the stack or the database is."""
    for name in list(os.environ):
        if name.startswith(("VISIO_", "PROBE_")) or name == "DATABASE_URL":
            monkeypatch.delenv(name)
    return monkeypatch


def test_the_stack_file_is_found_from_any_directory_below_it_and_only_its_owner_reads_it(
    tmp_path: Path, clean: pytest.MonkeyPatch
) -> None:
    stack = a_stack(tmp_path / "checkout" / "var")
    stack.var_dir.mkdir(parents=True)
    stack.write()
    deep = tmp_path / "checkout" / "services" / "booking" / "src"
    deep.mkdir(parents=True)
    clean.chdir(deep)

    found = find_local_stack()

    assert found.stack == stack
    assert (stack.path.stat().st_mode & 0o777) == 0o600
    assert not list(stack.var_dir.glob(f".{STACK_FILE}*")), "no temporary file left behind"


def test_the_search_stops_at_the_checkout_root(tmp_path: Path, clean: pytest.MonkeyPatch) -> None:
    outside = a_stack(tmp_path / "var")
    outside.var_dir.mkdir()
    outside.write()
    checkout = tmp_path / "checkout"
    (checkout / "deploy").mkdir(parents=True)
    (checkout / "pyproject.toml").write_text("[tool.uv.workspace]\n")
    (checkout / "uv.lock").write_text("")
    clean.chdir(checkout / "deploy")

    found = find_local_stack()

    assert found.stack is None
    assert found.why_not == f"no var/{STACK_FILE} in {checkout / 'deploy'} or above"
    assert default_var_dir() == checkout / "var"  # where `up` would record its own


def test_visio_var_dir_says_where_to_look(tmp_path: Path, clean: pytest.MonkeyPatch) -> None:
    stack = a_stack(tmp_path / "elsewhere")
    stack.var_dir.mkdir()
    stack.write()
    clean.chdir(tmp_path)

    clean.setenv(VAR_DIR_SETTING, "elsewhere")
    assert find_local_stack().stack == stack
    clean.setenv(VAR_DIR_SETTING, str(tmp_path / "empty"))
    assert find_local_stack().why_not.startswith(f"none recorded in {VAR_DIR_SETTING}")


def test_a_stack_whose_process_is_gone_is_not_used(
    tmp_path: Path, clean: pytest.MonkeyPatch
) -> None:
    ended = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], check=True,
                           capture_output=True, text=True)  # fmt: skip
    stack = a_stack(tmp_path / "var", pid=int(ended.stdout))
    stack.var_dir.mkdir()
    stack.write()
    clean.chdir(tmp_path)

    found = find_local_stack()

    assert found.stack is None
    assert "has stopped" in found.why_not and str(stack.pid) in found.why_not


def test_a_pid_reused_by_another_process_is_not_taken_for_the_stack(tmp_path: Path) -> None:
    started = process_started(os.getpid())
    if started is None:
        pytest.fail("this test runs on Linux, where /proc says when a process started")
    assert a_stack(tmp_path).running()
    assert not a_stack(tmp_path, process_started=started + 1).running()


def test_a_stack_removes_its_own_file_and_no_other(tmp_path: Path) -> None:
    first = a_stack(tmp_path)
    first.write()
    second = a_stack(tmp_path, started_at=datetime(2026, 12, 6, 10, 0, tzinfo=UTC))
    second.write()  # a later `up` on the same var/

    first.remove()
    assert second.path.exists()
    second.remove()
    assert not second.path.exists()


def test_settings_win_over_the_stack_and_the_line_says_where_each_part_came_from(
    tmp_path: Path, clean: pytest.MonkeyPatch
) -> None:
    stack = a_stack(tmp_path)
    clean.setenv("PROBE_TOPIC_PREFIX", "theirs")

    settings, filled = fill_unset(
        ProbeSettings(),
        {"kafka_bootstrap_servers": stack.kafka_bootstrap_servers, "topic_prefix": "mine"},
    )

    assert settings.kafka_bootstrap_servers == "127.0.0.1:19092"
    assert settings.topic_prefix == "theirs"
    assert filled == {"kafka_bootstrap_servers"}
    line = reach_line(Lookup(stack), [kafka_part(settings, filled)])
    assert line.startswith(f"visio-rdv: the stack in {tmp_path} (visio-rdv up, pid ")
    assert line.endswith("Kafka 127.0.0.1:19092, topics theirs.* [PROBE_TOPIC_PREFIX]")


def test_without_a_stack_the_line_says_so_unless_settings_name_every_part(
    clean: pytest.MonkeyPatch,
) -> None:
    none = Lookup(None, "no var/stack.json in /srv or above")
    defaults = kafka_part(ProbeSettings(), ())
    assert reach_line(none, [defaults]) == (
        "visio-rdv: no running stack (no var/stack.json in /srv or above; `uv run visio-rdv "
        "up` starts one) — Kafka 127.0.0.1:9092, topics visio-rdv.* [default]"
    )
    # Production: every part set, nothing about a local stack.
    clean.setenv("PROBE_KAFKA_BOOTSTRAP_SERVERS", "kafka-1:9093")
    clean.setenv("PROBE_TOPIC_PREFIX", "visio-rdv")
    assert reach_line(none, [kafka_part(ProbeSettings(), ())]) == (
        "visio-rdv: Kafka kafka-1:9093, topics visio-rdv.* "
        "[PROBE_KAFKA_BOOTSTRAP_SERVERS, PROBE_TOPIC_PREFIX]"
    )


def test_the_owner_connection_comes_from_the_flag_then_the_settings_then_the_stack(
    tmp_path: Path, clean: pytest.MonkeyPatch
) -> None:
    found = Lookup(a_stack(tmp_path))
    assert owner_database_url(None, found) == (OWNER, "stack")
    assert owner_database_url(None, Lookup(None, "none")) == (None, "default")
    clean.setenv("DATABASE_URL", "postgresql://postgres@127.0.0.1:5432/postgres")
    assert owner_database_url(None, found)[1] == "DATABASE_URL"
    clean.setenv("VISIO_DATABASE_URL", "postgresql://visio@127.0.0.1:5432/visio")
    assert owner_database_url(None, found)[1] == "VISIO_DATABASE_URL"
    assert owner_database_url("postgresql://x@h/d", found) == (
        "postgresql://x@h/d",
        "--database-url",
    )


def test_no_password_reaches_the_line(tmp_path: Path) -> None:
    stack = a_stack(tmp_path)
    for source in ("stack", "VISIO_DATABASE_URL"):
        line = reach_line(Lookup(stack), [database_part(OWNER, source, Lookup(stack))])
        assert "s3cret" not in line
        assert "PostgreSQL owner@db.example:5433/visio_e2e" in line
    embedded = "postgresql://postgres:@/postgres?host=/tmp/pg-socket"
    assert database_label(embedded) == "postgres@postgres on /tmp/pg-socket"
