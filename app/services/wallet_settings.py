"""A wallet's alert and auto-recharge settings, and suspending auto-recharge after a failed
charge. Settings change under the wallet's lock, through the wallet writer."""

from __future__ import annotations

from dataclasses import replace
from datetime import datetime
from typing import Any

from app.domain.alerts import AlertSettings
from app.domain.ledger import InvalidRequest, Wallet, owner_type_of
from app.domain.limits import looks_like_email
from app.domain.recharge import AutoRecharge
from app.services.idempotency import Outcome, run_write
from app.services.ports import UnitOfWork
from app.services.recharge import suspended_notice
from app.services.wallet_writer import WalletWriter


class WalletSettingsService:
    def __init__(self, writer: WalletWriter) -> None:
        self.writer = writer

    def set_alerts(
        self, wallet_id: str, data: dict[str, Any], *, idempotency_key: str | None = None
    ) -> Outcome:
        data = dict(data)
        change_email = "notify_email" in data
        email = data.pop("notify_email", None)  # null clears it
        if email is not None and not looks_like_email(email):
            raise InvalidRequest("notify_email must be an e-mail address")
        settings = AlertSettings.parse(data, self.writer.alert_defaults)
        owner_type_of(wallet_id)

        def action(uow: UnitOfWork, now: datetime) -> tuple[int, dict[str, Any]]:
            def configure(wallet: Wallet) -> None:
                uow.wallets.save_alert_settings(wallet_id, settings)
                if change_email:
                    # Kinde's API does not give an org's billing e-mail back after creation,
                    # so the product can say where alerts go (it also overrides a user's).
                    uow.wallets.update_profile(wallet_id, email=email)
                wallet.alert_settings = settings
                # Thresholds the balance is already at or below count as crossed: the owner
                # set them knowingly, and an alert fires on the next real crossing.
                wallet.alerts_fired = frozenset(
                    t.key for t in settings.thresholds(wallet.reference_balance)
                    if wallet.balance <= t.credits
                )

            self.writer.write(uow, wallet_id, now, configure, create=True)
            profile = uow.wallets.profile(wallet_id)
            return 200, {"wallet_id": wallet_id, "alerts": settings.as_dict(),
                         "notify_email": profile.email if profile else None}

        request = {"op": "alerts", **settings.as_dict(), "notify_email": email,
                   "change_email": change_email}
        return run_write(self.writer.runner, self.writer.clock, f"wallet:{wallet_id}",
                         idempotency_key, request, action)

    def set_auto_recharge(
        self, wallet_id: str, data: dict[str, Any], *, idempotency_key: str | None = None
    ) -> Outcome:
        catalog = self.writer.catalog
        settings = AutoRecharge.parse(
            data, {key: bundle.credits for key, bundle in catalog.bundles.items()})
        if settings.enabled and self.writer.recharger is None:
            raise InvalidRequest(
                "auto-recharge needs a way to charge: connect Kinde billing (KINDE_DOMAIN, "
                "KINDE_M2M_CLIENT_ID and KINDE_M2M_CLIENT_SECRET)"
            )
        bundle = catalog.bundles.get(settings.bundle)
        if settings.enabled and bundle is not None and not bundle.kinde_feature_code:
            raise InvalidRequest(
                f"bundle {bundle.key!r} has no kinde_feature_code, so it cannot be invoiced"
            )
        owner_type_of(wallet_id)

        def action(uow: UnitOfWork, now: datetime) -> tuple[int, dict[str, Any]]:
            def configure(wallet: Wallet) -> None:
                # Saving the settings clears any suspension: the owner turned it back on.
                uow.wallets.save_auto_recharge(wallet_id, settings)
                wallet.auto_recharge = settings

            self.writer.write(uow, wallet_id, now, configure, create=True)
            return 200, {"wallet_id": wallet_id, "auto_recharge": settings.as_dict()}

        request = {"op": "auto_recharge", **settings.as_dict()}
        return run_write(self.writer.runner, self.writer.clock, f"wallet:{wallet_id}",
                         idempotency_key, request, action)

    def suspend_auto_recharge(self, wallet_id: str, reason: str) -> bool:
        """A charge failed: stop auto-recharge (until re-enabled) and tell the owner."""
        with self.writer.uow(True) as uow:
            changed = self.suspend_auto_recharge_in(uow, wallet_id, reason, self.writer.clock())
            uow.commit()
            return changed

    def suspend_auto_recharge_in(
        self, uow: UnitOfWork, wallet_id: str, reason: str, now: datetime
    ) -> bool:
        """The same inside a caller's unit of work (e.g. with the webhook that reported it)."""

        def suspend(wallet: Wallet) -> bool:
            current = wallet.auto_recharge
            # Purchases already made stay billable: their credits exist. Only buying stops.
            if current is None or current.suspended_reason is not None or not current.enabled:
                return False
            wallet.auto_recharge = replace(current, suspended_reason=reason)
            uow.wallets.save_auto_recharge(wallet_id, wallet.auto_recharge)
            wallet.new_alerts.append(suspended_notice(wallet_id, reason))
            return True

        written = self.writer.write(uow, wallet_id, now, suspend)
        return written is not None and written.result
