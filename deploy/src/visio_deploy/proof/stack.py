"""The real local stack, as `up` builds it, for one proof run: a fresh database on a TCP
PostgreSQL reached through the fault proxy, free ports, a scratch var/ directory, and a topic
prefix of its own. Everything is removed when the run ends — unless the run asked to keep its
evidence (`ProofStack.keep`, or an error) in a folder under `evidence`: see `evidence`."""

from __future__ import annotations

import asyncio
import contextlib
import os
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import httpx
from visio_fakes.devca import ensure_dev_ca
from visio_fakes.processes import free_port, port_open
from visio_fakes.tansu import start_tansu
from visio_runtime.local_stack import database_label, find_local_stack
from visio_testing import create_database, drop_database

from visio_deploy.proof import evidence as kept
from visio_deploy.proof.faultproxy import FaultProxy
from visio_deploy.proof.report import Report
from visio_deploy.up import Stack, UpSettings, bring_up, say

LOCAL_SERVER = "postgresql://postgres@127.0.0.1:5432/postgres"
SERVICES_TO_KILL = ("booking", "meetings", "notifications", "consent")


@dataclass
class ProofStack:
    stack: Stack
    proxy: FaultProxy | None  # None: the services reach PostgreSQL directly (the bench)
    owner_dsn: str  # direct, never cut: what the checks read with
    api_key: str
    replay: str = ""  # the command that runs it again, for the evidence
    kept_report: Report | None = None
    keeping: bool = False
    # Between every Kafka client and tansu, when the run cuts broker connections.
    broker_proxy: FaultProxy | None = None

    def keep(self, report: Report) -> None:
        """The run failed: keep its evidence, and name the folder in the report."""
        self.keeping, self.kept_report = True, report
        report.evidence = self.var

    @property
    def settings(self) -> UpSettings:
        return self.stack.settings

    @property
    def var(self) -> Path:
        return self.settings.var_dir

    def url(self, service: str) -> str:
        return f"http://{self.settings.host}:{self.settings.service_port(service)}"

    @property
    def graph(self) -> str:
        return f"https://{self.settings.host}:{self.settings.graph_port}"

    def graph_client(self) -> httpx.Client:
        ca = ensure_dev_ca(self.var / "dev-ca")
        return httpx.Client(
            base_url=self.graph, verify=ca.ssl_context(), trust_env=False, timeout=10
        )

    def emulator(self, method: str, path: str, body: Any = None) -> Any:
        with self.graph_client() as client:
            answer = client.request(method, f"/_emulator{path}", json=body)
            answer.raise_for_status()
            return answer.json() if answer.content else None

    @property
    def bootstrap(self) -> str:
        return self.settings.kafka_bootstrap_servers or f"127.0.0.1:{self.settings.kafka_port}"

    def alive(self) -> dict[str, bool]:
        return {name: process.poll() is None for name, process in self.stack.processes}


def database_server() -> tuple[str, str]:
    """The TCP PostgreSQL a run makes its fresh database on, and why that one: DATABASE_URL when
    set, else the server of the stack `visio-rdv up` runs in this checkout when it is on TCP
    (an embedded one listens on a socket, which the fault proxy cannot stand in front of), else
    the machine's."""
    if url := os.environ.get("DATABASE_URL"):
        return url, "DATABASE_URL"
    stack = find_local_stack().stack
    url = stack.database_url.get_secret_value() if stack else ""
    if stack is not None and urlsplit(url).port is not None:
        return url, f"the server of {stack.describe()}"
    return LOCAL_SERVER, "the machine's server"


def server_url() -> str:
    return database_server()[0]


def _free_with_admin() -> int:
    """A free port whose admin port (the port + 1000, `ServiceSettings.admin_port`) is free
    too: stacks run side by side on this machine, and a taken admin port stops a service."""
    while True:
        port = free_port()
        if port + 1000 < 65536 and not port_open("127.0.0.1", port + 1000):
            return port


def _with_port(url: str, port: int) -> str:
    parts = urlsplit(url)
    auth = parts.netloc.rpartition("@")[0]
    netloc = f"{auth}@127.0.0.1:{port}" if auth else f"127.0.0.1:{port}"
    return urlunsplit((parts.scheme, netloc, parts.path, parts.query, parts.fragment))


