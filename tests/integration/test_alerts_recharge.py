"""Spend alerts, notifications and auto-recharge on real databases and real receivers.

- racing debits across thresholds (threads and processes, SQLite and PostgreSQL) give exactly
  one alert per threshold;
- a real local SMTP server receives the e-mails; a real HTTP receiver verifies the outgoing
  webhook signatures with the `standardwebhooks` library;
- auto-recharge under concurrency never double-buys, honours the daily cap, and a failure
  suspends it.
"""

from __future__ import annotations

import base64
import json
import multiprocessing as mp
import threading
from collections import Counter
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import text

from adapters.kinde_api import KindeManagementClient
from adapters.local_keys import LocalKeyring
from app.bootstrap import Container, build_container
from app.domain.ledger import InsufficientCredits, InvalidRequest
from app.http.schemas import WalletSchema
from app.services.ledger import verify_ledger
from app.settings import DEFAULT_CATALOG, Settings
from tests.conftest import FakeClock
from tests.fakes.fake_kinde import FakeKinde
from tests.fakes.smtp_server import SmtpServer
from tests.fakes.webhook_receiver import WebhookReceiver

SECRET = "whsec_" + base64.b64encode(b"kinde-credits-test-secret-000000").decode()


def make_container(db_url: str, tmp: Path, clock: FakeClock | None = None,
                   **env: str) -> Container:
    settings = Settings.from_env({
        "DATABASE_URL": db_url,
        "CREDITS_CATALOG": str(DEFAULT_CATALOG),
        "KINDE_CREDITS_VAR_DIR": str(tmp),
        "TOP_UP_URL": "https://app.example.com/billing",
        **env,
    })
    keyring = LocalKeyring.load_or_create(tmp / "k.pem")
    kwargs: dict[str, Any] = {"key_source": keyring.key_source()}
    if clock is not None:
        kwargs["clock"] = clock
    return build_container(settings, **kwargs)


def notices(c: Container, channel: str = "log") -> list[dict[str, Any]]:
    with c.store.engine.connect() as conn:
        rows = conn.execute(
            text("SELECT payload FROM outbox WHERE kind = :k ORDER BY id"),
            {"k": f"notify_{channel}"},
        )
        return [json.loads(r[0]) for r in rows]


def threshold_of(n: dict[str, Any]) -> str:
    d = n["data"]
    if n["type"] == "credits.depleted":
        return "zero"
    return f"p{d['threshold_percent']}" if "threshold_percent" in d else \
        f"c{d['threshold_credits']}"


@pytest.fixture
def local(db_url: str, tmp_path: Path) -> Iterator[Container]:
    c = make_container(db_url, tmp_path)
    yield c
    c.close()


def test_each_threshold_fires_once_and_credit_rearms(local: Container) -> None:
    local.ledger.grant("kp_a", 1000, "welcome")
    local.ledger.record_usage("kp_a", "report_generation", 9)  # 550: nothing yet
    assert notices(local) == []
    local.ledger.record_usage("kp_a", "report_generation", 1)  # 500: crosses 50%
    local.ledger.record_usage("kp_a", "api_call", 1)           # 499: already fired
    local.ledger.record_usage("kp_a", "report_generation", 8)  # 99: crosses 25% and 10%
    sent = notices(local)
    assert [threshold_of(n) for n in sent] == ["p50", "p10"]  # the most severe one only
    low = sent[1]
    assert low["type"] == "credits.balance_low"
    assert low["data"]["balance"] == 99 and low["data"]["reference_balance"] == 1000
    assert low["data"]["message"].startswith("99 credits left, about 1 report.")
    # The forecast's pace: all use was today (a wallet that just began), so today's.
    assert "At your pace today" in low["data"]["message"]
    assert low["data"]["message"].endswith("Top up: https://app.example.com/billing")
    local.ledger.record_usage("kp_a", "api_call", 99)  # 0: depleted
    depleted = notices(local)[-1]
    assert depleted["type"] == "credits.depleted"
    # In use terms: what stops working and where to top up; the e-mail says the same.
    assert depleted["data"]["message"] == (
        "Your credits are used up: API calls are paused until you top up. "
        "Top up: https://app.example.com/billing")
    assert depleted["text"] == depleted["data"]["message"]
    assert depleted["subject"] == "Your credits are used up"
    # A credit re-arms: percentages now measure against the new balance.
    local.ledger.grant("kp_a", 2000, "top-up")
    local.ledger.record_usage("kp_a", "report_generation", 20)  # 1000 = 50% of 2000
    assert threshold_of(notices(local)[-1]) == "p50"
    assert len(notices(local)) == 4


