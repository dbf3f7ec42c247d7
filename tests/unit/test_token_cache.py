"""The verified-token cache never lets an expired or altered token through."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from adapters.local_keys import LocalKeyring
from adapters.tokens import AccessTokenVerifier, TokenError

ISSUER, AUDIENCE = "https://acme.kinde.com", "https://api.acme.com"


@pytest.fixture
def keyring(tmp_path: Path) -> LocalKeyring:
    return LocalKeyring.load_or_create(tmp_path / "k.pem")


def test_cached_token_still_expires(keyring: LocalKeyring) -> None:
    verifier = AccessTokenVerifier(keyring.key_source(), ISSUER, AUDIENCE, leeway=0)
    token = keyring.sign_access_token("kp_a", None, [], AUDIENCE, ISSUER, ttl_seconds=1)
    assert verifier.verify(token).subject == "kp_a"
    assert verifier.verify(token).subject == "kp_a"  # from the cache
    time.sleep(1.2)
    with pytest.raises(TokenError):
        verifier.verify(token)


def test_altered_copy_of_a_cached_token_is_refused(keyring: LocalKeyring) -> None:
    verifier = AccessTokenVerifier(keyring.key_source(), ISSUER, AUDIENCE)
    token = keyring.sign_access_token("kp_a", None, [], AUDIENCE, ISSUER)
    verifier.verify(token)
    head, payload, sig = token.split(".")
    forged = f"{head}.{payload}.{sig[:-2]}{'AA' if sig[-2:] != 'AA' else 'BB'}"
    with pytest.raises(TokenError):
        verifier.verify(forged)
    other = LocalKeyring.load_or_create(Path(keyring_path_other()))
    with pytest.raises(TokenError):
        verifier.verify(other.sign_access_token("kp_a", None, [], AUDIENCE, ISSUER))


def keyring_path_other() -> str:
    import tempfile

    return str(Path(tempfile.mkdtemp()) / "other.pem")
