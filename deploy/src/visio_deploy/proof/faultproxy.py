"""A TCP proxy that cuts connections at random moments: what a flaky network, a failover or an
idle-timeout firewall does to PostgreSQL clients. It runs its own event loop in a thread, so it
keeps cutting whatever the caller does (blocking calls, `asyncio.run` after `asyncio.run`).

A cut aborts both sides (a reset, no FIN): the client sees its connection die mid-query or
mid-transaction and must retry; the server rolls the transaction back.

The schedule comes from the seed: the gaps between cuts, and which of the connections open at
that moment is cut (by its rank in the order connections were made). What those connections
were doing at that moment is up to the timing of the run, which no seed replays.
"""

from __future__ import annotations

import asyncio
import random
import threading
from dataclasses import dataclass, field


@dataclass
class _Pair:
    client: asyncio.StreamWriter
    server: asyncio.StreamWriter

    def abort(self) -> None:
        for writer in (self.client, self.server):
            writer.transport.abort()


@dataclass
class FaultProxy:
    target_host: str
    target_port: int
    seed: int = 0
    # Mean seconds between two cuts while cutting is on (exponential gaps: some close together).
    mean_cut_interval_s: float = 2.0
    host: str = "127.0.0.1"
    port: int = 0
    cutting: bool = False
    cuts: int = 0
    connections: int = 0
    _live: dict[int, _Pair] = field(default_factory=dict)

    def start(self) -> int:
        """Listen on a free port (returned) and forward to the target."""
        self._loop = asyncio.new_event_loop()
        self._random = random.Random(self.seed)  # fault injection, not security
        ready = threading.Event()
        self._thread = threading.Thread(target=self._run, args=(ready,), daemon=True)
        self._thread.start()
        ready.wait(10)
        return self.port

    def stop(self) -> None:
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)

    def _run(self, ready: threading.Event) -> None:
        asyncio.set_event_loop(self._loop)
        server = self._loop.run_until_complete(
            asyncio.start_server(self._accept, self.host, self.port)
        )
        self.port = server.sockets[0].getsockname()[1]
        cutter = self._loop.create_task(self._cutter())
        ready.set()
        self._loop.run_forever()
        cutter.cancel()
        self._loop.run_until_complete(asyncio.gather(cutter, return_exceptions=True))
        server.close()
        for pair in list(self._live.values()):
            pair.abort()

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            up_reader, up_writer = await asyncio.open_connection(self.target_host, self.target_port)
        except OSError:
            writer.transport.abort()
            return
        self.connections += 1
        key = self.connections  # its rank: what the seeded choice of a victim picks from
        self._live[key] = _Pair(writer, up_writer)
        try:
            await asyncio.gather(_pipe(reader, up_writer), _pipe(up_reader, writer))
        finally:
            self._live.pop(key, None)
            for side in (writer, up_writer):
                side.transport.abort()

    async def _cutter(self) -> None:
        while True:
            await asyncio.sleep(self._random.expovariate(1 / self.mean_cut_interval_s))
            if self.cutting and self._live:
                victim = self._random.choice(sorted(self._live))
                self._live.pop(victim).abort()
                self.cuts += 1


async def _pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    try:
        while data := await reader.read(65536):
            writer.write(data)
            await writer.drain()
    except (ConnectionError, OSError):
        pass
    finally:
        writer.transport.abort()
