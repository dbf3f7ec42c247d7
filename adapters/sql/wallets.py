"""SQL wallets: the hot path of every debit and credit (lock, load live blocks, save changes).

Plain SQLAlchemy Core on statements built once (SQLAlchemy caches their compiled form per
dialect): no ORM identity map or unit-of-work flush per row. `save` writes each kind of row
with one statement (an executemany or a multi-row INSERT ... RETURNING), so on PostgreSQL the
wallet's row lock is held across as few round trips as the changes allow.
"""

from __future__ import annotations

import json
from datetime import datetime
from decimal import Decimal
from functools import cache
from typing import Any

from sqlalchemy import Connection, bindparam, case, func, insert, select, update
from sqlalchemy.sql.dml import Insert
from sqlalchemy.sql.elements import BindParameter

from adapters.sql import dialect
from adapters.sql import schema as t
from adapters.sql.audit import audit_wallets
from adapters.sql.rows import from_row
from app.domain.alerts import AlertSettings
from app.domain.audit import WalletAudit
from app.domain.ledger import Block, Hold, Wallet, owner_type_of
from app.domain.recharge import AutoRecharge
from app.services.ports import RecordedEntry, WalletProfile

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
    t.wallets.c.next_period_end_at,
    t.wallets.c.alert_settings,
    t.wallets.c.alerts_fired,
    t.wallets.c.auto_recharge_enabled,
    t.wallets.c.auto_recharge_threshold,
    t.wallets.c.auto_recharge_bundle,
    t.wallets.c.auto_recharge_suspended,
)
_SELECT_WALLET = select(*_WALLET_COLUMNS).where(t.wallets.c.id == bindparam("wallet_id"))
_SELECT_WALLET_FOR_UPDATE = _SELECT_WALLET.with_for_update()  # where rows lock (see dialect)
# Multi-row: one INSERT for all of a save's entries, ids back in the order of the rows given.
_ENTRY_INSERT = insert(t.entries).returning(t.entries.c.id, sort_by_parameter_order=True)
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
        next_period_end_at=bindparam("w_next_period_end"),
        alerts_fired=bindparam("w_alerts_fired"),
        updated_at=bindparam("w_updated"),
    )
)
@cache
def _create_statement(postgres: bool) -> Insert:
    """Insert an empty wallet if there is none (built once per dialect)."""
    now: BindParameter[datetime] = bindparam("now")
    return dialect.insert_ignore_for(postgres, t.wallets).values(
        id=bindparam("id"), owner_type=bindparam("owner_type"), balance=0, held=0, arrears=0,
        overdraft_limit=0, reference_balance=0, auto_recharge_enabled=False, created_at=now,
        updated_at=now)


_PROFILE = select(
    t.wallets.c.id, t.wallets.c.billing_customer_id, t.wallets.c.agreement_id,
    t.wallets.c.plan_code, t.wallets.c.email,
).where(t.wallets.c.id == bindparam("wallet_id"))
_BY_CUSTOMER = select(t.wallets.c.id).where(
    t.wallets.c.billing_customer_id == bindparam("customer_id"))
_GET_HOLD = select(t.holds).where(t.holds.c.id == bindparam("hold_id"))
_OPEN_HOLDS = (
    select(t.holds)
    .where(t.holds.c.wallet_id == bindparam("wallet_id"), t.holds.c.status == "open")
    .order_by(t.holds.c.expires_at)
)
_INSERT_BLOCKS = insert(t.blocks)
_INSERT_HOLDS = insert(t.holds)
_INSERT_DRAWS = insert(t.block_draws)
_UPDATE_BLOCK = (
    update(t.blocks)
    .where(t.blocks.c.id == bindparam("b_id"))
    # expires_at moves only when Kinde extends a plan period (app.services.plans).
    .values(remaining=bindparam("b_remaining"), expires_at=bindparam("b_expires_at"))
)

