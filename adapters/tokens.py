"""Verification of Kinde JWTs: API access tokens and webhook bodies.

Both kinds are RS256 JWTs signed with the keys in the Kinde business's JWKS
(see /work/shared/kinde/REFERENCE.md). The rules that matter for security:

* The algorithm is pinned to RS256 and checked from the header BEFORE any key is looked up, so
  ``alg: none``, HS256-with-the-public-key and ES* tricks never reach a key.
* The key comes only from the configured key source, looked up by the header ``kid`` (an opaque
  string; Kinde uses colon-separated hex). ``jku``, ``x5u`` and ``jwk`` headers are never read.
* Access tokens must carry ``exp`` and ``iss`` (and ``aud`` when an audience is configured),
  and may be valid for at most ``max_lifetime`` seconds (``TOKEN_MAX_LIFETIME_SECONDS``,
  default a day, Kinde's default): from ``iat`` to ``exp``, or from now without ``iat``.
  ``exp``/``iat``/``nbf`` must be JSON integers (no bools, fractions or ``1e300``).
  Webhooks carry none of ``iss``/``aud``/``exp``/``iat``, so they are not required there, but are
  honoured when present.
* The two kinds never stand in for each other: Kinde signs both with the same key, so an access
  token carrying a webhook field (``type``/``event_id``/``data``) and a webhook carrying an
  access-token claim (``aud``/``azp``/``gty``/``scp``/``scope``/``sub``) are refused.
* Claims are checked for their type, not coerced: a present claim of the wrong type (a string
  ``exp``, a number ``aud``, an empty ``org_code``) refuses the token; it is never read as
  absent (fail closed).
* Tokens are never logged nor put into error messages, and error messages never echo token
  content (not even the ``alg``): they end up in ``WWW-Authenticate`` headers.

`KeySourceUnavailable` is deliberately NOT a `TokenError`: it means *we* could not get keys, so
the HTTP layer should answer 503 (Kinde then retries a webhook) rather than 400/401. Those two
and `MalformedToken` are the application's own types (app/services/ports.py), so the HTTP
layer handles them without importing this module; the finer refusals below subclass them.
"""

from __future__ import annotations

import base64
import binascii
import json
import logging
import math
import re
import threading
import time
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any, Protocol

import jwt
import requests
from cryptography.hazmat.primitives.asymmetric.rsa import RSAPrivateKey, RSAPublicKey

from app.services.ports import KeySourceUnavailable, MalformedToken, TokenError

if TYPE_CHECKING:
    from app.domain.principal import Principal

log = logging.getLogger(__name__)

ALGORITHM = "RS256"
MIN_RSA_BITS = 2048

# A compact JWS: three base64url segments; the signature may be empty (that is how `alg: none`
# looks, and we want to answer it with "algorithm not allowed", not "not a JWT").
_SEGMENT = re.compile(r"[A-Za-z0-9_-]*")


# --------------------------------------------------------------------------------------------
# Errors
# --------------------------------------------------------------------------------------------


class InvalidSignature(TokenError):
    """The signature does not verify with the key named by ``kid`` (401)."""

    default_code = "invalid_signature"


class UnknownKey(TokenError):
    """No ``kid``, or a ``kid`` that the key source does not know, even after a refresh (401)."""

    default_code = "unknown_key"


class AlgorithmNotAllowed(TokenError):
    """Any ``alg`` other than RS256 (401)."""

    default_code = "algorithm_not_allowed"


class ClaimsInvalid(TokenError):
    """Signature fine, claims not: expired, wrong iss/aud, missing claim, bad payload (401)."""

    default_code = "claims_invalid"


# --------------------------------------------------------------------------------------------
# Key sources
# --------------------------------------------------------------------------------------------


class KeySource(Protocol):
    """Where verification keys come from. Implementations raise `UnknownKey` for a kid they
    don't have and `KeySourceUnavailable` when they cannot tell."""

    def get_key(self, kid: str) -> RSAPublicKey: ...