def test_custom_thresholds_in_credits(local: Container) -> None:
    local.ledger.grant("org_x", 10_000, "welcome")
    local.ledger.set_alerts("org_x", {"thresholds_percent": [], "thresholds_credits": [5000]})
    local.ledger.record_usage("org_x", "report_generation", 100)  # 5,000 left
    [n] = notices(local)
    assert n["data"]["threshold_credits"] == 5000 and "threshold_percent" not in n["data"]
    with pytest.raises(InvalidRequest):
        local.ledger.set_alerts("org_x", {"thresholds_percent": [0]})
    with pytest.raises(InvalidRequest):
        local.ledger.set_alerts("org_x", {"thresholds_percent": [50], "extra": 1})
    view = local.ledger.get_wallet("org_x")
    assert view["alerts"]["thresholds_credits"] == [5000] and view["alerts"]["custom"]


def _race_threads(c: Container, wallet: str, threads: int, each: int) -> None:
    barrier = threading.Barrier(threads)

    def run() -> None:
        barrier.wait()
        for _ in range(each):
            try:
                c.ledger.record_usage(wallet, "file_conversion", 1)
            except InsufficientCredits:
                return

    pool = [threading.Thread(target=run) for _ in range(threads)]
    for th in pool:
        th.start()
    for th in pool:
        th.join(120)


def test_racing_threads_fire_each_threshold_exactly_once(local: Container) -> None:
    local.ledger.grant("kp_race", 400, "welcome")  # 200 debits of 2 credits
    _race_threads(local, "kp_race", 16, 20)
    fired = Counter(threshold_of(n) for n in notices(local))
    assert local.ledger.get_wallet("kp_race")["balance"] == 0
    assert fired == {"p50": 1, "p25": 1, "p10": 1, "zero": 1}
    assert verify_ledger(local.store) == {}


def _process_debits(db_url: str, tmp: str, n: int, queue: mp.Queue) -> None:  # type: ignore[type-arg]
    c = make_container(db_url, Path(tmp))
    done = 0
    try:
        for _ in range(n):
            try:
                c.ledger.record_usage("kp_race", "file_conversion", 1)
                done += 1
            except InsufficientCredits:
                break
        queue.put(done)
    except BaseException as exc:
        queue.put(repr(exc))
    finally:
        c.close()


@pytest.mark.slow
def test_racing_processes_fire_each_threshold_exactly_once(
    local: Container, db_url: str, tmp_path: Path
) -> None:
    local.ledger.grant("kp_race", 200, "welcome")  # 100 debits
    ctx = mp.get_context("spawn")
    queue: mp.Queue = ctx.Queue()  # type: ignore[type-arg]
    procs = [ctx.Process(target=_process_debits, args=(db_url, str(tmp_path), 40, queue))
             for _ in range(4)]
    for p in procs:
        p.start()
    results = [queue.get(timeout=180) for _ in procs]
    for p in procs:
        p.join(30)
    assert sum(r for r in results if isinstance(r, int)) == 100, results
    fired = Counter(threshold_of(n) for n in notices(local))
    assert fired == {"p50": 1, "p25": 1, "p10": 1, "zero": 1}


