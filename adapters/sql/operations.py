"""SQL behind `app.services.ports.OperationsReader`: whole-store totals and samples.

Each read is a short statement on its own connection: these figures need no wallet lock and no
snapshot shared with anything else.
"""

from __future__ import annotations

from sqlalchemy import Engine, func, literal, select

from adapters.sql import schema as t
from app.services.ports import StoreTotals

_PING = select(literal(1))
_PARKED = select(func.count()).where(t.webhook_events.c.status == "parked")


class SqlOperationsReader:
    def __init__(self, engine: Engine) -> None:
        self.engine = engine

    def totals(self) -> StoreTotals:
        with self.engine.connect() as conn:
            wallets, balance, arrears = conn.execute(
                select(func.count(), func.coalesce(func.sum(t.wallets.c.balance), 0),
                       func.coalesce(func.sum(t.wallets.c.arrears), 0))
            ).one()
            parked = conn.execute(_PARKED).scalar_one()
        return StoreTotals(wallets=int(wallets), balance=int(balance), arrears=int(arrears),
                           parked_webhooks=int(parked))

    def database(self) -> str:
        return self.engine.dialect.name

    def answers(self) -> bool:
        try:
            with self.engine.connect() as conn:
                conn.execute(_PING)
        except Exception:  # any failure means "not ready"; the probe says no more
            return False
        return True

    def parked_webhook_count(self) -> int:
        with self.engine.connect() as conn:
            return int(conn.execute(_PARKED).scalar_one())

    def billing_customer_ids(self, limit: int) -> tuple[str, ...]:
        with self.engine.connect() as conn:
            return tuple(conn.execute(
                select(t.wallets.c.billing_customer_id)
                .where(t.wallets.c.billing_customer_id.is_not(None)).limit(limit)
            ).scalars())
