"""SQL store: engine set-up for SQLite and PostgreSQL, and the unit of work with repositories.

Concurrency model:
- SQLite: WAL, `synchronous=FULL` (a committed debit survives power loss), and every write
  transaction starts with `BEGIN IMMEDIATE`, which takes the single writer lock up front, so
  read-then-update inside a unit of work is race-free across threads and processes.
- PostgreSQL: READ COMMITTED with `SELECT ... FOR UPDATE` on the wallet row; all changes to a
  wallet happen under that lock. The level is pinned on the engine (and REPEATABLE READ on
  read-only units of work), never left to the server's `default_transaction_isolation`: under
  SERIALIZABLE or REPEATABLE READ, writers racing for one wallet would fail with serialization
  errors instead of waiting for the lock and seeing the committed row.
- Idempotency keys are claimed first (an insert that waits for a concurrent holder of the same
  key), so racing requests with one key are serialised on the key and the losers read the
  winner's stored answer, on both databases.
The hot path (lock, load live blocks, update, append entry) is plain SQLAlchemy Core on cached
compiled statements: no ORM identity map or unit-of-work flush per row.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from datetime import datetime
from decimal import Decimal
from pathlib import Path
from types import TracebackType
from typing import Any, Self

from sqlalchemy import (
    Connection,
    Engine,
    bindparam,
    case,
    create_engine,
    event,
    func,
    insert,
    select,
    update,
)
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import make_url
from sqlalchemy.exc import IntegrityError
from sqlalchemy.pool import NullPool

from adapters.sql import schema as t
from app.domain.alerts import AlertSettings
from app.domain.audit import WalletAudit
from app.domain.ledger import Block, Hold, Wallet, owner_type_of
from app.domain.recharge import AutoRecharge
from app.services.ports import DuplicateKey, RecordedEntry, StoredResponse, WalletProfile

_IMMEDIATE = "kc_begin_immediate"

# PostgreSQL levels the code is written for (see the module docstring); pinned, because a server
# or database may set another default.
WRITE_ISOLATION = "READ COMMITTED"
READ_ISOLATION = "REPEATABLE READ"


def make_engine(url: str, *, pool_size: int = 10) -> Engine:
    """Create the engine with the settings the ledger's correctness depends on."""
    parsed = make_url(url)
    if parsed.get_backend_name() == "sqlite":
        _make_sqlite_dir(url)
        engine = create_engine(
            url,
            connect_args={"timeout": 30, "check_same_thread": False},
            pool_size=pool_size,
            max_overflow=pool_size * 2,
        )
        _configure_sqlite(engine)
        return engine
    if parsed.get_backend_name() == "postgresql":
        if parsed.drivername == "postgresql":
            url = str(parsed.set(drivername="postgresql+psycopg").render_as_string(False))
        return create_engine(
            url,
            pool_size=pool_size,
            max_overflow=pool_size * 2,
            pool_pre_ping=True,
            isolation_level=WRITE_ISOLATION,
        )
    raise ValueError(f"DATABASE_URL must be sqlite:// or postgresql://, got {parsed.drivername}")


def _make_sqlite_dir(url: str) -> None:
    """SQLite creates the file but not its folder (./var on a fresh checkout)."""
    parsed = make_url(url)
    if parsed.database and parsed.database != ":memory:":
        Path(parsed.database).parent.mkdir(parents=True, exist_ok=True)


def make_single_use_engine(url: str) -> Engine:
    """An engine without pooling, for CLI commands and child processes."""
    if make_url(url).get_backend_name() == "sqlite":
        _make_sqlite_dir(url)
    postgres = make_url(url).get_backend_name() == "postgresql"
    engine = create_engine(
        url, poolclass=NullPool, **({"isolation_level": WRITE_ISOLATION} if postgres else {})
    )
    if engine.dialect.name == "sqlite":
        _configure_sqlite(engine)
    return engine