def test_email_and_signed_webhook_reach_real_receivers(sqlite_url: str, tmp_path: Path,
                                                       clock: FakeClock) -> None:
    with SmtpServer() as smtp, WebhookReceiver(SECRET) as receiver:
        c = make_container(
            sqlite_url, tmp_path, clock,
            SMTP_HOST=smtp.host, SMTP_PORT=str(smtp.port), SMTP_FROM="credits@example.com",
            SMTP_STARTTLS="false", NOTIFY_WEBHOOK_URL=receiver.url,
            NOTIFY_WEBHOOK_SECRET=SECRET,
        )
        try:
            clock.now = datetime.now(UTC)
            c.ledger.grant("kp_mail", 5000, "welcome")
            with c.store(True) as uow:
                uow.wallets.update_profile("kp_mail", email="dana@example.com")
                uow.commit()
            c.ledger.record_usage("kp_mail", "report_generation", 50)  # 2,500 left
            for _ in range(3):
                c.dispatcher.run_once()
            [mail] = smtp.messages
            assert mail["To"] == "dana@example.com"
            assert mail["Subject"] == "Low credit balance: 2,500 credits left"
            body = mail.get_content()
            assert body.startswith("2,500 credits left, about 50 reports.")
            [delivery] = receiver.deliveries
            assert receiver.rejections == []
            assert delivery.payload["type"] == "credits.balance_low"
            assert delivery.payload["data"]["wallet_id"] == "kp_mail"
            assert delivery.payload["data"]["threshold_percent"] == 50
            assert delivery.headers["webhook-id"] == mail["Message-ID"].strip("<>").split("@")[0]
            # A 500 from the product is retried with the same message id.
            receiver.respond_next(500)
            c.ledger.record_usage("kp_mail", "report_generation", 26)  # 1,200: 25%
            c.dispatcher.run_once()
            clock.advance(seconds=30)
            c.dispatcher.run_once()
            # The receiver saw the failed attempt and the retry: same message, same id.
            first, retried = receiver.deliveries[1:]
            assert first.payload["data"]["threshold_percent"] == 25
            assert retried.headers["webhook-id"] == first.headers["webhook-id"]
            assert retried.body == first.body
        finally:
            c.close()


# -- auto-recharge ---------------------------------------------------------------------------


@pytest.fixture
def kinde() -> Iterator[FakeKinde]:
    fake = FakeKinde()
    fake.start()
    now = datetime.now(UTC)
    fake.add_customer("customer_r", user_id="kp_rich")
    fake.add_agreement("customer_r", "agreement_r", "pro",
                       ["file_conversions", "api_calls", "reports", "credit_pack_starter",
                        "credit_pack_starter_auto"],
                       now - timedelta(days=1), now + timedelta(days=29))
    yield fake
    fake.stop()
    assert fake.spec_violations == []


@pytest.fixture
def billed(db_url: str, tmp_path: Path, kinde: FakeKinde, clock: FakeClock
           ) -> Iterator[Container]:
    clock.now = datetime.now(UTC)
    c = make_container(
        db_url, tmp_path, clock, KINDE_DOMAIN=kinde.url,
        KINDE_API_AUDIENCE="https://api.example.com", KINDE_M2M_CLIENT_ID=kinde.client_id,
        KINDE_M2M_CLIENT_SECRET=kinde.client_secret, OUTBOX_MAX_ATTEMPTS="3",
    )
    c.dispatcher.policy.base_delay = 1.0
    c.dispatcher.policy.max_delay = 2.0
    # Auto-recharge buys only for a wallet that knows its Kinde billing customer (DESIGN, "Who
    # may spend the customer's money"), as one does once a billing webhook or the worker's
    # first report has taught it.
    learn_customer(c, "kp_rich", "customer_r")
    yield c
    c.close()


def learn_customer(c: Container, wallet_id: str, customer_id: str) -> None:
    """The wallet learned its Kinde billing customer (its row is created, with no credits)."""
    with c.store(True) as uow:
        uow.wallets.lock_or_create(wallet_id, datetime.now(UTC))
        uow.wallets.update_profile(wallet_id, billing_customer_id=customer_id)
        uow.commit()


def recharges(c: Container) -> list[tuple[str, str]]:
    with c.store.engine.connect() as conn:
        return [(r[0], r[1]) for r in conn.execute(
            text("SELECT bundle, status FROM recharges ORDER BY created_at"))]


