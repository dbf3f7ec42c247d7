"""Payment strategies answer the sale questions; outbox rows are read by kind."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from app.domain.catalog import Catalog
from app.services.outbox_kinds import METER_USAGE, PACK_INVOICE, kind_of
from app.services.payments import KindeInvoicing, NoWayToCharge, PaidElsewhere, sale_payments
from app.services.ports import OutboxMessage


def test_the_strategy_is_picked_once_from_the_settings() -> None:
    assert isinstance(sale_payments(kinde_billing=True, paid_elsewhere=False), KindeInvoicing)
    assert isinstance(sale_payments(kinde_billing=True, paid_elsewhere=True), PaidElsewhere)
    assert isinstance(sale_payments(kinde_billing=False, paid_elsewhere=True), PaidElsewhere)
    assert isinstance(sale_payments(kinde_billing=False, paid_elsewhere=False), NoWayToCharge)


def test_each_strategy_says_whether_a_pack_may_be_sold(catalog: Catalog) -> None:
    bundle = next(iter(catalog.bundles.values()))
    assert KindeInvoicing().invoiced and not PaidElsewhere().invoiced
    assert PaidElsewhere().refusal(bundle) is None
    assert "SALES_PAID_ELSEWHERE" in (NoWayToCharge().refusal(bundle) or "")
    assert (KindeInvoicing().refusal(bundle) is None) == bool(bundle.kinde_feature_code)


def _message(kind: str, payload: dict[str, object]) -> OutboxMessage:
    return OutboxMessage(1, kind, "meter:kp_a:x", "kp_a", payload, 0, 1, None,
                         datetime(2026, 1, 1, tzinfo=UTC))


@pytest.mark.parametrize("kind, payload, expected", [
    (METER_USAGE, {"wallet_id": "kp_a", "feature": "api_call"}, METER_USAGE),
    (PACK_INVOICE, {"wallet_id": "kp_a", "bundle": "starter"}, PACK_INVOICE),
    # A pack invoice stored before it had its own kind.
    (METER_USAGE, {"wallet_id": "kp_a", "bundle": "starter"}, PACK_INVOICE),
    ("notify_log", {"id": "ntf_1"}, "notify_log"),
])
def test_rows_are_read_by_kind(kind: str, payload: dict[str, object], expected: str) -> None:
    assert kind_of(_message(kind, payload)) == expected
