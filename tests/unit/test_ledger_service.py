"""Ledger use cases on the in-memory store: results, errors, idempotency, holds, expiry."""

from __future__ import annotations

import pytest

from app.domain.catalog import Catalog
from app.domain.ledger import HoldNotOpen, InsufficientCredits, InvalidRequest, InvalidWalletId
from app.services.ledger import (
    IdempotencyConflict,
    LedgerService,
    NotFound,
    UnknownBundle,
    UnknownFeature,
    verify_ledger,
)
from tests.conftest import FakeClock
from tests.fakes.memory_store import MemoryStore, MemoryUnitOfWork


def test_usage_debits_and_describes_in_use_terms(memory_ledger: LedgerService) -> None:
    memory_ledger.grant("kp_a", 2500, "welcome")
    out = memory_ledger.record_usage("kp_a", "report_generation", 1)
    assert out.status == 201
    assert out.body["balance"] == 2450
    entry = out.body["entry"]
    assert (entry["kind"], entry["amount"], entry["balance_after"]) == ("usage", -50, 2450)
    assert entry["description"] == "-50 credits for Report Generation (1 report)"
    assert out.body["value"] == "about 49 reports left"


def test_insufficient_credits_writes_nothing(memory_ledger: LedgerService,
                                            memory_store: MemoryStore) -> None:
    memory_ledger.grant("kp_a", 40, "welcome")
    commits = memory_store.commits
    with pytest.raises(InsufficientCredits) as err:
        memory_ledger.record_usage("kp_a", "report_generation", 1)
    assert (err.value.needed, err.value.available) == (50, 40)
    assert memory_store.commits == commits
    assert memory_ledger.get_wallet("kp_a")["balance"] == 40


def test_usage_on_a_wallet_that_never_had_credits(memory_ledger: LedgerService) -> None:
    with pytest.raises(InsufficientCredits):
        memory_ledger.record_usage("kp_new", "api_call", 1)
    view = memory_ledger.get_wallet("kp_new")
    assert (view["balance"], view["available"], view["exists"]) == (0, 0, False)


@pytest.mark.parametrize("quantity", [0, -3, 1.5, True, "2", None, 10**10])
def test_bad_quantity_refused(memory_ledger: LedgerService, quantity: object) -> None:
    memory_ledger.grant("kp_a", 100, "welcome")
    with pytest.raises(InvalidRequest):
        memory_ledger.record_usage("kp_a", "api_call", quantity)  # type: ignore[arg-type]
    assert memory_ledger.get_wallet("kp_a")["balance"] == 100


def test_unknown_feature_bundle_and_wallet(memory_ledger: LedgerService) -> None:
    with pytest.raises(UnknownFeature, match="known features"):
        memory_ledger.record_usage("kp_a", "teleport", 1)
    with pytest.raises(UnknownBundle):
        memory_ledger.top_up_bundle("kp_a", "mega")
    with pytest.raises(InvalidWalletId):
        memory_ledger.grant("acct_1", 5, "x")


def test_idempotent_retry_returns_first_result(memory_ledger: LedgerService) -> None:
    memory_ledger.grant("kp_a", 100, "welcome")
    first = memory_ledger.record_usage("kp_a", "api_call", 3, idempotency_key="k1")
    again = memory_ledger.record_usage("kp_a", "api_call", 3, idempotency_key="k1")
    assert again.replayed and again.body == first.body and again.status == 201
    assert memory_ledger.get_wallet("kp_a")["balance"] == 97
    with pytest.raises(IdempotencyConflict):
        memory_ledger.record_usage("kp_a", "api_call", 4, idempotency_key="k1")
    # Keys are scoped to the wallet: another wallet may use the same key.
    memory_ledger.grant("kp_b", 10, "welcome")
    assert not memory_ledger.record_usage("kp_b", "api_call", 1, idempotency_key="k1").replayed


def test_failed_request_leaves_its_key_unused(memory_ledger: LedgerService) -> None:
    memory_ledger.grant("kp_a", 10, "welcome")
    with pytest.raises(InsufficientCredits):
        memory_ledger.record_usage("kp_a", "report_generation", 1, idempotency_key="k")
    memory_ledger.top_up_bundle("kp_a", "starter")
    out = memory_ledger.record_usage("kp_a", "report_generation", 1, idempotency_key="k")
    assert out.status == 201 and not out.replayed


def test_top_up_creates_wallet_with_purchase_block(memory_ledger: LedgerService) -> None:
    out = memory_ledger.top_up_bundle("org_x", "starter")
    assert out.body["balance"] == 5000 and out.body["entry"]["kind"] == "purchase"
    view = memory_ledger.get_wallet("org_x")
    assert view["owner_type"] == "org"
    assert view["blocks"][0]["remaining"] == 5000 and view["blocks"][0]["expires_at"]


def test_hold_capture_release_flow(memory_ledger: LedgerService) -> None:
    memory_ledger.grant("kp_a", 200, "welcome")
    hold = memory_ledger.place_hold("kp_a", feature_key="report_generation", quantity=2)
    assert hold.body["amount"] == 100 and hold.body["available"] == 100
    with pytest.raises(InsufficientCredits):
        memory_ledger.record_usage("kp_a", "report_generation", 3)
    cap = memory_ledger.capture_hold(hold.body["hold_id"], 50)
    assert (cap.body["balance"], cap.body["available"], cap.body["status"]) == (150, 150,
                                                                               "captured")
    with pytest.raises(HoldNotOpen):
        memory_ledger.release_hold(hold.body["hold_id"])
    with pytest.raises(NotFound):
        memory_ledger.capture_hold("hold_nope")
    h2 = memory_ledger.place_hold("kp_a", credits=10)
    rel = memory_ledger.release_hold(h2.body["hold_id"])
    assert rel.body["status"] == "released" and rel.body["available"] == 150


