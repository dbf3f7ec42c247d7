"""Shared plumbing for the real servers tests run on 127.0.0.1.

`FakeServer` is the start/stop context manager every fake server shares. `LoopbackHTTPServer`
adds the HTTP server itself (JWKS, webhook receiver): a subclass provides `_handler_class()`.
"""

from __future__ import annotations

import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import TracebackType
from typing import Self


class FakeServer:
    """`with Server() as s:` starts it and always stops it; subclasses define start/stop."""

    def start(self) -> Self:
        raise NotImplementedError

    def stop(self) -> None:
        raise NotImplementedError

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()


class LoopbackHTTPServer(FakeServer):
    path: str

    def __init__(self, path: str) -> None:
        self.path = path
        self._lock = threading.Lock()
        self._delay = 0.0
        self._stop = threading.Event()
        self._httpd = ThreadingHTTPServer(("127.0.0.1", 0), self._handler_class())
        self._httpd.daemon_threads = True
        # A short poll interval keeps shutdown() (and so each test's teardown) fast.
        self._thread = threading.Thread(
            target=self._httpd.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True
        )

    def _handler_class(self) -> type[BaseHTTPRequestHandler]:
        raise NotImplementedError

    @property
    def url(self) -> str:
        host, port = self._httpd.server_address[:2]
        return f"http://{host!s}:{port}{self.path}"

    def set_delay(self, seconds: float) -> None:
        """Delay every answer (to test client timeouts); `stop()` cuts a pending delay short."""
        with self._lock:
            self._delay = seconds

    def start(self) -> Self:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self._httpd.shutdown()
        self._httpd.server_close()
        self._thread.join(timeout=5)