def parse_jwks(document: Any) -> dict[str, RSAPublicKey]:
    """Usable RS256 verification keys of a JWKS document, by ``kid``.

    Only RSA keys with ``use`` "sig" (or none), an ``alg`` of RS256 (or none), a non-empty
    string ``kid`` and at least 2048 bits are kept; other entries are skipped, not fatal, so one
    odd key in the set cannot lock out the good ones. A document that is not
    ``{"keys": [...]}`` raises `KeySourceUnavailable`.
    """
    if not isinstance(document, Mapping) or not isinstance(document.get("keys"), list):
        raise KeySourceUnavailable("JWKS document is not an object with a 'keys' list")
    keys: dict[str, RSAPublicKey] = {}
    for entry in document["keys"]:
        if not isinstance(entry, Mapping):
            continue
        kid = entry.get("kid")
        if not isinstance(kid, str) or not kid:
            continue
        if entry.get("kty") != "RSA" or entry.get("use", "sig") != "sig":
            continue
        if entry.get("alg", ALGORITHM) != ALGORITHM:
            continue
        try:
            key = jwt.PyJWK(dict(entry), algorithm=ALGORITHM).key
        except (jwt.PyJWKError, jwt.InvalidKeyError, ValueError, TypeError, KeyError):
            log.warning("skipping unparsable JWKS key kid=%s", kid)
            continue
        if isinstance(key, RSAPrivateKey):
            # A JWKS should never publish private parts; use only the public half.
            key = key.public_key()
        if not isinstance(key, RSAPublicKey) or key.key_size < MIN_RSA_BITS:
            log.warning("skipping weak or non-RSA JWKS key kid=%s", kid)
            continue
        keys[kid] = key
    return keys


class StaticKeySource:
    """Keys from a JWKS dict held in memory (local mode: the service's own key, no HTTP)."""

    def __init__(self, jwks: Mapping[str, Any]) -> None:
        self._keys = parse_jwks(jwks)

    def get_key(self, kid: str) -> RSAPublicKey:
        try:
            return self._keys[kid]
        except KeyError:
            raise UnknownKey("token signed with a key that is not in the key set") from None