def _configure_sqlite(engine: Engine) -> None:
    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_connection: Any, _record: Any) -> None:
        # Take transaction control from the sqlite3 module: we emit BEGIN ourselves below.
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute("PRAGMA synchronous=FULL")
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.execute("PRAGMA busy_timeout=30000")
        cursor.close()

    @event.listens_for(engine, "begin")
    def _on_begin(conn: Connection) -> None:
        immediate = conn.get_execution_options().get(_IMMEDIATE, False)
        conn.exec_driver_sql("BEGIN IMMEDIATE" if immediate else "BEGIN")


def _insert_ignore(dialect: str, table: Any) -> Any:
    if dialect == "postgresql":
        return postgresql.insert(table).on_conflict_do_nothing()
    return sqlite.insert(table).on_conflict_do_nothing()


# Statements built once; SQLAlchemy caches their compiled form per dialect.
_LIVE_BLOCKS = (
    select(
        t.blocks.c.id,
        t.blocks.c.kind,
        t.blocks.c.original,
        t.blocks.c.remaining,
        t.blocks.c.expires_at,
        t.blocks.c.created_at,
        t.blocks.c.reason,
        t.blocks.c.cost_amount,
        t.blocks.c.currency,
    )
    .where(t.blocks.c.wallet_id == bindparam("wallet_id"))
    .where(t.blocks.c.remaining > 0)
)
_WALLET_COLUMNS = (
    t.wallets.c.id,
    t.wallets.c.owner_type,
    t.wallets.c.balance,
    t.wallets.c.held,
    t.wallets.c.arrears,
    t.wallets.c.overdraft_limit,
    t.wallets.c.reference_balance,
    t.wallets.c.next_expiry_at,
    t.wallets.c.next_hold_expiry_at,
    t.wallets.c.alert_settings,
    t.wallets.c.alerts_fired,
    t.wallets.c.auto_recharge_enabled,
    t.wallets.c.auto_recharge_threshold,
    t.wallets.c.auto_recharge_bundle,
    t.wallets.c.auto_recharge_suspended,
)
_SELECT_WALLET = select(*_WALLET_COLUMNS).where(t.wallets.c.id == bindparam("wallet_id"))
_SELECT_WALLET_FOR_UPDATE = _SELECT_WALLET.with_for_update()
_ENTRY_INSERT = insert(t.entries).returning(t.entries.c.id)
_UPDATE_WALLET = (
    update(t.wallets)
    .where(t.wallets.c.id == bindparam("w_id"))
    .values(
        balance=bindparam("w_balance"),
        held=bindparam("w_held"),
        arrears=bindparam("w_arrears"),
        reference_balance=bindparam("w_reference"),
        next_expiry_at=bindparam("w_next_expiry"),
        next_hold_expiry_at=bindparam("w_next_hold_expiry"),
        alerts_fired=bindparam("w_alerts_fired"),
        updated_at=bindparam("w_updated"),
    )
)
_UPDATE_BLOCK = (
    update(t.blocks)
    .where(t.blocks.c.id == bindparam("b_id"))
    .values(remaining=bindparam("b_remaining"))
)


def _alert_settings(raw: str | None) -> AlertSettings | None:
    if not raw:
        return None
    data = json.loads(raw)
    return AlertSettings(
        tuple(data.get("thresholds_percent", ())),
        tuple(data.get("thresholds_credits", ())),
        bool(data.get("notify_at_zero", True)),
    )


def _hold_from_row(row: Any) -> Hold:
    return Hold(
        id=row.id,
        wallet_id=row.wallet_id,
        amount=row.amount,
        status=row.status,
        expires_at=row.expires_at,
        created_at=row.created_at,
        description=row.description,
        feature=row.feature,
        captured_amount=row.captured_amount,
        settled_at=row.settled_at,
    )


