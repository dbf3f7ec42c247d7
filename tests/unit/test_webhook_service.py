"""The webhook use case on in-memory fakes: handlers, parking, retries, exactly-once."""

from __future__ import annotations

import random
import uuid
from datetime import UTC, datetime, timedelta
from types import SimpleNamespace
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from app.domain.catalog import Catalog
from app.domain.park_reasons import ParkKind, ParkReason
from app.services.ledger import LedgerService
from app.services.webhook_handlers import MeterUsageHandler
from app.services.webhooks import (
    FAILURE_ANSWER,
    WebhookService,
    _period_retry_due,
)
from tests.conftest import FakeClock
from tests.fakes.memory_inbox import MemoryWebhookStore

STORAGE = "storage_gb"  # source "kinde", 100 credits per GB in config/credits.toml
API_CALLS = "api_calls"  # source "app"


def ev(event_type: str, data: dict[str, Any], event_id: str | None = None) -> dict[str, Any]:
    return {
        "type": event_type,
        "event_id": event_id or f"event_{uuid.uuid4().hex}",
        "source": "api",
        "timestamp": "2026-11-24T12:00:00Z",
        "data": data,
    }


def meter(value: Any, *, customer: str | None = "customer_1", code: str = STORAGE,
          absolute: bool = False, **extra: Any) -> dict[str, Any]:
    data: dict[str, Any] = {"feature_code": code, "meter_value": value, **extra}
    if customer:
        data["customer_id"] = customer
    if absolute:
        data["meter_type_code"] = "absolute"
    return ev("customer.meter_usage_updated", data)


def agreement(customer: str = "customer_1", **owner: str) -> dict[str, Any]:
    return ev("customer.agreement_created",
              {"customer_id": customer, "agreement_id": "agreement_1", "plan_code": "pro",
               **owner})


class Harness:
    def __init__(self, catalog: Catalog, clock: FakeClock) -> None:
        self.store = MemoryWebhookStore()
        self.ledger = LedgerService(self.store, catalog, clock)
        self.service = WebhookService(self.ledger.writer)
        self.clock = clock

    def send(self, claims: dict[str, Any], webhook_id: str | None = None) -> str:
        return self.service.receive(claims, "raw.jwt.body", webhook_id).status

    def balance(self, wallet_id: str) -> int:
        return int(self.ledger.get_wallet(wallet_id)["balance"])

    def event(self, event_id: str) -> Any:
        return self.store.events[event_id]

    def entries(self, wallet_id: str) -> list[Any]:
        return [e for e in self.store.ledger_store.state.entries if e.wallet_id == wallet_id]


@pytest.fixture
def h(catalog: Catalog, clock: FakeClock) -> Harness:
    return Harness(catalog, clock)


# -- sign-up ---------------------------------------------------------------------------------


def test_user_created_grants_signup_credits_once_with_expiry(h: Harness) -> None:
    first = ev("user.created", {"user": {"id": "kp_alice", "email": "alice@example.com"}})
    assert h.send(first, "msg_1") == "processed"
    assert h.balance("kp_alice") == 500
    assert h.store.ledger_store.state.profiles["kp_alice"].email == "alice@example.com"
    block = next(iter(h.store.ledger_store.state.blocks.values()))
    assert block.expires_at == h.clock() + timedelta(days=30)
    # Redelivery: duplicate. A second creation event (new id) for the same user: no 2nd grant.
    assert h.send(first, "msg_1") == "duplicate"
    again = ev("user.created", {"user": {"id": "kp_alice"}})
    assert h.send(again) == "processed"
    assert h.event(again["event_id"]).park_reason == (
        "sign-up credits were already granted to this wallet"
    )
    assert h.balance("kp_alice") == 500
    assert h.event(first["event_id"]).webhook_id == "msg_1"
    assert h.store.raw[first["event_id"]] == "raw.jwt.body"


