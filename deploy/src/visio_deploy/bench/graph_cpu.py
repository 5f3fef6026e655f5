"""CPU per meeting made through Graph: meetings' own process, and the Graph emulator's.

    uv run python -m visio_deploy.bench.graph_cpu [--meetings 400] [--advisors 50]

The emulator runs in its own process (over HTTPS, with the dev CA), the meetings client in this
one, 16 meetings in the making at once (the consumer's default concurrency): the CPU time of
each process over the meetings made, divided by their number. The client is whichever
`visio_meetings` is imported: put another checkout's `services/meetings/src` first on
PYTHONPATH to measure it (its Graph client alone, or gathered in batches when it has
`visio_meetings.provisioning`). Figures, not a test: they depend on the machine.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import socket
import sys
import tempfile
import time
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import psutil
from visio_fakes.devca import ensure_dev_ca
from visio_fakes.graph_emulator.settings import EmulatorSettings

CONCURRENCY = 16


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


async def _wait_listening(port: int, process: asyncio.subprocess.Process) -> None:
    for _ in range(300):
        if process.returncode is not None:
            raise RuntimeError("the emulator stopped during startup")
        with contextlib.suppress(OSError):
            _, writer = await asyncio.open_connection("127.0.0.1", port)
            writer.close()
            return
        await asyncio.sleep(0.05)
    raise TimeoutError("the emulator did not start")


async def _measure(meetings: int, advisors: int) -> dict[str, Any]:
    from visio_meetings.graph import GraphClient
    from visio_meetings.meeting import create_meeting
    from visio_meetings.payloads import MeetingSpec, meeting_key
    from visio_meetings.settings import MeetingsSettings

    try:
        from visio_meetings.provisioning import Provisioner
    except ImportError:  # a checkout from before batching
        Provisioner = None  # type: ignore[assignment,misc]

    ca_dir = tempfile.mkdtemp(prefix="graph-cpu-ca-")
    port = _free_port()
    emulator_settings = EmulatorSettings(port=port, ca_dir=ca_dir)
    ca = ensure_dev_ca(Path(ca_dir))
    env = {**os.environ, "GRAPH_EMULATOR_CA_DIR": ca_dir, "GRAPH_EMULATOR_LOG_LEVEL": "warning"}
    command = Path(sys.executable).parent / "visio-rdv-graph-emulator"
    process = await asyncio.create_subprocess_exec(command, "--port", str(port), env=env)
    try:
        await _wait_listening(port, process)
        settings = MeetingsSettings(
            authority=emulator_settings.authority,
            client_id=emulator_settings.client_id,
            client_secret=emulator_settings.client_secret,
            graph_base_url=f"{emulator_settings.public_base_url}/v1.0",
            ca_bundle=ca.bundle_path,
        )
        graph = GraphClient.from_settings(settings)
        provisioner = Provisioner(graph) if Provisioner is not None else None
        start = datetime(2031, 3, 4, 9, 30, tzinfo=UTC)
        specs = [
            MeetingSpec(
                appointment_id=(appointment := uuid.uuid4()),
                advisor_id=f"a1b2c3d4-0000-4000-8000-{n % advisors:012d}",
                key=meeting_key(appointment),
                subject="Rendez-vous Caf",
                start=start + timedelta(minutes=n),
                duration_minutes=30,
                timezone="Europe/Paris",
                recording_authorised=n % 2 == 0,
            )
            for n in range(meetings)
        ]
        await graph.check_token()
        slots = asyncio.Semaphore(CONCURRENCY)

        async def make(spec: MeetingSpec) -> None:
            async with slots:
                if provisioner is not None:
                    await provisioner.provision(spec)
                else:
                    await create_meeting(graph, spec)

        emulator = psutil.Process(process.pid)
        emulator_before = sum(emulator.cpu_times()[:2])
        ours_before, wall_before = time.process_time(), time.monotonic()
        await asyncio.gather(*(make(spec) for spec in specs))
        ours = time.process_time() - ours_before
        wall = time.monotonic() - wall_before
        emulator_cpu = sum(emulator.cpu_times()[:2]) - emulator_before
        async with httpx.AsyncClient(verify=ca.ssl_context()) as http:
            stats = (await http.get(f"{emulator_settings.public_base_url}/_emulator/stats")).json()
        await graph.aclose()
    finally:
        process.terminate()
        await process.wait()
    return {
        "client": "batched" if provisioner is not None else "one request at a time",
        "meetings": meetings,
        "meetings_cpu_ms_per_meeting": round(ours * 1000 / meetings, 2),
        "emulator_cpu_ms_per_meeting": round(emulator_cpu * 1000 / meetings, 2),
        "meetings_per_second": round(meetings / wall, 1),
        "http_requests": sum(n for name, n in stats["calls"].items() if name.startswith("graph."))
        - stats.get("batched_requests", 0),
        "connections": stats.get("connections"),
        "live_events": stats["events_live"],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--meetings", type=int, default=400)
    parser.add_argument("--advisors", type=int, default=50)
    args = parser.parse_args()
    for name, value in asyncio.run(_measure(args.meetings, args.advisors)).items():
        print(f"{name}: {value}")


if __name__ == "__main__":
    main()