def _entry_from_row(row: Any) -> RecordedEntry:
    return RecordedEntry(
        id=row.id,
        wallet_id=row.wallet_id,
        kind=row.kind,
        amount=row.amount,
        balance_after=row.balance_after,
        reason=row.reason,
        description=row.description,
        created_at=row.created_at,
        feature=row.feature,
        quantity=row.quantity,
        hold_id=row.hold_id,
        occurred_at=row.occurred_at,
    )


class SqlWalletRepository:
    def __init__(self, conn: Connection) -> None:
        self.conn = conn
        self.dialect = conn.dialect.name

    def _load(self, wallet_id: str, lock: bool) -> Wallet | None:
        stmt = _SELECT_WALLET_FOR_UPDATE if lock and self.dialect == "postgresql" else (
            _SELECT_WALLET
        )
        row = self.conn.execute(stmt, {"wallet_id": wallet_id}).first()
        if row is None:
            return None
        wallet = Wallet(
            id=row.id,
            owner_type=row.owner_type,
            balance=row.balance,
            held=row.held,
            arrears=row.arrears,
            overdraft_limit=row.overdraft_limit,
            reference_balance=row.reference_balance,
            next_expiry_at=row.next_expiry_at,
            next_hold_expiry_at=row.next_hold_expiry_at,
            alert_settings=_alert_settings(row.alert_settings),
            alerts_fired=frozenset(json.loads(row.alerts_fired)) if row.alerts_fired else
            frozenset(),
            auto_recharge=AutoRecharge(
                row.auto_recharge_enabled,
                row.auto_recharge_threshold or 0,
                row.auto_recharge_bundle or "",
                row.auto_recharge_suspended,
            )
            if row.auto_recharge_bundle
            else None,
        )
        wallet.blocks = [
            Block(
                id=b.id,
                wallet_id=wallet_id,
                kind=b.kind,
                original=b.original,
                remaining=b.remaining,
                expires_at=b.expires_at,
                created_at=b.created_at,
                reason=b.reason,
                cost_amount=Decimal(b.cost_amount) if b.cost_amount is not None else None,
                currency=b.currency,
            )
            for b in self.conn.execute(_LIVE_BLOCKS, {"wallet_id": wallet_id})
        ]
        return wallet

    def lock(self, wallet_id: str) -> Wallet | None:
        return self._load(wallet_id, lock=True)

    def read(self, wallet_id: str) -> Wallet | None:
        return self._load(wallet_id, lock=False)

    def lock_or_create(self, wallet_id: str, now: datetime) -> Wallet:
        owner_type = owner_type_of(wallet_id)
        # Insert-if-absent first so that two first top-ups racing create one wallet.
        self.conn.execute(
            _insert_ignore(self.dialect, t.wallets).values(
                id=wallet_id,
                owner_type=owner_type,
                balance=0,
                held=0,
                arrears=0,
                overdraft_limit=0,
                reference_balance=0,
                auto_recharge_enabled=False,
                created_at=now,
                updated_at=now,
            )
        )
        wallet = self.lock(wallet_id)
        assert wallet is not None
        return wallet

    def save(self, wallet: Wallet, now: datetime) -> list[int]:
        conn = self.conn
        new_block_ids = {b.id for b in wallet.new_blocks}
        if wallet.new_blocks:
            conn.execute(
                insert(t.blocks),
                [
                    {
                        "id": b.id,
                        "wallet_id": wallet.id,
                        "kind": b.kind,
                        "original": b.original,
                        "remaining": b.remaining,
                        "expires_at": b.expires_at,
                        "created_at": b.created_at,
                        "reason": b.reason,
                        "cost_amount": str(b.cost_amount) if b.cost_amount is not None else None,
                        "currency": b.currency,
                    }
                    for b in wallet.new_blocks
                ],
            )
        for block in wallet.touched_blocks.values():
            if block.id not in new_block_ids:
                conn.execute(_UPDATE_BLOCK, {"b_id": block.id, "b_remaining": block.remaining})
        for hold in wallet.new_holds:
            conn.execute(
                insert(t.holds).values(
                    id=hold.id,
                    wallet_id=wallet.id,
                    amount=hold.amount,
                    status=hold.status,
                    feature=hold.feature,
                    description=hold.description,
                    captured_amount=hold.captured_amount,
                    expires_at=hold.expires_at,
                    created_at=hold.created_at,
                    settled_at=hold.settled_at,
                )
            )
        new_hold_ids = {h.id for h in wallet.new_holds}
        for hold in wallet.touched_holds.values():
            if hold.id in new_hold_ids:
                continue
            conn.execute(
                update(t.holds)
                .where(t.holds.c.id == hold.id)
                .values(
                    status=hold.status,
                    captured_amount=hold.captured_amount,
                    settled_at=hold.settled_at,
                )
            )
        conn.execute(
            _UPDATE_WALLET,
            {
                "w_id": wallet.id,
                "w_balance": wallet.balance,
                "w_held": wallet.held,
                "w_arrears": wallet.arrears,
                "w_reference": wallet.reference_balance,
                "w_next_expiry": wallet.next_expiry_at,
                "w_next_hold_expiry": wallet.next_hold_expiry_at,
                "w_alerts_fired": json.dumps(sorted(wallet.alerts_fired))
                if wallet.alerts_fired
                else None,
                "w_updated": now,
            },
        )
        ids: list[int] = []
        for e in wallet.new_entries:
            ids.append(
                conn.execute(
                    _ENTRY_INSERT,
                    {
                        "wallet_id": wallet.id,
                        "kind": e.kind,
                        "amount": e.amount,
                        "balance_after": e.balance_after,
                        "reason": e.reason,
                        "description": e.description,
                        "feature": e.feature,
                        "quantity": e.quantity,
                        "hold_id": e.hold_id,
                        "occurred_at": e.occurred_at,
                        "created_at": e.created_at,
                    },
                ).scalar_one()
            )
        draws = [
            {"entry_id": entry_id, "block_id": block_id, "credits": credits, "kind": e.kind,
             "created_at": e.created_at}
            for entry_id, e in zip(ids, wallet.new_entries, strict=True)
            for block_id, credits in e.draws
        ]
        if draws:
            conn.execute(insert(t.block_draws), draws)
        wallet.new_blocks.clear()
        wallet.touched_blocks.clear()
        wallet.new_holds.clear()
        wallet.touched_holds.clear()
        wallet.new_entries.clear()
        wallet.reference_at_load = wallet.reference_balance
        return ids

    def save_alert_settings(self, wallet_id: str, settings: AlertSettings | None) -> None:
        self.conn.execute(
            update(t.wallets)
            .where(t.wallets.c.id == wallet_id)
            .values(alert_settings=json.dumps(settings.as_dict()) if settings else None)
        )

    def save_auto_recharge(self, wallet_id: str, settings: AutoRecharge) -> None:
        self.conn.execute(
            update(t.wallets)
            .where(t.wallets.c.id == wallet_id)
            .values(
                auto_recharge_enabled=settings.enabled,
                auto_recharge_threshold=settings.threshold_credits or None,
                auto_recharge_bundle=settings.bundle or None,
                auto_recharge_suspended=settings.suspended_reason,
            )
        )

    def get_hold(self, hold_id: str) -> Hold | None:
        row = self.conn.execute(select(t.holds).where(t.holds.c.id == hold_id)).first()
        return _hold_from_row(row) if row else None

    def open_holds(self, wallet_id: str) -> list[Hold]:
        rows = self.conn.execute(
            select(t.holds)
            .where(t.holds.c.wallet_id == wallet_id, t.holds.c.status == "open")
            .order_by(t.holds.c.expires_at)
        )
        return [_hold_from_row(r) for r in rows]

    def entries(
        self, wallet_id: str, limit: int, before_id: int | None = None
    ) -> list[RecordedEntry]:
        stmt = select(t.entries).where(t.entries.c.wallet_id == wallet_id)
        if before_id is not None:
            stmt = stmt.where(t.entries.c.id < before_id)
        rows = self.conn.execute(stmt.order_by(t.entries.c.id.desc()).limit(limit))
        return [_entry_from_row(r) for r in rows]

    def wallets_due_for_sweep(self, now: datetime, limit: int) -> list[str]:
        w = t.wallets.c
        # Longest overdue first (then by id), so the order is stable and nothing starves.
        due_at = case(
            (w.next_expiry_at.is_(None), w.next_hold_expiry_at),
            (w.next_hold_expiry_at.is_(None), w.next_expiry_at),
            (w.next_hold_expiry_at < w.next_expiry_at, w.next_hold_expiry_at),
            else_=w.next_expiry_at,
        )
        rows = self.conn.execute(
            select(w.id)
            .where((w.next_expiry_at <= now) | (w.next_hold_expiry_at <= now))
            .order_by(due_at, w.id)
            .limit(limit)
        )
        return [r.id for r in rows]

    def wallet_ids(self, after: str | None, limit: int) -> list[str]:
        stmt = select(t.wallets.c.id).order_by(t.wallets.c.id).limit(limit)
        if after is not None:
            stmt = stmt.where(t.wallets.c.id > after)
        return [r.id for r in self.conn.execute(stmt)]

    def usage_since(self, wallet_id: str, since: datetime) -> int:
        total = self.conn.execute(
            select(func.coalesce(func.sum(t.entries.c.amount), 0)).where(
                t.entries.c.wallet_id == wallet_id,
                t.entries.c.kind.in_(("usage", "capture")),
                t.entries.c.created_at >= since,
            )
        ).scalar_one()
        return -int(total)

    def profile(self, wallet_id: str) -> WalletProfile | None:
        row = self.conn.execute(
            select(
                t.wallets.c.id,
                t.wallets.c.billing_customer_id,
                t.wallets.c.agreement_id,
                t.wallets.c.plan_code,
                t.wallets.c.email,
            ).where(t.wallets.c.id == wallet_id)
        ).first()
        if row is None:
            return None
        return WalletProfile(
            row.id, row.billing_customer_id, row.agreement_id, row.plan_code, row.email
        )

    def update_profile(self, wallet_id: str, **fields: str | None) -> None:
        allowed = {"billing_customer_id", "agreement_id", "plan_code", "email"}
        unknown = set(fields) - allowed
        if unknown:
            raise ValueError(f"not profile fields: {sorted(unknown)}")
        if fields:
            self.conn.execute(
                update(t.wallets).where(t.wallets.c.id == wallet_id).values(**fields)
            )

    def audit(self, after: str | None, limit: int) -> list[WalletAudit]:
        return audit_wallets(self.conn, after, limit)

    def find_by_customer(self, billing_customer_id: str) -> str | None:
        return self.conn.execute(
            select(t.wallets.c.id).where(t.wallets.c.billing_customer_id == billing_customer_id)
        ).scalar_one_or_none()


