"""HTTP keep-alive on the real server (`kinde-credits serve`, gunicorn gthread): two HTTP/1.1
requests share one TCP connection, gunicorn does not warn that it cannot keep connections
alive, and idle kept-alive connections never stop the worker from serving new ones."""

from __future__ import annotations

import http.client
import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from app.wsgi_server import worker_connections
from tests.http_fixtures import LiveServer

pytestmark = pytest.mark.slow

THREADS = 2
NO_KEEPALIVE_WARNING = "No keepalived connections can be handled"


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    var: Path = tmp_path_factory.mktemp("keepalive")
    outside = {k: "" for k in os.environ if k.startswith("KINDE_")}
    live = LiveServer(
        {**outside, "DATABASE_URL": f"sqlite:///{var / 'credits.db'}",
         "KINDE_CREDITS_VAR_DIR": str(var)},
        workers=1,
        threads=THREADS,
    )
    try:
        yield live.wait_ready()
    finally:
        live.stop()


def _get(conn: http.client.HTTPConnection, path: str = "/healthz") -> http.client.HTTPResponse:
    conn.request("GET", path)
    response = conn.getresponse()
    response.read()
    return response


def test_two_requests_share_one_connection(server: LiveServer) -> None:
    conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=10)
    try:
        first = _get(conn)
        assert first.status == 200
        assert first.version == 11
        assert (first.getheader("Connection") or "").lower() != "close"
        assert not first.will_close
        sock = conn.sock
        assert sock is not None
        local = sock.getsockname()

        second = _get(conn)
        assert second.status == 200
        assert (second.getheader("Connection") or "").lower() != "close"
        # http.client reopens a closed connection on its own: the same socket object, still
        # bound to the same local port, is the proof that no new connection was made.
        assert conn.sock is sock
        assert sock.getsockname() == local
    finally:
        conn.close()


def test_gunicorn_can_keep_connections_alive(server: LiveServer) -> None:
    output = server.output()
    assert "Booting worker" in output  # the log is the server's, and it has started
    assert NO_KEEPALIVE_WARNING not in output
    assert worker_connections(THREADS) > THREADS


def test_idle_connections_do_not_starve_new_ones(server: LiveServer) -> None:
    # More idle kept-alive connections than the worker has threads or connection slots: each
    # has been answered and is left open. A new client is still served.
    idle = [http.client.HTTPConnection("127.0.0.1", server.port, timeout=10)
            for _ in range(worker_connections(THREADS) + THREADS)]
    try:
        for conn in idle:
            assert _get(conn).status == 200
        for _ in range(3):
            fresh = http.client.HTTPConnection("127.0.0.1", server.port, timeout=10)
            try:
                assert _get(fresh).status == 200
            finally:
                fresh.close()
        # The ones the worker kept still serve on their own connection.
        kept = [conn for conn in idle if conn.sock is not None]
        assert kept
        for conn in kept:
            sock = conn.sock
            assert _get(conn).status == 200
            assert conn.sock is sock
    finally:
        for conn in idle:
            conn.close()
