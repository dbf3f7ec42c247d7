"""`LedgerService`: the wallet use cases behind one object, as the HTTP layer, the CLI and the
composition root use them. Each public method is one unit of work (app.services.idempotency).

The use cases live by kind (usage, credits, holds, wallet_settings, sweeps, reads); every one
that changes a wallet goes through the one `WalletWriter` they share (app.services.wallet_writer).
"""

from __future__ import annotations

from app.domain.catalog import Catalog
from app.domain.limits import MAX_CREDITS, MAX_HOLD_SECONDS, MAX_QUANTITY
from app.services.corrections import CorrectionService
from app.services.credits import CreditService
from app.services.errors import (
    IdempotencyConflict,
    NotFound,
    UnknownBundle,
    UnknownFeature,
    status_for,
)
from app.services.forecasts import ForecastService
from app.services.holds import HoldService
from app.services.idempotency import Outcome, utc_now
from app.services.payments import PaidElsewhere, Payments
from app.services.ports import Clock, UnitOfWorkFactory
from app.services.reads import ReadService, verify_ledger
from app.services.recharge import AutoRecharger
from app.services.sweeps import SweepService
from app.services.usage import UsageService
from app.services.wallet_settings import WalletSettingsService
from app.services.wallet_writer import AfterWrite, BeforeSweep, WalletWriter

__all__ = [
    # Re-exported for the HTTP layer and tests that import them from here.
    "MAX_CREDITS", "MAX_HOLD_SECONDS", "MAX_QUANTITY",
    "IdempotencyConflict", "LedgerService", "NotFound", "Outcome", "UnknownBundle",
    "UnknownFeature", "status_for", "utc_now", "verify_ledger",
]


class LedgerService:
    """The wallet use cases; `payments` answers how a sold pack is paid for (default: the
    product collects payment itself)."""

    def __init__(
        self,
        uow: UnitOfWorkFactory,
        catalog: Catalog,
        clock: Clock = utc_now,
        payments: Payments | None = None,
    ) -> None:
        self.writer = WalletWriter(uow, catalog, clock)
        self.usage = UsageService(self.writer)
        self.credits = CreditService(self.writer, payments or PaidElsewhere())
        self.holds = HoldService(self.writer)
        self.corrections = CorrectionService(self.writer)
        self.settings = WalletSettingsService(self.writer)
        self.sweeps = SweepService(self.writer)
        self.reads = ReadService(self.writer, self.sweeps)
        self.forecasts = ForecastService(uow, catalog, self.reads)
        self.record_usage = self.usage.record_usage
        self.record_usage_batch = self.usage.record_usage_batch
        self.top_up_bundle = self.credits.top_up_bundle
        self.grant = self.credits.grant
        self.adjust = self.corrections.adjust
        self.refund = self.corrections.refund
        self.place_hold = self.holds.place_hold
        self.capture_hold = self.holds.capture_hold
        self.release_hold = self.holds.release_hold
        self.set_alerts = self.settings.set_alerts
        self.set_auto_recharge = self.settings.set_auto_recharge
        self.suspend_auto_recharge = self.settings.suspend_auto_recharge
        self.suspend_auto_recharge_in = self.settings.suspend_auto_recharge_in
        self.sweep_due = self.sweeps.sweep_due
        self.sweep_wallet = self.sweeps.sweep_wallet
        self.get_wallet = self.reads.get_wallet
        self.ledger_page = self.reads.ledger_page
        self.forecast = self.forecasts.forecast

    # The writer's shared state, as the composition root and tests set it up.

    @property
    def uow(self) -> UnitOfWorkFactory:
        return self.writer.uow

    @property
    def catalog(self) -> Catalog:
        return self.writer.catalog

    @property
    def clock(self) -> Clock:
        return self.writer.clock

    @clock.setter
    def clock(self, clock: Clock) -> None:
        self.writer.clock = clock

    @property
    def recharger(self) -> AutoRecharger | None:
        return self.writer.recharger

    @recharger.setter
    def recharger(self, recharger: AutoRecharger | None) -> None:
        self.writer.recharger = recharger

    @property
    def payments(self) -> Payments:
        return self.credits.payments

    @payments.setter
    def payments(self, payments: Payments) -> None:
        self.credits.payments = payments

    @property
    def after_write(self) -> list[AfterWrite]:
        return self.writer.after_write

    @property
    def before_sweep(self) -> list[BeforeSweep]:
        return self.writer.before_sweep

    def sales_are_invoiced(self) -> bool:
        """Whether a pack sale is charged through a payment gateway (Kinde)."""
        return self.payments.invoiced
