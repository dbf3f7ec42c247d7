"""Local mode end to end: `kinde-credits token` mints a token that the running server (local
mode, its own key) accepts; in Kinde mode the command refuses."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests

from tests.http_fixtures import LiveServer

pytestmark = pytest.mark.slow


def _env(var: Path, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items()
           if not k.startswith("KINDE_") and k != "DATABASE_URL"}
    return {**env, "DATABASE_URL": f"sqlite:///{var / 'credits.db'}",
            "KINDE_CREDITS_VAR_DIR": str(var), **extra}


def cli(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "app.cli", *args], env=env,
                          capture_output=True, text=True, timeout=60)


@pytest.fixture(scope="module")
def local_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[LiveServer, Path]]:
    var = tmp_path_factory.mktemp("local")
    server = LiveServer({k: v for k, v in _env(var).items()
                         if k in ("DATABASE_URL", "KINDE_CREDITS_VAR_DIR")})
    # LiveServer merges os.environ; make sure no KINDE_* from the outside switches modes.
    try:
        yield server.wait_ready(), var
    finally:
        server.stop()


def test_cli_token_works_against_local_server(local_server: tuple[LiveServer, Path]) -> None:
    server, var = local_server
    env = _env(var)
    admin = cli(env, "token", "--m2m", "--scope", "credits:admin")
    assert admin.returncode == 0, admin.stderr
    user = cli(env, "token", "--sub", "kp_local", "--org", "org_local", "--ttl", "120")
    assert user.returncode == 0, user.stderr
    top_up = requests.post(f"{server.url}/v1/wallets/org_local/top-ups",
                           json={"credits": 42, "reason": "try it"},
                           headers={"Authorization": f"Bearer {admin.stdout.strip()}"})
    assert top_up.status_code == 201, top_up.text
    wallet = requests.get(f"{server.url}/v1/wallets/org_local",
                          headers={"Authorization": f"Bearer {user.stdout.strip()}"})
    assert wallet.status_code == 200 and wallet.json()["balance"] == 42
    other = requests.get(f"{server.url}/v1/wallets/kp_someone_else",
                         headers={"Authorization": f"Bearer {user.stdout.strip()}"})
    assert other.status_code == 404


def test_cli_token_usage_errors(tmp_path: Path) -> None:
    env = _env(tmp_path)
    assert cli(env, "token").returncode == 2
    assert cli(env, "token", "--sub", "alice").returncode == 2
    assert cli(env, "token", "--sub", "kp_a", "--org", "acme").returncode == 2
    assert cli(env, "token", "--sub", "kp_a", "--ttl", "0").returncode == 2


def test_cli_token_refuses_in_kinde_mode(tmp_path: Path) -> None:
    env = _env(tmp_path, KINDE_DOMAIN="https://acme.kinde.com",
               KINDE_API_AUDIENCE="https://api.acme.test")
    result = cli(env, "token", "--sub", "kp_alice")
    assert result.returncode == 1
    assert "KINDE_DOMAIN" in result.stderr and "Kinde" in result.stderr
    assert result.stdout == ""


def test_cli_token_refuses_a_ttl_beyond_the_lifetime_maximum(tmp_path: Path) -> None:
    """The service refuses tokens living longer than TOKEN_MAX_LIFETIME_SECONDS (a day by
    default), so `token` does not mint one."""
    long = cli(_env(tmp_path), "token", "--sub", "kp_a", "--ttl", "90000")
    assert long.returncode == 2 and "TOKEN_MAX_LIFETIME_SECONDS" in long.stderr
    allowed = cli(_env(tmp_path, TOKEN_MAX_LIFETIME_SECONDS="100000"),
                  "token", "--sub", "kp_a", "--ttl", "90000")
    assert allowed.returncode == 0, allowed.stderr