def audit_wallets(conn: Connection, after: str | None, limit: int) -> list[WalletAudit]:
    """Per-wallet totals for the invariant check, a page of wallets at a time."""
    page = select(t.wallets).order_by(t.wallets.c.id).limit(limit)
    if after is not None:
        page = page.where(t.wallets.c.id > after)
    wallet_rows = conn.execute(page).all()
    if not wallet_rows:
        return []
    ids = [w.id for w in wallet_rows]
    e = t.entries.c
    sums = dict(
        conn.execute(
            select(e.wallet_id, func.sum(e.amount)).where(e.wallet_id.in_(ids)).group_by(
                e.wallet_id
            )
        ).all()
    )
    b = t.blocks.c
    blocks = {
        r.wallet_id: r
        for r in conn.execute(
            select(
                b.wallet_id,
                func.sum(b.remaining).label("remaining"),
                func.sum(case((b.remaining < 0, 1), else_=0)).label("negative"),
                func.sum(case((b.remaining > b.original, 1), else_=0)).label("overfull"),
            )
            .where(b.wallet_id.in_(ids))
            .group_by(b.wallet_id)
        )
    }
    h = t.holds.c
    held = dict(
        conn.execute(
            select(h.wallet_id, func.sum(h.amount))
            .where(h.wallet_id.in_(ids), h.status == "open")
            .group_by(h.wallet_id)
        ).all()
    )
    # Each entry's balance_after must be the previous one plus its amount.
    chain = (
        select(
            e.wallet_id,
            e.id,
            e.amount,
            e.balance_after,
            func.lag(e.balance_after).over(partition_by=e.wallet_id, order_by=e.id).label("prev"),
            func.row_number()
            .over(partition_by=e.wallet_id, order_by=e.id.desc())
            .label("rank_desc"),
        )
        .where(e.wallet_id.in_(ids))
        .subquery()
    )
    broken: dict[str, int] = {}
    last: dict[str, int] = {}
    for r in conn.execute(
        select(chain).where(
            (chain.c.rank_desc == 1)
            | (func.coalesce(chain.c.prev, 0) + chain.c.amount != chain.c.balance_after)
        )
    ):
        if r.rank_desc == 1:
            last[r.wallet_id] = r.balance_after
        if (r.prev or 0) + r.amount != r.balance_after:
            broken[r.wallet_id] = broken.get(r.wallet_id, 0) + 1
    unrefusable = {
        r.wallet_id
        for r in conn.execute(
            select(e.wallet_id)
            .where(e.wallet_id.in_(ids), e.kind == "usage", e.reason.like("kinde:%"))
            .distinct()
        )
    }
    out = []
    for w in wallet_rows:
        blk = blocks.get(w.id)
        out.append(
            WalletAudit(
                wallet_id=w.id,
                balance=w.balance,
                held=w.held,
                arrears=w.arrears,
                overdraft_limit=w.overdraft_limit,
                sum_entries=int(sums.get(w.id) or 0),
                sum_remaining=int(blk.remaining or 0) if blk else 0,
                sum_open_holds=int(held.get(w.id) or 0),
                negative_blocks=int(blk.negative or 0) if blk else 0,
                overfull_blocks=int(blk.overfull or 0) if blk else 0,
                broken_chain_entries=broken.get(w.id, 0),
                last_balance_after=last.get(w.id),
                has_unrefusable_usage=w.id in unrefusable,
            )
        )
    return out