def test_auto_recharge_under_racing_debits_buys_once(billed: Container, kinde: FakeKinde,
                                                     clock: FakeClock) -> None:
    billed.ledger.grant("kp_rich", 1000, "welcome")
    billed.ledger.set_auto_recharge(
        "kp_rich", {"enabled": True, "threshold_credits": 500, "bundle": "starter"})
    _race_threads(billed, "kp_rich", 16, 20)  # 320 debits of 2 = 640 credits
    assert recharges(billed) == [("starter", "pending")]
    view = billed.ledger.get_wallet("kp_rich")
    assert view["balance"] == 1000 + 5000 - 640
    purchase = [e for e in billed.ledger.ledger_page("kp_rich", limit=200)["entries"]
                if e["reason"] == "auto-recharge:starter"]
    assert len(purchase) == 1
    # Invoiced through Kinde as one pack, at the catalog's discount: on the auto-recharge
    # feature (priced at the discounted pack price), not on the full-price pack feature.
    for _ in range(3):
        billed.dispatcher.run_once()
    assert kinde.usage_total("agreement_r", "credit_pack_starter_auto") == 1
    assert kinde.usage_total("agreement_r", "credit_pack_starter") == 0
    assert recharges(billed) == [("starter", "invoiced")]
    with billed.store.engine.connect() as conn:
        cost = conn.execute(text("SELECT cost_amount FROM blocks WHERE reason = "
                                 "'auto-recharge:starter'")).scalar()
    assert cost == "44.10"  # 49.00 less 10%
    assert verify_ledger(billed.store) == {}
    # The notice says what happened; no "balance low" for a wallet that was just topped up.
    types = [n["type"] for n in notices(billed)]
    assert "credits.auto_recharged" in types


def test_daily_cap_and_one_in_flight(billed: Container, kinde: FakeKinde,
                                     clock: FakeClock) -> None:
    billed.ledger.grant("kp_rich", 100, "welcome")
    billed.ledger.set_auto_recharge(
        "kp_rich", {"enabled": True, "threshold_credits": 49_999, "bundle": "starter"})
    billed.ledger.record_usage("kp_rich", "api_call", 1)   # buys one (in flight)
    billed.ledger.record_usage("kp_rich", "api_call", 1)   # still below: not again yet
    assert len(recharges(billed)) == 1
    for _ in range(4):
        billed.dispatcher.run_once()                         # invoice confirmed
        billed.ledger.record_usage("kp_rich", "api_call", 1)
    assert len(recharges(billed)) == 3                       # max_per_day = 3
    capped = [n for n in notices(billed) if n["type"] == "credits.auto_recharge_capped"]
    assert len(capped) == 1
    clock.advance(days=1)
    billed.dispatcher.run_once()
    billed.ledger.record_usage("kp_rich", "api_call", 1)
    assert len(recharges(billed)) == 4                       # a new day


def test_dead_invoice_suspends_and_payment_failed_too(billed: Container, kinde: FakeKinde,
                                                      clock: FakeClock) -> None:
    billed.ledger.grant("kp_rich", 600, "welcome")
    billed.ledger.set_auto_recharge(
        "kp_rich", {"enabled": True, "threshold_credits": 500, "bundle": "starter"})
    kinde.fail_next(50, status=400, path_prefix="/api/v1/billing/meter_usage")
    billed.ledger.record_usage("kp_rich", "report_generation", 3)  # 450: buys
    for _ in range(4):
        billed.dispatcher.run_once()
        clock.advance(seconds=10)
    view = billed.ledger.get_wallet("kp_rich")
    assert view["auto_recharge"]["suspended"] is True
    assert "charge failed" in view["auto_recharge"]["suspended_reason"]
    # The purchase failed (so it is no longer in flight), yet its credits exist, so it stays
    # billable: nothing becomes free.
    assert recharges(billed) == [("starter", "failed")]
    assert "credits.auto_recharge_suspended" in [n["type"] for n in notices(billed)]
    # Suspended: further debits below the threshold buy nothing, no retry loop on the card.
    billed.ledger.record_usage("kp_rich", "api_call", 5000)
    assert len(recharges(billed)) == 1
    # The owner re-enables it; a later customer.payment_failed suspends it again.
    billed.ledger.set_auto_recharge(
        "kp_rich", {"enabled": True, "threshold_credits": 500, "bundle": "starter"})
    assert billed.ledger.get_wallet("kp_rich")["auto_recharge"]["suspended"] is False
    assert billed.ledger.suspend_auto_recharge("kp_rich", "Kinde reported a failed payment")
    assert not billed.ledger.suspend_auto_recharge("kp_rich", "again")  # once
    # Once Kinde accepts invoices again, the operator requeues the dead row: the pack bought
    # before the failure is invoiced after all.
    with kinde._lock:  # noqa: SLF001 - end the injected failures
        kinde._faults.clear()  # type: ignore[attr-defined]
    with billed.store(True) as uow:
        uow.outbox.requeue_dead(None, clock())
        uow.commit()
    for _ in range(3):
        billed.dispatcher.run_once()
        clock.advance(seconds=10)
    assert kinde.usage_total("agreement_r", "credit_pack_starter_auto") == 1
    assert recharges(billed) == [("starter", "invoiced")]


