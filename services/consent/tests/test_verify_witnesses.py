"""`visio-rdv consent verify` stands on signatures, on a real PostgreSQL and a real broker: each
thing it requires is broken on purpose and seen to fail, with its reason; what it only reports
(a topic emptied by a broker restart) is seen not to fail; and it reads the same files from any
directory (docs/consent-ledger.md)."""

from __future__ import annotations

import asyncio
import json
import os
import uuid
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import asyncpg
import pytest
from faststream.kafka import KafkaBroker
from visio_consent.checkpoints import Checkpointer, append_to_file, read_file, read_topic
from visio_consent.commands import main
from visio_consent.handlers import record_consent
from visio_consent.settings import ConsentSettings
from visio_consent.signing import load_signing_key
from visio_fakes.processes import free_port, stop
from visio_fakes.tansu import start_tansu
from visio_runtime.kafka import ensure_topics, make_broker
from visio_runtime.local_stack import VAR_DIR_SETTING, LocalStack, process_started
from visio_shared import AppointmentRequested, Topics

if TYPE_CHECKING:
    from conftest import Database, Forger

MakeEvent = Callable[..., AppointmentRequested]


class Ledger:
    """The ledger under test, driven as the service drives it, checked as an operator does."""

    def __init__(
        self,
        database: Database,
        settings: ConsentSettings,
        pool: asyncpg.Pool,
        broker: KafkaBroker,
        make_event: MakeEvent,
        capsys: pytest.CaptureFixture[str],
    ) -> None:
        self.dsn = ("--dsn", database.service_dsn)
        self.capsys = capsys
        self.settings = settings
        self.pool = pool
        self.broker = broker
        self.make_event = make_event

    async def record(self, appointments: int = 1) -> None:
        """Two records per appointment, each append announced by ConsentRecorded."""
        for _ in range(appointments):
            await record_consent(
                self.make_event(),
                self.pool,
                self.broker,
                self.settings,
                Topics(self.settings.topic_prefix),
            )

    async def checkpoint(self) -> int:
        """`consent checkpoint`; its output is left for the test to read."""
        return await run("consent", "checkpoint", *self.dsn)

    async def sign(self) -> None:
        """`consent checkpoint`, which must succeed; its output is dropped."""
        assert await self.checkpoint() == 0
        self.capsys.readouterr()

    async def verify(self, *flags: str) -> dict[str, Any]:
        """The report, its exit status, and the line on stderr saying what it read."""
        status = await run("consent", "verify", *self.dsn, "--json", *flags)
        said = self.capsys.readouterr()
        return {**json.loads(said.out), "exit_status": status, "stderr": said.err}


async def run(*argv: str) -> int:
    # The commands run their own event loop, as they do from a terminal.
    return await asyncio.to_thread(main, list(argv))


@pytest.fixture
def ledger(
    database: Database,
    environment: ConsentSettings,
    pool: asyncpg.Pool,
    broker: KafkaBroker,
    make_event: MakeEvent,
    capsys: pytest.CaptureFixture[str],
) -> Ledger:
    return Ledger(database, environment, pool, broker, make_event, capsys)


async def test_an_empty_ledger_verifies_and_a_non_empty_one_needs_a_checkpoint(
    ledger: Ledger,
) -> None:
    empty = await ledger.verify()
    assert (empty["ok"], empty["count"], empty["exit_status"]) == (True, 0, 0)

    await ledger.record()

    unsigned = await ledger.verify()
    assert (unsigned["ok"], unsigned["problem"], unsigned["exit_status"]) == (
        False,
        "no_checkpoint",
        1,
    )
    assert "no trusted checkpoint signs this ledger of 2 records" in unsigned["reason"]

    await ledger.sign()
    signed = await ledger.verify()
    assert (signed["ok"], signed["signed_seq"], signed["unsigned"], signed["checkpoints"]) == (
        True,
        2,
        0,
        1,
    )


