"""Dashboard signing: the persisted key, purposes that cannot stand in for each other, and the
DASHBOARD_* settings."""

from __future__ import annotations

import stat
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from adapters.dashboard_signing import ItsDangerousSigner, load_or_create_secret
from app.services.dashboard import InvalidSignature
from app.settings import Settings, SettingsError


def test_secret_is_made_once_private_and_reused(tmp_path: Path) -> None:
    path = tmp_path / "var" / "dashboard-secret"
    with ThreadPoolExecutor(8) as pool:  # processes starting together agree on one key
        keys = set(pool.map(lambda _: load_or_create_secret(path), range(16)))
    assert len(keys) == 1
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert load_or_create_secret(path) == keys.pop()
    assert not [p for p in path.parent.iterdir() if p.name.endswith(".tmp")]


def test_a_damaged_secret_file_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "dashboard-secret"
    path.write_text("short")
    with pytest.raises(ValueError, match="delete it"):
        load_or_create_secret(path)


def test_signatures_are_per_purpose_and_per_key() -> None:
    signer = ItsDangerousSigner(b"k" * 32)
    token = signer.sign("link", {"w": "kp_a", "exp": 1})
    assert signer.verify("link", token) == {"w": "kp_a", "exp": 1}
    with pytest.raises(InvalidSignature):
        signer.verify("session", token)  # a link is not a session cookie
    with pytest.raises(InvalidSignature):
        ItsDangerousSigner(b"x" * 32).verify("link", token)
    payload, _, signature = token.partition(".")
    for bad in (payload + ".", "." + signature, token + "x", "not a token", token.upper()):
        with pytest.raises(InvalidSignature):
            signer.verify("link", bad)


def test_dashboard_settings(tmp_path: Path) -> None:
    base = {"KINDE_CREDITS_VAR_DIR": str(tmp_path)}
    settings = Settings.from_env(base, load_dotenv=False)
    assert settings.dashboard_secret is None and settings.dashboard_auto_recharge is True
    assert settings.dashboard_unbilled_purchases is False
    assert settings.dashboard_secret_path == tmp_path / "dashboard-secret"
    with pytest.raises(SettingsError, match="DASHBOARD_SECRET"):
        Settings.from_env({**base, "DASHBOARD_SECRET": "too-short"}, load_dotenv=False)
    with pytest.raises(SettingsError, match="DASHBOARD_BASE_URL"):
        Settings.from_env({**base, "DASHBOARD_BASE_URL": "http://credits.example.com"},
                          load_dotenv=False)
    custom = Settings.from_env({**base, "DASHBOARD_SECRET": "s" * 40,
                                "DASHBOARD_BASE_URL": "https://credits.example.com/",
                                "DASHBOARD_UNBILLED_PURCHASES": "true",
                                "DASHBOARD_AUTO_RECHARGE": "false"}, load_dotenv=False)
    assert custom.dashboard_base_url == "https://credits.example.com"
    assert custom.dashboard_unbilled_purchases and not custom.dashboard_auto_recharge
