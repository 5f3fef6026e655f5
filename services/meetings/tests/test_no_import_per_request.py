"""Meetings speaks to Graph through httpx and httpcore, thousands of requests a minute: a request
must not look a module up. httpcore imports sniffio on every request and pool event; without
sniffio installed each of those imports failed after searching every folder of sys.path again —
a tenth of meetings' CPU in the bench profile. A module already imported never reaches the
import system's finders, so a finder that notes what it is asked shows any lookup."""

from __future__ import annotations

import asyncio
import sys
import threading
from collections.abc import Iterator, Sequence
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from importlib.machinery import ModuleSpec
from types import ModuleType
from typing import Any

import httpx
import pytest


class _Ok(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # kept alive, as Graph's connections are

    def do_GET(self) -> None:
        self.send_response(200)
        self.send_header("Content-Length", "2")
        self.end_headers()
        self.wfile.write(b"{}")

    def log_message(self, *_: Any) -> None:
        pass


class _Noting:
    """A finder first in sys.meta_path that finds nothing and notes every name it is asked."""

    def __init__(self) -> None:
        self.asked: list[str] = []

    def find_spec(
        self, name: str, path: Sequence[str] | None, target: ModuleType | None = None
    ) -> ModuleSpec | None:
        self.asked.append(name)
        return None


@pytest.fixture
def server() -> Iterator[str]:
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), _Ok)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}"
    httpd.shutdown()


def test_a_request_through_httpx_looks_no_module_up(server: str) -> None:
    noting = _Noting()

    async def requests() -> None:
        async with httpx.AsyncClient(base_url=server, trust_env=False) as client:
            assert (await client.get("/warm-up")).status_code == 200  # first-use imports
            sys.meta_path.insert(0, noting)
            try:
                for _ in range(10):
                    assert (await client.get("/v1.0/$batch")).status_code == 200
            finally:
                sys.meta_path.remove(noting)

    asyncio.run(requests())
    assert noting.asked == [], f"modules looked up on every request: {sorted(set(noting.asked))}"
