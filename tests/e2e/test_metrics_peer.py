"""`/metrics` on the real server (gunicorn) listening on every interface: a client reaching it
through a non-loopback address is refused whatever `X-Forwarded-For` / `Forwarded` say, and a
loopback client is answered; with METRICS_TOKEN set, only the token counts (issue 18, 9)."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
import requests

from tests.http_fixtures import free_port

pytestmark = pytest.mark.slow

TOKEN = "metrics-e2e-token-0123456789"
SPOOF = {"X-Forwarded-For": "127.0.0.1", "Forwarded": "for=127.0.0.1", "X-Real-IP": "127.0.0.1"}


def _outward_address() -> str | None:
    """This machine's own non-loopback IPv4 address (no packet is sent), if it has one."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        try:
            probe.connect(("192.0.2.254", 9))
            address = str(probe.getsockname()[0])
        except OSError:
            return None
    return None if address.startswith("127.") else address


@contextmanager
def _serve(var: Path, **extra: str) -> Iterator[str]:
    port = free_port()
    env = {k: v for k, v in os.environ.items()
           if not k.startswith("KINDE_") and k not in ("DATABASE_URL", "METRICS_TOKEN")}
    env.update({"DATABASE_URL": f"sqlite:///{var / 'credits.db'}",
                "KINDE_CREDITS_VAR_DIR": str(var), "RUN_WORKER": "false", **extra})
    log = tempfile.TemporaryFile()  # noqa: SIM115 - closed below
    process = subprocess.Popen(
        [sys.executable, "-m", "app.cli", "serve", "--host", "0.0.0.0", "--port", str(port),
         "--workers", "1", "--threads", "2", "--no-worker"],
        env=env, stdout=log, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 30
        while True:
            if process.poll() is not None:
                log.seek(0)
                raise RuntimeError(log.read().decode(errors="replace")[-3000:])
            try:
                if requests.get(f"http://127.0.0.1:{port}/healthz", timeout=1).ok:
                    break
            except requests.RequestException:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError("server did not start")
            time.sleep(0.1)
        yield str(port)
    finally:
        process.terminate()
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        log.close()


@pytest.fixture
def outward() -> str:
    address = _outward_address()
    if address is None:
        pytest.skip("this machine has no non-loopback IPv4 address to connect through")
    return address


def test_spoofed_forwarding_headers_do_not_make_a_remote_client_local(
    outward: str, tmp_path: Path
) -> None:
    with _serve(tmp_path) as port:
        remote = requests.get(f"http://{outward}:{port}/metrics", headers=SPOOF, timeout=5)
        assert remote.status_code == 403, remote.text
        assert "kinde_credits_wallets" not in remote.text
        local = requests.get(f"http://127.0.0.1:{port}/metrics", timeout=5)
        assert local.status_code == 200 and "kinde_credits_wallets" in local.text


def test_with_a_token_only_the_token_counts(outward: str, tmp_path: Path) -> None:
    with _serve(tmp_path, METRICS_TOKEN=TOKEN) as port:
        for host in (outward, "127.0.0.1"):
            url = f"http://{host}:{port}/metrics"
            assert requests.get(url, headers=SPOOF, timeout=5).status_code == 401
            answer = requests.get(url, headers={"Authorization": f"Bearer {TOKEN}"}, timeout=5)
            assert answer.status_code == 200 and "kinde_credits_wallets" in answer.text