def test_expiry_never_triggers_a_purchase(billed: Container, clock: FakeClock) -> None:
    billed.ledger.grant("kp_rich", 1000, "trial", expires_after_days=1)
    billed.ledger.set_auto_recharge(
        "kp_rich", {"enabled": True, "threshold_credits": 500, "bundle": "starter"})
    clock.advance(days=2)
    assert billed.ledger.get_wallet("kp_rich")["balance"] == 0  # a read applies the expiry
    billed.ledger.sweep_due()
    assert recharges(billed) == []


def test_sales_through_the_api_are_invoiced_and_do_not_use_the_cap(
    billed: Container, kinde: FakeKinde, clock: FakeClock
) -> None:
    for _ in range(4):  # more than max_per_day: sales are not auto-recharges
        billed.ledger.top_up_bundle("kp_rich", "starter")
    for _ in range(3):
        billed.dispatcher.run_once()
    assert kinde.usage_total("agreement_r", "credit_pack_starter") == 4
    assert [s for _, s in recharges(billed)] == ["invoiced"] * 4
    billed.ledger.set_auto_recharge(
        "kp_rich", {"enabled": True, "threshold_credits": 30_000, "bundle": "starter"})
    billed.ledger.record_usage("kp_rich", "api_call", 1)
    assert len(recharges(billed)) == 5  # the cap counts auto-recharges only


def test_auto_recharge_needs_a_gateway(local: Container) -> None:
    with pytest.raises(InvalidRequest, match="connect Kinde billing"):
        local.ledger.set_auto_recharge(
            "kp_a", {"enabled": True, "threshold_credits": 10, "bundle": "starter"})
    with pytest.raises(InvalidRequest, match="bundle must be one of"):
        local.ledger.set_auto_recharge("kp_a", {"enabled": False, "threshold_credits": 10,
                                                "bundle": "nope"})


def test_org_alert_email_set_through_the_alert_settings(sqlite_url: str, tmp_path: Path,
                                                         clock: FakeClock) -> None:
    with SmtpServer() as smtp:
        c = make_container(sqlite_url, tmp_path, clock, SMTP_HOST=smtp.host,
                           SMTP_PORT=str(smtp.port), SMTP_FROM="credits@example.com",
                           SMTP_STARTTLS="false")
        try:
            clock.now = datetime.now(UTC)
            c.ledger.grant("org_acme", 1000, "welcome")
            out = c.ledger.set_alerts("org_acme", {"notify_email": "billing@acme.example"})
            assert out.body["notify_email"] == "billing@acme.example"
            with pytest.raises(InvalidRequest):
                c.ledger.set_alerts("org_acme", {"notify_email": "not an address"})
            c.ledger.record_usage("org_acme", "report_generation", 10)  # 500 left: 50%
            c.dispatcher.run_once()
            [mail] = smtp.messages
            assert mail["To"] == "billing@acme.example"
            cleared = c.ledger.set_alerts("org_acme", {"notify_email": None})
            assert cleared.body["notify_email"] is None
        finally:
            c.close()


# -- invoicing what the customer was told ------------------------------------------------------

# What Kinde charges per unit of each pack feature, as the README tells operators to price them.
KINDE_PRICES = {"credit_pack_starter": Decimal("49.00"),
                "credit_pack_starter_auto": Decimal("44.10")}


def kinde_invoice(kinde: FakeKinde) -> Decimal:
    return sum((kinde.usage_total("agreement_r", code) * price
                for code, price in KINDE_PRICES.items()), Decimal("0"))


def test_auto_recharge_is_invoiced_at_the_price_the_customer_was_told(
    billed: Container, kinde: FakeKinde, clock: FakeClock
) -> None:
    billed.ledger.top_up_bundle("kp_rich", "starter")  # a sale at 49.00
    billed.ledger.set_auto_recharge(
        "kp_rich", {"enabled": True, "threshold_credits": 4000, "bundle": "starter"})
    billed.ledger.record_usage("kp_rich", "report_generation", 21)  # 3,950: auto-recharge
    told = [n["data"] for n in notices(billed) if n["type"] == "credits.auto_recharged"]
    assert [(d["price"], d["currency"]) for d in told] == [("44.10", "USD")]
    for _ in range(3):
        billed.dispatcher.run_once()
        clock.advance(seconds=10)
    assert kinde_invoice(kinde) == Decimal("49.00") + Decimal("44.10")
    assert [s for _, s in recharges(billed)] == ["invoiced", "invoiced"]
    # The books agree with the invoice: revenue is booked at what was charged.
    with billed.store.engine.connect() as conn:
        costs = [Decimal(c) for (c,) in conn.execute(text(
            "SELECT cost_amount FROM blocks WHERE kind = 'purchase'"))]
    assert sum(costs) == kinde_invoice(kinde)


