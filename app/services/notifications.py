"""Notifications: alerts and recharge notices, written to the outbox in the ledger transaction.

Each notice becomes one outbox row per channel (webhook, e-mail, log), so one channel failing
is retried without resending the others. The notice id is fixed when the row is written and is
the Standard Webhooks `webhook-id` and the e-mail Message-ID, so a resend after a crash is
recognisable as the same message by the receiver.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from app.domain.alerts import Alert
from app.domain.catalog import Catalog
from app.domain.forecast import CreditsLeft, Forecast
from app.domain.ledger import Wallet, new_id
from app.domain.usage_terms import low_balance_message, plural
from app.services.forecasts import forecast_in
from app.services.outbox_kinds import NOTIFY_PREFIX
from app.services.ports import (
    DeliveryError,
    DeliveryFailed,
    Notification,
    NotificationChannel,
    OutboxMessage,
    UnitOfWork,
)
from app.services.recharge import Notice


def paused_features(catalog: Catalog, feature_key: str | None) -> list[str]:
    """What an empty wallet can no longer use, in plural nouns ("reports").

    The feature whose use emptied the wallet, when the product reports it (and so it is now
    refused); after Kinde-metered usage (never refused) every feature the product reports.
    """
    feature = catalog.features.get(feature_key or "")
    if feature is not None and feature.source == "app":
        return [plural(feature.unit, 2)]
    return [plural(f.unit, 2) for f in catalog.features.values() if f.source == "app"]


def alert_notice(
    alert: Alert, wallet_id: str, unit_hint: tuple[str, int] | None,
    runway: Forecast | None, top_up_url: str | None, paused: list[str] | None = None,
) -> Notice:
    data: dict[str, Any] = {
        "wallet_id": wallet_id,
        "balance": alert.balance,
        "reference_balance": alert.reference_balance,
        "message": low_balance_message(alert.balance, unit_hint, runway, top_up_url,
                                       paused=paused),
    }
    if alert.threshold.percent is not None:
        data["threshold_percent"] = alert.threshold.percent
    else:
        data["threshold_credits"] = alert.threshold.credits
    return Notice(alert.type, data)


def subject_for(notice: Notice) -> str:
    balance = notice.data.get("balance")
    return {
        "credits.balance_low": f"Low credit balance: {balance:,} credits left"
        if isinstance(balance, int) else "Low credit balance",
        "credits.depleted": "Your credits are used up",
        "credits.auto_recharged": "Credits topped up automatically",
        "credits.auto_recharge_suspended": "Auto-recharge is paused",
        "credits.auto_recharge_capped": "Auto-recharge daily limit reached",
    }.get(notice.type, notice.type)


class Notifier:
    """After-write hook turning a wallet's pending notices into outbox rows."""

    def __init__(self, catalog: Catalog, channels: list[str], top_up_url: str | None) -> None:
        self.catalog = catalog
        self.channels = channels
        self.top_up_url = top_up_url

    def __call__(
        self, uow: UnitOfWork, wallet: Wallet, saved: list[tuple[int, Any]], now: datetime
    ) -> None:
        if not wallet.new_alerts:
            return
        pending, wallet.new_alerts = list(wallet.new_alerts), []
        profile = uow.wallets.profile(wallet.id)
        email = profile.email if profile else None
        for item in pending:
            notice = (
                item if isinstance(item, Notice)
                else self._from_alert(uow, wallet, item, saved, now)
            )
            notice_id = new_id("ntf")
            payload = {
                "id": notice_id,
                "type": notice.type,
                "timestamp": now.isoformat(),
                "data": notice.data,
                "subject": subject_for(notice),
                "text": notice.data.get("message", subject_for(notice)),
                "recipient_email": email,
            }
            for channel in self.channels:
                if channel == "email" and not email:
                    continue  # no address known for this owner yet
                uow.outbox.enqueue(
                    NOTIFY_PREFIX + channel, f"notify:{notice_id}:{channel}", wallet.id,
                    payload, now,
                )

    def _from_alert(self, uow: UnitOfWork, wallet: Wallet, alert: Alert,
                    saved: list[tuple[int, Any]], now: datetime) -> Notice:
        features = [e.feature for _, e in saved if e.feature in self.catalog.features]
        feature = self.catalog.features.get(features[-1]) if features else next(
            iter(self.catalog.features.values()), None)
        hint = (feature.unit, feature.credits_per_unit) if feature else None
        runway = forecast_in(uow, self.catalog, wallet.id, wallet.available,
                             [CreditsLeft(b.remaining, b.expires_at) for b in wallet.blocks], now)
        paused = paused_features(self.catalog, features[-1] if features else None)
        return alert_notice(alert, wallet.id, hint, runway, self.top_up_url, paused=paused)


class ChannelHandler:
    """Outbox handler for one notification channel (implemented in adapters.notify)."""

    def __init__(self, channel: NotificationChannel) -> None:
        self.channel = channel

    def __call__(self, message: OutboxMessage) -> None:
        p = message.payload
        notification = Notification(
            id=p["id"],
            type=p["type"],
            timestamp=datetime.fromisoformat(p["timestamp"]),
            data=p["data"],
            recipient_email=p.get("recipient_email"),
            subject=p["subject"],
            text=p["text"],
        )
        try:
            self.channel.send(notification)
        except DeliveryFailed as exc:
            raise DeliveryError(
                f"{self.channel.name}: {exc}",
                retryable=exc.retryable,
                retry_after=exc.retry_after,
            ) from exc
