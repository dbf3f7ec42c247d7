"""Presenters: domain objects to the JSON shapes of the API contract (DESIGN.md, "HTTP API").

Services return these dicts because an idempotent retry must replay the first answer exactly;
storing the rendered shape is the simplest way to guarantee that.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from app.domain.alerts import AlertSettings
from app.domain.catalog import Catalog
from app.domain.ledger import EntryFields, Hold, Wallet
from app.domain.recharge import AutoRecharge
from app.domain.usage_terms import describe_units_left, units_left


def iso(moment: datetime | None) -> str | None:
    return moment.isoformat().replace("+00:00", "Z") if moment else None


def entry_view(entry: EntryFields, entry_id: int) -> dict[str, Any]:
    return {
        "id": entry_id,
        "kind": entry.kind,
        "amount": entry.amount,
        "balance_after": entry.balance_after,
        "description": entry.description,
        "reason": entry.reason,
        "feature": entry.feature,
        "quantity": entry.quantity,
        "hold_id": entry.hold_id,
        "occurred_at": iso(entry.occurred_at),
        "created_at": iso(entry.created_at),
    }


def value_view(catalog: Catalog, available: int) -> list[dict[str, Any]]:
    """What the credits buy, per feature: "about 48 reports left"."""
    return [
        {
            "feature": f.key,
            "label": f.label,
            "units_left": units_left(available, f.credits_per_unit),
            "text": describe_units_left(available, f.credits_per_unit, f.unit),
        }
        for f in catalog.features.values()
    ]


def hold_view(hold: Hold) -> dict[str, Any]:
    return {
        "hold_id": hold.id,
        "wallet_id": hold.wallet_id,
        "amount": hold.amount,
        "status": hold.status,
        "feature": hold.feature,
        "description": hold.description,
        "captured_amount": hold.captured_amount,
        "expires_at": iso(hold.expires_at),
        "created_at": iso(hold.created_at),
        "settled_at": iso(hold.settled_at),
    }


def wallet_view(
    catalog: Catalog,
    wallet: Wallet,
    open_holds: list[Hold],
    alert_defaults: AlertSettings,
    exists: bool = True,
    last_purchase: dict[str, Any] | None = None,
) -> dict[str, Any]:
    alerts = (wallet.alert_settings or alert_defaults).as_dict()
    alerts["custom"] = wallet.alert_settings is not None
    alerts["fired"] = sorted(wallet.alerts_fired)
    recharge = (
        wallet.auto_recharge.as_dict()
        if wallet.auto_recharge is not None
        else AutoRecharge(False, 0, "").as_dict()
    )
    # The latest auto-recharge purchase: "pending" until Kinde has its invoice, "invoiced",
    # or "failed" (its invoice was dead-lettered) with the reason.
    recharge["last_purchase"] = (
        {**last_purchase, "created_at": iso(last_purchase["created_at"]),
         "settled_at": iso(last_purchase["settled_at"])}
        if last_purchase is not None
        else None
    )
    return {
        "wallet_id": wallet.id,
        "owner_type": wallet.owner_type,
        "exists": exists,
        "balance": wallet.balance,
        "available": wallet.available,
        "held": wallet.held,
        "arrears": wallet.arrears,
        "overdraft_limit": wallet.overdraft_limit,
        "blocks": [
            {
                "id": b.id,
                "kind": b.kind,
                "original": b.original,
                "remaining": b.remaining,
                "expires_at": iso(b.expires_at),
                "reason": b.reason,
            }
            for b in sorted(wallet.blocks, key=lambda b: b.consumption_order())
        ],
        "holds": [hold_view(h) for h in open_holds],
        "next_expiry_at": iso(wallet.next_expiry_at),
        "value": value_view(catalog, wallet.available),
        "alerts": alerts,
        "auto_recharge": recharge,
    }
