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
* End users may READ the wallets they reach without any scope: a signed-in front end shows the
  user's balance with a plain Kinde login token. Writes (usage, holds) normally come from the
  product's backend with an M2M token carrying ``credits:write``; a user token may write only
  when it carries that scope too (e.g. granted through the API's scopes in Kinde). Admin actions
  (grants, settings) always need ``credits:admin``.

Callers must check BOTH reach and scope; `Principal.may` does that in one call.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

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


@dataclass(frozen=True, slots=True)
class Principal:
    """The verified caller of one request.

    ``subject`` is the token's ``sub`` (``kp_...`` for users), ``org_code`` the token's
    ``org_code`` claim, ``scopes`` the union of ``scp`` and ``scope``, ``is_machine`` true for
    client-credentials tokens (or any token without a user subject), ``client_id`` the ``azp``.
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
        return (
            not self.is_machine
            and self.subject is not None
            and self.subject.startswith(USER_SUBJECT_PREFIX)
        )

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
            # own backend and serves every customer.
            return self.org_code is None or wallet_id == self.org_code
        if not self.is_user:
            return False
        return wallet_id == self.subject or (
            self.org_code is not None and wallet_id == self.org_code
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
