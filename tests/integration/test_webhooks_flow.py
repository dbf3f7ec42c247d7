"""Webhook flows end to end over HTTP on SQLite and PostgreSQL: order and duplicates don't
change balances, concurrent redeliveries apply once, parked events get applied when their
mapping arrives, absolute meters debit only increases, app-source meters never debit."""

from __future__ import annotations

import random
import threading
import uuid
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from adapters.tokens import JwksKeySource
from app.bootstrap import build_container
from app.domain.catalog import Catalog
from app.services.ledger import verify_ledger
from tests.conftest import FakeClock
from tests.fakes.jwks_server import JwksServer
from tests.webhook_fixtures import (
    SCENARIO_BALANCE,
    SigningKey,
    WebhookEnv,
    event,
    kinde_settings,
    meter,
    scenario,
)

# Fixtures: jwks, signing_key, other_key, webhook_env.
pytest_plugins = ["tests.webhook_fixtures"]

THREADS = 12


def statuses(env: WebhookEnv, payloads: list[dict[str, Any]]) -> list[str]:
    out = []
    for p in payloads:
        r = env.deliver(p)
        assert r.status_code == 200, r.get_data(as_text=True)
        out.append(r.get_json()["status"])
    return out


def test_shuffled_redelivery_with_duplicates_equals_one_clean_delivery(
    webhook_env: WebhookEnv,
) -> None:
    clean = scenario("clean")
    assert statuses(webhook_env, clean) == [
        "processed", "processed", "processed", "processed", "processed", "processed",
        "processed", "processed", "ignored",
    ]
    assert webhook_env.balance("kp_clean") == SCENARIO_BALANCE

    messy = scenario("messy")
    rng = random.Random(7)
    deliveries = messy * 2 + rng.sample(messy, 4)
    rng.shuffle(deliveries)
    got = Counter(statuses(webhook_env, deliveries))
    assert got["duplicate"] == len(deliveries) - len(messy)
    webhook_env.container.webhooks.retry_parked()  # anything still waiting (normally none by now)
    assert webhook_env.balance("kp_messy") == SCENARIO_BALANCE
    assert verify_ledger(webhook_env.container.store) == {}


@pytest.fixture
def sqlite_env(
    sqlite_url: str, tmp_path: Path, jwks: JwksServer, signing_key: SigningKey, catalog: Catalog,
) -> Iterator[WebhookEnv]:
    container = build_container(
        kinde_settings(sqlite_url, tmp_path, jwks.url), catalog=catalog, clock=FakeClock(),
        key_source=JwksKeySource(jwks.url),
    )
    yield WebhookEnv(container, signing_key)
    container.close()


@settings(max_examples=25, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data())
def test_any_order_and_duplicates_over_http(sqlite_env: WebhookEnv, data: st.DataObject) -> None:
    prefix = uuid.uuid4().hex[:10]  # each example gets its own user in the shared database
    events = scenario(prefix)
    order = data.draw(st.permutations(events))
    dupes = data.draw(st.lists(st.sampled_from(events), max_size=6))
    mixed = data.draw(st.permutations(order + dupes))
    for payload in mixed:
        assert sqlite_env.deliver(payload).status_code == 200
    sqlite_env.container.webhooks.retry_parked()
    assert sqlite_env.balance(f"kp_{prefix}") == SCENARIO_BALANCE
    with sqlite_env.container.store(False) as uow:
        assert uow.inbox.count("parked") == 0


def _hammer(env: WebhookEnv, payload: dict[str, Any]) -> list[str]:
    token = env.sign(payload)
    barrier = threading.Barrier(THREADS)
    results: list[str] = []
    errors: list[BaseException] = []

    def work() -> None:
        client = env.app.test_client()
        barrier.wait()
        try:
            r = env.post(token, webhook_id="msg_race", client=client)
            assert r.status_code == 200, r.get_data(as_text=True)
            results.append(r.get_json()["status"])
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=work) for _ in range(THREADS)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    assert not errors, errors
    return results


def test_concurrent_redeliveries_apply_once(webhook_env: WebhookEnv) -> None:
    webhook_env.deliver(event("customer.agreement_created",
                              {"customer_id": "customer_r", "org_code": "org_race"}))
    payload = meter("customer_r", "5")
    results = _hammer(webhook_env, payload)
    assert Counter(results) == {"processed": 1, "duplicate": THREADS - 1}
    assert webhook_env.balance("org_race") == -500
    assert len(webhook_env.usage_entries("org_race")) == 1
    assert verify_ledger(webhook_env.container.store) == {}


def test_concurrent_signups_grant_once(webhook_env: WebhookEnv) -> None:
    results = _hammer(webhook_env, event("user.created", {"user": {"id": "kp_race"}}))
    assert Counter(results) == {"processed": 1, "duplicate": THREADS - 1}
    assert webhook_env.balance("kp_race") == 500


def test_concurrent_absolute_values_debit_the_maximum(webhook_env: WebhookEnv) -> None:
    webhook_env.deliver(event("customer.agreement_created",
                              {"customer_id": "customer_abs", "user_id": "kp_abs"}))
    tokens = [
        webhook_env.sign(meter("customer_abs", str(v), absolute=True,
                               period_start="2026-11-01T00:00:00Z"))
        for v in range(1, THREADS + 1)
    ]
    barrier = threading.Barrier(THREADS)
    errors: list[BaseException] = []

    def work(token: str) -> None:
        client = webhook_env.app.test_client()
        barrier.wait()
        try:
            assert webhook_env.post(token, client=client).status_code == 200
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(t,)) for t in tokens]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    assert not errors, errors
    assert webhook_env.balance("kp_abs") == -100 * THREADS


