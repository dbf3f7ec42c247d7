"""SQL billing state for Kinde usage reporting: the agreement cache (each agreement's current
period, `billing_agreements`), what Kinde acknowledged per wallet and feature (`usage_reports`),
and the units total behind each report.
"""

from __future__ import annotations

import json

from sqlalchemy import Connection, func, select

from adapters.sql import dialect
from adapters.sql import schema as t
from app.services.ports import AgreementInfo, UsageReportState


class SqlBillingRepository:
    """Agreement cache, usage report state and the units total behind each report."""

    def __init__(self, conn: Connection) -> None:
        self.conn = conn

    def agreement(self, agreement_id: str) -> AgreementInfo | None:
        row = self.conn.execute(
            select(t.billing_agreements).where(t.billing_agreements.c.id == agreement_id)
        ).first()
        if row is None:
            return None
        return AgreementInfo(
            id=row.id,
            customer_id=row.customer_id,
            plan_code=row.plan_code,
            period_start=row.period_start,
            period_end=row.period_end,
            feature_codes=tuple(json.loads(row.feature_codes)),
            fetched_at=row.fetched_at,
        )

    def save_agreement(self, info: AgreementInfo) -> None:
        values = {
            "customer_id": info.customer_id,
            "plan_code": info.plan_code,
            "period_start": info.period_start,
            "period_end": info.period_end,
            "feature_codes": json.dumps(list(info.feature_codes)),
            "fetched_at": info.fetched_at,
        }
        dialect.upsert_row(self.conn, t.billing_agreements, {"id": info.id}, values)

    def report_state(self, wallet_id: str, feature: str) -> UsageReportState:
        r = t.usage_reports.c
        row = self.conn.execute(
            select(t.usage_reports).where(r.wallet_id == wallet_id, r.feature == feature)
        ).first()
        if row is None:
            return UsageReportState(wallet_id, feature, None, None, 0, 0, None)
        return UsageReportState(
            wallet_id, feature, row.agreement_id, row.period_start, row.base_units,
            row.last_sent_total, row.last_sent_at,
        )

    def save_report_state(self, state: UsageReportState) -> None:
        values = {
            "agreement_id": state.agreement_id,
            "period_start": state.period_start,
            "base_units": state.base_units,
            "last_sent_total": state.last_sent_total,
            "last_sent_at": state.last_sent_at,
        }
        dialect.upsert_row(self.conn, t.usage_reports,
                           {"wallet_id": state.wallet_id, "feature": state.feature}, values)

    def units_used(self, wallet_id: str, feature: str) -> int:
        """All units of a feature the wallet has used (usage and captured holds), ever."""
        e = t.entries.c
        total = self.conn.execute(
            select(func.coalesce(func.sum(e.quantity), 0)).where(
                e.wallet_id == wallet_id, e.feature == feature, e.kind.in_(("usage", "capture"))
            )
        ).scalar_one()
        return int(total)
