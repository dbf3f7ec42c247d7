"""A JSON body that names a key twice, at any depth, is 400 `invalid_request` and writes nothing.

Python's `json` keeps the last of two equal keys, so `{"feature": "api_call", "quantity": 1,
"feature": "report_generation"}` used to debit report_generation while a proxy or log that
reads the first key saw api_call. The one JSON reader of request bodies refuses it instead.
"""

from __future__ import annotations

import pytest
from flask.testing import FlaskClient

from tests.http_fixtures import *  # noqa: F403
from tests.http_fixtures import Tokens, bearer, table_counts

CASES: list[tuple[str, str, str]] = [
    ("post", "/v1/wallets/kp_dup/usage",
     '{"feature":"api_call","quantity":1,"feature":"report_generation"}'),
    ("post", "/v1/wallets/kp_dup/usage", '{"feature":"api_call","quantity":1,"quantity":1}'),
    ("post", "/v1/wallets/kp_dup/top-ups", '{"credits":5,"reason":"a","reason":"b"}'),
    ("post", "/v1/usage/batch",
     '{"records":[{"wallet_id":"kp_dup","feature":"api_call","quantity":1,'
     '"wallet_id":"kp_other"}]}'),
    ("post", "/v1/usage/batch",
     '{"records":[{"wallet_id":"kp_dup","feature":"api_call","quantity":1}],"records":[]}'),
    ("put", "/v1/wallets/kp_dup/alerts",
     '{"thresholds_percent":[50],"notify_at_zero":true,"notify_at_zero":false}'),
    ("put", "/v1/wallets/kp_dup/auto-recharge",
     '{"enabled":true,"threshold_credits":10,"bundle":"starter","bundle":"growth"}'),
    ("post", "/v1/wallets/kp_dup/holds", '{"credits":5,"credits":6}'),
    # Deep inside a value the schema would otherwise ignore or refuse for another reason.
    ("post", "/v1/wallets/kp_dup/top-ups",
     '{"credits":5,"reason":"a","x":[{"y":{"z":1,"z":2}}]}'),
]


@pytest.mark.parametrize(("method", "path", "body"), CASES)
def test_duplicate_key_is_refused_and_nothing_is_written(
    client: FlaskClient, tokens: Tokens, db_url: str, method: str, path: str, body: str
) -> None:
    admin = bearer(tokens.m2m("credits:admin"))
    seeded = client.post("/v1/wallets/kp_dup/top-ups", json={"credits": 100, "reason": "seed"},
                         headers=admin)
    assert seeded.status_code == 201
    before = table_counts(db_url)
    answer = getattr(client, method)(
        path, data=body, content_type="application/json",
        headers={**admin, "Idempotency-Key": "dup-1"},
    )
    assert answer.status_code == 400, answer.get_data(as_text=True)
    assert answer.json["error"]["code"] == "invalid_request"
    assert "more than once" in answer.json["error"]["message"]
    assert table_counts(db_url) == before
    # The key was not used up: the same key with a fixed body is a fresh request.
    if path.endswith("/usage"):
        fixed = client.post(path, json={"feature": "api_call", "quantity": 1},
                            headers={**admin, "Idempotency-Key": "dup-1"})
        assert fixed.status_code == 201


def test_equal_keys_in_sibling_objects_are_fine(client: FlaskClient, tokens: Tokens) -> None:
    admin = bearer(tokens.m2m("credits:admin"))
    client.post("/v1/wallets/kp_dup/top-ups", json={"credits": 100, "reason": "seed"},
                headers=admin)
    answer = client.post(
        "/v1/usage/batch", headers=admin,
        json={"records": [{"wallet_id": "kp_dup", "feature": "api_call", "quantity": 1},
                          {"wallet_id": "kp_dup", "feature": "api_call", "quantity": 2}]},
    )
    assert answer.status_code in (200, 201, 207), answer.get_data(as_text=True)
