"""A real SMTP server for tests: aiosmtpd on 127.0.0.1 at an ephemeral port.

It speaks plain SMTP (no STARTTLS, no AUTH) and keeps every accepted message, parsed, so a test
can read its headers and body. It can be told to answer the next DATA or RCPT commands with an
error, to test how the sender classifies temporary (4xx) and permanent (5xx) failures.

    with SmtpServer() as smtp:
        channel = EmailChannel("127.0.0.1", smtp.port, sender=..., starttls=False)
        channel.send(notification)
        assert smtp.messages[0]["To"] == "ada@example.com"
"""

from __future__ import annotations

import asyncio
import threading
from collections import deque
from email import message_from_bytes
from email.message import EmailMessage
from email.policy import default as default_policy
from typing import cast

from aiosmtpd.controller import Controller
from aiosmtpd.smtp import SMTP, Envelope, Session

from tests.fakes.loopback import FakeServer


class _EphemeralController(Controller):
    """aiosmtpd's Controller connects to its own port once to finish start-up; with port 0 it
    would connect to port 0, so read the port the OS chose before it does."""

    def _trigger_server(self) -> None:
        server = cast(asyncio.Server, self.server)  # create_server() returns a Server
        self.port = server.sockets[0].getsockname()[1]
        super()._trigger_server()


class _Handler:
    def __init__(self, owner: SmtpServer) -> None:
        self.owner = owner

    async def handle_RCPT(
        self, server: SMTP, session: Session, envelope: Envelope, address: str,
        rcpt_options: list[str],
    ) -> str:
        forced = self.owner._next("rcpt")
        if forced:
            return forced
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        forced = self.owner._next("data")
        if forced:
            return forced
        content = envelope.original_content or cast(bytes, envelope.content)
        message = cast(EmailMessage, message_from_bytes(content, policy=default_policy))
        self.owner._accept(envelope.mail_from or "", list(envelope.rcpt_tos), message)
        return "250 Message accepted for delivery"


class SmtpServer(FakeServer):
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._messages: list[EmailMessage] = []
        self._envelopes: list[tuple[str, list[str]]] = []
        self._forced: dict[str, deque[str]] = {"rcpt": deque(), "data": deque()}
        self._controller = _EphemeralController(_Handler(self), hostname="127.0.0.1", port=0)

    # -- control ---------------------------------------------------------------------------

    @property
    def host(self) -> str:
        return "127.0.0.1"

    @property
    def port(self) -> int:
        return int(self._controller.port)

    @property
    def messages(self) -> list[EmailMessage]:
        with self._lock:
            return list(self._messages)

    @property
    def envelopes(self) -> list[tuple[str, list[str]]]:
        """(MAIL FROM, RCPT TO list) per accepted message."""
        with self._lock:
            return list(self._envelopes)

    def fail_next_data(self, reply: str, times: int = 1) -> None:
        """Answer the next `times` DATA commands with `reply`, e.g. "451 4.3.0 Try later"."""
        with self._lock:
            self._forced["data"].extend([reply] * times)

    def fail_next_rcpt(self, reply: str, times: int = 1) -> None:
        """Answer the next `times` RCPT commands with `reply`, e.g. "550 5.1.1 No such user"."""
        with self._lock:
            self._forced["rcpt"].extend([reply] * times)

    def start(self) -> SmtpServer:
        self._controller.start()
        return self

    def stop(self) -> None:
        self._controller.stop()

    # -- used by the handler (event loop thread) ------------------------------------------

    def _next(self, command: str) -> str | None:
        with self._lock:
            queue = self._forced[command]
            return queue.popleft() if queue else None

    def _accept(self, mail_from: str, rcpt_tos: list[str], message: EmailMessage) -> None:
        with self._lock:
            self._envelopes.append((mail_from, rcpt_tos))
            self._messages.append(message)