async def test_an_unsigned_tail_older_than_the_bound_fails_and_a_signed_quiet_one_passes(
    ledger: Ledger, monkeypatch: pytest.MonkeyPatch
) -> None:
    await ledger.record()
    await ledger.sign()
    await ledger.record(2)

    fresh = await ledger.verify()  # within the default bound (900 s)
    assert (fresh["ok"], fresh["signed_seq"], fresh["unsigned"]) == (True, 2, 4)
    assert fresh["announced_checked"] == 4  # each matched its ConsentRecorded

    monkeypatch.setenv("CONSENT_MAX_UNSIGNED_AGE_S", "0")  # every unsigned record is too old
    stale = await ledger.verify()
    assert (stale["ok"], stale["problem"], stale["broken_seq"], stale["exit_status"]) == (
        False,
        "stale_tail",
        3,
        1,
    )
    assert "4 record(s) after the newest checkpoint (seq 2" in stale["reason"]
    assert "beyond the bound of 0 s" in stale["reason"]

    # Signed to its head, the same ledger is quiet: no age matters any more.
    await ledger.sign()
    quiet = await ledger.verify()
    assert (quiet["ok"], quiet["signed_seq"], quiet["unsigned"]) == (True, 6, 0)


async def test_a_line_that_conflicts_between_file_and_topic_fails(ledger: Ledger) -> None:
    await ledger.record()
    await ledger.sign()
    # Someone with the key writes another head for seq 2 into the file; the topic's copy
    # still holds the true one.
    key = load_signing_key(ledger.settings, create=False)
    assert key is not None
    append_to_file(ledger.settings.checkpoints_path, key.sign(2, "ab" * 32))

    report = await ledger.verify()

    assert (report["ok"], report["problem"], report["broken_seq"], report["exit_status"]) == (
        False,
        "checkpoint_conflict",
        2,
        1,
    )
    assert "sign two different heads for seq 2" in report["reason"]
    assert "the file, signed at" in report["reason"]
    assert "the topic, signed at" in report["reason"]


