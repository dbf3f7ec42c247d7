"""Usage reaches Kinde exactly once in effect: outages, 429s, lost answers, kills, rollovers.

Kinde is a real HTTP server on loopback (tests/fakes/fake_kinde.py) that validates every request
against Kinde's official OpenAPI spec. The check that matters: Kinde's recorded usage equals
our ledger's usage for every customer and feature, with nothing lost and nothing twice.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import text

from adapters.kinde_api import KindeManagementClient
from adapters.local_keys import LocalKeyring
from app.bootstrap import Container, build_container
from app.services.usage_reporting import METER_USAGE, meter_topic
from app.settings import DEFAULT_CATALOG, Settings
from tests.conftest import FakeClock
from tests.fakes.fake_kinde import FakeKinde

PERIOD_START = datetime.now(UTC).replace(microsecond=0) - timedelta(days=1)
PERIOD_END = PERIOD_START + timedelta(days=30)
FEATURES = ["file_conversions", "api_calls", "reports", "credit_pack_starter",
            "credit_pack_starter_auto"]
METER_PATH = "/api/v1/billing/meter_usage"


@pytest.fixture
def kinde() -> Iterator[FakeKinde]:
    fake = FakeKinde()
    fake.start()
    for n, owner in enumerate(["kp_alice", "kp_bob", "org_acme"]):
        customer = f"customer_{n}"
        if owner.startswith("kp_"):
            fake.add_customer(customer, user_id=owner, email=f"{owner}@example.com")
        else:
            fake.add_customer(customer, org_code=owner)
        fake.add_agreement(customer, f"agreement_{n}", "pro", FEATURES, PERIOD_START, PERIOD_END)
    yield fake
    fake.stop()
    assert fake.spec_violations == [], fake.spec_violations


def kinde_env(db_url: str, kinde: FakeKinde, tmp: Path) -> dict[str, str]:
    return {
        "DATABASE_URL": db_url,
        "KINDE_DOMAIN": kinde.url,
        "KINDE_API_AUDIENCE": "https://api.example.com",
        "KINDE_M2M_CLIENT_ID": kinde.client_id,
        "KINDE_M2M_CLIENT_SECRET": kinde.client_secret,
        "CREDITS_CATALOG": str(DEFAULT_CATALOG),
        "KINDE_CREDITS_VAR_DIR": str(tmp),
        "OUTBOX_MAX_ATTEMPTS": "5",
        "OUTBOX_LEASE_SECONDS": "2",
        "OUTBOX_CONFIRM_SECONDS": "10",
    }


def make(db_url: str, kinde: FakeKinde, tmp_path: Path, clock: FakeClock,
         client: KindeManagementClient | None = None) -> Container:
    clock.now = datetime.now(UTC)
    settings = Settings.from_env(kinde_env(db_url, kinde, tmp_path))
    keyring = LocalKeyring.load_or_create(tmp_path / "k.pem")
    c = build_container(settings, clock=clock, key_source=keyring.key_source(), kinde=client)
    c.dispatcher.policy.base_delay = 1.0
    c.dispatcher.policy.max_delay = 5.0
    return c


@pytest.fixture
def container(db_url: str, kinde: FakeKinde, tmp_path: Path, clock: FakeClock
              ) -> Iterator[Container]:
    c = make(db_url, kinde, tmp_path, clock)
    yield c
    c.close()


def drain(c: Container, clock: FakeClock, rounds: int = 20) -> None:
    """Run the worker until nothing is due, moving the clock past every backoff."""
    for _ in range(rounds):
        c.dispatcher.run_once()
        clock.advance(seconds=120)
        with c.store(False) as uow:
            if uow.outbox.counts()["pending"] == 0:
                return
    raise AssertionError("outbox did not drain")


def ledger_units(c: Container) -> dict[tuple[str, str], int]:
    with c.store.engine.connect() as conn:
        rows = conn.execute(text(
            "SELECT wallet_id, feature, SUM(quantity) FROM entries "
            "WHERE kind IN ('usage', 'capture') AND feature IS NOT NULL "
            "GROUP BY wallet_id, feature"))
        return {(w, f): int(q) for w, f, q in rows}


def assert_kinde_matches_ledger(c: Container, kinde: FakeKinde) -> None:
    agreements = {"kp_alice": "agreement_0", "kp_bob": "agreement_1", "org_acme": "agreement_2"}
    units = ledger_units(c)
    for wallet_id, agreement in agreements.items():
        for key, feature in c.catalog.features.items():
            if feature.source != "app":
                continue
            ours = units.get((wallet_id, key), 0)
            theirs = kinde.usage_total(agreement, feature.kinde_feature_code)
            assert theirs == ours, (wallet_id, key, theirs, ours)


def use(c: Container, wallet_id: str, feature: str, times: int, quantity: int = 1) -> None:
    for _ in range(times):
        c.ledger.record_usage(wallet_id, feature, quantity)


def test_debits_coalesce_into_one_report_per_customer_and_feature(
    container: Container, kinde: FakeKinde, clock: FakeClock
) -> None:
    for wallet in ("kp_alice", "kp_bob", "org_acme"):
        container.ledger.grant(wallet, 100_000, "test credits")
    use(container, "kp_alice", "report_generation", 25)
    use(container, "kp_alice", "api_call", 40, quantity=3)
    use(container, "kp_bob", "file_conversion", 10)
    use(container, "org_acme", "report_generation", 7)
    with container.store(False) as uow:
        assert uow.outbox.counts()["pending"] == 4  # 82 debits, 4 (customer, feature) pairs
    drain(container, clock)
    assert len([c for c in kinde.meter_calls]) == 4
    assert_kinde_matches_ledger(container, kinde)
    # Customer ids and agreements were looked up once and cached on the wallet.
    with container.store(False) as uow:
        profile = uow.wallets.profile("kp_alice")
    assert profile is not None
    assert (profile.billing_customer_id, profile.agreement_id) == ("customer_0", "agreement_0")
    assert profile.email == "kp_alice@example.com"


def test_grants_are_not_reported_but_sales_are_invoiced(container: Container,
                                                        kinde: FakeKinde,
                                                        clock: FakeClock) -> None:
    container.ledger.grant("kp_alice", 1000, "test credits")
    with container.store(False) as uow:
        assert uow.outbox.counts()["pending"] == 0  # a grant is free: nothing to invoice
    container.ledger.top_up_bundle("kp_alice", "starter")
    container.ledger.top_up_bundle("kp_alice", "starter")
    with container.store(False) as uow:
        [row] = uow.outbox.list("pending", 5)
    assert row.topic == "meter:kp_alice:bundle:starter"
    drain(container, clock)
    assert kinde.usage_total("agreement_0", "credit_pack_starter") == 2


def test_outage_then_recovery_loses_nothing(container: Container, kinde: FakeKinde,
                                            clock: FakeClock) -> None:
    container.ledger.grant("kp_alice", 100_000, "test credits")
    kinde.outage(True)
    use(container, "kp_alice", "report_generation", 5)
    container.dispatcher.run_once()
    use(container, "kp_alice", "report_generation", 5)  # more usage while Kinde is down
    with container.store(False) as uow:
        [row] = uow.outbox.list("pending", 10)
    assert row.attempts == 1 and "unavailable" in (row.last_error or "").lower()
    kinde.outage(False)
    drain(container, clock)
    assert_kinde_matches_ledger(container, kinde)


def test_lost_answers_and_resends_never_double_count(container: Container, kinde: FakeKinde,
                                                     clock: FakeClock) -> None:
    container.ledger.grant("kp_bob", 100_000, "test credits")
    use(container, "kp_bob", "api_call", 17)
    container.dispatcher.run_once()  # resolves customer and agreement, reports 17
    use(container, "kp_bob", "api_call", 3)
    kinde.lose_answer_next(2, path_prefix="/api/v1/billing/meter_usage")
    drain(container, clock)
    assert kinde.usage_total("agreement_1", "api_calls") == 20
    assert_kinde_matches_ledger(container, kinde)


def test_rate_limit_honours_reset_and_costs_no_attempt(container: Container, kinde: FakeKinde,
                                                       clock: FakeClock) -> None:
    container.ledger.grant("kp_alice", 1000, "test credits")
    use(container, "kp_alice", "api_call", 2)
    kinde.rate_limit_next(1, reset_seconds=42, path_prefix="/api/v1/billing/meter_usage")
    container.dispatcher.run_once()
    with container.store(False) as uow:
        [row] = uow.outbox.list("pending", 1)
    with container.store.engine.connect() as conn:
        next_at = conn.execute(text("SELECT next_attempt_at FROM outbox")).scalar()
    due = datetime.fromisoformat(str(next_at)).replace(tzinfo=UTC) if isinstance(
        next_at, str) else next_at.replace(tzinfo=UTC) if next_at.tzinfo is None else next_at
    assert abs((due - clock()).total_seconds() - 42) < 1.5
    assert row.attempts == 0
    container.dispatcher.run_once()  # not due yet: nothing sent
    assert kinde.usage_total("agreement_0", "api_calls") == 0
    clock.advance(seconds=43)
    container.dispatcher.run_once()
    assert_kinde_matches_ledger(container, kinde)


def test_dead_letter_is_visible_and_can_be_requeued(container: Container, kinde: FakeKinde,
                                                    clock: FakeClock) -> None:
    container.ledger.grant("kp_alice", 1000, "test credits")
    use(container, "kp_alice", "api_call", 4)
    kinde.fail_next(100, status=500, path_prefix="/api/v1/billing/meter_usage")
    drain_rounds = 0
    while drain_rounds < 10:
        container.dispatcher.run_once()
        clock.advance(seconds=120)
        drain_rounds += 1
    with container.store(False) as uow:
        counts = uow.outbox.counts()
        [dead] = uow.outbox.list("dead", 5)
    assert counts["dead"] == 1 and counts["pending"] == 0
    assert dead.attempts == 5 and dead.last_error
    kinde.fail_next(0)  # clear nothing new; the remaining faults are consumed below
    with kinde._lock:  # noqa: SLF001 - end the injected failures
        kinde._faults.clear()  # type: ignore[attr-defined]
    with container.store(True) as uow:
        assert uow.outbox.requeue_dead(None, clock()) == 1
        uow.commit()
    drain(container, clock)
    assert_kinde_matches_ledger(container, kinde)


def test_period_rollover_keeps_acknowledged_usage_in_its_period(
    container: Container, kinde: FakeKinde, clock: FakeClock
) -> None:
    container.ledger.grant("kp_alice", 100_000, "test credits")
    use(container, "kp_alice", "report_generation", 10)
    drain(container, clock)
    assert kinde.usage_total("agreement_0", "reports") == 10
    # The cycle closes; usage made meanwhile is not reported yet.
    use(container, "kp_alice", "report_generation", 4)
    clock.advance(days=31)
    kinde.roll_period("agreement_0", PERIOD_END, PERIOD_END + timedelta(days=30))
    use(container, "kp_alice", "report_generation", 6)
    drain(container, clock)
    assert kinde.usage_total("agreement_0", "reports", PERIOD_START) == 10
    # The 4 not acknowledged before the close are carried into the new cycle.
    assert kinde.usage_total("agreement_0", "reports") == 10


def test_captured_holds_are_reported_in_units(container: Container, kinde: FakeKinde,
                                              clock: FakeClock) -> None:
    container.ledger.grant("kp_alice", 1000, "test credits")
    hold = container.ledger.place_hold("kp_alice", feature_key="report_generation", quantity=3)
    container.ledger.capture_hold(hold.body["hold_id"], 120)  # 2.4 reports: 3 started
    drain(container, clock)
    assert kinde.usage_total("agreement_0", "reports") == 3


def test_concurrent_workers_send_each_topic_once(container: Container, kinde: FakeKinde,
                                                 clock: FakeClock) -> None:
    for wallet in ("kp_alice", "kp_bob", "org_acme"):
        container.ledger.grant(wallet, 100_000, "test credits")
        for feature in ("api_call", "file_conversion", "report_generation"):
            use(container, wallet, feature, 3)
    barrier = threading.Barrier(6)
    errors: list[BaseException] = []

    def worker() -> None:
        barrier.wait()
        try:
            for _ in range(3):
                container.dispatcher.run_once(limit=2)
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=worker) for _ in range(6)]
    for th in threads:
        th.start()
    for th in threads:
        th.join(60)
    assert not errors
    drain(container, clock)
    assert len(kinde.meter_calls) == 9  # 3 wallets x 3 features, each sent exactly once
    assert_kinde_matches_ledger(container, kinde)


@pytest.mark.slow
def test_sigkill_mid_send_then_restart(db_url: str, kinde: FakeKinde, tmp_path: Path) -> None:
    """A real worker process is killed while Kinde holds its request; a new one finishes."""
    env = {**os.environ, **kinde_env(db_url, kinde, tmp_path)}
    settings = Settings.from_env(kinde_env(db_url, kinde, tmp_path))
    keyring = LocalKeyring.load_or_create(tmp_path / "k.pem")
    c = build_container(settings, key_source=keyring.key_source())
    try:
        for wallet in ("kp_alice", "kp_bob", "org_acme"):
            c.ledger.grant(wallet, 100_000, "test credits")
            use(c, wallet, "report_generation", 4)
            use(c, wallet, "api_call", 9)
        # Kinde applies the first reports but answers only after we have killed the sender.
        kinde.stall_next(2, 8.0, path_prefix="/api/v1/billing/meter_usage")
        cmd = [sys.executable, "-m", "app.cli", "worker", "--interval", "0.2"]
        first = subprocess.Popen(cmd, env=env, cwd=Path(__file__).parents[2])
        deadline = time.monotonic() + 30
        while len(kinde.meter_calls) < 1 and time.monotonic() < deadline:
            time.sleep(0.05)
        assert kinde.meter_calls, "worker never reached Kinde"
        first.send_signal(signal.SIGKILL)
        first.wait(10)
        use(c, "kp_alice", "api_call", 5)  # usage goes on while no worker runs
        second = subprocess.Popen(cmd, env=env, cwd=Path(__file__).parents[2])
        try:
            deadline = time.monotonic() + 60
            while time.monotonic() < deadline:
                with c.store(False) as uow:
                    if uow.outbox.counts()["pending"] == 0:
                        break
                time.sleep(0.3)
            time.sleep(9)  # let the stalled requests land, as a slow Kinde would
        finally:
            second.send_signal(signal.SIGTERM)
            second.wait(20)
        assert_kinde_matches_ledger(c, kinde)
    finally:
        c.close()


def test_a_row_whose_lease_ran_out_is_not_sent_twice(container: Container, kinde: FakeKinde,
                                                      clock: FakeClock) -> None:
    """Worker A claims a batch, but its lease runs out before it reaches the last row; worker
    B claims that row meanwhile. A must skip it rather than send it a second time."""
    for wallet in ("kp_alice", "kp_bob"):
        container.ledger.grant(wallet, 1000, "test credits")
        use(container, wallet, "api_call", 1)
    with container.store(True) as uow:
        batch = uow.outbox.claim(clock(), 2, 10)  # worker A's claim, lease 2 s
        uow.commit()
    assert len(batch) == 2
    clock.advance(seconds=5)  # A is slow; its lease is over
    container.dispatcher.run_once()  # worker B claims and sends both rows
    calls = len(kinde.meter_calls)
    for message in batch:  # A finally gets to its rows
        container.dispatcher._deliver(message)
    assert len(kinde.meter_calls) == calls  # nothing sent twice
    assert_kinde_matches_ledger(container, kinde)


# -- backoff, dead letters and confirmations under traffic ----------------------------------


def pending_row(c: Container) -> Any:
    with c.store(False) as uow:
        assert uow.outbox.counts()["dead"] == 0
        [row] = uow.outbox.list("pending", 5)
    return row


def test_steady_traffic_through_an_outage_keeps_the_backoff(
    container: Container, kinde: FakeKinde, clock: FakeClock
) -> None:
    container.ledger.grant("kp_alice", 100_000, "test credits")
    use(container, "kp_alice", "api_call", 1)
    kinde.outage(True)
    container.dispatcher.run_once()  # attempt 1 fails: the row backs off (1 s here)
    for _ in range(15):  # a debit every 50 ms, each followed by a worker pass
        use(container, "kp_alice", "api_call", 1)
        container.dispatcher.run_once()
        clock.advance(seconds=0.05)
    row = pending_row(container)
    assert row.attempts == 1, "new usage must not cancel the backoff"
    kinde.outage(False)
    drain(container, clock)
    assert_kinde_matches_ledger(container, kinde)


def test_new_usage_keeps_the_rate_limit_reset(container: Container, kinde: FakeKinde,
                                              clock: FakeClock) -> None:
    container.ledger.grant("kp_alice", 1000, "test credits")
    use(container, "kp_alice", "api_call", 2)
    kinde.rate_limit_next(1, reset_seconds=42, path_prefix=METER_PATH)
    container.dispatcher.run_once()
    use(container, "kp_alice", "api_call", 1)  # new usage while Kinde said "wait 42 s"
    clock.advance(seconds=1)
    container.dispatcher.run_once()
    assert kinde.meter_calls == [], "RateLimit-Reset was not honoured"
    clock.advance(seconds=42)
    container.dispatcher.run_once()
    assert_kinde_matches_ledger(container, kinde)


def test_newer_work_is_not_dead_lettered_with_a_failed_version(
    container: Container, kinde: FakeKinde, clock: FakeClock
) -> None:
    container.ledger.grant("kp_alice", 100_000, "test credits")
    use(container, "kp_alice", "api_call", 3)
    kinde.outage(True)
    for _ in range(4):  # 4 of OUTBOX_MAX_ATTEMPTS=5 attempts fail
        container.dispatcher.run_once()
        clock.advance(seconds=10)
    use(container, "kp_alice", "api_call", 2)  # newer work, after the last failure
    container.dispatcher.run_once()  # attempt 5 fails: the newer total was tried only once
    row = pending_row(container)
    assert row.attempts == 5
    clock.advance(seconds=10)
    container.dispatcher.run_once()  # attempt 6, nothing newer: now it is dead
    with container.store(False) as uow:
        assert uow.outbox.counts()["dead"] == 1
    kinde.outage(False)
    # The next debit's report carries the absolute total, the dead row's units included.
    use(container, "kp_alice", "api_call", 1)
    drain(container, clock)
    assert_kinde_matches_ledger(container, kinde)


def test_newer_work_rescues_a_row_dying_of_a_shorter_outage(
    container: Container, kinde: FakeKinde, clock: FakeClock
) -> None:
    container.ledger.grant("kp_bob", 100_000, "test credits")
    use(container, "kp_bob", "report_generation", 1)
    kinde.outage(True)
    for _ in range(5):  # steady usage between the failing attempts
        container.dispatcher.run_once()
        use(container, "kp_bob", "report_generation", 1)
        clock.advance(seconds=10)
    pending_row(container)  # not dead: every attempt had newer work behind it
    kinde.outage(False)
    drain(container, clock)  # no new usage needed: the newest total reaches Kinde
    assert_kinde_matches_ledger(container, kinde)


def test_an_uncertain_confirmation_is_confirmed_again(
    db_url: str, kinde: FakeKinde, tmp_path: Path, clock: FakeClock
) -> None:
    """Kinde ended at 1 for 6 used: a confirmation whose answer was lost was never confirmed,
    so an older, smaller total that landed after it won."""
    client = KindeManagementClient(kinde.url, kinde.client_id, kinde.client_secret,
                                   timeout=2.0)
    c = make(db_url, kinde, tmp_path, clock, client)
    try:
        c.ledger.grant("kp_alice", 1000, "test credits")
        use(c, "kp_alice", "api_call", 1)
        kinde.hold_next(1, path_prefix=METER_PATH)  # "1" lands whenever we say
        c.dispatcher.run_once()  # times out: outcome unknown
        use(c, "kp_alice", "api_call", 5)
        clock.advance(seconds=10)
        c.dispatcher.run_once()  # "6" is answered; a confirmation is due in 10 s
        kinde.lose_answer_next(1, path_prefix=METER_PATH)
        clock.advance(seconds=11)
        c.dispatcher.run_once()  # the confirmation "6" lands, but its answer is lost
        clock.advance(seconds=10)
        c.dispatcher.run_once()  # its retry is answered
        kinde.release_held()
        deadline = time.monotonic() + 30
        while not any(m.meter_value == 1 for m in kinde.meter_calls):  # the stale "1" lands
            assert time.monotonic() < deadline, "the held request never landed"
            time.sleep(0.05)
        assert kinde.usage_total("agreement_0", "api_calls") == 1
        drain(c, clock)
        assert kinde.usage_total("agreement_0", "api_calls") == 6
        assert_kinde_matches_ledger(c, kinde)
    finally:
        c.close()


def test_a_total_that_lands_after_its_period_closed_is_corrected(
    container: Container, kinde: FakeKinde, clock: FakeClock
) -> None:
    container.ledger.grant("kp_alice", 100_000, "test credits")
    use(container, "kp_alice", "report_generation", 10)
    drain(container, clock)
    # The cycle closed: Kinde counts new usage in the next one, but its agreement still
    # shows the old period for a while (it may lag a renewal).
    clock.now = PERIOD_END + timedelta(minutes=1)
    kinde.roll_period("agreement_0", PERIOD_END, PERIOD_END + timedelta(days=30),
                      listed=False)
    use(container, "kp_alice", "report_generation", 4)
    container.dispatcher.run_once()  # "14 in the old period" lands in the new one
    assert kinde.usage_total("agreement_0", "reports") == 14
    kinde.list_new_period("agreement_0")
    drain(container, clock)  # no new usage: the correction comes by itself
    assert kinde.usage_total("agreement_0", "reports", PERIOD_START) == 10
    assert kinde.usage_total("agreement_0", "reports") == 4


def test_requeue_dead_racing_an_enqueue(container: Container, kinde: FakeKinde,
                                        clock: FakeClock) -> None:
    """On PostgreSQL an enqueue may insert the topic's pending row after requeue_dead looked
    for one: the partial unique index must not fail the requeue."""
    container.ledger.grant("kp_alice", 1000, "test credits")
    use(container, "kp_alice", "api_call", 2)
    kinde.fail_next(1, status=400, path_prefix=METER_PATH)
    container.dispatcher.run_once()
    with container.store(False) as uow:
        assert uow.outbox.counts()["dead"] == 1
    topic = meter_topic("kp_alice", "api_call")
    outcome: list[object] = []

    def requeue() -> None:
        try:
            with container.store(True) as uow:
                outcome.append(uow.outbox.requeue_dead(None, clock()))
                uow.commit()
        except Exception as exc:
            outcome.append(exc)

    with container.store(True) as racing:  # an enqueue, not committed yet
        racing.outbox.enqueue(METER_USAGE, topic, "kp_alice",
                              {"wallet_id": "kp_alice", "feature": "api_call"}, clock())
        thread = threading.Thread(target=requeue)
        thread.start()
        time.sleep(1.0)  # the requeue has checked and now waits on the index (or the lock)
        racing.commit()
    thread.join(30)
    assert outcome == [0], outcome
    with container.store(False) as uow:
        assert uow.outbox.counts()["dead"] == 0
    use(container, "kp_alice", "api_call", 1)
    drain(container, clock)
    assert_kinde_matches_ledger(container, kinde)


class _WebhookDuringLookup(KindeManagementClient):
    """While the reporter asks Kinde for agreements, a webhook maps the wallet elsewhere."""

    during_lookup: Any = None

    def list_agreements(self, customer_id: str, *args: Any, **kwargs: Any) -> Any:
        found = super().list_agreements(customer_id, *args, **kwargs)
        hook, self.during_lookup = self.during_lookup, None
        if hook is not None:
            hook()
        return found


def test_reporter_keeps_an_agreement_a_webhook_set_meanwhile(
    db_url: str, kinde: FakeKinde, tmp_path: Path, clock: FakeClock
) -> None:
    kinde.add_agreement("customer_0", "agreement_new", "pro", FEATURES, PERIOD_START,
                        PERIOD_END)
    client = _WebhookDuringLookup(kinde.url, kinde.client_id, kinde.client_secret)
    c = make(db_url, kinde, tmp_path, clock, client)
    try:
        c.ledger.grant("kp_alice", 1000, "test credits")
        use(c, "kp_alice", "api_call", 3)

        def plan_changed() -> None:  # what the webhook service does, under the wallet lock
            with c.store(True) as uow:
                uow.wallets.lock("kp_alice")
                uow.wallets.update_profile("kp_alice", agreement_id="agreement_new")
                uow.commit()

        client.during_lookup = plan_changed
        drain(c, clock)
        with c.store(False) as uow:
            profile = uow.wallets.profile("kp_alice")
        assert profile is not None and profile.agreement_id == "agreement_new"
        assert kinde.usage_total("agreement_new", "api_calls") == 3
        assert kinde.usage_total("agreement_0", "api_calls") == 0
    finally:
        c.close()
