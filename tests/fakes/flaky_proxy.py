"""A loopback HTTP proxy that misbehaves on purpose, to test the client's retries.

Each request is read whole from the client, forwarded to the real server on a fresh connection
(`Connection: close`, so the whole response is what the server sends before closing), and then,
depending on the faults queued:
- "drop": the request reached the server and was applied, but the client gets no answer (the
  proxy closes its connection): a dropped connection after the work was done;
- "503": the proxy answers 503 itself without forwarding;
- "slow": the response is held back for `delay` seconds (past the client's timeout).
Faults apply to requests whose method is in `methods`, in the order queued.
"""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterable


def _read_request(conn: socket.socket) -> bytes | None:
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = conn.recv(65536)
        if not chunk:
            return None
        data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    length = 0
    for line in head.split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            length = int(value.strip())
    while len(body) < length:
        chunk = conn.recv(65536)
        if not chunk:
            return None
        body += chunk
    lines = [line for line in head.split(b"\r\n")
             if not line.lower().startswith(b"connection:")]
    return b"\r\n".join([*lines, b"Connection: close"]) + b"\r\n\r\n" + body


class FlakyProxy:
    def __init__(self, upstream_port: int, *, delay: float = 2.0,
                 methods: Iterable[str] = ("POST", "PUT")) -> None:
        self.upstream_port = upstream_port
        self.delay = delay
        self.methods = {m.encode() for m in methods}
        self.faults: list[str] = []
        self.forwarded: list[bytes] = []  # request lines the server received
        self._lock = threading.Lock()
        self._sock = socket.socket()
        self._sock.bind(("127.0.0.1", 0))
        self._sock.listen(32)
        self.port = self._sock.getsockname()[1]
        self.url = f"http://127.0.0.1:{self.port}"
        self._stop = False
        self._thread = threading.Thread(target=self._serve, daemon=True)

    def __enter__(self) -> FlakyProxy:
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._stop = True
        self._sock.close()
        self._thread.join(timeout=5)

    def _serve(self) -> None:
        while not self._stop:
            try:
                conn, _ = self._sock.accept()
            except OSError:
                return
            threading.Thread(target=self._handle, args=(conn,), daemon=True).start()

    def _next_fault(self, request: bytes) -> str | None:
        method = request.split(b" ", 1)[0]
        with self._lock:
            if method in self.methods and self.faults:
                return self.faults.pop(0)
        return None

    def _handle(self, conn: socket.socket) -> None:
        with conn:
            while True:
                request = _read_request(conn)
                if request is None:
                    return
                fault = self._next_fault(request)
                if fault == "503":
                    conn.sendall(b"HTTP/1.1 503 Service Unavailable\r\nContent-Type: "
                                 b"application/json\r\nContent-Length: 2\r\n\r\n{}")
                    continue
                with socket.create_connection(("127.0.0.1", self.upstream_port)) as up:
                    up.sendall(request)
                    self.forwarded.append(request.split(b"\r\n", 1)[0])
                    response = b""
                    while chunk := up.recv(65536):
                        response += chunk
                if fault == "drop":
                    return  # closes the client's connection without an answer
                if fault == "slow":
                    time.sleep(self.delay)
                try:
                    conn.sendall(response)
                except OSError:
                    return
                return  # the response said Connection: close
