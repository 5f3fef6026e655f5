"""`visio-rdv-graph-emulator`: serve the emulator over HTTPS with the dev CA.

Settings come from `GRAPH_EMULATOR_*` variables; the command-line flags override them, e.g.
`visio-rdv-graph-emulator --throttle-rate 0.1 --latency-ms 100 --retry-after-seconds 2.128`.

`serve_in_background` runs the same server inside the caller's event loop (tests, proof
tools), on a port bound before the app is built so the discovery document can advertise
the real URL even when the port was picked by the OS.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import gc
import logging
import socket
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any

import pydantic
import uvicorn
from fastapi import FastAPI

from visio_fakes.devca import DevCA, ensure_dev_ca
from visio_fakes.graph_emulator.app import create_app
from visio_fakes.graph_emulator.faults import FaultConfig
from visio_fakes.graph_emulator.settings import EmulatorSettings
from visio_fakes.graph_emulator.state import EmulatorState

log = logging.getLogger("visio_fakes.graph_emulator")


@dataclass
class RunningEmulator:
    """A started emulator; `await stop()` (or leave its `async with`) to shut it down."""

    settings: EmulatorSettings
    ca: DevCA
    app: FastAPI
    server: uvicorn.Server
    task: asyncio.Task[None]

    @property
    def base_url(self) -> str:
        return self.settings.public_base_url

    @property
    def authority(self) -> str:
        return self.settings.authority

    @property
    def state(self) -> EmulatorState:
        state: EmulatorState = self.app.state.emulator
        return state

    async def stop(self, grace_seconds: float = 10.0) -> None:
        self.server.should_exit = True
        try:
            async with asyncio.timeout(grace_seconds):
                await asyncio.shield(self.task)
        except TimeoutError:
            self.server.force_exit = True  # open keep-alive connections: stop waiting
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(grace_seconds):
                    await self.task

    async def __aenter__(self) -> RunningEmulator:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        await self.stop()


def _bind(host: str, port: int) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    # Inherited by accepted connections: without it, uvicorn's separate header and body
    # writes meet Nagle and the client's delayed ACK, 40 ms per request.
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    sock.bind((host, port))
    return sock


async def serve_in_background(
    settings: EmulatorSettings | None = None, *, startup_timeout: float = 15.0
) -> RunningEmulator:
    """Start the emulator over HTTPS in the running event loop and wait until it listens.

    With `port=0` a free port is chosen; the returned handle's settings carry it.
    """
    settings = settings or EmulatorSettings()
    ca = await asyncio.to_thread(
        ensure_dev_ca, Path(settings.ca_dir), extra_hostnames=settings.extra_hostnames
    )
    sock = _bind(settings.host, settings.port)
    if settings.port == 0:
        settings = settings.model_copy(update={"port": sock.getsockname()[1]})
    app = create_app(settings)
    config = uvicorn.Config(
        app,
        ssl_certfile=str(ca.server_cert),
        ssl_keyfile=str(ca.server_key),
        log_level=settings.log_level,
        access_log=False,
        lifespan="off",
        date_header=False,  # the app writes Date on the emulator's own clock
    )
    server = uvicorn.Server(config)
    task = asyncio.create_task(server.serve(sockets=[sock]), name="graph-emulator")
    try:
        await _wait_started(server, task, startup_timeout)
    except BaseException:
        server.should_exit = True
        sock.close()
        raise
    return RunningEmulator(settings=settings, ca=ca, app=app, server=server, task=task)


async def _wait_started(server: uvicorn.Server, task: asyncio.Task[None], limit: float) -> None:
    # uvicorn offers a flag, not an event, for "listening": poll it briefly.
    loop = asyncio.get_running_loop()
    deadline = loop.time() + limit
    while not server.started:
        if task.done():
            task.result()  # surfaces the startup error
            raise RuntimeError("the Graph emulator stopped during startup")
        if loop.time() > deadline:
            raise TimeoutError("the Graph emulator did not start in time")
        await asyncio.sleep(0.01)


async def _serve_until_stopped(settings: EmulatorSettings) -> None:
    emulator = await serve_in_background(settings)
    # As a service does once started (visio_runtime.heap): what the start made is set aside
    # from the garbage collector, and young collections come less often. A bench's fakes must
    # not hide the services: a quarter of the emulator's CPU went to the collector.
    gc.set_threshold(10_000, 10, 10)
    gc.collect()
    gc.freeze()
    log.info(
        "Graph + Entra ID emulator on %s (authority %s, client id %s); "
        "trust the dev CA with %s or the bundle %s",
        emulator.base_url,
        emulator.authority,
        settings.client_id,
        emulator.ca.ca_cert,
        emulator.ca.bundle_path,
    )
    # uvicorn handles SIGINT/SIGTERM and returns from serve().
    await emulator.task


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="visio-rdv-graph-emulator",
        description="Microsoft Graph + Entra ID emulator over HTTPS. Flags override the "
        "GRAPH_EMULATOR_* environment (faults: GRAPH_EMULATOR_FAULTS__<NAME>).",
    )
    parser.add_argument("--host")
    parser.add_argument("--port", type=int)
    parser.add_argument("--join-url-style", choices=["classic", "short"])
    parser.add_argument("--log-level")
    faults = parser.add_argument_group("faults (share of Graph calls, 0 to 1)")
    for flag in ("throttle", "unavailable", "gateway-timeout", "commit-then-timeout"):
        faults.add_argument(f"--{flag}-rate", type=float, metavar="RATE")
    faults.add_argument("--retry-after-seconds", type=float, metavar="SECONDS")
    faults.add_argument("--latency-ms", type=int, metavar="MS")
    faults.add_argument("--seed", type=int)
    faults.add_argument("--max-faults", type=int, metavar="N")
    faults.add_argument(
        "--endpoints", help="comma-separated endpoint names or prefixes (default: graph)"
    )
    faults.add_argument(
        "--mailbox-concurrency-limit",
        type=int,
        metavar="N",
        help="requests in flight per mailbox before 429 ApplicationThrottled (default 4; "
        "0 turns it off)",
    )
    return parser


def settings_from_command_line(argv: Sequence[str] | None = None) -> EmulatorSettings:
    """The environment's settings with the command line's flags on top."""
    args = vars(_parser().parse_args(argv))
    top = {k: args.pop(k) for k in ("host", "port", "join_url_style", "log_level")}
    settings = EmulatorSettings(**{k: v for k, v in top.items() if v is not None})
    changes: dict[str, Any] = {k: v for k, v in args.items() if v is not None}
    if "endpoints" in changes:
        changes["endpoints"] = [e.strip() for e in changes["endpoints"].split(",") if e.strip()]
    if changes.get("mailbox_concurrency_limit") == 0:
        changes["mailbox_concurrency_limit"] = None
    # Validated again as a whole: the rates must still add up to at most 1.
    faults = FaultConfig.model_validate({**settings.faults.model_dump(), **changes})
    return settings.model_copy(update={"faults": faults})


def main(argv: Sequence[str] | None = None) -> None:
    try:
        settings = settings_from_command_line(argv)
    except pydantic.ValidationError as exc:
        _parser().error(str(exc))
    logging.basicConfig(
        level=settings.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s %(message)s"
    )
    # uvicorn shuts down gracefully on Ctrl-C, then re-raises it: end without a traceback.
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(_serve_until_stopped(settings))


if __name__ == "__main__":
    main()