class JwksKeySource:
    """Keys fetched from a JWKS URL, cached, refreshed on an unknown kid at most once per
    cooldown.

    We don't use `jwt.PyJWKClient`: it fetches with urllib (no shared `requests` session), holds
    its lock during every lookup, and starts its cooldown at *every* fetch, including the first,
    so a key rotated just after start-up stays unknown for the whole cooldown. Here:

    * cached lookups are lock-free reads of an immutable dict snapshot;
    * fetches happen under a lock, one at a time; a waiter re-checks after the lock, so a burst
      of requests causes one fetch;
    * an unknown kid forces one refresh, and forced refreshes are at most one per ``cooldown``
      seconds, so a flood of random kids costs at most one fetch per cooldown;
    * when a TTL refresh fails but keys are cached, the stale keys keep serving (logged) and the
      next attempt waits ``error_backoff`` seconds; with no keys at all a failure raises
      `KeySourceUnavailable`, and callers within ``error_backoff`` fail fast without a fetch.
    """

    def __init__(
        self,
        url: str,
        *,
        timeout: float = 3.0,
        ttl: float = 300.0,
        cooldown: float = 30.0,
        error_backoff: float = 5.0,
        session: requests.Session | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.url = url
        self.timeout = timeout
        self.ttl = ttl
        self.cooldown = cooldown
        self.error_backoff = error_backoff
        self._session = session or requests.Session()
        self._clock = clock
        self._lock = threading.Lock()
        # Replaced wholesale, never mutated, so the lock-free fast path sees a consistent dict.
        self._keys: dict[str, RSAPublicKey] | None = None
        self._fresh_until = 0.0
        self._last_forced: float | None = None
        self._failed_at: float | None = None
        self.fetch_count = 0  # observability and tests

    def get_key(self, kid: str) -> RSAPublicKey:
        keys = self._keys
        if keys is not None and self._clock() < self._fresh_until and kid in keys:
            return keys[kid]
        with self._lock:
            now = self._clock()
            fetched = False
            if self._keys is None or now >= self._fresh_until:
                self._load(now)
                fetched = True
            keys = self._keys or {}
            if kid in keys:
                return keys[kid]
            # Unknown kid: maybe Kinde rotated keys. One forced refresh, unless we just fetched
            # in this very call or another forced refresh happened within the cooldown.
            cooling = self._last_forced is not None and now - self._last_forced < self.cooldown
            if not fetched and not cooling:
                self._last_forced = now
                self._fetch(now)
                keys = self._keys or {}
                if kid in keys:
                    return keys[kid]
        raise UnknownKey("token signed with a key that is not in the key set")

    def refresh(self) -> None:
        """Fetch now (e.g. to warm the cache at start-up). Raises `KeySourceUnavailable`."""
        with self._lock:
            self._fetch(self._clock())

    def _load(self, now: float) -> None:
        """TTL/initial load under the lock; may keep serving stale keys on failure."""
        if self._failed_at is not None and now - self._failed_at < self.error_backoff:
            if self._keys is not None:
                return
            raise KeySourceUnavailable("JWKS fetch failed recently; not retrying yet")
        try:
            self._fetch(now)
        except KeySourceUnavailable:
            if self._keys is None:
                raise
            log.warning("JWKS refresh failed; serving cached keys for %ss", self.error_backoff)
            self._fresh_until = now + self.error_backoff

    def _fetch(self, now: float) -> None:
        self.fetch_count += 1
        try:
            response = self._session.get(
                self.url, timeout=self.timeout, headers={"Accept": "application/json"}
            )
            response.raise_for_status()
            document = response.json()
        except (requests.RequestException, ValueError) as exc:
            self._failed_at = now
            # The URL is configuration, not a secret; the exception type is enough detail.
            log.warning("JWKS fetch from %s failed: %s", self.url, type(exc).__name__)
            raise KeySourceUnavailable(
                f"could not fetch signing keys ({type(exc).__name__})"
            ) from exc
        try:
            keys = parse_jwks(document)
        except KeySourceUnavailable:
            self._failed_at = now
            raise
        if not keys:
            log.warning("JWKS at %s holds no usable RS256 signing keys", self.url)
        self._keys = keys
        self._failed_at = None
        self._fresh_until = self._clock() + self.ttl


# --------------------------------------------------------------------------------------------
# Verifiers
# --------------------------------------------------------------------------------------------


# Claims only an access (or ID) token carries: a webhook holding any of them is a token that
# was minted for a person or an app, replayed at the webhook endpoint. Kinde signs both kinds
# with the same key, so the signature alone cannot tell them apart.
ACCESS_TOKEN_CLAIMS: tuple[str, ...] = ("aud", "azp", "gty", "scp", "scope", "sub")
# Claims only a webhook carries (REFERENCE.md: type, event_id, data): an access token holding
# any of them is refused, so a webhook body can never be presented as a bearer token.
WEBHOOK_CLAIMS: tuple[str, ...] = ("type", "event_id", "data")

# Kinde's default access token lifetime is a day (86400 s; set per application in Kinde).
# A token valid for longer is refused: a leaked one would otherwise work for ever.
DEFAULT_MAX_LIFETIME = 86400

# RFC 7519 NumericDate claims; they must be JSON numbers. PyJWT would `int()` a string, so a
# string `exp` used to pass its check and then crash our cache arithmetic.
_NUMERIC_DATE_CLAIMS: tuple[str, ...] = ("exp", "nbf", "iat")


def _b64url_json(segment: str) -> Any:
    padded = segment + "=" * (-len(segment) % 4)
    return json.loads(base64.urlsafe_b64decode(padded))


def _checked_header(token: str) -> dict[str, Any]:
    """Structure check and header parse; raises `MalformedToken` / `AlgorithmNotAllowed`
    / `UnknownKey` / `InvalidSignature` without touching any key.

    Messages are fixed text: nothing from the token is echoed, because the HTTP layer puts the
    message into a ``WWW-Authenticate`` header, which must stay printable ASCII (a non-Latin-1
    ``alg`` echoed there made gunicorn answer its own HTML 500).
    """
    parts = token.split(".")
    if len(parts) != 3 or not parts[0] or not parts[1]:
        raise MalformedToken("not a compact JWT (expected three base64url segments)")
    for part in parts:
        # len % 4 == 1 can never be valid base64.
        if not _SEGMENT.fullmatch(part) or len(part) % 4 == 1:
            raise MalformedToken("not a compact JWT (segment is not base64url)")
    try:
        header = _b64url_json(parts[0])
    except (binascii.Error, ValueError, RecursionError):
        # RecursionError: a header nested thousands deep, sent by anyone before any key check.
        raise MalformedToken("JWT header is not base64url-encoded JSON") from None
    if not isinstance(header, dict):
        raise MalformedToken("JWT header is not a JSON object")

    if header.get("alg") != ALGORITHM:
        raise AlgorithmNotAllowed("the token's algorithm is not allowed; only RS256 is accepted")
    if "crit" in header or "b64" in header:
        # JWS extensions (e.g. RFC 7797 unencoded payloads) are never used by Kinde; refusing
        # them keeps the signed bytes exactly what we parse.
        raise InvalidSignature("JWS extensions (crit/b64) are not accepted")
    kid = header.get("kid")
    if not isinstance(kid, str) or not kid:
        raise UnknownKey("JWT header has no key id (kid)")
    return header


def _numeric_date(claims: Mapping[str, Any], name: str) -> int | None:
    """The NumericDate claim ``name``, None when absent. Anything but a JSON integer (a
    string, a bool, null, a fraction, ``1e300``, NaN, Infinity) is refused: Kinde writes whole
    seconds, and an integer compares exactly with any other number, however large."""
    if name not in claims:
        return None
    value = claims[name]
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ClaimsInvalid(f"claim {name!r} must be a number (seconds since the epoch)")
    if isinstance(value, float) and not math.isfinite(value):
        raise ClaimsInvalid(f"claim {name!r} must be a finite number")
    if isinstance(value, float):
        raise ClaimsInvalid(f"claim {name!r} must be a whole number of seconds")
    return value


def _audiences(value: Any) -> list[str]:
    if isinstance(value, str):
        return [value]
    if isinstance(value, list) and all(isinstance(item, str) for item in value):
        return value
    raise ClaimsInvalid("claim 'aud' must be a string or a list of strings")


def _decode(
    token: str,
    key_source: KeySource,
    *,
    require: tuple[str, ...],
    now: float,
    leeway: float,
) -> dict[str, Any]:
    """Verify the signature, then parse and check the registered claims ourselves.

    Only the signature check is PyJWT's: its claim checks coerce types (``int("9999999999")``
    passes as an ``exp``), so the payload is parsed here and every registered claim that is
    present must have its RFC 7519 type, whoever signed it.
    """
    header = _checked_header(token)
    # Only the kid is read from the header; jku/x5u/jwk are ignored by design.
    key = key_source.get_key(header["kid"])
    try:
        decoded = jwt.api_jws.decode_complete(token, key, algorithms=[ALGORITHM])
    except jwt.InvalidSignatureError:
        raise InvalidSignature("signature does not verify") from None
    except jwt.InvalidAlgorithmError:
        raise AlgorithmNotAllowed("only RS256 is accepted") from None
    except jwt.InvalidTokenError:
        # Structure problems PyJWT finds that _checked_header let through.
        raise MalformedToken("the JWT could not be decoded") from None
    try:
        claims = json.loads(decoded["payload"])
    except (ValueError, RecursionError):
        # Reached only after the signature verified, so this is a claims problem, not "not a
        # JWT". RecursionError: a signed payload nested thousands deep.
        raise ClaimsInvalid("token payload is not valid JSON") from None
    if not isinstance(claims, dict):
        raise ClaimsInvalid("token payload is not a JSON object")

    for name in require:
        if claims.get(name) is None:
            raise ClaimsInvalid(f"required claim {name!r} is missing")
    exp = _numeric_date(claims, "exp")
    nbf = _numeric_date(claims, "nbf")
    iat = _numeric_date(claims, "iat")
    if exp is not None and exp <= now - leeway:
        raise ClaimsInvalid("token has expired", code="token_expired")
    if nbf is not None and nbf > now + leeway:
        raise ClaimsInvalid("token is not valid yet (nbf)")
    if iat is not None and iat > now + leeway:
        raise ClaimsInvalid("token is not valid yet (iat is in the future)")
    for name in ("iss", "jti"):
        if name in claims and not isinstance(claims[name], str):
            raise ClaimsInvalid(f"claim {name!r} must be a string")
    if "aud" in claims:
        _audiences(claims["aud"])
    return claims


def _refuse_claims(claims: Mapping[str, Any], names: tuple[str, ...], why: str) -> None:
    for name in names:
        if name in claims:
            raise ClaimsInvalid(f"claim {name!r} is not allowed here: {why}")


def _optional_str(claims: Mapping[str, Any], name: str, *, allow_empty: bool = False) -> str | None:
    """The string claim ``name`` or None when absent; present with another type (or empty,
    unless allowed) is refused, never read as "absent"."""
    if name not in claims:
        return None
    value = claims[name]
    if not isinstance(value, str) or (not value and not allow_empty):
        raise ClaimsInvalid(f"claim {name!r} must be a non-empty string")
    return value


def _optional_str_list(claims: Mapping[str, Any], name: str) -> list[str]:
    if name not in claims:
        return []
    value = claims[name]
    if not isinstance(value, list) or not all(isinstance(item, str) for item in value):
        raise ClaimsInvalid(f"claim {name!r} must be a list of strings")
    return value


def principal_from_claims(claims: Mapping[str, Any]) -> Principal:
    """Build a `Principal` from verified access-token claims (Kinde shapes), failing closed.

    A claim that is present must be well formed, or the token is refused (`ClaimsInvalid`,
    401) with a message naming the claim; it is never read as absent, because an absent
    ``org_code`` on a machine token means "every wallet". In detail:

    * machine (M2M) only when ``gty`` holds ``client_credentials``; any other token must have a
      ``kp_...`` ``sub`` (a user) or it is refused;
    * ``org_code``, when present, must be an ``org_...`` code (not ``""``, not ``kp_bob``);
    * ``sub``/``azp`` non-empty strings, ``scp``/``permissions`` lists of strings, ``scope`` a
      string, ``gty`` a string or a list of strings.
    """
    # Imported here, not at module level: importing `app.domain` runs `app/__init__`, which
    # wires the composition root, which imports this module; a top-level import would make
    # that a circular import whichever side is imported first.
    from app.domain.principal import Principal, is_org_code, is_user_id

    scopes = {s for s in _optional_str_list(claims, "scp") if s}
    scope = _optional_str(claims, "scope", allow_empty=True)
    if scope is not None:
        scopes.update(scope.split())
    # Not used for decisions today, but a malformed one means a malformed token.
    _optional_str_list(claims, "permissions")

    gty = claims.get("gty")
    if "gty" not in claims:
        grants: list[str] = []
    elif isinstance(gty, str):
        grants = [gty]
    else:
        grants = _optional_str_list(claims, "gty")
    is_machine = "client_credentials" in grants

    subject = _optional_str(claims, "sub")
    if not is_machine and not is_user_id(subject):
        raise ClaimsInvalid(
            "claim 'sub' is not a Kinde user id (kp_...) and the token is not a "
            "client-credentials (M2M) token"
        )
    org_code: str | None = None
    if "org_code" in claims:
        if not is_org_code(claims["org_code"]):
            raise ClaimsInvalid("claim 'org_code' is not a Kinde organization code (org_...)")
        org_code = claims["org_code"]
    return Principal(
        subject=subject,
        org_code=org_code,
        scopes=frozenset(scopes),
        is_machine=is_machine,
        client_id=_optional_str(claims, "azp"),
    )


class AccessTokenVerifier:
    """Verifies ``Authorization: Bearer`` Kinde access tokens and yields a `Principal`.

    An access token must carry ``iss`` (equal to the configured issuer), ``exp`` and, when an
    audience is configured, an ``aud`` containing it; and it must carry none of the webhook
    fields (`WEBHOOK_CLAIMS`), so a webhook body is never accepted as a bearer token.
    """

    def __init__(
        self,
        key_source: KeySource,
        issuer: str,
        audience: str | None,
        leeway: float = 30,
        clock: Callable[[], float] = time.time,
        max_lifetime: int = DEFAULT_MAX_LIFETIME,
    ) -> None:
        if not issuer:
            raise ValueError("issuer is required for access tokens")
        if max_lifetime < 1:
            raise ValueError("max_lifetime must be at least one second")
        self.max_lifetime = max_lifetime
        # Kinde's iss has no trailing slash; tolerate one in configuration.
        self.issuer = issuer.rstrip("/")
        self.audience = audience or None
        self.leeway = leeway
        self._key_source = key_source
        self._clock = clock
        self._cache: dict[str, tuple[Principal, float, float]] = {}

    # A product's backend sends the same token on every call until it expires; checking its
    # RSA signature each time is a large share of a request. Verified tokens are remembered
    # briefly, keyed by the exact token text (a forged or altered token never matches), and
    # their own `exp` is still enforced on every hit.
    CACHE_SECONDS = 60.0
    CACHE_SIZE = 4096

    def verify(self, token: str) -> Principal:
        if not isinstance(token, str):
            raise MalformedToken("token must be a string")
        token = token.strip()
        now = self._clock()
        cached = self._cache.get(token)
        if cached is not None:
            principal, exp, good_until = cached
            if now <= exp + self.leeway and now < good_until:
                return principal
            self._cache.pop(token, None)
        require = ("exp", "iss") + (("aud",) if self.audience else ())
        claims = _decode(token, self._key_source, require=require, now=now, leeway=self.leeway)
        _refuse_claims(claims, WEBHOOK_CLAIMS, "a webhook payload is not an access token")
        if claims["iss"] != self.issuer:
            raise ClaimsInvalid("token issuer does not match")
        if self.audience is not None and self.audience not in _audiences(claims["aud"]):
            raise ClaimsInvalid("token audience does not match")
        self._check_lifetime(claims, now)
        principal = principal_from_claims(claims)
        if len(self._cache) >= self.CACHE_SIZE:
            self._cache.clear()  # simple bound; a refill costs one signature check each
        # _decode checked exp is a finite number; an absurdly large one is "far away".
        exp = float(min(claims["exp"], 1e15))
        self._cache[token] = (principal, exp, now + self.CACHE_SECONDS)
        return principal


    def _check_lifetime(self, claims: Mapping[str, Any], now: float) -> None:
        """Refuse a token valid for longer than `max_lifetime`: from `iat` to `exp`, or from
        now when there is no `iat`. `_decode` checked both are integers; comparing (never
        subtracting) keeps 10**40 exact, with no float overflow."""
        exp = claims["exp"]
        start = claims.get("iat", now)
        if exp > start + self.max_lifetime + self.leeway:
            raise ClaimsInvalid(
                f"token lifetime is longer than the {self.max_lifetime} seconds allowed "
                "(TOKEN_MAX_LIFETIME_SECONDS)"
            )


class WebhookVerifier:
    """Verifies a Kinde webhook body (a compact JWT) and returns its claims.

    Kinde omits ``iss``/``aud``/``exp``/``iat``, so none is required; ``iss`` must match when
    both it and the configured issuer are present, and ``exp``/``nbf``/``iat`` are honoured when
    present. The payload must carry a string ``type`` and ``event_id`` and a ``data`` object,
    and none of the access-token claims (`ACCESS_TOKEN_CLAIMS`), so an access token signed by
    the same Kinde key is never accepted as an event.
    """

    def __init__(
        self,
        key_source: KeySource,
        issuer: str | None,
        leeway: float = 30,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.issuer = issuer.rstrip("/") if issuer else None
        self.leeway = leeway
        self._key_source = key_source
        self._clock = clock

    def verify(self, body: bytes | str) -> dict[str, Any]:
        token = self._extract(body)
        claims = _decode(
            token, self._key_source, require=(), now=self._clock(), leeway=self.leeway
        )
        _refuse_claims(claims, ACCESS_TOKEN_CLAIMS, "an access token is not a webhook")
        # _decode checked that a present iss is a string.
        if self.issuer is not None and claims.get("iss", self.issuer).rstrip("/") != self.issuer:
            raise ClaimsInvalid("webhook issuer does not match")
        # A signed payload without `type`, `event_id` or a `data` object is still Kinde's: the
        # webhook service stores and parks it with a reason (answering 200), rather than a 401
        # that Kinde would retry for 72 hours and then disable the endpoint over.
        return claims

    @staticmethod
    def _extract(body: bytes | str) -> str:
        if isinstance(body, bytes | bytearray):
            try:
                text = bytes(body).decode("utf-8")
            except UnicodeDecodeError:
                raise MalformedToken("webhook body is not UTF-8 text") from None
        elif isinstance(body, str):
            text = body
        else:
            raise MalformedToken("webhook body must be bytes or text")
        text = text.strip()
        if not text:
            raise MalformedToken("webhook body is empty")
        if text.startswith('"'):
            # Older application/json deliveries wrapped the JWT in a JSON string literal.
            try:
                unwrapped = json.loads(text)
            except (ValueError, RecursionError):
                raise MalformedToken("webhook body is not a JWT") from None
            if not isinstance(unwrapped, str):
                raise MalformedToken("webhook body is not a JWT")
            text = unwrapped.strip()
        return text
