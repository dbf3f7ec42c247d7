"""meter readings keyed by wallet

Absolute Kinde meter readings used to be keyed by the billing customer id when an event carried
one, and by the wallet id otherwise; they are now always keyed by the wallet. Rows keyed by a
customer id that maps to a wallet are moved to that wallet, keeping the higher running total
where both exist, so the first event after the upgrade does not debit the period again.

Revision ID: 0005
Revises: 0004
Create Date: 2026-11-24 17:10:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    conn = op.get_bind()
    owners: dict[str, str] = dict(
        conn.execute(
            sa.text(
                "SELECT billing_customer_id, id FROM wallets WHERE billing_customer_id IS NOT NULL"
            )
        ).all()
    )
    if not owners:
        return
    rows = conn.execute(
        sa.text(
            "SELECT customer_id, feature_code, period_key, last_value, updated_at "
            "FROM meter_readings"
        )
    ).all()
    existing = {(r.customer_id, r.feature_code, r.period_key): r for r in rows}
    for r in rows:
        wallet_id = owners.get(r.customer_id)
        if wallet_id is None:
            continue
        key = {"c": r.customer_id, "f": r.feature_code, "p": r.period_key}
        target = existing.get((wallet_id, r.feature_code, r.period_key))
        if target is None:
            conn.execute(
                sa.text(
                    "UPDATE meter_readings SET customer_id = :w WHERE customer_id = :c "
                    "AND feature_code = :f AND period_key = :p"
                ),
                {**key, "w": wallet_id},
            )
            existing[(wallet_id, r.feature_code, r.period_key)] = r
            continue
        if r.last_value > target.last_value:
            conn.execute(
                sa.text(
                    "UPDATE meter_readings SET last_value = :v WHERE customer_id = :w "
                    "AND feature_code = :f AND period_key = :p"
                ),
                {"v": r.last_value, "w": wallet_id, "f": r.feature_code, "p": r.period_key},
            )
        conn.execute(
            sa.text(
                "DELETE FROM meter_readings WHERE customer_id = :c AND feature_code = :f "
                "AND period_key = :p"
            ),
            key,
        )


def downgrade() -> None:
    # The old keying cannot be restored (which events named the customer is not kept), and
    # wallet-keyed rows are what the old code wrote for events without a customer id.
    pass
