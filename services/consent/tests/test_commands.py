"""`visio-rdv consent …` as a person runs it: settings from the environment, output on stdout,
exit statuses that scripts can rely on."""

from __future__ import annotations

import asyncio
import getpass
import json
import re
from collections.abc import Callable
from typing import TYPE_CHECKING

import asyncpg
import pytest
from visio_consent.commands import main
from visio_consent.handlers import record_consent
from visio_consent.settings import ConsentSettings
from visio_runtime.api_keys import hash_key
from visio_shared import AppointmentRequested, Topics

if TYPE_CHECKING:
    from conftest import Database, FakePublisher, Forger

MakeEvent = Callable[..., AppointmentRequested]


async def run(*argv: str) -> int:
    # The commands run their own event loop, as they do from a terminal.
    return await asyncio.to_thread(main, list(argv))


async def test_verify_checkpoint_and_verify_against_the_topic(
    database: Database,
    environment: ConsentSettings,
    pool: asyncpg.Pool,
    publisher: FakePublisher,
    forger: Forger,
    make_event: MakeEvent,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    dsn = ("--dsn", database.service_dsn)
    await record_consent(
        make_event(), pool, publisher, environment, Topics(environment.topic_prefix)
    )

    # Records and no checkpoint: nothing stands behind them yet.
    assert await run("consent", "verify", *dsn) == 1
    assert capsys.readouterr().out.startswith("BROKEN at seq 1: no_checkpoint")

    assert await run("consent", "checkpoint", *dsn) == 0
    line = json.loads(capsys.readouterr().out)
    assert (line["seq"], line["format"]) == (2, "visio-rdv.consent-checkpoint.v1")
    dev_key = environment.dev_signing_key_path
    assert dev_key.read_text().startswith("# DEVELOPMENT ONLY.")
    assert oct(dev_key.stat().st_mode & 0o777) == "0o600"

    assert await run("consent", "verify", *dsn) == 0
    assert re.match(r"OK 2 records, head [0-9a-f]{64}\n", capsys.readouterr().out)

    await forger.rewrite(1, {"channel": "kafka"})

    # With the checkpoint file lost, the copy on the topic still catches the rewrite, and
    # the file alone (--no-topic) has nothing left to stand on.
    lost = ("--checkpoints", str(environment.var_dir / "gone.jsonl"))
    assert await run("consent", "verify", *dsn, *lost, "--json") == 1
    report = json.loads(capsys.readouterr().out)
    assert (report["ok"], report["broken_seq"], report["problem"]) == (False, 2, "altered")
    assert await run("consent", "verify", *dsn, *lost, "--no-topic", "--json") == 1
    assert json.loads(capsys.readouterr().out)["problem"] == "no_checkpoint"

    missing = database.service_dsn.rsplit("/", 1)[0] + "/no_such_database"
    assert await run("consent", "verify", "--dsn", missing) == 2
    assert "cannot reach" in capsys.readouterr().err
    # The topic is read by default: a broker out of reach is no verdict either.
    monkeypatch.setenv("CONSENT_KAFKA_BOOTSTRAP_SERVERS", "127.0.0.1:1")
    assert await run("consent", "verify", *dsn) == 2
    assert "cannot reach what it needs: KafkaConnectionError" in capsys.readouterr().err


async def test_access_command(
    database: Database,
    environment: ConsentSettings,
    pool: asyncpg.Pool,
    publisher: FakePublisher,
    make_event: MakeEvent,
    capsys: pytest.CaptureFixture[str],
) -> None:
    event = make_event(timezone="Indian/Reunion")
    await record_consent(event, pool, publisher, environment, Topics(environment.topic_prefix))
    dsn = ("--dsn", database.service_dsn)

    assert await run("consent", "access", *dsn, "--email", event.user.email) == 0
    text = capsys.readouterr().out
    assert "Le samedi 1er mars 2025 à 13 h 15 (heure de La Réunion)" in text
    assert await run("consent", "access", *dsn, "--email", event.user.email, "--json") == 0
    export = json.loads(capsys.readouterr().out)
    assert [record["seq"] for record in export["records"]] == [1, 2]
    # Each export is recorded with who asked, and shown in the next one.
    assert [(r["requested_by"], r["channel"]) for r in export["access_requests"]][-1] == (
        getpass.getuser(),
        "command",
    )
    assert await run("consent", "access", *dsn, "--email", event.user.email,
                     "--requested-by", "DPO, courrier du 3 mars") == 0  # fmt: skip
    assert "par « DPO, courrier du 3 mars », agent de la Caf" in capsys.readouterr().out


async def test_api_key_create(
    database: Database, superuser: asyncpg.Connection, capsys: pytest.CaptureFixture[str]
) -> None:
    argv = ["--database-url", database.owner_dsn, "--name", "caf.fr"]
    scopes = ["--scope", "consent:read", "--scope", "consent:withdraw"]

    assert await run("consent", "api-key", "create", *argv, *scopes) == 0

    key = capsys.readouterr().out.strip()
    row = await superuser.fetchrow(
        "SELECT name, scopes FROM api_keys WHERE key_hash = $1", hash_key(key)
    )
    assert (row["name"], row["scopes"]) == ("caf.fr", ["consent:read", "consent:withdraw"])
    with pytest.raises(SystemExit):  # argparse refuses a scope that does not exist
        await run("consent", "api-key", "create", *argv, "--scope", "appointments:write")

    # Listed without its secret, revoked at once: the same commands as booking's.
    url = ["--database-url", database.owner_dsn]
    assert await run("consent", "api-key", "create", *argv, "--scope", "consent:checkpoint") == 0
    capsys.readouterr()
    assert await run("consent", "api-key", "list", *url) == 0
    listing = capsys.readouterr().out
    assert "consent:read consent:withdraw" in listing and "consent:checkpoint" in listing
    assert key not in listing and listing.count("active") == 2
    first_id = await superuser.fetchval(
        "SELECT id FROM api_keys WHERE key_hash = $1", hash_key(key)
    )
    revoke = ["consent", "api-key", "revoke", "--name", "caf.fr", "--id", str(first_id), *url]
    assert await run(*revoke) == 0
    assert f"revoked 1 key {first_id} of 'caf.fr'" in capsys.readouterr().out
    assert await run(*revoke) == 1  # nothing left to revoke under that id
    assert (
        await superuser.fetchval(
            "SELECT count(*) FROM api_keys WHERE revoked_at IS NULL AND name = 'caf.fr'"
        )
        == 1
    )


async def test_bench_prints_appends_per_second(
    database: Database, capsys: pytest.CaptureFixture[str]
) -> None:
    admin = database.owner_dsn.rsplit("/", 1)[0] + "/postgres"

    assert (
        await run("consent", "bench", "--database-url", admin, "--records", "300", "--batch", "50")
        == 0
    )

    out = capsys.readouterr().out
    assert re.search(r"300 records appended in [\d.]+ s — \d+ appends/s \(batches of 50", out)
    assert "OK 300 records, head" in out
    conn = await asyncpg.connect(admin)
    try:
        left = await conn.fetchval(
            "SELECT count(*) FROM pg_database WHERE datname LIKE 'visio_consent_bench_%'"
        )
    finally:
        await conn.close()
    assert left == 0  # the scratch database is gone