async def test_a_topic_emptied_by_a_broker_restart_is_reported_not_a_conflict(
    database: Database,
    environment: ConsentSettings,
    pool: asyncpg.Pool,
    make_event: MakeEvent,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """A broker of the test's own, on memory storage as `visio-rdv up` runs tansu: restarted,
    it comes back with no topic at all."""
    port = free_port()
    servers = f"127.0.0.1:{port}"
    monkeypatch.setenv("CONSENT_KAFKA_BOOTSTRAP_SERVERS", servers)
    settings = environment.model_copy(update={"kafka_bootstrap_servers": servers})
    process = start_tansu("127.0.0.1", port)
    try:
        topics = Topics(settings.topic_prefix)
        await ensure_topics(settings, [topics.consents, topics.consent_checkpoints])
        publisher = make_broker(settings, client_id="consent-verify-test")
        await publisher.start()
        try:
            ledger = Ledger(database, settings, pool, publisher, make_event, capsys)
            await ledger.record()
            await ledger.sign()
            assert len(await read_topic(settings, topics.consent_checkpoints)) == 1
        finally:
            await publisher.stop()
        stop(process)
        process = start_tansu("127.0.0.1", port)  # memory storage: every topic is gone

        report = await ledger.verify()

        assert (report["ok"], report["exit_status"], report["checkpoints"]) == (True, 0, 1)
        assert any("holds no checkpoint" in note for note in report["notes"]), report["notes"]
        assert any("verified against the file alone" in note for note in report["notes"])
    finally:
        stop(process)


async def test_a_tail_record_rewritten_after_the_checkpoint_is_caught_by_its_announcement(
    ledger: Ledger, forger: Forger
) -> None:
    await ledger.record()
    await ledger.sign()
    await ledger.record(2)  # seq 3 to 6: unsigned, announced
    # The careful forger: seq 4 changed, every hash after it and the head recomputed. The
    # chain verifies, and the checkpoint (seq 2) says nothing about seq 4.
    await forger.rewrite(4, {"channel": "forged"})

    report = await ledger.verify()

    assert (report["ok"], report["problem"], report["broken_seq"], report["exit_status"]) == (
        False,
        "altered",
        4,
        1,
    )
    assert "does not have the hash ConsentRecorded" in report["reason"]
    # The announcements are what catch it: without the topic, the rewrite goes unseen.
    blind = await ledger.verify("--no-topic")
    assert blind["ok"] is True
    assert any("not cross-checked" in note for note in blind["notes"])


async def test_a_tail_cut_after_the_checkpoint_is_caught_by_its_announcements(
    ledger: Ledger, forger: Forger
) -> None:
    await ledger.record()
    await ledger.sign()
    await ledger.record(2)
    await forger.cut_tail(5)  # seq 5 and 6 gone, the head rewound to seq 4

    report = await ledger.verify()

    assert (report["ok"], report["problem"], report["broken_seq"], report["exit_status"]) == (
        False,
        "missing",
        5,
        1,
    )
    assert "announced seq 5 to 6" in report["reason"]
    assert "ledger ends at seq 4" in report["reason"]
    assert (await ledger.verify("--no-topic"))["ok"] is True  # unseen without them


async def test_no_checkpoint_is_signed_on_an_unchanged_head(
    ledger: Ledger, capsys: pytest.CaptureFixture[str]
) -> None:
    path = ledger.settings.checkpoints_path
    assert await ledger.checkpoint() == 0  # empty: nothing to sign
    assert "the ledger is empty: nothing to sign" in capsys.readouterr().err
    assert read_file(path) == []

    await ledger.record()
    assert await ledger.checkpoint() == 0
    first = capsys.readouterr().out
    assert await ledger.checkpoint() == 0
    again = capsys.readouterr()
    assert again.out == first  # the checkpoint that signs the head, not a new one
    assert "the head has not moved" in again.err
    # The service's schedule and the API share the rule.
    checkpointer = Checkpointer(ledger.settings, Topics(ledger.settings.topic_prefix))
    async with ledger.pool.acquire() as conn:
        outcome = await checkpointer.take(conn, ledger.broker)
    assert (outcome.signed, outcome.checkpoint and outcome.checkpoint.seq) == (False, 2)
    assert [checkpoint.seq for checkpoint in read_file(path)] == [2]

    await ledger.record()
    async with ledger.pool.acquire() as conn:
        moved = await checkpointer.take(conn, ledger.broker)
    assert (moved.signed, moved.checkpoint and moved.checkpoint.seq) == (True, 4)
    assert [checkpoint.seq for checkpoint in read_file(path)] == [2, 4]


@pytest.fixture
def checkout(tmp_path: Path) -> Path:
    """A checkout: the workspace's two files at its root, and folders to run commands from."""
    root = tmp_path / "checkout"
    (root / "services" / "consent").mkdir(parents=True)
    (root / "pyproject.toml").write_text("[project]\nname = 'x'\n")
    (root / "uv.lock").write_text("")
    return root


async def test_verify_from_another_directory_reads_the_same_files(
    ledger: Ledger,
    checkout: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    monkeypatch.setenv("CONSENT_VAR_DIR", "var/consent")  # relative: to the checkout
    await ledger.record()
    monkeypatch.chdir(checkout)
    assert await ledger.checkpoint() == 0
    written = checkout / "var" / "consent" / "consent-checkpoints.jsonl"
    assert [checkpoint.seq for checkpoint in read_file(written)] == [2]
    capsys.readouterr()

    monkeypatch.chdir(checkout / "services" / "consent")
    report = await ledger.verify()
    assert (report["ok"], report["checkpoints"]) == (True, 1), report
    assert f"checkpoints {written}" in report["stderr"]

    # Outside the checkout, the running stack says where the checkout is.
    stack = LocalStack(
        pid=os.getpid(),
        process_started=process_started(os.getpid()),
        started_at=datetime.now(UTC),
        var_dir=checkout / "var",
        kafka_bootstrap_servers=ledger.settings.kafka_bootstrap_servers,
        broker="external",
        topic_prefix=ledger.settings.topic_prefix,
        database_url=ledger.dsn[1],
        database_label="test",
        http={},
        graph_url="",
        smtp="",
        api_key_file=checkout / "var" / "k",
        link_keys_file=checkout / "var" / "l",
        mail_dir=checkout / "var" / "mail",
        consent_var_dir=checkout / "var" / "consent",
        log_dir=checkout / "var" / "log",
    )
    stack.write()
    elsewhere = tmp_path / "elsewhere" / str(uuid.uuid4())
    elsewhere.mkdir(parents=True)
    monkeypatch.chdir(elsewhere)
    monkeypatch.setenv(VAR_DIR_SETTING, str(checkout / "var"))
    report = await ledger.verify()
    assert (report["ok"], report["checkpoints"]) == (True, 1), report

    # Broken on purpose: the same relative setting, taken from the working directory, finds
    # no checkpoint, and verify says so.
    monkeypatch.setenv("CONSENT_VAR_DIR", str(elsewhere / "var" / "consent"))
    lost = await ledger.verify("--no-topic")
    assert (lost["ok"], lost["problem"]) == (False, "no_checkpoint")
