"""Outside review of the issue-10 refactor: statements built once per dialect, park reasons as
typed values, pack invoices as their own outbox kind, and the wallet writer's vocabulary.

Each test attacks one place the refactor rewrote; those that pass are kept as pins (on SQLite
and PostgreSQL where the database is involved).
"""

from __future__ import annotations

from datetime import timedelta
from decimal import Decimal

import pytest

from adapters.sql.store import SqlStore
from app.domain.park_reasons import ParkKind, ParkReason
from app.services.ledger import LedgerService
from app.services.outbox_kinds import METER_USAGE, PACK_INVOICE, kind_of, meter_topic
from app.services.payments import KindeInvoicing
from tests.conftest import FakeClock

# -- outbox upsert (adapters/sql/outbox.py `_enqueue_statement`) ----------------------------


def test_enqueue_onto_a_failed_row_keeps_its_backoff(sql_store: SqlStore,
                                                     clock: FakeClock) -> None:
    now = clock()
    with sql_store(True) as uow:
        uow.outbox.enqueue(METER_USAGE, "meter:kp_a:x", "kp_a", {"n": 1}, now)
        uow.commit()
    with sql_store(True) as uow:
        [claimed] = uow.outbox.claim(now, 60, 10)
        uow.outbox.retry_later(claimed, now + timedelta(minutes=5), "kinde down")
        uow.commit()
    later = now + timedelta(seconds=10)
    with sql_store(True) as uow:
        uow.outbox.enqueue(METER_USAGE, "meter:kp_a:x", "kp_a", {"n": 2}, later)
        uow.commit()
    with sql_store(True) as uow:
        assert uow.outbox.claim(later, 60, 10) == []  # still backing off
        [row] = uow.outbox.list("pending", 10)
        # The payload stays (it may carry a confirmation); only the version moves.
        assert (row.version, row.failed_version, row.payload) == (1, 0, {"n": 1})
        assert len(uow.outbox.claim(now + timedelta(minutes=5), 60, 10)) == 1


def test_enqueue_pulls_a_later_confirmation_forward(sql_store: SqlStore,
                                                    clock: FakeClock) -> None:
    now = clock()
    with sql_store(True) as uow:
        uow.outbox.enqueue(METER_USAGE, "meter:kp_a:x", "kp_a", {"n": 1}, now)
        uow.commit()
    with sql_store(True) as uow:
        [claimed] = uow.outbox.claim(now, 60, 10)
        uow.outbox.schedule_confirmation(claimed, now + timedelta(minutes=10))
        uow.commit()
    later = now + timedelta(seconds=30)
    with sql_store(True) as uow:
        uow.outbox.enqueue(METER_USAGE, "meter:kp_a:x", "kp_a", {"n": 2}, later)
        uow.commit()
    with sql_store(True) as uow:
        [row] = uow.outbox.claim(later, 60, 10)  # new usage is sent at once
        assert row.version == 1 and "confirm_at" in row.payload


# -- inbox statements (adapters/sql/inbox.py) -----------------------------------------------


def _add_event(store: SqlStore, event_id: str, clock: FakeClock, event_type: str = "t") -> None:
    with store(True) as uow:
        uow.inbox.add(event_id, None, event_type, "{}", "{}", clock())
        uow.commit()


def test_inbox_finish_and_search_bind_each_filter(sql_store: SqlStore, clock: FakeClock) -> None:
    for n in range(4):
        _add_event(sql_store, f"ev{n}", clock, "a" if n % 2 else "b")
        clock.advance(seconds=1)
    with sql_store(True) as uow:
        uow.inbox.finish("ev0", "parked", reason="no wallet: x", wallet_id="kp_a",
                         customer_id="c1", now=clock())
        uow.inbox.finish("ev1", "processed", reason=None, wallet_id="kp_a",
                         customer_id="c2", now=clock())
        uow.inbox.finish("ev2", "parked", reason="failed: y", wallet_id="kp_b",
                         customer_id="c1", now=clock())
        uow.commit()
    with sql_store(False) as uow:
        parked = uow.inbox.get("ev0")
        assert parked is not None
        assert (parked.processed_at, parked.attempts, parked.park_reason) == (
            None, 1, "no wallet: x")
        done = uow.inbox.get("ev1", lock=True)
        assert done is not None and done.processed_at is not None
        ids = lambda **kw: [e.event_id for e in uow.inbox.search(**kw)]  # noqa: E731
        assert ids(status="parked") == ["ev0", "ev2"]
        assert ids(status="parked", customer_id="c1", wallet_id="kp_b") == ["ev2"]
        assert ids(wallet_id="kp_a", event_type="a") == ["ev1"]
        assert ids(customer_id="c2") == ["ev1"]
        assert ids(limit=2) == ["ev0", "ev1"]
        first = uow.inbox.search(limit=1)[0]
        assert ids(after=(first.received_at, first.event_id), limit=2) == ["ev1", "ev2"]
        assert ids(status="parked", after=(first.received_at, first.event_id)) == ["ev2"]
        assert uow.inbox.count("parked") == 2 and uow.inbox.count() == 4