def test_organization_created_grants_org_credits(h: Harness) -> None:
    assert h.send(ev("organization.created", {"organization": {"code": "org_acme"}})) == (
        "processed"
    )
    assert h.balance("org_acme") == 2000


def test_signup_without_usable_id_is_parked(h: Harness) -> None:
    bad = ev("user.created", {"user": {"email": "x@example.com"}})
    assert h.send(bad) == "parked"
    assert "data.user.id" in (h.event(bad["event_id"]).park_reason or "")


# -- meter usage -----------------------------------------------------------------------------


def test_meter_delta_debits_kinde_feature_nonrefusably(h: Harness) -> None:
    h.send(agreement(org_code="org_acme"))
    h.send(ev("organization.created", {"organization": {"code": "org_acme"}}))
    e = meter("3")
    assert h.send(e) == "processed"
    assert h.balance("org_acme") == 2000 - 300
    [usage] = [x for x in h.entries("org_acme") if x.kind == "usage"]
    assert usage.reason == f"kinde:{e['event_id']}"
    assert (usage.feature, usage.quantity, usage.amount) == ("storage", 3, -300)
    # More than the wallet holds still goes through: the shortfall is arrears.
    assert h.send(meter(50)) == "processed"
    assert h.balance("org_acme") == 1700 - 5000
    assert h.store.ledger_store.state.wallets["org_acme"].arrears == 3300
    assert h.event(e["event_id"]).wallet_id == "org_acme"


def test_meter_absolute_debits_only_increases_per_period(h: Harness) -> None:
    h.send(agreement(user_id="kp_bob"))
    h.send(ev("user.created", {"user": {"id": "kp_bob"}}))
    nov = "2026-11-01T00:00:00Z"
    for value in ("2", "5", "3", "5", "6"):
        assert h.send(meter(value, absolute=True, period_start=nov)) == "processed"
    assert h.balance("kp_bob") == 500 - 600  # 2 + 3 + 0 + 0 + 1 GB
    # Readings are keyed by the wallet, whichever way an event names its owner.
    assert h.store.readings[("kp_bob", STORAGE, "start:2026-11-01T00:00:00+00:00")] == 6
    # A new period starts from zero again.
    assert h.send(meter("1", absolute=True, period_start="2026-12-01T00:00:00Z")) == "processed"
    assert h.balance("kp_bob") == 500 - 700


def test_app_source_meter_events_never_debit(h: Harness) -> None:
    h.send(agreement(user_id="kp_carol"))
    h.send(ev("user.created", {"user": {"id": "kp_carol"}}))
    e = meter("40", code=API_CALLS)
    assert h.send(e) == "processed"
    assert h.balance("kp_carol") == 500
    row = h.event(e["event_id"])
    assert row.wallet_id == "kp_carol" and "reconciliation" in (row.park_reason or "")


def test_credit_pack_invoice_usage_is_not_debited(h: Harness) -> None:
    h.send(agreement(user_id="kp_dan"))
    assert h.send(meter("1", code="credit_pack_starter")) == "processed"
    assert h.entries("kp_dan") == []


@pytest.mark.parametrize("claims, reason", [
    (meter("1", code="no_such_feature"), "unknown feature: code 'no_such_feature'"),
    (meter("1", code=""), "no feature code"),
    (meter("2.5"), "not a whole number"),
    (meter(None), "no meter value"),
    (meter("1", customer=None), "no customer id"),
    (meter("1", customer="customer_unknown"), "unknown customer customer_unknown"),
])
def test_unappliable_meter_events_are_parked_with_reason(
    h: Harness, claims: dict[str, Any], reason: str
) -> None:
    assert h.send(claims) == "parked"
    row = h.event(claims["event_id"])
    assert row.status == "parked" and reason in (row.park_reason or "")
    assert h.store.ledger_store.state.entries == []


def test_meter_event_naming_the_owner_maps_the_customer(h: Harness) -> None:
    assert h.send(meter("1", org_code="org_zed", agreement_id="agreement_9")) == "processed"
    profile = h.store.ledger_store.state.profiles["org_zed"]
    assert (profile.billing_customer_id, profile.agreement_id) == ("customer_1", "agreement_9")
    assert h.balance("org_zed") == -100


