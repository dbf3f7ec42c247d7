"""Local mode: the service's own RSA key, so everything works without a Kinde account.

With no ``KINDE_DOMAIN`` the service makes one RSA key, serves its JWKS, and the CLI signs access
tokens and webhooks with it in the same shapes Kinde uses (REFERENCE.md): RS256, a
colon-separated hex ``kid``, access tokens with ``iss``/``aud`` list/``scp``/``scope``/``gty``,
webhooks with NO ``iss``/``aud``/``exp``. The verifiers in adapters/tokens.py then run unchanged
against `LocalKeyring.key_source()`.

The private key lives as an unencrypted PKCS#8 PEM file with mode 0600. It is a development key:
never point a production deployment at it.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

import jwt
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from adapters.tokens import ALGORITHM, StaticKeySource

log = logging.getLogger(__name__)

KEY_BITS = 2048
LOCAL_CLIENT_ID = "local"


def key_id(public_key: rsa.RSAPublicKey) -> str:
    """Kinde-style kid: first 16 bytes of SHA-256 over the DER SubjectPublicKeyInfo, as
    colon-separated lowercase hex (``"4c:fa:9e:..."``)."""
    der = public_key.public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    return ":".join(f"{b:02x}" for b in hashlib.sha256(der).digest()[:16])


class LocalKeyring:
    """One RSA signing key plus its kid and JWKS."""

    def __init__(self, private_key: rsa.RSAPrivateKey) -> None:
        self._private_key = private_key
        self.public_key = private_key.public_key()
        self.kid = key_id(self.public_key)

    # -- persistence -----------------------------------------------------------------------

    @classmethod
    def load_or_create(cls, path: Path) -> LocalKeyring:
        """Load the PEM key at ``path``, creating it on first use.

        Safe when several processes start at once (gunicorn workers, CLI next to the server):
        each writes its candidate to a private temp file and ``os.link``\\ s it into place, which
        fails if the name exists, so exactly one candidate wins and everyone re-reads that one.
        """
        path = Path(path)
        if not path.exists():
            path.parent.mkdir(parents=True, exist_ok=True)
            cls._create(path)
        return cls(cls._read(path))

    @staticmethod
    def _create(path: Path) -> None:
        key = rsa.generate_private_key(public_exponent=65537, key_size=KEY_BITS)
        pem = key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
        # mkstemp creates the file 0600 from the start, so the key is never world-readable.
        fd, tmp_name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
        try:
            with os.fdopen(fd, "wb") as fh:
                fh.write(pem)
                fh.flush()
                os.fsync(fh.fileno())
            try:
                os.link(tmp_name, path)  # atomic, and refuses to overwrite a winner's key
            except FileExistsError:
                pass
            except OSError:
                # Filesystems without hard links: O_EXCL still lets only one creator win; a
                # reader may briefly see a partial file, which _read retries.
                with contextlib.suppress(FileExistsError):
                    excl = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
                    with os.fdopen(excl, "wb") as fh:
                        fh.write(pem)
                        fh.flush()
                        os.fsync(fh.fileno())
            else:
                log.info("created local signing key at %s", path)
        finally:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(tmp_name)

    @staticmethod
    def _read(path: Path, attempts: int = 50) -> rsa.RSAPrivateKey:
        for attempt in range(attempts):
            data = path.read_bytes()
            try:
                key = serialization.load_pem_private_key(data, password=None)
            except ValueError:
                # Only the no-hard-link fallback can expose a half-written file; give the writer
                # a moment before declaring the file corrupt.
                if attempt == attempts - 1:
                    raise ValueError(f"{path} does not hold a readable PEM private key") from None
                time.sleep(0.02)
                continue
            if not isinstance(key, rsa.RSAPrivateKey):
                raise ValueError(f"{path} holds a non-RSA key; local mode needs RSA")
            if path.stat().st_mode & 0o077:
                log.warning("local signing key %s is readable by other users; chmod 600 it", path)
            return key
        raise AssertionError("unreachable")

    # -- public material -------------------------------------------------------------------

    def jwks(self) -> dict[str, Any]:
        """The public JWKS, as served at ``/.well-known/jwks.json`` in local mode."""
        jwk = jwt.algorithms.RSAAlgorithm.to_jwk(self.public_key, as_dict=True)
        return {
            "keys": [
                {
                    "kty": "RSA",
                    "kid": self.kid,
                    "use": "sig",
                    "alg": ALGORITHM,
                    "n": jwk["n"],
                    "e": jwk["e"],
                }
            ]
        }

    def key_source(self) -> StaticKeySource:
        """A key source over this keyring's JWKS, for the verifiers (no HTTP)."""
        return StaticKeySource(self.jwks())

    # -- signing ---------------------------------------------------------------------------

    def _sign(self, claims: dict[str, Any]) -> str:
        return jwt.encode(
            claims, self._private_key, algorithm=ALGORITHM, headers={"kid": self.kid, "typ": "JWT"}
        )

    def sign_access_token(
        self,
        sub: str | None,
        org_code: str | None,
        scopes: list[str],
        audience: str | None,
        issuer: str,
        ttl_seconds: int = 3600,
        machine: bool = False,
        client_id: str = LOCAL_CLIENT_ID,
    ) -> str:
        """An access token shaped like Kinde's (user, or M2M when ``machine``)."""
        now = int(time.time())
        claims: dict[str, Any] = {
            "iss": issuer.rstrip("/"),
            "iat": now,
            "exp": now + ttl_seconds,
            "jti": str(uuid.uuid4()),
            "azp": client_id,
            "scp": list(scopes),
            "scope": " ".join(scopes),
        }
        if audience:
            claims["aud"] = [audience]  # Kinde always sends an array
        if sub is not None:
            claims["sub"] = sub
        if org_code is not None:
            claims["org_code"] = org_code
        if machine:
            claims["gty"] = ["client_credentials"]
        return self._sign(claims)

    def sign_webhook(self, payload: dict[str, Any]) -> str:
        """A webhook body like Kinde's: the payload as claims, nothing added."""
        return self._sign(dict(payload))