@contextlib.contextmanager
def proof_stack(
    *,
    seed: int,
    env: dict[str, dict[str, str]] | None = None,
    quiet: bool = False,
    faults: bool = True,
    name: str = "proof",
    evidence: Path | None = None,
    replay: str = "",
    broker_faults: bool = False,
    scratch: Path | None = None,
) -> Iterator[ProofStack]:
    """`env`: more environment per process (`smtp-sink`, `notifications`, `alerts`…).
    `faults=False`: no fault proxy between the services and PostgreSQL (the bench).
    `broker_faults`: tansu behind a fault proxy too, advertised at the proxy's port, so every
    Kafka client's connections (the services', the proof's own) go through it.
    `evidence`: where a failing run keeps its folder (else a temporary one, always removed,
    made in `scratch` if given)."""
    server, owner_dsn, proxy = _fresh_database(name, seed, faults=faults, quiet=quiet)
    if evidence is None:
        directory = Path(tempfile.mkdtemp(prefix=f"visio-{name}-", dir=scratch))
    else:
        directory = kept.run_directory(evidence, name, seed)
    kafka_port = free_port()
    broker_proxy = None
    if broker_faults:
        broker_proxy = FaultProxy("127.0.0.1", kafka_port, seed=seed + 1)
        broker_proxy.start()
    settings = _settings(
        name,
        directory,
        kafka_port,
        bootstrap=f"127.0.0.1:{broker_proxy.port}" if broker_proxy else None,
        database_url=_with_port(owner_dsn, proxy.port) if proxy else owner_dsn,
    )
    stack = Stack(settings, extra_env=env or {})
    proof: ProofStack | None = None
    error: BaseException | None = None
    notes: list[str] = []
    try:
        if broker_proxy is not None:
            log = directory / "log" / "tansu.log"
            tansu = start_tansu("127.0.0.1", kafka_port, log=log, advertised_port=broker_proxy.port)
            stack.processes.append(("tansu", tansu))  # stopped last, as `up` would
        with _maybe_quiet(quiet):
            bring_up(stack)
        api_key = (settings.var_dir / "dev-api-key").read_text().strip()
        proof = ProofStack(stack, proxy, owner_dsn, api_key, replay=replay)
        proof.broker_proxy = broker_proxy
        yield proof
    except BaseException as exc:
        error = exc
        raise
    finally:
        failed = error is not None or (proof is not None and proof.keeping)
        keeping = evidence is not None and failed
        if keeping and proof is not None:
            notes += kept.keep_emulator_state(proof)
        for cutter in (proxy, broker_proxy):
            if cutter is not None:
                cutter.cutting = False
        with _maybe_quiet(quiet):
            stack.stop_all()
        if proxy is not None:
            proxy.stop()
        if broker_proxy is not None:
            broker_proxy.stop()
        if keeping:
            notes.append(kept.keep_database(owner_dsn, directory))
            report = proof.kept_report if proof is not None else None
            kept.write_readme(directory, replay, report, error, notes)
        asyncio.run(drop_database(server, owner_dsn))
        if not keeping:
            kept.discard(directory)


def _fresh_database(
    name: str, seed: int, *, faults: bool, quiet: bool
) -> tuple[str, str, FaultProxy | None]:
    """The server, a fresh database's owner connection on it, and (with `faults`) the fault
    proxy started in front of it."""
    server, why = database_server()
    if not quiet:
        say(f"{name}: a fresh database on {database_label(server)} ({why})")
    owner_dsn = asyncio.run(create_database(server, prefix=f"visio_{name}"))
    target = urlsplit(owner_dsn)
    if target.hostname is None or target.port is None:
        raise SystemExit(f"{name}: DATABASE_URL must name a TCP host and port")
    proxy = FaultProxy(target.hostname, target.port, seed=seed) if faults else None
    if proxy is not None:
        proxy.start()
    return server, owner_dsn, proxy


def _settings(
    name: str, directory: Path, kafka_port: int, *, bootstrap: str | None, database_url: str
) -> UpSettings:
    """`up`'s settings for one run: its var/, free ports, a topic prefix of its own."""
    return UpSettings(
        var_dir=directory,
        kafka_port=kafka_port,
        graph_port=free_port(),
        smtp_port=free_port(),
        sms_port=free_port(),
        booking_port=_free_with_admin(),
        meetings_port=_free_with_admin(),
        notifications_port=_free_with_admin(),
        consent_port=_free_with_admin(),
        alerts_port=_free_with_admin(),
        lag_exporter_port=free_port(),  # never the default: stacks run side by side
        topic_prefix=f"{name}-{os.getpid()}",
        kafka_bootstrap_servers=bootstrap,
        database_url=database_url,
    )


@contextlib.contextmanager
def _maybe_quiet(quiet: bool) -> Iterator[None]:
    if not quiet:
        yield
        return
    with open(os.devnull, "w") as sink, contextlib.redirect_stdout(sink):
        yield
