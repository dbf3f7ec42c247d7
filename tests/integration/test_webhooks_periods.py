"""Absolute meter totals are keyed by a billing period the event states or the agreement's
current period, never a guessed calendar month (issue 9, defect 6), on SQLite and PostgreSQL,
with Kinde faked over real HTTP and real RS256 webhook signatures.

An absolute value is the period's running total: only its increase is debited. Keying it by
the calendar month debited a whole total again when a period ran from the 15th to the 15th, or
when one event named `current_period_start` and the next did not.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from adapters.kinde_api import KindeManagementClient
from adapters.tokens import JwksKeySource
from app.bootstrap import build_container
from app.domain.catalog import Catalog
from tests.conftest import FakeClock
from tests.fakes.fake_kinde import FakeKinde
from tests.fakes.jwks_server import JwksServer
from tests.webhook_fixtures import SigningKey, WebhookEnv, event, kinde_settings, meter

# Fixtures: jwks, signing_key, other_key, webhook_env.
pytest_plugins = ["tests.webhook_fixtures"]

START = datetime(2026, 11, 15, tzinfo=UTC)
END = datetime(2026, 12, 15, tzinfo=UTC)
CUSTOMER = "customer_mid"
AGREEMENT = "agreement_mid"
USER = "kp_mid"
SIGNUP = 500  # sign-up credits for a user in config/credits.toml
GB = 100  # credits per storage_gb unit
# An agreement event that states its period puts the user on plan "pro", which grants its
# allotment for that period (issue 12: plan credits).
PRO = 20000


@pytest.fixture
def kinde() -> Iterator[FakeKinde]:
    with FakeKinde() as fake:
        fake.add_customer(CUSTOMER, user_id=USER, email="mid@example.com")
        fake.add_agreement(CUSTOMER, AGREEMENT, "pro", ["storage_gb"], START, END)
        yield fake
        assert fake.spec_violations == [], fake.spec_violations


@pytest.fixture
def env(db_url: str, tmp_path: Path, jwks: JwksServer, signing_key: SigningKey,
        catalog: Catalog, clock: FakeClock, kinde: FakeKinde) -> Iterator[WebhookEnv]:
    settings = kinde_settings(db_url, tmp_path, jwks.url)
    client = KindeManagementClient(kinde.url, kinde.client_id, kinde.client_secret)
    container = build_container(settings, catalog=catalog, clock=clock, pool_size=10,
                                key_source=JwksKeySource(jwks.url, timeout=2.0), kinde=client)
    try:
        yield WebhookEnv(container, signing_key)
    finally:
        container.close()


def at(when: str) -> dict[str, str]:
    return {"meter_usage_timestamp": when}


def absolute(value: str, **extra: Any) -> dict[str, Any]:
    return meter(CUSTOMER, value, absolute=True, **extra)


def status(env: WebhookEnv, payload: dict[str, Any]) -> str:
    r = env.deliver(payload)
    assert r.status_code == 200, r.get_data(as_text=True)
    return str(r.get_json()["status"])


def sign_up(env: WebhookEnv, *, period: bool = False) -> None:
    assert status(env, event("user.created", {"user": {"id": USER}})) == "processed"
    data: dict[str, Any] = {"customer_id": CUSTOMER, "agreement_id": AGREEMENT,
                            "user_id": USER, "plan_code": "pro"}
    if period:
        data |= {"current_period_start": "2026-11-15T00:00:00Z",
                 "current_period_end": "2026-12-15T00:00:00Z"}
    assert status(env, event("customer.agreement_created", data)) == "processed"


def worker_pass(env: WebhookEnv, clock: FakeClock) -> int:
    """What the worker does for parked events, after their retry delay."""
    clock.advance(minutes=5)
    return env.container.webhooks.retry_parked()


def test_mid_month_period_is_not_debited_again_at_the_month_boundary(
    env: WebhookEnv, clock: FakeClock
) -> None:
    sign_up(env)
    # 5 GB by Nov 30, 7 GB by Dec 2: one period (Nov 15 - Dec 15), so 7 GB in all.
    status(env, absolute("5", **at("2026-11-30T12:00:00Z")))
    worker_pass(env, clock)
    status(env, absolute("7", **at("2026-12-02T12:00:00Z")))
    worker_pass(env, clock)
    assert env.balance(USER) == SIGNUP - 7 * GB
    assert [e.quantity for e in env.usage_entries(USER)] == [2, 5]
    assert all(row.status == "processed"
               for row in env.container.webhooks.events(event_type=None)
               if row.type == "customer.meter_usage_updated")


def test_an_event_naming_the_period_and_one_not_share_one_total(
    env: WebhookEnv, clock: FakeClock
) -> None:
    sign_up(env)
    named = absolute("5", current_period_start="2026-11-15T00:00:00.000+00:00",
                     **at("2026-11-20T12:00:00Z"))
    assert status(env, named) == "processed"
    status(env, absolute("7", **at("2026-11-21T12:00:00Z")))
    worker_pass(env, clock)
    assert env.balance(USER) == SIGNUP - 7 * GB


def test_the_agreement_events_period_is_used_without_asking_kinde(
    env: WebhookEnv, kinde: FakeKinde
) -> None:
    sign_up(env, period=True)
    kinde.outage(True)  # the stored period is enough
    assert status(env, absolute("5", **at("2026-11-30T12:00:00Z"))) == "processed"
    assert status(env, absolute("7", **at("2026-12-02T12:00:00Z"))) == "processed"
    assert env.balance(USER) == SIGNUP + PRO - 7 * GB


def test_unknown_period_parks_and_never_debits_on_a_guess(
    env: WebhookEnv, kinde: FakeKinde, clock: FakeClock
) -> None:
    sign_up(env)
    kinde.outage(True)
    payload = absolute("5", **at("2026-11-30T12:00:00Z"))
    r = env.deliver(payload)
    assert r.status_code == 200
    body = r.get_json()
    assert body["status"] == "parked" and "period" in body["reason"], body
    assert worker_pass(env, clock) == 0  # Kinde is still unreachable: still parked
    assert env.inbox_row(payload["event_id"]).status == "parked"
    assert env.balance(USER) == SIGNUP
    kinde.outage(False)
    assert worker_pass(env, clock) == 1
    assert env.inbox_row(payload["event_id"]).status == "processed"
    assert env.balance(USER) == SIGNUP - 5 * GB
    # Delta events never needed a period.
    assert status(env, meter(CUSTOMER, "1")) == "processed"
    assert env.balance(USER) == SIGNUP - 6 * GB


def test_new_period_after_renewal_is_learned_from_kinde(
    env: WebhookEnv, kinde: FakeKinde, clock: FakeClock
) -> None:
    sign_up(env, period=True)
    assert status(env, absolute("5", **at("2026-12-10T12:00:00Z"))) == "processed"
    # The agreement renewed: the stored period has ended, Kinde knows the next one.
    kinde.roll_period(AGREEMENT, END, datetime(2027, 1, 15, tzinfo=UTC))
    clock.now = datetime(2026, 12, 16, 12, tzinfo=UTC)
    status(env, absolute("2", **at("2026-12-16T12:00:00Z")))
    worker_pass(env, clock)
    # The renewal also brought the plan's allotment for the new period (granted at the
    # period end, confirmed by Kinde's listing).
    assert env.balance(USER) == SIGNUP + 2 * PRO - 7 * GB
    # A late total for the old period (before the stored one began) is parked, not guessed.
    late = absolute("6", **at("2026-12-14T12:00:00Z"))
    r = env.deliver(late).get_json()
    assert r["status"] == "parked" and "period" in r["reason"]
    assert env.balance(USER) == SIGNUP + 2 * PRO - 7 * GB


def test_month_keyed_total_stored_before_the_upgrade_is_the_baseline(env: WebhookEnv) -> None:
    sign_up(env, period=True)
    with env.container.store(True) as uow:
        # What the previous version stored for Nov 16-30 usage (keyed by calendar month).
        uow.meters.record(USER, "storage_gb", "month:2026-11", 5,
                          datetime(2026, 11, 20, tzinfo=UTC))
        uow.commit()
    assert status(env, absolute("7", **at("2026-12-02T12:00:00Z"))) == "processed"
    assert env.balance(USER) == SIGNUP + PRO - 2 * GB


@pytest.mark.parametrize("raw", ["1e3", "1_000", "\u0661\u0660\u0660\u0660", "+5", "0x10",
                                 "5\u0660"])
def test_meter_values_are_ascii_digits_only(env: WebhookEnv, raw: str) -> None:
    sign_up(env, period=True)
    r = env.deliver(absolute(raw, **at("2026-12-10T12:00:00Z"))).get_json()
    assert r["status"] == "parked" and "not a number" in r["reason"]
    assert env.balance(USER) == SIGNUP + PRO


def test_a_total_restated_with_a_drifted_period_start_is_not_debited_again(
    env: WebhookEnv,
) -> None:
    sign_up(env, period=True)
    stated = {"period_start": "2026-11-15T00:00:00Z", **at("2026-12-10T12:00:00Z")}
    assert status(env, absolute("5", **stated)) == "processed"
    assert env.balance(USER) == SIGNUP + PRO - 5 * GB
    drifted = {"period_start": "2026-11-15T00:00:01Z", **at("2026-12-10T13:00:00Z")}
    assert status(env, absolute("5", **drifted)) == "processed"
    assert env.balance(USER) == SIGNUP + PRO - 5 * GB  # one period, whatever the drift
    assert status(env, absolute("7", **drifted)) == "processed"
    assert env.balance(USER) == SIGNUP + PRO - 7 * GB
