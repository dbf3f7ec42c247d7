"""Attack on `POST /v1/usage/batch` under group commit, on both databases: 1,000 records mixing
wallets, refused records, bad features and duplicate keys, sent by racing threads (one batch
twice with one header key, another in the opposite wallet order). Every record must be applied
at most once and every answer must match the ledger."""

from __future__ import annotations

import threading
from collections import Counter
from typing import Any

from flask import Flask

from app.bootstrap import Container
from app.services.ledger import verify_ledger
from tests.http_fixtures import *  # noqa: F403
from tests.http_fixtures import Tokens, bearer

WALLETS = [f"kp_mix{n}" for n in range(7)]


def _records(order: list[str], tag: str) -> list[dict[str, Any]]:
    records: list[dict[str, Any]] = []
    for n in range(1000):
        wallet = order[n % len(order)]
        if n % 97 == 0:
            records.append({"wallet_id": wallet, "feature": "no_such_feature", "quantity": 1})
        elif n % 89 == 0:
            records.append({"wallet_id": wallet, "feature": "api_call", "quantity": 10**6})
        elif n % 50 == 0:
            # The same own key twice in one batch, with different bodies: the second is 409.
            records.append({"wallet_id": wallet, "feature": "api_call", "quantity": 1,
                            "idempotency_key": f"{tag}-dup-{n}"})
            records.append({"wallet_id": wallet, "feature": "api_call", "quantity": 2,
                            "idempotency_key": f"{tag}-dup-{n}"})
        else:
            records.append({"wallet_id": wallet, "feature": "api_call", "quantity": 1})
    return records[:1000]


def test_racing_thousand_record_batches_apply_each_record_once(
    api_app: Flask, api_container: Container, tokens: Tokens
) -> None:
    admin = bearer(tokens.m2m("credits:admin"))
    client = api_app.test_client()
    for wallet in WALLETS:
        seeded = client.post(f"/v1/wallets/{wallet}/top-ups",
                             json={"credits": 100_000, "reason": "seed"}, headers=admin)
        assert seeded.status_code == 201
    forward = _records(WALLETS, "f")
    backward = _records(list(reversed(WALLETS)), "b")
    answers: dict[str, Any] = {}

    def post(name: str, records: list[dict[str, Any]], key: str) -> None:
        answer = api_app.test_client().post(
            "/v1/usage/batch", json={"records": records},
            headers={**admin, "Idempotency-Key": key})
        answers[name] = (answer.status_code, answer.json)

    threads = [threading.Thread(target=post, args=args) for args in (
        ("forward1", forward, "batch-forward"),
        ("forward2", forward, "batch-forward"),
        ("backward", backward, "batch-backward"),
    )]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(600)

    assert all(status == 200 for status, _ in answers.values()), answers
    first = answers["forward1"][1]["results"]
    second = answers["forward2"][1]["results"]
    # One header key, one request: the same answer record by record (one of them replayed).
    assert [(r["status"], r.get("result")) for r in first] == [
        (r["status"], r.get("result")) for r in second]
    statuses = Counter(r["status"] for r in first)
    own_keys = Counter(r["idempotency_key"] for r in forward if "idempotency_key" in r)
    assert statuses[409] == sum(1 for count in own_keys.values() if count == 2) > 0
    assert statuses[422] > 0 and statuses[402] > 0
    spent: Counter[str] = Counter()
    for name in ("forward1", "backward"):
        records = forward if name == "forward1" else backward
        for result in answers[name][1]["results"]:
            if result["status"] == 201:
                spent[records[result["index"]]["wallet_id"]] -= result["result"]["entry"][
                    "amount"]
            else:
                assert result["status"] in (402, 409, 422), result
    for wallet in WALLETS:
        assert api_container.ledger.get_wallet(wallet)["balance"] == 100_000 - spent[wallet]
    assert verify_ledger(api_container.store) == {}