def test_conflicting_customer_is_parked_not_guessed(h: Harness) -> None:
    h.send(agreement("customer_1", user_id="kp_one"))
    e = meter("1", customer="customer_1", user_id="kp_two")
    assert h.send(e) == "parked"
    assert "belongs to wallet kp_one" in (h.event(e["event_id"]).park_reason or "")
    other = agreement("customer_2", user_id="kp_one")
    assert h.send(other) == "parked"
    assert "billed as customer customer_1" in (h.event(other["event_id"]).park_reason or "")


# -- mapping, history, ignored ---------------------------------------------------------------


def test_mapping_events_record_customer_agreement_and_plan(h: Harness) -> None:
    assert h.send(agreement(org_code="org_acme")) == "processed"
    changed = ev("customer.plan_changed", {"customer_id": "customer_1", "plan_code": "free",
                                           "agreement_id": "agreement_2"})
    assert h.send(changed) == "processed"
    profile = h.store.ledger_store.state.profiles["org_acme"]
    assert (profile.billing_customer_id, profile.agreement_id, profile.plan_code) == (
        "customer_1", "agreement_2", "free"
    )
    assert h.event(changed["event_id"]).wallet_id == "org_acme"


@pytest.mark.parametrize("event_type", [
    "customer.agreement_cancelled", "customer.payment_failed", "customer.payment_succeeded",
    "customer.invoice_overdue",
])
def test_history_events_attach_to_the_wallet(h: Harness, event_type: str) -> None:
    h.send(agreement(org_code="org_acme"))
    e = ev(event_type, {"customer_id": "customer_1"})
    assert h.send(e) == "processed"
    assert sorted(r.type for r in h.service.events(wallet_id="org_acme")) == sorted(
        ["customer.agreement_created", event_type]
    )


def test_unhandled_types_are_ignored_but_stored(h: Harness) -> None:
    e = ev("user.updated", {"user": {"id": "kp_x"}})
    assert h.send(e) == "ignored"
    assert h.event(e["event_id"]).status == "ignored"
    assert h.send(e) == "duplicate"


# -- parking and retries ---------------------------------------------------------------------


def test_parked_event_is_applied_when_its_mapping_arrives(h: Harness) -> None:
    early = [meter("2", customer="customer_7"), ev("customer.payment_failed",
                                                   {"customer_id": "customer_7"})]
    for e in early:
        assert h.send(e) == "parked"
    assert h.service.retry_parked() == 0  # nothing to wait for has arrived
    assert h.send(agreement("customer_7", user_id="kp_late")) == "processed"
    # Retried right after the mapping committed, each in its own transaction.
    assert [h.event(e["event_id"]).status for e in early] == ["processed", "processed"]
    assert h.balance("kp_late") == -200
    assert h.event(early[0]["event_id"]).attempts == 2


def test_worker_retry_applies_events_whose_customer_got_mapped_elsewhere(h: Harness) -> None:
    e = meter("1", customer="customer_8")
    assert h.send(e) == "parked"
    # The mapping arrives by another path (e.g. a Management API look-up by another module).
    with h.store(True) as uow:
        uow.wallets.lock_or_create("kp_8", h.clock())
        uow.wallets.update_profile("kp_8", billing_customer_id="customer_8")
        uow.commit()
    assert h.service.retry_parked() == 1
    assert h.event(e["event_id"]).status == "processed"
    assert h.service.retry_parked() == 0
    assert h.balance("kp_8") == -100


def test_permanently_broken_events_only_retry_when_forced(h: Harness) -> None:
    e = meter("2.5", customer="customer_1")
    h.send(agreement(user_id="kp_f"))
    assert h.send(e) == "parked"
    assert h.service.retry_parked() == 0
    assert h.event(e["event_id"]).attempts == 1
    assert h.service.retry_parked(force=True) == 0
    assert h.event(e["event_id"]).attempts == 2  # retried, parked again, never dropped


