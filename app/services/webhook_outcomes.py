"""What handling one Kinde event came to: the answer to the delivery (`Receipt`) and the
inbox outcome a handler returns (`Applied`), with the two ways an event is parked."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from app.domain.kinde_events import BillingFields
from app.domain.park_reasons import ParkKind, ParkReason
from app.services.ports import InboxStatus


@dataclass(frozen=True)
class Receipt:
    """The answer to one delivery: `status` is processed | duplicate | ignored | parked."""

    status: str
    event_id: str
    reason: str | None = None

    def body(self) -> dict[str, Any]:
        out: dict[str, Any] = {"status": self.status, "event_id": self.event_id}
        if self.reason:
            out["reason"] = self.reason
        return out


@dataclass
class Applied:
    """What a handler did: the inbox outcome plus the customer it mapped (to wake parked
    events waiting for that mapping)."""

    status: InboxStatus
    reason: str | None = None
    wallet_id: str | None = None
    customer_id: str | None = None
    mapped_customer: str | None = None


def parked(
    reason: ParkReason, fields: BillingFields | None = None, wallet_id: str | None = None
) -> Applied:
    return Applied(
        "parked", reason.text, wallet_id=wallet_id,
        customer_id=fields.customer_id if fields else None,
    )


def malformed(detail: str) -> Applied:
    return parked(ParkReason(ParkKind.MALFORMED, detail))