def test_holds_and_blocks_expire_by_themselves(memory_ledger: LedgerService,
                                               clock: FakeClock) -> None:
    memory_ledger.grant("kp_a", 100, "trial", expires_after_days=1)
    memory_ledger.grant("kp_a", 10, "forever")
    memory_ledger.place_hold("kp_a", credits=50, expires_in_seconds=60)
    assert memory_ledger.get_wallet("kp_a")["available"] == 60
    clock.advance(seconds=61)
    view = memory_ledger.get_wallet("kp_a")
    assert (view["held"], view["available"]) == (0, 110)
    clock.advance(days=1)
    view = memory_ledger.get_wallet("kp_a")
    assert view["balance"] == 10
    kinds = [e["kind"] for e in memory_ledger.ledger_page("kp_a")["entries"]]
    assert kinds[:2] == ["expiry", "release"]
    assert verify_ledger(memory_ledger.uow) == {}


def test_ledger_pages_newest_first_with_cursor(memory_ledger: LedgerService) -> None:
    memory_ledger.grant("kp_a", 1000, "welcome")
    for _ in range(7):
        memory_ledger.record_usage("kp_a", "api_call", 1)
    page1 = memory_ledger.ledger_page("kp_a", limit=3)
    ids = [e["id"] for e in page1["entries"]]
    assert ids == sorted(ids, reverse=True) and len(ids) == 3
    seen = list(ids)
    cursor = page1["next_cursor"]
    while cursor:
        page = memory_ledger.ledger_page("kp_a", limit=3, cursor=cursor)
        seen += [e["id"] for e in page["entries"]]
        cursor = page["next_cursor"]
    assert len(seen) == 8 and len(set(seen)) == 8
    for bad in ("abc", "-1", "0"):
        with pytest.raises(InvalidRequest):
            memory_ledger.ledger_page("kp_a", cursor=bad)
    with pytest.raises(InvalidRequest):
        memory_ledger.ledger_page("kp_a", limit=1000)


def test_batch_reports_each_record(memory_ledger: LedgerService) -> None:
    memory_ledger.grant("kp_a", 60, "welcome")
    results = memory_ledger.record_usage_batch([
        {"wallet_id": "kp_a", "feature": "report_generation", "quantity": 1},
        {"wallet_id": "kp_a", "feature": "report_generation", "quantity": 1},
        {"wallet_id": "kp_a", "feature": "nope", "quantity": 1},
        {"wallet_id": "kp_a", "feature": "api_call", "quantity": 10},
    ])
    assert [r["status"] for r in results] == [201, 402, 422, 201]
    assert results[1]["error"]["code"] == "insufficient_credits"
    assert memory_ledger.get_wallet("kp_a")["balance"] == 0


class _FailingOnce(MemoryStore):
    """A store whose `fail_at`-th write unit of work fails as a lost database would."""

    def __init__(self, fail_at: int) -> None:
        super().__init__()
        self.fail_at = fail_at
        self.writes = 0

    def __call__(self, write: bool) -> MemoryUnitOfWork:
        if write:
            self.writes += 1
            if self.writes == self.fail_at:
                raise ConnectionError("server closed the connection unexpectedly")
        return super().__call__(write)


def test_batch_tells_the_truth_when_a_record_fails_unexpectedly(catalog: Catalog) -> None:
    """Records already committed are reported as applied, not buried under one 500; the
    failed one says it was not applied, and a retry with the same keys completes the batch."""
    store = _FailingOnce(fail_at=3)  # the grant, record 0, then record 1 fails
    ledger = LedgerService(store, catalog, FakeClock())
    ledger.grant("kp_a", 100, "welcome")
    records = [{"wallet_id": "kp_a", "feature": "api_call", "quantity": 1,
                "idempotency_key": f"b#{i}"} for i in range(3)]
    results = ledger.record_usage_batch(records)
    assert [r["status"] for r in results] == [201, 500, 201]
    assert results[1]["error"]["code"] == "internal_error"
    assert "not applied" in results[1]["error"]["message"]
    assert ledger.get_wallet("kp_a")["balance"] == 98
    retry = ledger.record_usage_batch(records)
    assert [(r["status"], r["replayed"]) for r in retry] == [(201, True), (201, False),
                                                            (201, True)]
    assert ledger.get_wallet("kp_a")["balance"] == 97


def test_verify_detects_a_tampered_wallet(memory_ledger: LedgerService,
                                          memory_store: MemoryStore) -> None:
    memory_ledger.grant("kp_a", 100, "welcome")
    memory_ledger.record_usage("kp_a", "api_call", 5)
    assert verify_ledger(memory_store) == {}
    memory_store.state.wallets["kp_a"].balance += 1
    problems = verify_ledger(memory_store)
    assert "kp_a" in problems and any("sum of entries" in p for p in problems["kp_a"])