# -- pack invoices as their own kind --------------------------------------------------------


def test_sale_after_a_legacy_pending_invoice_keeps_one_pack_invoice_row(
    sql_store: SqlStore, catalog: object, clock: FakeClock
) -> None:
    """A pending row written before pack invoices had their own kind (`meter_usage` with a
    bundle) shares its topic with a new sale's `pack_invoice`: one row, read as an invoice."""
    from app.domain.catalog import Catalog

    assert isinstance(catalog, Catalog)
    bundle = catalog.bundles["starter"]
    meter = bundle.invoice_meter(False)
    topic = meter_topic("kp_a", meter)
    now = clock()
    with sql_store(True) as uow:
        uow.wallets.lock_or_create("kp_a", now)
        uow.outbox.enqueue(METER_USAGE, topic, "kp_a",
                           {"wallet_id": "kp_a", "bundle": "starter", "meter": meter,
                            "auto": False}, now)
        KindeInvoicing().charge(uow, "kp_a", bundle, Decimal("10"), now)
        uow.commit()
    with sql_store(False) as uow:
        [row] = uow.outbox.list("pending", 10)
        assert kind_of(row) == PACK_INVOICE and row.version == 1
        count, unbilled = uow.recharges.billable("kp_a", meter)
        assert count == 1 and len(unbilled) == 1


# -- park reasons: rows stored before the kinds ---------------------------------------------


@pytest.mark.parametrize(("stored", "kind"), [
    ("failed: OperationalError: boom", ParkKind.FAILED),
    ("period unknown: the absolute meter value states no billing period", ParkKind.PERIOD_UNKNOWN),
    ("absolute meter value for 2026-01-01 00:00 UTC predates the current period",
     ParkKind.PERIOD_PAST),
    ("unknown customer cus_1: no wallet is mapped to it yet", ParkKind.NO_WALLET),
    ("customer cus_1 belongs to wallet kp_a, but the event names kp_b", ParkKind.NO_WALLET),
    ("wallet kp_a is billed as customer cus_1, but the event says cus_2", ParkKind.NO_WALLET),
    ("unknown feature code 'x': not in the credits catalog (c.toml)", ParkKind.UNKNOWN_FEATURE),
    ("meter value 'x' is not a number", ParkKind.MALFORMED),
    ("malformed billing event: bad", ParkKind.MALFORMED),
    ("user.created without a usable data.user.id (kp_...)", ParkKind.MALFORMED),
    (None, ParkKind.MALFORMED),
])
def test_legacy_park_reasons_read_as_their_kind(stored: str | None, kind: ParkKind) -> None:
    assert ParkReason.parse(stored).kind is kind


def test_new_park_reasons_round_trip() -> None:
    for kind in ParkKind:
        reason = ParkReason(kind, "customer cus_1: no wallet")
        assert ParkReason.parse(reason.text) == reason


# -- the wallet writer's vocabulary ---------------------------------------------------------


def test_one_credit_grant_reads_singular(sql_ledger: LedgerService) -> None:
    out = sql_ledger.grant("kp_a", 1, "goodwill")
    assert out.body["entry"]["description"] == "+1 credit: goodwill"


def test_suspend_on_a_wallet_without_auto_recharge_writes_nothing(
    sql_ledger: LedgerService, sql_store: SqlStore
) -> None:
    sql_ledger.grant("kp_a", 10, "welcome")
    assert sql_ledger.suspend_auto_recharge("kp_a", "card declined") is False
    assert sql_ledger.suspend_auto_recharge("kp_missing", "card declined") is False
    with sql_store(False) as uow:
        assert uow.outbox.list(None, 10) == []
