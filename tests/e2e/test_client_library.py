"""`kinde_credits_client` against the real server (`kinde-credits serve`, gunicorn) over
loopback HTTP: every call, typed errors, the hold context manager, retries through a proxy that
drops a connection, answers 503 or stalls (each write charged once), and the Flask decorator
in a small product app."""

from __future__ import annotations

import subprocess
import sys
import uuid
from collections.abc import Iterator

import pytest
from flask import Flask, g, jsonify

from kinde_credits_client import (
    AlreadyRefunded,
    CreditsClient,
    Forbidden,
    HoldNotOpen,
    IdempotencyConflict,
    InsufficientCredits,
    InvalidRequest,
    MemberBudgetExceeded,
    NotFound,
    NotRefundable,
    ServiceUnavailable,
    TransportError,
    UnknownFeature,
    current_hold,
    init_app,
    requires_credits,
)
from tests.fakes.flaky_proxy import FlakyProxy
from tests.http_fixtures import LiveServer, Tokens

pytestmark = pytest.mark.slow


def fresh_org() -> str:
    return f"org_{uuid.uuid4().hex[:12]}"


@pytest.fixture
def admin(live_server: LiveServer, tokens: Tokens) -> CreditsClient:
    return CreditsClient(live_server.url, tokens.m2m("credits:admin"), backoff=0.01)


@pytest.fixture
def org(admin: CreditsClient) -> str:
    org_id = fresh_org()
    admin.top_up(org_id, credits=1000, reason="team credits")
    return org_id


def usage_entries(client: CreditsClient, wallet_id: str) -> list[int]:
    return [e.amount for e in client.ledger(wallet_id) if e.kind == "usage"]


def test_every_call_and_typed_errors(admin: CreditsClient, org: str, tokens: Tokens,
                                     live_server: LiveServer) -> None:
    admin.set_budget(org, "kp_alice", credits_per_day=120)
    budget = admin.set_budget(org, "kp_alice", credits_per_month=1000)
    assert (budget["credits_per_day"], budget["credits_per_month"]) == (120, 1000)

    check = admin.check(org, "report_generation", 2, member="kp_alice")
    assert (check.allowed, check.credits, check.available) == (True, 100, 120)
    used = admin.record_usage(org, "report_generation", 2, member="kp_alice",
                              idempotency_key="report-1")
    assert (used.balance, used.member, used.replayed) == (900, "kp_alice", False)
    again = admin.record_usage(org, "report_generation", 2, member="kp_alice",
                               idempotency_key="report-1")
    assert again.replayed and again.entry == used.entry

    refused = admin.check(org, "report_generation", 1, member="kp_alice")
    assert not refused.allowed and refused.code == "member_budget_exceeded"
    with pytest.raises(MemberBudgetExceeded) as over:
        admin.record_usage(org, "report_generation", 1, member="kp_alice")
    assert (over.value.status, over.value.needed, over.value.available_to_member) == (
        402, 50, 20)
    with pytest.raises(InsufficientCredits) as short:
        admin.record_usage(org, "report_generation", 100)
    assert (short.value.needed, short.value.available) == (5000, 900)
    with pytest.raises(IdempotencyConflict):
        admin.record_usage(org, "api_call", 1, idempotency_key="report-1")
    with pytest.raises(UnknownFeature):
        admin.record_usage(org, "nope", 1)
    with pytest.raises(InvalidRequest):
        admin.record_usage(org, "api_call", 1, member="not-a-user")
    with pytest.raises(NotFound):
        CreditsClient(live_server.url, tokens.m2m("credits:admin", org="org_other")).wallet(org)
    with pytest.raises(Forbidden):
        CreditsClient(live_server.url, tokens.m2m("credits:write")).top_up(
            org, credits=5, reason="no")

    members = admin.members(org)["members"]
    assert members[0]["member"] == "kp_alice" and members[0]["today"]["spent"] == 100

    wallet = admin.wallet(org)
    assert (wallet.wallet_id, wallet.owner_type, wallet.balance) == (org, "org", 900)
    for i in range(4):
        admin.record_usage(org, "api_call", i + 1)
    entries = list(admin.ledger(org, page_size=2))  # three pages, fetched as iterated
    assert [e.amount for e in entries] == [-4, -3, -2, -1, -100, 1000]
    pages = list(admin.ledger_pages(org, page_size=2))
    assert [len(p.entries) for p in pages] == [2, 2, 2] and pages[-1].next_cursor is None


