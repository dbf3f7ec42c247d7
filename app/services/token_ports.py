"""What the application needs from token verification: the verifiers' shapes and their errors.

The HTTP layer answers by these types alone (401 for a `TokenError`, 400 for a webhook body
that is a `MalformedToken`, 503 for `KeySourceUnavailable`), so it never imports the adapter
that checks signatures (adapters/tokens.py), which raises these same classes or subclasses.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, ClassVar, Protocol

if TYPE_CHECKING:
    from app.domain.principal import Principal


class TokenError(Exception):
    """A token that we refuse. ``code`` is stable and machine-readable; ``message`` is for
    humans and never contains the token."""

    default_code: ClassVar[str] = "invalid_token"

    def __init__(self, message: str, code: str | None = None) -> None:
        # The HTTP layer copies the message into a WWW-Authenticate header, which servers
        # encode as Latin-1 and which must not hold control characters: keep it printable
        # ASCII whatever a future caller passes in (messages are fixed text today).
        message = "".join(ch if " " <= ch <= "~" else "?" for ch in message)
        super().__init__(message)
        self.message = message
        self.code = code or self.default_code


class MalformedToken(TokenError):
    """Not a JWT at all (webhooks answer 400)."""

    default_code = "malformed_token"


class KeySourceUnavailable(Exception):
    """The signing keys could not be fetched (network, HTTP status, bad JWKS document).

    Not a `TokenError`: the token may be fine; answer 503 so the caller retries.
    """


class AccessVerifier(Protocol):
    """Turns a bearer token into the caller, or raises `TokenError`/`KeySourceUnavailable`."""

    def verify(self, token: str) -> Principal: ...


class WebhookEventVerifier(Protocol):
    """Turns a webhook body into its verified claims, or raises `TokenError` (a
    `MalformedToken` when it is not a JWT at all) or `KeySourceUnavailable`."""

    def verify(self, body: bytes | str) -> Mapping[str, Any]: ...