def test_a_failing_handler_parks_the_event_and_backs_off(
    h: Harness, monkeypatch: pytest.MonkeyPatch
) -> None:
    h.send(agreement(user_id="kp_g"))
    boom = {"on": True}
    real = MeterUsageHandler.__call__

    def flaky(self: MeterUsageHandler, uow: Any, event: Any, now: Any) -> Any:
        if boom["on"]:
            # Half-done work must be rolled back with the failure.
            uow.wallets.update_profile("kp_g", plan_code="CORRUPTED")
            raise RuntimeError("database hiccup")
        return real(self, uow, event, now)

    monkeypatch.setattr(MeterUsageHandler, "__call__", flaky)
    e = meter("1")
    assert h.send(e) == "parked"
    row = h.event(e["event_id"])
    assert row.park_reason == "failed: RuntimeError: database hiccup"
    assert h.store.ledger_store.state.profiles["kp_g"].plan_code == "pro"
    boom["on"] = False
    assert h.service.retry_parked() == 0  # backing off
    h.clock.advance(seconds=31)
    assert h.service.retry_parked() == 1
    assert h.event(e["event_id"]).status == "processed"
    assert h.balance("kp_g") == -100


def test_retry_of_an_already_applied_event_does_nothing(h: Harness) -> None:
    e = meter("1", customer="customer_9")
    h.send(e)
    h.send(agreement("customer_9", user_id="kp_9"))
    assert h.event(e["event_id"]).status == "processed"
    assert h.service.retry_event(e["event_id"]) is None
    assert h.service.retry_event("event_unknown") is None
    assert h.balance("kp_9") == -100


# -- order and duplicates don't matter -------------------------------------------------------


def _scenario(prefix: str) -> list[dict[str, Any]]:
    c = f"customer_{prefix}"
    return [
        ev("user.created", {"user": {"id": f"kp_{prefix}", "email": "u@example.com"}}),
        ev("customer.agreement_created", {"customer_id": c, "agreement_id": "a1",
                                           "user_id": f"kp_{prefix}"}),
        meter("2", customer=c),
        meter("3", customer=c),
        meter("4", customer=c, absolute=True, period_start="2026-11-01T00:00:00Z"),
        meter("9", customer=c, absolute=True, period_start="2026-11-01T00:00:00Z"),
        meter("7", customer=c, code=API_CALLS),
        ev("customer.payment_failed", {"customer_id": c}),
        ev("user.updated", {"user": {"id": f"kp_{prefix}"}}),
    ]


def _deliver(catalog: Catalog, clock: FakeClock, deliveries: list[dict[str, Any]]) -> Harness:
    h = Harness(catalog, clock)
    for claims in deliveries:
        h.send(claims)
    h.service.retry_parked(force=True)
    return h


def test_shuffled_redelivery_with_duplicates_equals_one_clean_delivery(
    catalog: Catalog, clock: FakeClock
) -> None:
    events = _scenario("s")
    clean = _deliver(catalog, clock, events)
    rng = random.Random(4)
    noisy = events + rng.sample(events, 5) + events[:2]
    rng.shuffle(noisy)
    messy = _deliver(catalog, clock, noisy)
    assert messy.balance("kp_s") == clean.balance("kp_s")
    # Absolute values arriving in another order (9 before 4) still total 9 GB for the period.
    assert clean.balance("kp_s") == 500 - 100 * (2 + 3 + 9)
    assert {e.status for e in messy.store.events.values()} <= {"processed", "ignored"}