def test_adjust_refund_and_forecast(admin: CreditsClient, org: str) -> None:
    added = admin.adjust(org, 250, "outage credit", expires_at="2099-01-01T00:00:00Z")
    assert added["balance"] == 1250 and added["entry"]["reason"] == "outage credit"
    with pytest.raises(InsufficientCredits):
        admin.adjust(org, -5000, "too much")
    with pytest.raises(NotRefundable):
        admin.refund(org, added["entry"]["id"], "not a purchase")
    sale = admin.top_up(org, bundle="starter")["entry"]["id"]
    refund = admin.refund(org, sale, "bought by mistake")
    assert (refund["refunded_credits"], refund["refunded_amount"], refund["currency"]) == (
        5000, "49.00", "USD")
    with pytest.raises(AlreadyRefunded):
        admin.refund(org, sale, "again")
    admin.record_usage(org, "report_generation", 2)
    forecast = admin.forecast(org)
    assert forecast["available"] == 1150 and forecast["credits_per_day"] > 0
    assert forecast["days_left"] is not None and forecast["suggested_bundle"] is not None


def test_hold_context_manager_captures_on_success_and_releases_on_error(
    admin: CreditsClient, org: str
) -> None:
    with admin.hold(org, feature="report_generation", quantity=2) as hold:
        assert admin.wallet(org).held == 100
    assert hold.settled is not None and hold.settled["captured_amount"] == 100
    assert admin.wallet(org).balance == 900

    with admin.hold(org, credits=80, member="kp_bob") as partial:
        partial.capture_credits = 30
    assert admin.wallet(org).balance == 870

    with pytest.raises(RuntimeError, match="job failed"), admin.hold(org, credits=500):
        raise RuntimeError("job failed")
    wallet = admin.wallet(org)
    assert (wallet.balance, wallet.held) == (870, 0)  # released: nothing charged

    with pytest.raises(InsufficientCredits):
        admin.hold(org, credits=5000)
    hold = admin.hold(org, credits=10)
    hold.release()
    with pytest.raises(HoldNotOpen):
        admin.capture_hold(hold.hold_id)


def test_a_dropped_connection_is_retried_with_the_same_key_and_charged_once(
    live_server: LiveServer, tokens: Tokens, admin: CreditsClient, org: str
) -> None:
    with FlakyProxy(live_server.port) as proxy:
        client = CreditsClient(proxy.url, tokens.m2m("credits:admin"), backoff=0.01)
        proxy.faults = ["drop"]
        used = client.record_usage(org, "report_generation", 1)  # no key given: one is made
        # The server got the request twice (the first answer was lost), applied it once.
        assert [line.split(b" ")[0] for line in proxy.forwarded] == [b"POST", b"POST"]
        assert used.replayed and used.balance == 950
        assert usage_entries(admin, org) == [-50]

        proxy.faults = ["503", "503"]
        assert client.record_usage(org, "api_call", 5).balance == 945
        proxy.faults = ["drop"]
        with client.hold(org, credits=20):  # the capture's answer is dropped, then replayed
            proxy.faults = ["drop"]
        assert usage_entries(admin, org) == [-5, -50]
        assert admin.wallet(org).balance == 925

        proxy.faults = ["drop", "drop", "drop"]
        with pytest.raises(TransportError):
            CreditsClient(proxy.url, tokens.m2m("credits:admin"), backoff=0.01,
                          max_retries=2).record_usage(org, "api_call", 1,
                                                      idempotency_key="lost-1")
        # The caller retries later with its key: the earlier attempt was applied once.
        assert client.record_usage(org, "api_call", 1, idempotency_key="lost-1").replayed
        assert usage_entries(admin, org) == [-1, -5, -50]

        proxy.faults = ["503"] * 3
        with pytest.raises(ServiceUnavailable):
            CreditsClient(proxy.url, tokens.m2m("credits:admin"), backoff=0.01,
                          max_retries=2).record_usage(org, "api_call", 1)
        assert usage_entries(admin, org) == [-1, -5, -50]


