"""httpx's connections on the event loop's own transports, without anyio in between.

httpx sends its bytes through httpcore, whose asyncio backend is anyio: a task group's cancel
scope and a `fail_after` around every read and write, TLS worked in Python over memory buffers
(anyio's `TLSStream`), and, for every kept connection at every request the pool places, a dict
of a dozen attribute getters built to find its raw socket and ask the kernel whether the peer
hung up. A profile of meetings (HTTPS to Graph, connections kept) put anyio and that check at
a fifth of the service's CPU.

`AsyncioNetwork` is an `httpcore.AsyncNetworkBackend` on a plain `asyncio.Protocol`: bytes go
to the transport as they come, TLS is the loop's (uvloop's, in C, in the services), and "has
the peer hung up or spoken out of turn" is read from what the protocol already received. What
httpcore expects of a backend is unchanged: its own exceptions (`ConnectError`,
`ConnectTimeout`, `ReadError`, `ReadTimeout`, `WriteError`, `WriteTimeout`), so httpx maps
them to the same `httpx` errors as before and a caller's retry rules see no difference.

`transport(...)` is httpx's `AsyncHTTPTransport` with this backend under its pool (and under
its proxy's, when there is one).
"""

from __future__ import annotations

import asyncio
import contextlib
import ssl
import typing
from collections.abc import Iterable, Iterator
from typing import Any

import httpcore
import httpx

SocketOption = (
    tuple[int, int, int] | tuple[int, int, bytes | bytearray] | tuple[int, int, None, int]
)

# The protocol stops reading from the socket past this many bytes received and not yet read.
_HIGH_WATER = 256 * 1024


class _Protocol(asyncio.Protocol):
    """Received bytes in a buffer, and the waiters of a read and of a drain."""

    def __init__(self) -> None:
        self.transport: asyncio.Transport | None = None
        self.buffer = bytearray()
        self.eof = False
        self.error: BaseException | None = None
        self.reading_paused = False
        self.writing_paused = False
        self._reader: asyncio.Future[None] | None = None
        self._drained: asyncio.Future[None] | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = typing.cast(asyncio.Transport, transport)

    def data_received(self, data: bytes) -> None:
        self.buffer += data
        if len(self.buffer) > _HIGH_WATER and self.transport is not None:
            self.transport.pause_reading()
            self.reading_paused = True
        self._wake_reader()

    def eof_received(self) -> bool | None:
        self.eof = True
        self._wake_reader()
        return None  # the transport closes itself

    def connection_lost(self, exc: Exception | None) -> None:
        self.eof = True
        self.error = exc
        self._wake_reader()
        if self._drained is not None and not self._drained.done():
            self._drained.set_result(None)

    def pause_writing(self) -> None:
        self.writing_paused = True

    def resume_writing(self) -> None:
        self.writing_paused = False
        if self._drained is not None and not self._drained.done():
            self._drained.set_result(None)

    def _wake_reader(self) -> None:
        if self._reader is not None and not self._reader.done():
            self._reader.set_result(None)

    async def wait_readable(self) -> None:
        self._reader = asyncio.get_running_loop().create_future()
        try:
            await self._reader
        finally:
            self._reader = None

    async def wait_drained(self) -> None:
        while self.writing_paused and not self.eof:
            self._drained = asyncio.get_running_loop().create_future()
            try:
                await self._drained
            finally:
                self._drained = None


@contextlib.contextmanager
def _mapped(
    timeout_error: type[Exception], other: type[Exception], *more: type[Exception]
) -> Iterator[None]:
    """The backend's failures as httpcore names them (httpx maps those to its own)."""
    failures: tuple[type[Exception], ...] = (OSError, *more)
    try:
        yield
    except TimeoutError as exc:
        raise timeout_error(str(exc) or "timed out") from exc
    except failures as exc:
        raise other(str(exc) or type(exc).__name__) from exc