def test_concurrent_retries_of_one_parked_event_apply_once(webhook_env: WebhookEnv) -> None:
    payload = meter("customer_late", "3")
    assert webhook_env.deliver(payload).get_json()["status"] == "parked"
    # The mapping appears without an event (so nothing retries inline); then many workers.
    store = webhook_env.container.store
    with store(True) as uow:
        uow.wallets.lock_or_create("kp_late", webhook_env.container.clock())
        uow.wallets.update_profile("kp_late", billing_customer_id="customer_late")
        uow.commit()
    service = webhook_env.container.webhooks
    barrier = threading.Barrier(THREADS)
    results: list[str | None] = []
    errors: list[BaseException] = []

    def work() -> None:
        barrier.wait()
        try:
            results.append(service.retry_event(payload["event_id"]))
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=work) for _ in range(THREADS)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    assert not errors, errors
    assert Counter(results) == {"processed": 1, None: THREADS - 1}
    assert webhook_env.balance("kp_late") == -300
    assert len(webhook_env.usage_entries("kp_late")) == 1


def test_parked_events_are_applied_when_the_mapping_arrives(webhook_env: WebhookEnv) -> None:
    early = [meter("customer_p", "2"), meter("customer_p", "1"),
             event("customer.invoice_overdue", {"customer_id": "customer_p"})]
    assert statuses(webhook_env, early) == ["parked"] * 3
    before = webhook_env.counts()
    assert webhook_env.container.webhooks.retry_parked() == 0  # still nothing to map them to
    assert webhook_env.counts() == before
    mapping = event("customer.agreement_created",
                    {"customer_id": "customer_p", "agreement_id": "agreement_p",
                     "org_code": "org_p", "plan_code": "pro"})
    assert statuses(webhook_env, [mapping]) == ["processed"]
    for p in early:
        row = webhook_env.inbox_row(p["event_id"])
        assert (row.status, row.wallet_id) == ("processed", "org_p")
    assert webhook_env.balance("org_p") == -300
    history = webhook_env.container.webhooks.events(wallet_id="org_p")
    assert len(history) == 4


def test_worker_step_applies_parked_events_once_mapping_exists(webhook_env: WebhookEnv) -> None:
    payload = meter("customer_w", "4")
    webhook_env.deliver(payload)
    with webhook_env.container.store(True) as uow:
        uow.wallets.lock_or_create("kp_w", webhook_env.container.clock())
        uow.wallets.update_profile("kp_w", billing_customer_id="customer_w")
        uow.commit()
    assert webhook_env.container.webhooks.retry_parked() == 1
    assert webhook_env.container.webhooks.retry_parked() == 0
    assert webhook_env.balance("kp_w") == -400


def test_absolute_meter_values_debit_only_increases(webhook_env: WebhookEnv) -> None:
    webhook_env.deliver(event("user.created", {"user": {"id": "kp_m"}}))
    webhook_env.deliver(event("customer.agreement_created",
                              {"customer_id": "customer_m", "user_id": "kp_m"}))
    nov = {"current_period_start": "2026-11-01T00:00:00Z"}
    for value in ("3", "1", "3", "5"):
        webhook_env.deliver(meter("customer_m", value, absolute=True, **nov))
    assert webhook_env.balance("kp_m") == 500 - 500
    assert [e.quantity for e in webhook_env.usage_entries("kp_m")] == [2, 3]  # newest first
    # The stored total was never lowered by the "1".
    with webhook_env.container.store(False) as uow:
        assert uow.meters.last_value("kp_m", "storage_gb",
                                     "start:2026-11-01T00:00:00+00:00") == 5
    webhook_env.deliver(meter("customer_m", "2", absolute=True,
                              current_period_start="2026-12-01T00:00:00Z"))
    assert webhook_env.balance("kp_m") == -200


def test_app_source_meter_events_never_debit(webhook_env: WebhookEnv) -> None:
    webhook_env.deliver(event("user.created", {"user": {"id": "kp_app"}}))
    webhook_env.deliver(event("customer.agreement_created",
                              {"customer_id": "customer_app", "user_id": "kp_app"}))
    for code in ("api_calls", "file_conversions", "reports"):
        payload = meter("customer_app", "10", code)
        r = webhook_env.deliver(payload)
        assert r.get_json()["status"] == "processed"
        assert "reconciliation" in r.get_json()["reason"]
        assert webhook_env.inbox_row(payload["event_id"]).wallet_id == "kp_app"
    assert webhook_env.balance("kp_app") == 500
    assert webhook_env.usage_entries("kp_app") == []


def test_arrears_from_kinde_usage_are_paid_by_the_next_credit(webhook_env: WebhookEnv) -> None:
    webhook_env.deliver(event("customer.agreement_created",
                              {"customer_id": "customer_ar", "user_id": "kp_ar"}))
    webhook_env.deliver(meter("customer_ar", "7"))
    assert webhook_env.balance("kp_ar") == -700
    webhook_env.deliver(event("user.created", {"user": {"id": "kp_ar"}}))
    assert webhook_env.balance("kp_ar") == -200
    assert verify_ledger(webhook_env.container.store) == {}


def test_chunked_body_without_length_is_still_capped(webhook_env: WebhookEnv) -> None:
    from app.http.webhooks import MAX_BODY_BYTES

    r = webhook_env.client.post(
        "/webhooks/kinde",
        data=b"y" * (MAX_BODY_BYTES + 10),
        content_type="application/jwt",
        environ_overrides={"CONTENT_LENGTH": "", "wsgi.input_terminated": True},
    )
    assert r.status_code == 413
    assert webhook_env.counts()["webhook_events"] == 0