def test_a_timeout_is_retried_and_charged_once(
    live_server: LiveServer, tokens: Tokens, admin: CreditsClient, org: str
) -> None:
    # Generous margins: the retry itself must not time out on a busy machine.
    with FlakyProxy(live_server.port, delay=6.0) as proxy:
        client = CreditsClient(proxy.url, tokens.m2m("credits:admin"), timeout=3.0,
                               backoff=0.01)
        proxy.faults = ["slow"]
        used = client.record_usage(org, "file_conversion", 3)
        assert used.replayed and used.balance == 994
    assert usage_entries(admin, org) == [-6]


def test_the_package_imports_no_server_code() -> None:
    code = ("import sys, kinde_credits_client; "
            "bad = sorted(m for m in sys.modules if m.split('.')[0] in "
            "('app', 'adapters', 'flask', 'sqlalchemy', 'tests')); print(bad); "
            "sys.exit(1 if bad else 0)")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=60)
    assert done.returncode == 0, done.stdout + done.stderr


# -- the Flask decorator in a small product app ----------------------------------------------


@pytest.fixture
def product(admin: CreditsClient, live_server: LiveServer, tokens: Tokens) -> Iterator[Flask]:
    app = Flask("product")
    app.testing = True  # let a view's exception reach the test, as in debug
    init_app(app, CreditsClient(live_server.url, tokens.m2m("credits:write"), backoff=0.01))

    @app.before_request
    def who() -> None:
        # The product's own auth would set these from the user's Kinde session.
        from flask import request

        g.credits_wallet_id = request.headers["X-Org"]
        g.credits_member = request.headers.get("X-User")

    @app.post("/reports")
    @requires_credits("report_generation")
    def make_report() -> object:
        return jsonify(report="ok"), 201

    @app.post("/reports/greedy")
    @requires_credits("report_generation")
    def greedy() -> object:
        hold = current_hold()
        assert hold is not None
        hold.capture_credits = 10**6  # more than was held: the whole hold is charged
        return {"greedy": True}

    @app.post("/reports/draft")
    @requires_credits("report_generation", quantity=2)
    def draft() -> object:
        hold = current_hold()
        assert hold is not None
        hold.capture_credits = 40  # the real cost turned out lower
        return {"draft": True}

    @app.post("/reports/broken")
    @requires_credits("report_generation")
    def broken() -> object:
        raise ValueError("renderer crashed")

    @app.post("/reports/invalid")
    @requires_credits("report_generation")
    def invalid() -> object:
        return jsonify(error="bad input"), 400

    yield app


def test_requires_credits_holds_then_captures_or_releases(
    product: Flask, admin: CreditsClient, org: str
) -> None:
    client = product.test_client()
    alice = {"X-Org": org, "X-User": "kp_alice"}
    made = client.post("/reports", headers=alice)
    assert made.status_code == 201 and made.json == {"report": "ok"}
    assert admin.wallet(org).balance == 950
    assert client.post("/reports/draft", headers=alice).status_code == 200
    assert admin.wallet(org).balance == 910
    # A refused capture never turns finished work into a 500 (the whole hold is charged).
    greedy = client.post("/reports/greedy", headers={"X-Org": org})
    assert greedy.status_code == 200 and greedy.json == {"greedy": True}
    assert (admin.wallet(org).balance, admin.wallet(org).held) == (860, 0)
    admin.top_up(org, credits=50, reason="give back the greedy report")

    with pytest.raises(ValueError, match="renderer crashed"):
        client.post("/reports/broken", headers=alice)
    assert client.post("/reports/invalid", headers=alice).status_code == 400
    wallet = admin.wallet(org)
    assert (wallet.balance, wallet.held) == (910, 0)  # both released

    admin.set_budget(org, "kp_alice", credits_per_day=100)  # 90 spent already
    refused = client.post("/reports", headers=alice)
    assert refused.status_code == 402
    assert refused.json["error"]["code"] == "member_budget_exceeded"
    assert refused.json["error"]["available_to_member"] == 10
    assert client.post("/reports", headers={"X-Org": org, "X-User": "kp_bob"}).status_code == 201
    poor = fresh_org()
    admin.top_up(poor, credits=10, reason="a little")
    short = client.post("/reports", headers={"X-Org": poor})
    assert short.status_code == 402 and short.json["error"]["code"] == "insufficient_credits"
    assert admin.wallet(org).balance == 860
    assert admin.wallet(poor).balance == 10