_UPDATE_HOLD = (
    update(t.holds)
    .where(t.holds.c.id == bindparam("h_id"))
    .values(
        status=bindparam("h_status"),
        captured_amount=bindparam("h_captured"),
        settled_at=bindparam("h_settled"),
    )
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
    return from_row(Hold, row)


def _entry_from_row(row: Any) -> RecordedEntry:
    return from_row(RecordedEntry, row)


class SqlWalletRepository:
    def __init__(self, conn: Connection) -> None:
        self.conn = conn

    def _load(self, wallet_id: str, lock: bool) -> Wallet | None:
        locked = lock and dialect.locks_rows(self.conn)
        stmt = _SELECT_WALLET_FOR_UPDATE if locked else _SELECT_WALLET
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
            next_period_end_at=row.next_period_end_at,
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
        self.conn.execute(_create_statement(dialect.is_postgresql(self.conn)),
                          {"id": wallet_id, "owner_type": owner_type, "now": now})
        wallet = self.lock(wallet_id)
        assert wallet is not None
        return wallet

    def save(self, wallet: Wallet, now: datetime) -> list[int]:
        conn = self.conn
        new_block_ids = {b.id for b in wallet.new_blocks}
        if wallet.new_blocks:
            conn.execute(
                _INSERT_BLOCKS,
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
        # One statement per kind of row (executemany: psycopg pipelines it), not one per row.
        block_updates = [
            {"b_id": b.id, "b_remaining": b.remaining, "b_expires_at": b.expires_at}
            for b in wallet.touched_blocks.values()
            if b.id not in new_block_ids
        ]
        if block_updates:
            conn.execute(_UPDATE_BLOCK, block_updates)
        if wallet.new_holds:
            conn.execute(
                _INSERT_HOLDS,
                [
                    {
                        "id": h.id,
                        "wallet_id": wallet.id,
                        "amount": h.amount,
                        "status": h.status,
                        "feature": h.feature,
                        "description": h.description,
                        "captured_amount": h.captured_amount,
                        "expires_at": h.expires_at,
                        "created_at": h.created_at,
                        "settled_at": h.settled_at,
                    }
                    for h in wallet.new_holds
                ],
            )
        new_hold_ids = {h.id for h in wallet.new_holds}
        hold_updates = [
            {"h_id": h.id, "h_status": h.status, "h_captured": h.captured_amount,
             "h_settled": h.settled_at}
            for h in wallet.touched_holds.values()
            if h.id not in new_hold_ids
        ]
        if hold_updates:
            conn.execute(_UPDATE_HOLD, hold_updates)
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
                "w_next_period_end": wallet.next_period_end_at,
                "w_alerts_fired": json.dumps(sorted(wallet.alerts_fired))
                if wallet.alerts_fired
                else None,
                "w_updated": now,
            },
        )
        ids: list[int] = []
        if wallet.new_entries:
            ids = list(
                conn.execute(
                    _ENTRY_INSERT,
                    [
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
                            "block_id": e.block_id,
                        }
                        for e in wallet.new_entries
                    ],
                ).scalars()
            )
        draws = [
            {"entry_id": entry_id, "block_id": block_id, "credits": credits, "kind": e.kind,
             "created_at": e.created_at}
            for entry_id, e in zip(ids, wallet.new_entries, strict=True)
            for block_id, credits in e.draws
        ]
        if draws:
            conn.execute(_INSERT_DRAWS, draws)
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
        row = self.conn.execute(_GET_HOLD, {"hold_id": hold_id}).first()
        return _hold_from_row(row) if row else None

    def open_holds(self, wallet_id: str) -> list[Hold]:
        rows = self.conn.execute(_OPEN_HOLDS, {"wallet_id": wallet_id})
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
        row = self.conn.execute(_PROFILE, {"wallet_id": wallet_id}).first()
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
            _BY_CUSTOMER, {"customer_id": billing_customer_id}).scalar_one_or_none()
