"""`POST /v1/usage/batch` keys on both databases: derived keys always fit, bad keys are refused
before anything is written, and the answer always says what was applied.

Found in review: on PostgreSQL a 252-255 character `Idempotency-Key` made `<key>#<i>` overflow
the 255-character key column part-way through a batch (and a NUL in a record key failed the
insert): the records before it were committed, yet the batch answered 500 "not applied".
"""

from __future__ import annotations

from typing import Any

import pytest
from flask.testing import FlaskClient

from tests.http_fixtures import *  # noqa: F403
from tests.http_fixtures import Tokens, bearer, count_rows, table_counts


@pytest.fixture
def admin(tokens: Tokens) -> dict[str, str]:
    return bearer(tokens.m2m("credits:admin"))


@pytest.fixture
def funded(client: FlaskClient, admin: dict[str, str]) -> str:
    answer = client.post("/v1/wallets/kp_batch/top-ups",
                         json={"credits": 1000, "reason": "seed"}, headers=admin)
    assert answer.status_code == 201
    return "kp_batch"


def _records(n: int, **extra: Any) -> list[dict[str, Any]]:
    return [{"wallet_id": "kp_batch", "feature": "api_call", "quantity": 1, **extra}
            for _ in range(n)]


@pytest.mark.parametrize("length", [252, 253, 254, 255])
def test_long_header_key_derives_keys_that_fit(
    client: FlaskClient, admin: dict[str, str], funded: str, db_url: str, length: int
) -> None:
    key = "k" * length
    body = {"records": _records(12)}
    first = client.post("/v1/usage/batch", json=body,
                        headers={**admin, "Idempotency-Key": key})
    assert first.status_code == 200, first.get_data(as_text=True)
    assert [r["status"] for r in first.json["results"]] == [201] * 12
    assert count_rows(db_url, "entries") == 1 + 12
    again = client.post("/v1/usage/batch", json=body,
                        headers={**admin, "Idempotency-Key": key})
    assert again.status_code == 200
    assert again.headers.get("Idempotent-Replayed") == "true"
    assert [r["result"] for r in again.json["results"]] == [
        r["result"] for r in first.json["results"]]
    assert count_rows(db_url, "entries") == 1 + 12


def test_long_header_keys_stay_distinct(
    client: FlaskClient, admin: dict[str, str], funded: str, db_url: str
) -> None:
    """Two long headers that share their first 250 characters are two batches, not one."""
    stem = "s" * 250
    for tail in ("aaaaa", "bbbbb"):
        answer = client.post("/v1/usage/batch", json={"records": _records(2)},
                             headers={**admin, "Idempotency-Key": stem + tail})
        assert answer.status_code == 200
        assert "Idempotent-Replayed" not in answer.headers
    assert count_rows(db_url, "entries") == 1 + 4


@pytest.mark.parametrize("bad_key", ["abc\x00", "\x00", "a\ud800b"])
def test_bad_record_key_is_refused_before_anything_is_written(
    client: FlaskClient, admin: dict[str, str], funded: str, db_url: str, bad_key: str
) -> None:
    records = _records(3)
    records[2]["idempotency_key"] = bad_key
    before = table_counts(db_url)
    answer = client.post("/v1/usage/batch", json={"records": records}, headers=admin)
    assert answer.status_code == 422, answer.get_data(as_text=True)
    assert answer.json["error"]["code"] == "invalid_request"
    assert table_counts(db_url) == before


def test_retry_with_the_same_key_completes_a_batch(
    client: FlaskClient, admin: dict[str, str], db_url: str
) -> None:
    """Records refused for lack of credits are applied by a retry once credits arrive; those
    applied the first time are replayed, not debited again."""
    client.post("/v1/wallets/kp_batch/top-ups", json={"credits": 2, "reason": "two"},
                headers=admin)
    key = "r" * 255
    body = {"records": _records(4)}
    first = client.post("/v1/usage/batch", json=body, headers={**admin, "Idempotency-Key": key})
    assert [r["status"] for r in first.json["results"]] == [201, 201, 402, 402]
    client.post("/v1/wallets/kp_batch/top-ups", json={"credits": 2, "reason": "two more"},
                headers=admin)
    retry = client.post("/v1/usage/batch", json=body, headers={**admin, "Idempotency-Key": key})
    assert [r["status"] for r in retry.json["results"]] == [201] * 4
    assert [r["replayed"] for r in retry.json["results"]] == [True, True, False, False]
    assert client.get("/v1/wallets/kp_batch", headers=admin).json["balance"] == 0
    assert count_rows(db_url, "entries") == 2 + 4


@pytest.mark.parametrize("length", [1, 250, 251, 252, 253, 254, 255])
def test_derived_keys_fit_for_every_index(length: int) -> None:
    from app.http.api import MAX_IDEMPOTENCY_KEY, batch_record_key
    from app.http.schemas import MAX_BATCH

    header = "h" * length
    keys = {batch_record_key(header, index) for index in range(MAX_BATCH)}
    assert len(keys) == MAX_BATCH  # one per record
    assert max(len(key) for key in keys) <= MAX_IDEMPOTENCY_KEY
    # Short enough headers keep the documented `<header>#<i>`.
    if length <= 251:
        assert batch_record_key(header, 999) == f"{header}#999"