class SqlIdempotencyRepository:
    def __init__(self, conn: Connection) -> None:
        self.conn = conn
        self.dialect = conn.dialect.name
        # Keys this transaction claimed: their row exists (as a placeholder) and `put` fills it.
        self._claimed: set[tuple[str, str]] = set()

    def get(self, scope: str, key: str) -> StoredResponse | None:
        row = self.conn.execute(
            select(
                t.idempotency_keys.c.request_hash,
                t.idempotency_keys.c.status_code,
                t.idempotency_keys.c.response,
            ).where(t.idempotency_keys.c.scope == scope, t.idempotency_keys.c.key == key)
        ).first()
        if row is None:
            return None
        return StoredResponse(row.request_hash, row.status_code, json.loads(row.response))

    def claim(
        self, scope: str, key: str, request_hash: str, now: datetime
    ) -> StoredResponse | None:
        """Take the key for this transaction, or return the answer stored with it.

        The insert waits while another open transaction holds the same key (PostgreSQL's
        unique index; SQLite has one writer anyway). If that one commits, the key is taken and
        the stored answer is read with a fresh statement, which under READ COMMITTED sees it;
        if it rolls back (a refused request stores nothing), the key is ours. The placeholder
        row is never visible to others: `put` fills it before the transaction commits.
        """
        inserted = self.conn.execute(
            _insert_ignore(self.dialect, t.idempotency_keys)
            .values(
                scope=scope,
                key=key,
                request_hash=request_hash,
                status_code=0,
                response="null",
                created_at=now,
            )
            # RETURNING, not rowcount: SQLAlchemy does not report a row count for an INSERT.
            .returning(t.idempotency_keys.c.scope)
        ).first()
        if inserted is not None:
            self._claimed.add((scope, key))
            return None
        stored = self.get(scope, key)
        if stored is None:  # keys are kept for good, so this is a race we cannot explain
            raise DuplicateKey(f"idempotency key {scope}/{key}")
        return stored

    def put(
        self,
        scope: str,
        key: str,
        request_hash: str,
        status_code: int,
        body: dict[str, Any],
        now: datetime,
    ) -> None:
        response = json.dumps(body, separators=(",", ":"))
        if (scope, key) in self._claimed:
            self._claimed.discard((scope, key))
            self.conn.execute(
                update(t.idempotency_keys)
                .where(t.idempotency_keys.c.scope == scope, t.idempotency_keys.c.key == key)
                .values(request_hash=request_hash, status_code=status_code, response=response)
            )
            return
        # A plain INSERT: the primary key turns a racing duplicate into an error and a rollback.
        try:
            self.conn.execute(
                insert(t.idempotency_keys).values(
                    scope=scope,
                    key=key,
                    request_hash=request_hash,
                    status_code=status_code,
                    response=response,
                    created_at=now,
                )
            )
        except IntegrityError as exc:
            raise DuplicateKey(f"idempotency key {scope}/{key}") from exc


