"""Several `kinde-credits serve` instances on one host share nothing on disk but what they are
told to: gunicorn's control socket (by default `$XDG_RUNTIME_DIR/gunicorn.ctl` or
`~/.gunicorn/gunicorn.ctl`, one path for every instance) is not created, so one instance can
neither take over nor delete another's.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import requests

from tests.http_fixtures import LiveServer

pytestmark = pytest.mark.slow


def _ctl_files(*roots: Path) -> list[Path]:
    return sorted(p for root in roots for p in root.rglob("*") if p.name.endswith(".ctl")
                  or p.is_socket())


def test_two_instances_share_no_control_socket(tmp_path: Path) -> None:
    home, runtime = tmp_path / "home", tmp_path / "run"
    home.mkdir()
    runtime.mkdir()
    outside = {k: v for k, v in os.environ.items() if k.startswith("KINDE_")}
    servers: list[LiveServer] = []
    try:
        for name in ("one", "two"):
            var = tmp_path / name
            var.mkdir()
            env = {"HOME": str(home), "XDG_RUNTIME_DIR": str(runtime),
                   "DATABASE_URL": f"sqlite:///{var / 'credits.db'}",
                   "KINDE_CREDITS_VAR_DIR": str(var), **{k: "" for k in outside}}
            servers.append(LiveServer(env).wait_ready())
        assert _ctl_files(home, runtime, tmp_path / "one", tmp_path / "two") == []
        # Stopping one leaves the other serving.
        servers[0].stop()
        assert requests.get(f"{servers[1].url}/healthz", timeout=5).status_code == 200
        assert _ctl_files(home, runtime) == []
    finally:
        for server in servers:
            server.stop()
