"""Odd inputs found in review: each gets a clear 4xx and changes nothing (no 500s)."""

from __future__ import annotations

from functools import reduce
from typing import Any

import pytest
from flask.testing import FlaskClient

from tests.http_fixtures import *  # noqa: F403
from tests.http_fixtures import Tokens, bearer, table_counts

CASES: list[tuple[str, str, Any]] = [
    ("post", "/v1/wallets/kp_a/usage",
     {"feature": "api_call", "quantity": 1, "occurred_at": "0001-01-01T00:00:00+05:00"}),
    ("post", "/v1/wallets/kp_a/usage",
     {"feature": "api_call", "quantity": 1, "occurred_at": "9999-12-31T23:59:59-05:00"}),
    ("post", "/v1/wallets/kp_a/usage",
     {"feature": "api_call", "quantity": 1, "occurred_at": "2999-01-01T00:00:00Z"}),
    ("post", "/v1/wallets/kp_a/top-ups", {"credits": 5, "reason": "\ud800"}),
    ("post", "/v1/wallets/kp_a/usage", {"feature": "api_call\ud800", "quantity": 1}),
    ("put", "/v1/wallets/kp_a/alerts", {"thresholds_percent": [50, 50.5]}),
    ("put", "/v1/wallets/kp_a/alerts", {"notify_at_zero": "yes"}),
    ("put", "/v1/wallets/kp_a/alerts", {"notify_at_zero": None}),
    ("put", "/v1/wallets/kp_a/alerts", {"thresholds_percent": None}),
    ("put", "/v1/wallets/kp_a/auto-recharge", {"enabled": "true"}),
    # 1 == True and 0 == False in Python: a set lookup must not let numbers through.
    ("put", "/v1/wallets/kp_a/alerts", {"notify_at_zero": 1}),
    ("put", "/v1/wallets/kp_a/alerts", {"notify_at_zero": 0}),
    ("put", "/v1/wallets/kp_a/auto-recharge", {"enabled": 0}),
    ("put", "/v1/wallets/kp_a/auto-recharge", {"enabled": 1.0}),
    ("put", "/v1/wallets/kp_a/auto-recharge",
     {"enabled": False, "threshold_credits": 10.5, "bundle": "starter"}),
    ("get", "/v1/wallets/kp_a/ledger?cursor=99999999999999999999", None),
    ("get", "/v1/wallets/kp_a/ledger?cursor=9223372036854775808", None),
    ("get", "/v1/wallets/kp_a/ledger?cursor=%EF%BC%91", None),  # a full-width digit one
    # Nested deeper than a recursive walk (or the JSON parser) could take.
    ("post", "/v1/wallets/kp_a/top-ups",
     {"credits": 5, "reason": "x", "extra": reduce(lambda inner, _: [inner], range(600), [])}),
]


@pytest.mark.parametrize(("method", "path", "body"), CASES)
def test_refused_cleanly(client: FlaskClient, tokens: Tokens, db_url: str, method: str,
                         path: str, body: Any) -> None:
    admin = bearer(tokens.m2m("credits:admin"))
    client.post("/v1/wallets/kp_a/top-ups", json={"credits": 100, "reason": "seed"},
                headers=admin)
    before = table_counts(db_url)
    kwargs = {"json": body} if body is not None else {}
    answer = getattr(client, method)(path, headers=admin, **kwargs)
    assert answer.status_code in (400, 422), (answer.status_code, answer.get_data(as_text=True))
    assert answer.json["error"]["code"] in ("invalid_request", "unknown_feature")
    assert table_counts(db_url) == before
