"""A real HTTP server that receives Standard Webhooks deliveries and verifies them.

Runs on 127.0.0.1 at an ephemeral port in daemon threads. Every request is checked with the
reference `standardwebhooks` library (`Webhook(secret).verify(body, headers)`), exactly as a
customer's receiver would: a verified delivery is recorded in `deliveries`, anything else in
`rejections` and answered 401. After verifying, the receiver answers with the status the test
set (200 by default), so senders can be tested against 4xx/5xx answers from a real receiver.

    with WebhookReceiver("whsec_...") as receiver:
        WebhookChannel(receiver.url, "whsec_...").send(notification)
        assert receiver.deliveries[0].payload["type"] == "credits.balance_low"
"""

from __future__ import annotations

from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler
from typing import Any

from standardwebhooks import Webhook
from standardwebhooks.webhooks import WebhookVerificationError

from tests.fakes.loopback import LoopbackHTTPServer


@dataclass(frozen=True)
class Delivery:
    """A request whose signature verified."""

    payload: Any
    headers: dict[str, str]
    body: bytes


@dataclass(frozen=True)
class Rejection:
    """A request that failed verification, and why."""

    reason: str
    headers: dict[str, str]
    body: bytes


class WebhookReceiver(LoopbackHTTPServer):
    def __init__(self, secret: str, path: str = "/hooks/credits") -> None:
        self._webhook = Webhook(secret)
        self._deliveries: list[Delivery] = []
        self._rejections: list[Rejection] = []
        self._responses: list[tuple[int, dict[str, str]]] = []
        super().__init__(path)

    # -- control ---------------------------------------------------------------------------

    @property
    def deliveries(self) -> list[Delivery]:
        with self._lock:
            return list(self._deliveries)

    @property
    def rejections(self) -> list[Rejection]:
        with self._lock:
            return list(self._rejections)

    def respond_next(self, status: int, headers: dict[str, str] | None = None) -> None:
        """Answer the next verified delivery with `status` (queued; then back to 200)."""
        with self._lock:
            self._responses.append((status, dict(headers or {})))

    # -- request handling ------------------------------------------------------------------

    def _handle(
        self, path: str, headers: dict[str, str], body: bytes
    ) -> tuple[int, dict[str, str]]:
        with self._lock:
            delay = self._delay
        if delay:
            self._stop.wait(delay)
        if path != self.path:
            return 404, {}
        try:
            payload = self._webhook.verify(body, headers)
        except (WebhookVerificationError, ValueError) as exc:
            # ValueError covers a body that verifies but is not JSON, or a malformed header.
            with self._lock:
                self._rejections.append(Rejection(str(exc) or type(exc).__name__, headers, body))
            return 401, {}
        with self._lock:
            self._deliveries.append(Delivery(payload, headers, body))
            return self._responses.pop(0) if self._responses else (200, {})

    def _handler_class(self) -> type[BaseHTTPRequestHandler]:
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length)
                status, extra = receiver._handle(
                    self.path, {k.lower(): v for k, v in self.headers.items()}, body
                )
                self.send_response(status)
                for name, value in extra.items():
                    self.send_header(name, value)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, format: str, *args: Any) -> None:
                return None  # keep test output clean

        return Handler

