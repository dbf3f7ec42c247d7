"""Racing requests that carry one `Idempotency-Key` all get the first answer (both databases).

On PostgreSQL under READ COMMITTED a loser that read "no such key" before the winner committed
used to go on, wait for the wallet lock, then see the winner's change (a captured hold, a spent
balance) and answer 409 `hold_not_open` or 402 instead of the stored first answer.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any

import pytest
from flask import Flask
from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url

from tests.http_fixtures import *  # noqa: F403
from tests.http_fixtures import Tokens, bearer, count_rows

RACERS = 8


def _race(app: Flask, call: Callable[[Any], Any]) -> list[Any]:
    """Run `call(test_client)` on RACERS threads released together; their answers in order."""
    barrier = threading.Barrier(RACERS)
    answers: list[Any] = [None] * RACERS
    errors: list[BaseException] = []

    def run(n: int) -> None:
        client = app.test_client()
        try:
            barrier.wait(timeout=30)
            answers[n] = call(client)
        except BaseException as exc:  # surfaced below
            errors.append(exc)

    threads = [threading.Thread(target=run, args=(n,)) for n in range(RACERS)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    assert not errors, errors
    return answers


def _assert_one_answer(answers: list[Any], status: int) -> None:
    summary = [(a.status_code, a.get_json()) for a in answers]
    assert all(a.status_code == status for a in answers), summary
    bodies = {a.get_data(as_text=True) for a in answers}
    assert len(bodies) == 1, summary
    replayed = [a.headers.get("Idempotent-Replayed") for a in answers]
    assert replayed.count("true") == RACERS - 1, replayed
    assert replayed.count(None) == 1, replayed


def test_parallel_captures_with_one_key_get_the_first_answer(
    api_app: Flask, tokens: Tokens, db_url: str
) -> None:
    admin = bearer(tokens.m2m("credits:admin"))
    client = api_app.test_client()
    assert client.post("/v1/wallets/kp_race/top-ups", json={"credits": 1000, "reason": "seed"},
                       headers=admin).status_code == 201
    hold = client.post("/v1/wallets/kp_race/holds", json={"credits": 300}, headers=admin)
    assert hold.status_code == 201, hold.json
    hold_id = hold.json["hold_id"]
    headers = {**admin, "Idempotency-Key": "capture-once"}

    answers = _race(api_app, lambda c: c.post(f"/v1/holds/{hold_id}/capture",
                                              json={"credits": 200}, headers=headers))

    _assert_one_answer(answers, 200)
    assert answers[0].json["status"] == "captured" and answers[0].json["balance"] == 800
    assert count_rows(db_url, "entries") == 3  # grant, hold, capture


def test_parallel_usage_with_one_key_on_a_wallet_funded_for_one(
    api_app: Flask, tokens: Tokens, db_url: str
) -> None:
    admin = bearer(tokens.m2m("credits:admin"))
    client = api_app.test_client()
    assert client.post("/v1/wallets/kp_race/top-ups", json={"credits": 50, "reason": "one"},
                       headers=admin).status_code == 201
    headers = {**admin, "Idempotency-Key": "usage-once"}

    answers = _race(api_app, lambda c: c.post(
        "/v1/wallets/kp_race/usage", json={"feature": "report_generation", "quantity": 1},
        headers=headers))

    _assert_one_answer(answers, 201)
    assert answers[0].json["balance"] == 0
    assert count_rows(db_url, "entries") == 2


def test_parallel_grants_with_one_key_create_one_wallet_once(
    api_app: Flask, tokens: Tokens, db_url: str
) -> None:
    """The wallet does not exist yet: the racers meet on its insert, not on a row lock."""
    headers = {**bearer(tokens.m2m("credits:admin")), "Idempotency-Key": "grant-once"}

    answers = _race(api_app, lambda c: c.post(
        "/v1/wallets/kp_fresh/top-ups", json={"credits": 70, "reason": "welcome"},
        headers=headers))

    _assert_one_answer(answers, 201)
    assert count_rows(db_url, "entries") == 1
    assert api_app.test_client().get(
        "/v1/wallets/kp_fresh", headers=bearer(tokens.m2m("credits:admin"))
    ).json["balance"] == 70


@pytest.fixture
def strict_default_isolation(db_url: str) -> Any:
    """A PostgreSQL server whose default isolation is SERIALIZABLE: the service must pin its
    own levels and behave the same."""
    if not db_url.startswith("postgresql"):
        pytest.skip("a server default isolation level is a PostgreSQL setting")
    name = make_url(db_url).database
    engine = create_engine(db_url, isolation_level="AUTOCOMMIT")

    def set_default(level: str) -> None:
        with engine.connect() as conn:
            conn.execute(text(f'ALTER DATABASE "{name}" SET default_transaction_isolation '
                              f"TO '{level}'"))

    yield set_default
    set_default("read committed")
    engine.dispose()


@pytest.mark.parametrize("level", ["serializable", "repeatable read"])
def test_server_default_isolation_changes_nothing(
    strict_default_isolation: Callable[[str], None], level: str, tokens: Tokens,
    request: pytest.FixtureRequest,
) -> None:
    # Set before the app (and its connection pool) exists: new sessions pick the default up.
    strict_default_isolation(level)
    api_app: Flask = request.getfixturevalue("api_app")
    admin = bearer(tokens.m2m("credits:admin"))
    client = api_app.test_client()
    assert client.post("/v1/wallets/kp_race/top-ups", json={"credits": RACERS * 10,
                                                             "reason": "seed"},
                       headers=admin).status_code == 201
    with api_app.extensions["kinde_credits"].store(True) as uow:
        level_seen = uow.conn.exec_driver_sql("SHOW transaction_isolation").scalar()
    assert level_seen == "read committed"

    # Distinct keys: every racer's debit must land, none may fail to serialize.
    counter = iter(range(RACERS))
    lock = threading.Lock()

    def debit(c: Any) -> Any:
        with lock:
            n = next(counter)
        return c.post("/v1/wallets/kp_race/usage", json={"feature": "file_conversion",
                                                         "quantity": 5},
                      headers={**admin, "Idempotency-Key": f"k{n}"})

    answers = _race(api_app, debit)
    assert [a.status_code for a in answers] == [201] * RACERS, [a.get_json() for a in answers]
    wallet = client.get("/v1/wallets/kp_race", headers=admin).json
    assert wallet["balance"] == 0

    # And the one-key race still replays the first answer.
    assert client.post("/v1/wallets/kp_race/top-ups", json={"credits": 50, "reason": "one"},
                       headers=admin).status_code == 201
    same = {**admin, "Idempotency-Key": "usage-once"}
    answers = _race(api_app, lambda c: c.post(
        "/v1/wallets/kp_race/usage", json={"feature": "report_generation", "quantity": 1},
        headers=same))
    _assert_one_answer(answers, 201)