@settings(max_examples=40, deadline=None)
@given(order=st.permutations(range(9)), dupes=st.lists(st.integers(0, 8), max_size=8))
def test_any_order_with_any_duplicates_gives_the_same_balance(
    order: list[int], dupes: list[int]
) -> None:
    from app.domain.catalog import load_catalog
    from app.settings import DEFAULT_CATALOG

    catalog, clock = load_catalog(DEFAULT_CATALOG), FakeClock()
    events = _scenario("p")
    messy = _deliver(catalog, clock, [events[i] for i in order] + [events[i] for i in dupes])
    assert messy.balance("kp_p") == 500 - 100 * (2 + 3 + 9)
    assert len(messy.store.events) == len(events)


# -- issue 9: absolute totals keyed by a known period, never a guessed one ---------------------


class FakeAgreements:
    """Kinde's `GET /billing/agreements` as the webhook service sees it (an AgreementSource)."""

    def __init__(self) -> None:
        self.agreements: list[Any] = []
        self.calls: list[str] = []
        self.down = False

    def add(self, start: datetime, end: datetime, agreement_id: str = "agreement_1") -> None:
        self.agreements = [SimpleNamespace(
            id=agreement_id, plan_code="pro", current_period_start=start,
            current_period_end=end, expires_on=None, feature_codes=[STORAGE])]

    def list_agreements(self, customer_id: str) -> list[Any]:
        self.calls.append(customer_id)
        if self.down:
            raise ConnectionError("Kinde is unreachable")
        return list(self.agreements)


MID = datetime(2026, 11, 15, tzinfo=UTC)
MID_END = datetime(2026, 12, 15, tzinfo=UTC)


def test_absolute_without_a_known_period_parks_and_never_debits(h: Harness) -> None:
    h.send(agreement(user_id="kp_p"))
    e = meter("5", absolute=True, meter_usage_timestamp="2026-11-30T12:00:00Z")
    assert h.send(e) == "parked"
    row = h.event(e["event_id"])
    assert ParkReason.parse(row.park_reason).kind is ParkKind.PERIOD_UNKNOWN
    assert row.wallet_id == "kp_p"
    assert "no Kinde Management API credentials" in row.park_reason
    assert h.entries("kp_p") == []
    h.clock.advance(hours=2)
    assert h.service.retry_parked() == 0  # nothing to learn it from: still parked
    # An agreement event stating the current period lets it through (woken right away).
    h.send(ev("customer.plan_changed", {
        "customer_id": "customer_1", "agreement_id": "agreement_1", "plan_code": "pro",
        "current_period_start": "2026-11-15T00:00:00Z",
        "current_period_end": "2026-12-15T00:00:00Z"}))
    assert h.event(e["event_id"]).status == "processed"
    assert h.balance("kp_p") == -500
    # Later totals of the same period, stated or not, share one running total.
    assert h.send(meter("7", absolute=True, meter_usage_timestamp="2026-12-02T00:00:00Z")) == (
        "processed")
    assert h.send(meter("8", absolute=True, current_period_start="2026-11-15T00:00:00+00:00")
                  ) == "processed"
    assert h.balance("kp_p") == -800
    assert set(k[2] for k in h.store.readings) == {"start:2026-11-15T00:00:00+00:00"}


def test_an_older_agreement_event_never_replaces_a_later_period(h: Harness) -> None:
    def plan_event(start: str, end: str) -> dict[str, Any]:
        return ev("customer.agreement_created", {
            "customer_id": "customer_1", "agreement_id": "agreement_1", "user_id": "kp_o",
            "current_period_start": start, "current_period_end": end})

    h.send(plan_event("2026-12-15T00:00:00Z", "2027-01-15T00:00:00Z"))
    h.send(plan_event("2026-11-15T00:00:00Z", "2026-12-15T00:00:00Z"))  # late
    assert h.store.agreements["agreement_1"].period_start == MID_END


