"""The runway forecast of one wallet (`GET /v1/wallets/{id}/forecast`, the dashboard's runway
line): a read that gathers the wallet's state and its last 30 days of daily usage, and hands
them to the one pure computation, app.domain.forecast."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from app.domain import forecast as rules
from app.domain.catalog import Catalog
from app.services.ports import UnitOfWork, UnitOfWorkFactory
from app.services.reads import ReadService
from app.services.views import iso


def forecast_in(uow: UnitOfWork, catalog: Catalog, wallet_id: str, available: int,
                blocks: list[rules.CreditsLeft], now: datetime) -> rules.Forecast:
    """The forecast inside a caller's unit of work (alerts use it in the write that fired
    them): the last 30 days of daily usage, the catalog's bundles, the one computation."""
    first_day = datetime.combine(now.date() - timedelta(days=rules.LONG_WINDOW_DAYS - 1),
                                 datetime.min.time(), UTC)
    daily = uow.dashboard.daily_usage(wallet_id, first_day)
    bundles = [rules.BundleOption(b.key, b.credits) for b in catalog.bundles.values()]
    return rules.forecast(now=now, available=available, blocks=blocks, daily_usage=daily,
                          bundles=bundles)


class ForecastService:
    def __init__(self, uow: UnitOfWorkFactory, catalog: Catalog, reads: ReadService) -> None:
        self.uow = uow
        self.catalog = catalog
        self.reads = reads

    def compute(self, wallet_id: str) -> rules.Forecast:
        """The forecast of a wallet as it stands now (swept, as every read)."""
        wallet = self.reads.get_wallet(wallet_id)
        blocks = [
            rules.CreditsLeft(b["remaining"], datetime.fromisoformat(b["expires_at"])
                              if b["expires_at"] else None)
            for b in wallet["blocks"]
        ]
        with self.uow(False) as uow:
            return forecast_in(uow, self.catalog, wallet_id, wallet["available"], blocks,
                               self.reads.writer.clock())

    def forecast(self, wallet_id: str) -> dict[str, Any]:
        """The API's view of `compute`."""
        f = self.compute(wallet_id)
        bundle = self.catalog.bundles.get(f.suggested_bundle) if f.suggested_bundle else None
        return {
            "wallet_id": wallet_id,
            "available": f.available,
            "window_days": f.window_days,
            "credits_per_day": f.credits_per_day,
            "days_left": f.days_left,
            "runs_out_at": iso(f.runs_out_at.astimezone(UTC)) if f.runs_out_at else None,
            "by_feature": [{"feature": p.feature, "credits_per_day": p.credits_per_day}
                           for p in f.by_feature],
            "expiring_before_run_out": f.expiring_before_run_out,
            "suggested_bundle": {
                "bundle": bundle.key, "label": bundle.label or bundle.key,
                "credits": bundle.credits, "price": str(bundle.price),
                "currency": bundle.currency,
            } if bundle else None,
            "runway": rules.runway_sentence(f),
        }
