"""Who is calling the API, and what they may do.

A `Principal` is built by the token verifier (adapters/tokens.py) from a verified Kinde access
token; this module holds only the authorization rules, as plain Python (stdlib only), so they can
be tested table-driven without tokens, Flask or a database.

Rules (DESIGN.md, "HTTP API"):

* Scope levels are ordered ``credits:read`` < ``credits:write`` < ``credits:admin``; holding a
  level grants every level before it.
* A *user* principal (a ``kp_...`` subject, not a machine) reaches only its own wallet
  (wallet id == subject) or its organization's wallet (wallet id == ``org_code``).
* A *machine* (M2M, client-credentials) principal with an ``org_code`` reaches only that org's
  wallet; a machine principal without ``org_code`` reaches every wallet.
* Fail closed on malformed identities: a subject or ``org_code`` that is not a well-formed Kinde
  id (`is_user_id`, `is_org_code`) reaches nothing through it. In particular a machine whose
  ``org_code`` is present but malformed (``""``, ``"kp_bob"``) reaches NO wallet, never all of
  them, and a user's ``org_code`` of ``"kp_bob"`` never reaches Bob's wallet. The token verifier
  already refuses such tokens (401); these rules are the second line.
* End users may READ the wallets they reach without any scope: a signed-in front end shows the
  user's balance with a plain Kinde login token. Writes (usage, holds) normally come from the
  product's backend with an M2M token carrying ``credits:write``; a user token may write only
  when it carries that scope too (e.g. granted through the API's scopes in Kinde). Admin actions
  (grants, settings) always need ``credits:admin``.

Callers must check BOTH reach and scope; `Principal.may` does that in one call.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any, Literal

Action = Literal["read", "write", "admin"]

SCOPE_READ = "credits:read"
SCOPE_WRITE = "credits:write"
SCOPE_ADMIN = "credits:admin"

# Position in this tuple is the level; a scope grants every scope at a lower index.
SCOPE_LEVELS: tuple[str, ...] = (SCOPE_READ, SCOPE_WRITE, SCOPE_ADMIN)

ACTION_SCOPES: dict[str, str] = {
    "read": SCOPE_READ,
    "write": SCOPE_WRITE,
    "admin": SCOPE_ADMIN,
}

USER_SUBJECT_PREFIX = "kp_"
ORG_CODE_PREFIX = "org_"

# The same shapes as wallet ids in URLs (app/http/schemas.py WALLET_ID_PATTERN): whatever a
# principal can reach must be something a wallet id can be.
_USER_ID = re.compile(r"kp_[A-Za-z0-9_-]{1,61}")
_ORG_CODE = re.compile(r"org_[A-Za-z0-9_-]{1,60}")


def is_user_id(value: Any) -> bool:
    """A well-formed Kinde user id (``kp_...``)."""
    return isinstance(value, str) and _USER_ID.fullmatch(value) is not None


def is_org_code(value: Any) -> bool:
    """A well-formed Kinde organization code (``org_...``)."""
    return isinstance(value, str) and _ORG_CODE.fullmatch(value) is not None


@dataclass(frozen=True, slots=True)
class Principal:
    """The verified caller of one request.

    ``subject`` is the token's ``sub`` (``kp_...`` for users), ``org_code`` the token's
    ``org_code`` claim, ``scopes`` the union of ``scp`` and ``scope``, ``is_machine`` true for
    client-credentials tokens only (``gty`` holds ``client_credentials``), ``client_id`` the
    ``azp``.
    """

    subject: str | None
    org_code: str | None
    scopes: frozenset[str]
    is_machine: bool
    client_id: str | None

    @property
    def is_user(self) -> bool:
        """A signed-in end user: not a machine and a ``kp_`` subject.

        A non-machine principal without a ``kp_`` subject is neither user nor machine and
        reaches nothing (fail closed); the verifier never builds one.
        """
        return not self.is_machine and is_user_id(self.subject)

    def has_scope(self, required: str) -> bool:
        """True when the principal holds ``required`` or a higher credits level.

        Scopes outside the credits levels match only exactly.
        """
        if required not in SCOPE_LEVELS:
            return required in self.scopes
        needed = SCOPE_LEVELS.index(required)
        return any(scope in self.scopes for scope in SCOPE_LEVELS[needed:])

    def can_reach_wallet(self, wallet_id: str) -> bool:
        """Whether this principal may touch ``wallet_id`` at all (scope checked separately).

        A wallet outside reach should answer 404, not 403, so wallet ids don't leak.
        """
        if not wallet_id:
            return False
        if self.is_machine:
            # An org-scoped M2M app is confined to its org; an unscoped one is the product's
            # own backend and serves every customer. "Unscoped" means org_code is absent
            # (None): a present but malformed org_code confines the app to nothing.
            if self.org_code is None:
                return True
            return is_org_code(self.org_code) and wallet_id == self.org_code
        if not self.is_user:
            return False
        return wallet_id == self.subject or (
            is_org_code(self.org_code) and wallet_id == self.org_code
        )

    def required_scope_met(self, action: Action) -> bool:
        """Whether the principal's scopes allow ``action`` ("read", "write" or "admin").

        Users may read (the wallets they reach) without any scope; everything else (user
        writes and admin actions, and every machine action) needs the scope level. This does
        NOT check reach: combine with `can_reach_wallet`, or use `may`.
        """
        try:
            scope = ACTION_SCOPES[action]
        except KeyError:
            raise ValueError(f"unknown action {action!r}") from None
        if action == "read" and self.is_user:
            return True
        return self.has_scope(scope)

    def may(self, action: Action, wallet_id: str) -> bool:
        """Reach and scope together: the single check an endpoint needs for one wallet."""
        return self.can_reach_wallet(wallet_id) and self.required_scope_met(action)