# Repositories added by other modules (inbox, outbox, ...): name -> factory(connection).
# Each module registers itself on import, so a unit of work offers `uow.<name>`
# without this file knowing every table.
REPOSITORY_FACTORIES: dict[str, Callable[[Connection], Any]] = {}


def register_repository(name: str, factory: Callable[[Connection], Any]) -> None:
    REPOSITORY_FACTORIES[name] = factory


class SqlUnitOfWork:
    """One database transaction with the repositories bound to its connection."""

    wallets: SqlWalletRepository
    idempotency: SqlIdempotencyRepository

    def __init__(self, engine: Engine, write: bool) -> None:
        self.engine = engine
        self.write = write
        self.conn: Connection | None = None

    def __enter__(self) -> Self:
        conn = self.engine.connect()
        if self.write and self.engine.dialect.name == "sqlite":
            conn = conn.execution_options(**{_IMMEDIATE: True})
        elif not self.write and self.engine.dialect.name == "postgresql":
            # Reads see one snapshot (wallet, blocks and holds agree); read-only REPEATABLE
            # READ transactions never fail with serialization errors.
            conn = conn.execution_options(isolation_level=READ_ISOLATION)
        conn.begin()
        self.conn = conn
        self.wallets = SqlWalletRepository(conn)
        self.idempotency = SqlIdempotencyRepository(conn)
        for name, factory in REPOSITORY_FACTORIES.items():
            setattr(self, name, factory(conn))
        return self

    def __getattr__(self, name: str) -> Any:
        # Only reached for attributes not set: a registered repository outside a transaction.
        raise AttributeError(f"unit of work has no {name!r} (not entered, or not registered)")

    def commit(self) -> None:
        assert self.conn is not None
        self.conn.commit()

    def rollback(self) -> None:
        if self.conn is not None:
            self.conn.rollback()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        assert self.conn is not None
        try:
            # Anything not committed explicitly is rolled back: a unit of work is all or nothing.
            self.conn.rollback()
        finally:
            self.conn.close()
            self.conn = None


class SqlStore:
    """Factory of units of work over one engine; the composition root owns one per process."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine

    def __call__(self, write: bool) -> SqlUnitOfWork:
        return SqlUnitOfWork(self.engine, write)

    @property
    def dialect(self) -> str:
        return self.engine.dialect.name


# Team budgets take part in every capture and in member debits (app.services.budgets), so their
# repository comes with the store itself rather than only with the composition root: a store
# built directly (bench, tests, scripts) must not lose member bookkeeping. Imported last, once
# register_repository exists.
import adapters.sql.budgets  # noqa: E402, F401