class AsyncioStream(httpcore.AsyncNetworkStream):
    def __init__(self, protocol: _Protocol) -> None:
        self._protocol = protocol

    @property
    def _transport(self) -> asyncio.Transport:
        transport = self._protocol.transport
        assert transport is not None  # set by connection_made, before the stream exists
        return transport

    # httpcore's interface gives each call its timeout (ASYNC109).
    async def read(self, max_bytes: int, timeout: float | None = None) -> bytes:  # noqa: ASYNC109
        protocol = self._protocol
        if not protocol.buffer and not protocol.eof:
            with _mapped(httpcore.ReadTimeout, httpcore.ReadError):
                async with asyncio.timeout(timeout):
                    await protocol.wait_readable()
        if not protocol.buffer:
            if protocol.error is not None:
                raise httpcore.ReadError(str(protocol.error)) from protocol.error
            return b""  # the peer closed: httpcore says "server disconnected"
        data = bytes(protocol.buffer[:max_bytes])
        del protocol.buffer[:max_bytes]
        if protocol.reading_paused and len(protocol.buffer) <= _HIGH_WATER:
            protocol.reading_paused = False
            self._transport.resume_reading()
        return data

    async def write(self, buffer: bytes, timeout: float | None = None) -> None:  # noqa: ASYNC109
        if not buffer:
            return
        transport = self._transport
        if transport.is_closing():
            raise httpcore.WriteError("the connection is closed")
        with _mapped(httpcore.WriteTimeout, httpcore.WriteError, RuntimeError):
            transport.write(buffer)
            if self._protocol.writing_paused:
                async with asyncio.timeout(timeout):
                    await self._protocol.wait_drained()

    async def aclose(self) -> None:
        # As httpcore's anyio backend: no TLS close_notify waited for, the socket closed.
        self._transport.close()

    async def start_tls(
        self,
        ssl_context: ssl.SSLContext,
        server_hostname: str | None = None,
        timeout: float | None = None,  # noqa: ASYNC109
    ) -> httpcore.AsyncNetworkStream:
        loop = asyncio.get_running_loop()
        try:
            with _mapped(httpcore.ConnectTimeout, httpcore.ConnectError, ssl.SSLError):
                tls = await loop.start_tls(
                    self._transport,
                    self._protocol,
                    ssl_context,
                    server_hostname=server_hostname,
                    ssl_handshake_timeout=timeout,
                )
        except BaseException:
            self._transport.close()
            raise
        if tls is None:  # the connection was closed during the handshake
            raise httpcore.ConnectError("the connection closed during the TLS handshake")
        self._protocol.transport = tls
        return self

    def get_extra_info(self, info: str) -> Any:
        if info == "is_readable":
            # Asked of an idle kept connection before it serves again: anything received
            # (the peer's close, or bytes nobody asked for) makes it unusable.
            protocol = self._protocol
            return protocol.eof or bool(protocol.buffer) or self._transport.is_closing()
        if info == "client_addr":
            return self._transport.get_extra_info("sockname")
        if info == "server_addr":
            return self._transport.get_extra_info("peername")
        if info in ("ssl_object", "socket"):
            return self._transport.get_extra_info(info)
        return None


class AsyncioNetwork(httpcore.AsyncNetworkBackend):
    async def connect_tcp(
        self,
        host: str,
        port: int,
        timeout: float | None = None,  # noqa: ASYNC109
        local_address: str | None = None,
        socket_options: Iterable[SocketOption] | None = None,
    ) -> httpcore.AsyncNetworkStream:
        loop = asyncio.get_running_loop()
        with _mapped(httpcore.ConnectTimeout, httpcore.ConnectError):
            async with asyncio.timeout(timeout):
                transport, protocol = await loop.create_connection(
                    _Protocol,
                    host,
                    port,
                    local_addr=(local_address, 0) if local_address else None,
                )
        sock = transport.get_extra_info("socket")
        for option in socket_options or ():
            sock.setsockopt(*option)
        return AsyncioStream(protocol)

    async def connect_unix_socket(
        self,
        path: str,
        timeout: float | None = None,  # noqa: ASYNC109
        socket_options: Iterable[SocketOption] | None = None,
    ) -> httpcore.AsyncNetworkStream:
        loop = asyncio.get_running_loop()
        with _mapped(httpcore.ConnectTimeout, httpcore.ConnectError):
            async with asyncio.timeout(timeout):
                _, protocol = await loop.create_unix_connection(_Protocol, path)
        return AsyncioStream(protocol)

    async def sleep(self, seconds: float) -> None:
        await asyncio.sleep(seconds)


def transport(**options: Any) -> httpx.AsyncHTTPTransport:
    """`httpx.AsyncHTTPTransport(**options)` whose connections (and its proxy's) are made by
    `AsyncioNetwork`. httpx gives no argument for httpcore's backend, so it is set on the pool
    httpx made; the check below fails at start-up if a new httpx or httpcore moves it."""
    made = httpx.AsyncHTTPTransport(**options)
    pool = made._pool
    if not isinstance(pool, httpcore.AsyncConnectionPool) or not hasattr(pool, "_network_backend"):
        raise RuntimeError(f"httpx's transport holds no httpcore pool to give a backend: {pool!r}")
    pool._network_backend = AsyncioNetwork()
    return made