def test_worker_asks_kinde_for_the_period_with_growing_delays(
    catalog: Catalog, clock: FakeClock
) -> None:
    h = Harness(catalog, clock)
    kinde = FakeAgreements()
    h.service = WebhookService(h.service.writer, kinde=kinde, plans=h.service.plans)
    h.send(agreement(user_id="kp_k"))
    kinde.down = True
    e = meter("5", absolute=True, meter_usage_timestamp="2026-11-30T12:00:00Z")
    assert h.send(e) == "parked" and kinde.calls == []  # never on the request path
    assert "asking Kinde" in h.event(e["event_id"]).park_reason
    assert h.service.retry_parked() == 0 and kinde.calls == []  # not due yet
    clock.advance(seconds=31)
    assert h.service.retry_parked() == 0 and kinde.calls == ["customer_1"]
    assert h.event(e["event_id"]).attempts == 2
    clock.advance(seconds=60)
    h.service.retry_parked()
    assert len(kinde.calls) == 1  # the next try is 2 min after the first
    kinde.down = False
    kinde.add(MID, MID_END)
    clock.advance(seconds=60)
    assert h.service.retry_parked() == 1 and len(kinde.calls) == 2
    assert h.balance("kp_k") == -500
    assert h.store.agreements["agreement_1"].period_end == MID_END


def test_period_retry_delays_grow_to_an_hour_and_never_stop() -> None:
    at = datetime(2026, 11, 24, tzinfo=UTC)

    def due_after(attempts: int) -> timedelta:
        row = SimpleNamespace(attempts=attempts, received_at=at)
        for minutes in range(0, 100 * 60):
            if _period_retry_due(row, at + timedelta(minutes=minutes)):  # type: ignore[arg-type]
                return timedelta(minutes=minutes)
        raise AssertionError("never due")

    assert due_after(1) == timedelta(minutes=1)  # 30 s, rounded up to the minute scanned
    assert due_after(2) == timedelta(minutes=3)  # 30 s + 2 min
    assert due_after(6) - due_after(5) == timedelta(hours=1)
    assert due_after(40) - due_after(39) == timedelta(hours=1)


def test_a_failure_reason_never_carries_sql_or_values(
    h: Harness, monkeypatch: pytest.MonkeyPatch
) -> None:
    def broken(self: MeterUsageHandler, uow: Any, event: Any, now: Any) -> Any:
        raise ValueError("(psycopg.DataError) cannot store \x00 here\n[SQL: UPDATE wallets "
                         "SET email=%(email)s]\n[parameters: {'email': 'a@example.com'}]")

    monkeypatch.setattr(MeterUsageHandler, "__call__", broken)
    e = meter("1")
    receipt = h.service.receive(e, "raw.jwt.body")
    assert receipt.status == "parked" and receipt.reason == FAILURE_ANSWER
    stored = h.event(e["event_id"]).park_reason
    assert stored == "failed: ValueError: (psycopg.DataError) cannot store ? here"


@pytest.mark.parametrize("raised_on, debited", [
    (datetime(2026, 11, 20, tzinfo=UTC), 2),  # raised in this period: the total so far
    (datetime(2026, 11, 10, tzinfo=UTC), 7),  # raised in the previous period: not ours
])
def test_month_keyed_totals_from_before_the_upgrade_are_not_debited_again(
    h: Harness, raised_on: datetime, debited: int
) -> None:
    h.send(agreement(user_id="kp_l"))
    legacy = ("kp_l", STORAGE, "month:2026-11")
    h.store.readings[legacy] = 5
    h.store.raised[legacy] = raised_on
    assert h.send(meter("7", absolute=True, current_period_start="2026-11-15T00:00:00Z",
                        meter_usage_timestamp="2026-11-24T00:00:00Z")) == "processed"
    assert h.balance("kp_l") == -100 * debited


def test_a_period_stated_by_a_meter_event_serves_the_next_one(h: Harness) -> None:
    h.send(agreement(user_id="kp_s"))
    assert h.send(meter("5", absolute=True, agreement_id="agreement_1",
                        current_period_start="2026-11-15T00:00:00Z",
                        current_period_end="2026-12-15T00:00:00Z")) == "processed"
    assert h.send(meter("7", absolute=True, meter_usage_timestamp="2026-12-01T00:00:00Z")) == (
        "processed")
    assert h.balance("kp_s") == -700
