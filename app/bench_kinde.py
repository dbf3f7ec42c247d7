"""A tiny stand-in for Kinde, so `kinde-credits bench` measures the service in Kinde mode.

The bench must not import tests/ (tests/fakes/fake_kinde.py validates every call against the
OpenAPI spec, far too slow and heavy for a load test). This one serves only what a serving
instance and its worker reach for, as fast as it can:
- `/.well-known/jwks.json`: the public half of a key this process generated, so access tokens
  and webhook deliveries the bench signs verify exactly as Kinde's would (RS256 via JWKS);
- `/oauth2/token`: an M2M token for the worker's Management API calls;
- any `/api/v1/...` call: `{"code": "OK"}` (meter usage reports land here; lookups get empty
  answers), counted so the figure can say the worker really delivered.
It runs in daemon threads of the bench's own process on 127.0.0.1 at an ephemeral port.
"""

from __future__ import annotations

import json
import threading
import time
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

from adapters.local_keys import LocalKeyring

AUDIENCE = "https://bench.kinde-credits.invalid/api"
M2M_CLIENT_ID = "bench_m2m"
M2M_CLIENT_SECRET = "bench-secret"  # noqa: S105  (a loopback fake's, not a real secret)


class BenchKinde:
    """`with BenchKinde(workdir) as kinde:` - serves JWKS, tokens and an API sink."""

    def __init__(self, workdir: Path) -> None:
        self.keyring = LocalKeyring.load_or_create(workdir / "bench-kinde-key.pem")
        self.api_calls = 0
        self._lock = threading.Lock()
        jwks = json.dumps(self.keyring.jwks()).encode()
        owner = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def _answer(self, status: int, body: bytes) -> None:
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def _drain(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                if length:
                    self.rfile.read(length)

            def do_GET(self) -> None:  # noqa: N802  (http.server's naming)
                if self.path.startswith("/.well-known/jwks.json"):
                    self._answer(200, jwks)
                    return
                owner._count()
                self._answer(200, b'{"code": "OK", "agreements": [], "has_more": false}')

            def do_POST(self) -> None:  # noqa: N802
                self._drain()
                if self.path.startswith("/oauth2/token"):
                    self._answer(200, json.dumps({
                        "access_token": uuid.uuid4().hex, "token_type": "bearer",
                        "expires_in": 86400}).encode())
                    return
                owner._count()
                self._answer(200, b'{"code": "OK", "message": "Success"}')

            do_PATCH = do_POST  # noqa: N815

            def log_message(self, format: str, *args: Any) -> None:  # noqa: A002
                return  # a load test would drown stderr

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self._server.server_address[1]}"
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    def _count(self) -> None:
        with self._lock:
            self.api_calls += 1

    def __enter__(self) -> BenchKinde:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._server.shutdown()
        self._server.server_close()

    def env(self) -> dict[str, str]:
        """The settings that put a service in Kinde mode against this fake."""
        return {"KINDE_DOMAIN": self.url, "KINDE_API_AUDIENCE": AUDIENCE,
                "KINDE_M2M_CLIENT_ID": M2M_CLIENT_ID,
                "KINDE_M2M_CLIENT_SECRET": M2M_CLIENT_SECRET}

    def access_token(self, scopes: list[str]) -> str:
        """An M2M access token shaped like Kinde's, for this fake's issuer and audience."""
        return self.keyring.sign_access_token(None, None, scopes, AUDIENCE, self.url,
                                              ttl_seconds=3600, machine=True)

    def webhook(self, event_type: str, data: dict[str, Any]) -> str:
        """A signed delivery with a fresh event id, as Kinde sends it (the JWT is the body)."""
        return self.keyring.sign_webhook({
            "type": event_type, "event_id": f"event_{uuid.uuid4().hex}", "source": "api",
            "timestamp": time.strftime("%Y-%m-%dT%H:%M:%S+00:00", time.gmtime()),
            "data": data,
        })
