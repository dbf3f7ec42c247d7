"""e2e fixtures: the real server (`kinde-credits serve`, gunicorn) on a loopback port, in Kinde
mode against the test JWKS served over HTTP, with a fresh SQLite database per module."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.fakes.jwks_server import JwksServer
from tests.http_fixtures import *  # noqa: F403
from tests.http_fixtures import AUDIENCE, ISSUER, LiveServer


@pytest.fixture(scope="module")
def live_server(
    jwks_server: JwksServer, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[LiveServer]:
    var: Path = tmp_path_factory.mktemp("e2e")
    server = LiveServer(
        {
            "DATABASE_URL": f"sqlite:///{var / 'credits.db'}",
            "KINDE_CREDITS_VAR_DIR": str(var),
            "KINDE_DOMAIN": ISSUER,
            "KINDE_API_AUDIENCE": AUDIENCE,
            "KINDE_JWKS_URL": jwks_server.url,
            "SALES_PAID_ELSEWHERE": "true",
        },
        workers=2,
        threads=4,
    )
    try:
        yield server.wait_ready()
    finally:
        server.stop()
