"""The SMTP side of the sink (visio_fakes.smtp_sink): aiosmtpd's server counting connections,
reading DATA in one piece and a plain address without a parser, hanging up without a word, and
the login check."""

from __future__ import annotations

import asyncio
import re
from typing import TYPE_CHECKING, Any

from aiosmtpd.controller import Controller
from aiosmtpd.smtp import MISSING, SMTP, AuthResult, Envelope, LoginPassword, Session

if TYPE_CHECKING:
    from visio_fakes.smtp_sink import MailSink


def abort(server: SMTP) -> None:
    transport = server.transport
    if isinstance(transport, asyncio.Transport):
        transport.abort()  # a reset, as when the network fails
    elif transport is not None:
        transport.close()


# `<local@domain>` of dot-atoms (RFC 5321 4.1.2), what every client of the project sends; its
# address is the text between the brackets. Anything else goes to aiosmtpd's parser.
_ATOM = r"[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+"
_PLAIN_ADDRESS = re.compile(rf"<({_ATOM}(?:\.{_ATOM})*@[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)*)>")


class SinkSMTP(SMTP):
    """aiosmtpd's server, counting connections and reading DATA in one piece.

    aiosmtpd reads DATA a line at a time (a coroutine step, a debug log call and a list append
    per line: a few hundred per email); here the reader looks for the end mark with C-speed
    searches. The result is aiosmtpd's: the lines' leading dot removed (RFC 5321 4.5.2), 552
    past the size limit, the DATA hook called with `original_content` set, 250 by default.
    """

    def __init__(self, handler: MailSink, **kwargs: Any) -> None:
        super().__init__(handler, **kwargs)
        self.sink = handler

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        first = self.transport is None  # STARTTLS calls this again on the same connection
        super().connection_made(transport)
        if first:
            with self.sink._lock:
                self.sink.connections += 1
            self.sink.open_sessions.add(self)

    def connection_lost(self, error: Exception | None) -> None:
        self.sink.open_sessions.discard(self)
        super().connection_lost(error)

    def _getaddr(self, arg: str) -> tuple[str | None, str | None]:
        """aiosmtpd's answer for MAIL FROM's and RCPT TO's address, without its parser for a
        plain `<local@domain>`: that parser (email's header grammar, and a class defined per
        call) was a fifth of the sink's CPU per message, twice per message."""
        found = _PLAIN_ADDRESS.match(arg)
        rest = arg[found.end() :] if found is not None else ""
        if rest[:1] in (" ", "\t"):
            rest = rest.lstrip()  # the parser takes the blanks after '>' with the address
        if found is None or rest.startswith("("):  # a comment: the parser's
            return super()._getaddr(arg)
        address = found.group(1)
        if self.local_part_limit and len(address.rpartition("@")[0]) > self.local_part_limit:
            return None, None
        return address, rest

    async def smtp_DATA(self, arg: str) -> None:
        if await self.check_helo_needed() or await self.check_auth_needed("DATA"):
            return
        assert self.envelope is not None
        if not self.envelope.rcpt_tos:
            await self.push("503 Error: need RCPT command")
            return
        if arg:
            await self.push("501 Syntax: DATA")
            return
        await self.push("354 End data with <CR><LF>.<CR><LF>")
        reader = self._reader
        line_limit = reader._limit  # type: ignore[attr-defined]
        # One search for the end mark across the whole message, not a line at a time; the
        # size limit is checked once the message is in (a fake relay may hold one in memory).
        reader._limit = 2**31  # type: ignore[attr-defined]
        data = bytearray()
        try:
            while not (data == b".\r\n" or data.endswith(b"\r\n.\r\n")):
                data += await reader.readuntil(b".\r\n")
        finally:
            reader._limit = line_limit  # type: ignore[attr-defined]
        content = bytes(data[:-3])
        if content.startswith(b"."):
            content = content[1:]
        content = content.replace(b"\r\n.", b"\r\n")
        if self.data_size_limit and len(content) > self.data_size_limit:
            await self.push("552 Error: Too much mail data")
            self._set_post_data_state()  # type: ignore[no-untyped-call]
            return
        self.envelope.content = content
        self.envelope.original_content = content
        status = await self._call_handler_hook("DATA")
        self._set_post_data_state()  # type: ignore[no-untyped-call]
        await self.push("250 OK" if status is MISSING else status)


class SinkController(Controller):
    def factory(self) -> SMTP:
        return SinkSMTP(self.handler, **self.SMTP_kwargs)


async def hang_up_silently(server: SMTP) -> None:
    """Close the connection without a word; aiosmtpd cancels this session when it notices."""
    abort(server)
    await asyncio.get_running_loop().create_future()  # never answered: cancelled first


def authenticator(credentials: dict[str, str]) -> Any:
    def authenticate(
        server: SMTP, session: Session, envelope: Envelope, mechanism: str, auth_data: Any
    ) -> AuthResult:
        if isinstance(auth_data, LoginPassword):
            login = auth_data.login.decode()
            if credentials.get(login) == auth_data.password.decode():
                return AuthResult(success=True)
        return AuthResult(success=False, handled=False)

    return authenticate
