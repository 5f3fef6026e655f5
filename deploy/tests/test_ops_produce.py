"""`visio-rdv ops produce` on the real test broker, as an operator types it: one record with its
key and headers, read from stdin or a file, lands where the command says and `ops tail` shows
it there; a misspelt topic, a value that is not JSON and a header without `=` are refused with
nothing written (and no topic created); a broker that does not answer is said in one line."""

from __future__ import annotations

import asyncio
import io
import json
import re
import uuid
from pathlib import Path

import pytest
from visio_deploy.cli import build_parser
from visio_deploy.ops.settings import OpsSettings
from visio_fakes.processes import free_port
from visio_runtime.kafka import ensure_topics
from visio_runtime.topic_reader import partitions, reader, topic_partitions
from visio_shared import Topics

PARTNERS = ["national-scheduler"]
WRITTEN = re.compile(r"^written: (?P<topic>\S+) \[(?P<partition>\d+)\] @(?P<offset>\d+)  key=")


@pytest.fixture
async def settings(kafka_bootstrap: str, monkeypatch: pytest.MonkeyPatch) -> OpsSettings:
    prefix = f"produce-{uuid.uuid4().hex[:8]}"
    monkeypatch.setenv("VISIO_KAFKA_BOOTSTRAP_SERVERS", kafka_bootstrap)
    monkeypatch.setenv("VISIO_TOPIC_PREFIX", prefix)
    settings = OpsSettings()
    await ensure_topics(settings, Topics(prefix).all() + Topics(prefix).partner_topics(PARTNERS))
    return settings


async def visio_rdv(*argv: str, stdin: bytes = b"") -> int:
    """The command as typed, `stdin` piped in; run in a thread (it has its own event loop)."""
    args = build_parser().parse_args(list(argv))
    piped = io.TextIOWrapper(io.BytesIO(stdin))
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr("sys.stdin", piped)
        code: int = await asyncio.to_thread(args.handler, args)
    return code


async def test_a_record_lands_with_its_key_and_headers_where_produce_says_and_tail_reads_it(
    settings: OpsSettings, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    key = str(uuid.uuid4())
    request = {"request_id": "sched-2026-000451", "request_type": "CancelAppointment"}
    value = json.dumps(request, indent=2).encode() + b"\n"  # as a heredoc leaves it

    code = await visio_rdv(
        "ops", "produce", "booking-requests.national-scheduler", "--key", key,
        "-H", "request_id=sched-2026-000451", "--header", "origin=national-scheduler",
        stdin=value,
    )  # fmt: skip

    assert code == 0
    out, err = capsys.readouterr()
    written = WRITTEN.match(out)
    assert written, out
    topic = Topics(settings.topic_prefix).partner_requests("national-scheduler")
    assert written["topic"] == topic
    assert err == (
        f"visio-rdv: Kafka {settings.kafka_bootstrap_servers}, topics {settings.topic_prefix}.* "
        "[VISIO_KAFKA_BOOTSTRAP_SERVERS, VISIO_TOPIC_PREFIX]\n"
    )

    assert await visio_rdv("ops", "tail", "booking-requests.national-scheduler", "--last", "1") == 0
    shown = capsys.readouterr().out
    record = f"{topic} [{written['partition']}] @{written['offset']}"
    assert record in shown
    block = shown[shown.index(record) :]
    assert f"key={key}" in block.splitlines()[0]
    assert "  origin: national-scheduler" in block
    assert "  request_id: sched-2026-000451" in block
    assert '"request_type": "CancelAppointment"' in block

    # From a file, as it is (--raw), to a partition of one's choosing.
    raw = tmp_path / "broken.txt"
    raw.write_bytes(b"{not json")
    assert await visio_rdv("ops", "produce", topic, "--file", str(raw), "--raw", "-p", "2") == 0
    out = capsys.readouterr().out
    assert WRITTEN.match(out) and " [2] @" in out


async def test_a_misspelt_topic_is_refused_and_not_created(
    settings: OpsSettings, capsys: pytest.CaptureFixture[str]
) -> None:
    misspelt = f"{settings.topic_prefix}.meeting.v1"

    assert await visio_rdv("ops", "produce", misspelt, stdin=b'{"a": 1}') == 1

    err = capsys.readouterr().err
    assert f"no topic {misspelt}" in err and "nothing written" in err
    assert f"did you mean {settings.topic_prefix}.meetings.v1" in err
    assert misspelt not in await topic_partitions(settings)


@pytest.mark.parametrize(
    ("argv", "stdin", "why"),
    [
        ((), b"{not json", "the value is not JSON"),
        ((), b"\n", "the value is empty"),
        (("-H", "request_id"), b"{}", "write it NAME=VALUE"),
        (("--partition", "6"), b"{}", "has partitions 0–5, not 6"),
        (("--file", "/nonexistent/event.json"), b"", "cannot read /nonexistent/event.json"),
    ],
)
async def test_what_cannot_be_written_as_meant_is_refused_saying_why(
    settings: OpsSettings,
    capsys: pytest.CaptureFixture[str],
    argv: tuple[str, ...],
    stdin: bytes,
    why: str,
) -> None:
    topic = Topics(settings.topic_prefix).appointments

    assert await visio_rdv("ops", "produce", topic, *argv, stdin=stdin) == 1

    assert why in capsys.readouterr().err
    async with reader(settings) as consumer:
        ends = await consumer.end_offsets(await partitions(settings, [topic]))
    assert set(ends.values()) == {0}, "nothing written"


async def test_a_broker_that_does_not_answer_is_said_plainly_and_nothing_is_written(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("VISIO_KAFKA_BOOTSTRAP_SERVERS", f"127.0.0.1:{free_port()}")

    assert await visio_rdv("ops", "produce", "appointments", stdin=b"{}") == 2

    err = capsys.readouterr().err
    assert "visio-rdv ops: cannot reach it: KafkaConnectionError" in err
    assert "Traceback" not in err
