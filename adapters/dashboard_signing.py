"""Signing for the customer dashboard: links, session cookies and CSRF tokens (itsdangerous).

The key is `DASHBOARD_SECRET` when set. Otherwise a random 32-byte key is created once under
`KINDE_CREDITS_VAR_DIR` (`dashboard-secret`, mode 0600) and reused, like the local-mode signing
key, so links survive a restart. Several instances must share one key: set `DASHBOARD_SECRET`.

Each purpose has its own salt, so a session cookie can never be replayed as a link (or a CSRF
token as either). Expiry is NOT itsdangerous' timestamp: the payload carries its own `exp`,
checked by the service against the injectable clock.
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import tempfile
from pathlib import Path
from typing import Any

from itsdangerous import BadSignature, URLSafeSerializer

from app.services.dashboard import InvalidSignature

SECRET_BYTES = 32


def load_or_create_secret(path: Path) -> bytes:
    """The persisted key at `path`, created on first use (safe when processes race)."""
    path = Path(path)
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp_name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
        try:
            with os.fdopen(fd, "w") as fh:  # mkstemp: 0600 from the start
                fh.write(secrets.token_hex(SECRET_BYTES))
                fh.flush()
                os.fsync(fh.fileno())
            # os.link refuses to replace a key another process already put there: one wins.
            with contextlib.suppress(FileExistsError):
                os.link(tmp_name, path)
        finally:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(tmp_name)
    text = path.read_text().strip()
    if len(text) < 32:
        raise ValueError(f"{path} does not hold a dashboard key (delete it to make a new one)")
    return text.encode()


class ItsDangerousSigner:
    """`app.services.dashboard.Signer` over itsdangerous' HMAC-SHA1/SHA512 serializer."""

    def __init__(self, secret: bytes | str) -> None:
        self._secret = secret

    def _serializer(self, purpose: str) -> URLSafeSerializer:
        return URLSafeSerializer(
            self._secret,
            salt=f"kinde-credits.dashboard.{purpose}",
            signer_kwargs={"digest_method": _sha256},
            serializer=_CompactJson,
        )

    def sign(self, purpose: str, payload: dict[str, Any]) -> str:
        return str(self._serializer(purpose).dumps(payload))

    def verify(self, purpose: str, token: str) -> dict[str, Any]:
        try:
            payload = self._serializer(purpose).loads(token)
        except (BadSignature, ValueError, UnicodeError) as exc:
            raise InvalidSignature("the signature does not match") from exc
        if not isinstance(payload, dict):
            raise InvalidSignature("not a dashboard payload")
        return payload


def _sha256(data: bytes = b"") -> Any:
    import hashlib

    return hashlib.sha256(data)


class _CompactJson:
    """JSON without spaces: shorter links."""

    @staticmethod
    def dumps(obj: Any) -> str:
        return json.dumps(obj, separators=(",", ":"), sort_keys=True)

    @staticmethod
    def loads(data: str | bytes) -> Any:
        return json.loads(data)
