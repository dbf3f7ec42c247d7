"""Ports: the Protocols that services need from storage and the outside world.

Services depend only on these; `adapters/` implements them (SQL store) and tests implement
them with fakes. A unit of work is one database transaction: everything a use case changes
commits together or not at all.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from types import TracebackType
from typing import Any, Protocol, Self

from app.domain.audit import WalletAudit
from app.domain.ledger import Hold, Wallet


class DuplicateKey(Exception):
    """A unique key was taken by a concurrent transaction (raised by stores, not services)."""


@dataclass(frozen=True)
class RecordedEntry:
    """An entry as stored (with its id), for reading the ledger."""

    id: int
    wallet_id: str
    kind: str
    amount: int
    balance_after: int
    reason: str
    description: str
    created_at: datetime
    feature: str | None = None
    quantity: int | None = None
    hold_id: str | None = None
    occurred_at: datetime | None = None


@dataclass(frozen=True)
class StoredResponse:
    request_hash: str
    status_code: int
    body: dict[str, Any]


@dataclass(frozen=True)
class WalletProfile:
    """What we know of a wallet's owner in Kinde billing (and where to notify them)."""

    wallet_id: str
    billing_customer_id: str | None
    agreement_id: str | None
    plan_code: str | None
    email: str | None


class WalletRepository(Protocol):
    def lock(self, wallet_id: str) -> Wallet | None:
        """Load a wallet with its live blocks and hold it exclusively until the unit ends."""

    def lock_or_create(self, wallet_id: str, now: datetime) -> Wallet:
        """Like lock(), creating an empty wallet first when there is none."""

    def read(self, wallet_id: str) -> Wallet | None:
        """Load a wallet with its live blocks, without locking (for reads)."""

    def save(self, wallet: Wallet, now: datetime) -> list[int]:
        """Persist the wallet's pending changes; returns the ids of its new entries in order."""

    def get_hold(self, hold_id: str) -> Hold | None: ...

    def open_holds(self, wallet_id: str) -> list[Hold]: ...

    def entries(
        self, wallet_id: str, limit: int, before_id: int | None = None
    ) -> list[RecordedEntry]:
        """Newest first; `before_id` is the keyset cursor (entries with a smaller id)."""

    def wallets_due_for_sweep(self, now: datetime, limit: int) -> list[str]: ...

    def wallet_ids(self, after: str | None, limit: int) -> list[str]: ...

    def usage_since(self, wallet_id: str, since: datetime) -> int:
        """Credits used (usage and captures) since a moment, for run-rate estimates."""

    def profile(self, wallet_id: str) -> WalletProfile | None: ...

    def update_profile(self, wallet_id: str, **fields: str | None) -> None: ...

    def find_by_customer(self, billing_customer_id: str) -> str | None: ...

    def save_alert_settings(self, wallet_id: str, settings: Any) -> None: ...

    def save_auto_recharge(self, wallet_id: str, settings: Any) -> None: ...

    def audit(self, after: str | None, limit: int) -> list[WalletAudit]:
        """Per-wallet totals for the invariant check, a page of wallets ordered by id."""


class IdempotencyRepository(Protocol):
    def get(self, scope: str, key: str) -> StoredResponse | None: ...

    def claim(
        self, scope: str, key: str, request_hash: str, now: datetime
    ) -> StoredResponse | None:
        """Reserve the key for this unit of work, waiting while a concurrent one holds it;
        the stored answer if the key was already used (then nothing is reserved). A reserved
        key must be `put` before commit; a rollback frees it."""

    def put(
        self,
        scope: str,
        key: str,
        request_hash: str,
        status_code: int,
        body: dict[str, Any],
        now: datetime,
    ) -> None: ...


class UnitOfWork(Protocol):
    # True for a write transaction; a read one is never committed and must not write.
    write: bool

    # Read-only properties so that implementations may narrow the repository types.
    @property
    def wallets(self) -> WalletRepository: ...

    @property
    def idempotency(self) -> IdempotencyRepository: ...

    def __enter__(self) -> Self: ...

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None: ...

    def commit(self) -> None: ...

    def rollback(self) -> None: ...


# write=True takes the database's write lock at the start (SQLite BEGIN IMMEDIATE), so two
# writers never both read a balance and then race to update it.
UnitOfWorkFactory = Callable[[bool], UnitOfWork]
Clock = Callable[[], datetime]
