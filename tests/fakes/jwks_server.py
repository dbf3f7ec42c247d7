"""A real HTTP server that serves a JWKS document, for tests of key fetching.

Runs on 127.0.0.1 at an ephemeral port in a daemon thread. The test can swap the document at
runtime (key rotation), make it answer errors, and read how many times it was fetched.

    with JwksServer({"keys": [...]}) as server:
        source = JwksKeySource(server.url)
        ...
        server.set_jwks(new_doc)
        assert server.fetch_count == 2
"""

from __future__ import annotations

import json
from http.server import BaseHTTPRequestHandler
from typing import Any

from tests.fakes.loopback import LoopbackHTTPServer


class JwksServer(LoopbackHTTPServer):
    def __init__(self, jwks: dict[str, Any] | None = None, path: str = "/.well-known/jwks.json"):
        self._jwks: dict[str, Any] = jwks if jwks is not None else {"keys": []}
        self._status = 200
        self._fetches = 0
        super().__init__(path)

    # -- control ---------------------------------------------------------------------------

    @property
    def fetch_count(self) -> int:
        with self._lock:
            return self._fetches

    def set_jwks(self, jwks: dict[str, Any]) -> None:
        with self._lock:
            self._jwks = jwks

    def set_status(self, status: int) -> None:
        with self._lock:
            self._status = status

    # -- serving ---------------------------------------------------------------------------

    def _snapshot(self) -> tuple[int, bytes, float]:
        with self._lock:
            self._fetches += 1
            return self._status, json.dumps(self._jwks).encode(), self._delay

    def _handler_class(self) -> type[BaseHTTPRequestHandler]:
        server = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                if self.path != server.path:
                    self.send_error(404)
                    return
                status, body, delay = server._snapshot()
                if delay and server._stop.wait(delay):
                    return
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: Any) -> None:
                pass  # keep test output clean

        return Handler