def test_dead_invoice_fails_the_purchase_and_reenabling_buys_again(
    billed: Container, kinde: FakeKinde, clock: FakeClock
) -> None:
    billed.ledger.grant("kp_rich", 600, "welcome")
    billed.ledger.set_auto_recharge(
        "kp_rich", {"enabled": True, "threshold_credits": 500, "bundle": "starter"})
    kinde.fail_next(1, status=400, path_prefix="/api/v1/billing/meter_usage")
    billed.ledger.record_usage("kp_rich", "report_generation", 3)  # 450: buys
    for _ in range(3):
        billed.dispatcher.run_once()
        clock.advance(seconds=10)
    # As GET /v1/wallets/{id} answers it (the response schema drops undeclared fields).
    view = WalletSchema().dump(billed.ledger.get_wallet("kp_rich"))["auto_recharge"]
    assert view["suspended"] is True
    assert view["last_purchase"]["status"] == "failed"
    assert "400" in view["last_purchase"]["failure_reason"]
    billed.ledger.set_auto_recharge(
        "kp_rich", {"enabled": True, "threshold_credits": 500, "bundle": "starter"})
    billed.ledger.record_usage("kp_rich", "api_call", 5000)  # 450: crosses again
    assert [s for _, s in recharges(billed)] == ["failed", "pending"]
    for _ in range(3):
        billed.dispatcher.run_once()
        clock.advance(seconds=10)
    # Both packs' credits exist, so both are invoiced now that Kinde accepts the invoice.
    assert kinde.usage_total("agreement_r", "credit_pack_starter_auto") == 2
    assert [s for _, s in recharges(billed)] == ["invoiced", "invoiced"]
    last = billed.ledger.get_wallet("kp_rich")["auto_recharge"]["last_purchase"]
    assert last["status"] == "invoiced" and last["failure_reason"] is None


class _SaleDuringSend(KindeManagementClient):
    """A pack is sold while its meter's count is on its way to Kinde."""

    during_send: Any = None

    def record_meter_usage(self, *args: Any, **kwargs: Any) -> None:
        hook, self.during_send = self.during_send, None
        if hook is not None:
            hook()
        super().record_meter_usage(*args, **kwargs)


def test_a_purchase_made_during_the_send_is_not_marked_invoiced(
    db_url: str, tmp_path: Path, kinde: FakeKinde, clock: FakeClock
) -> None:
    clock.now = datetime.now(UTC)
    client = _SaleDuringSend(kinde.url, kinde.client_id, kinde.client_secret)
    settings = Settings.from_env({
        "DATABASE_URL": db_url, "CREDITS_CATALOG": str(DEFAULT_CATALOG),
        "KINDE_CREDITS_VAR_DIR": str(tmp_path), "KINDE_DOMAIN": kinde.url,
        "KINDE_API_AUDIENCE": "https://api.example.com", "KINDE_M2M_CLIENT_ID": kinde.client_id,
        "KINDE_M2M_CLIENT_SECRET": kinde.client_secret,
    })
    keyring = LocalKeyring.load_or_create(tmp_path / "k.pem")
    c = build_container(settings, clock=clock, key_source=keyring.key_source(), kinde=client)
    try:
        c.ledger.top_up_bundle("kp_rich", "starter")
        client.during_send = lambda: c.ledger.top_up_bundle("kp_rich", "starter")
        c.dispatcher.run_once()  # counts 1 and sends it; the second sale commits meanwhile
        assert kinde.usage_total("agreement_r", "credit_pack_starter") == 1
        assert sorted(s for _, s in recharges(c)) == ["invoiced", "pending"]
        c.dispatcher.run_once()
        assert kinde.usage_total("agreement_r", "credit_pack_starter") == 2
        assert [s for _, s in recharges(c)] == ["invoiced", "invoiced"]
    finally:
        c.close()
