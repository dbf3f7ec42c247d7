"""A write whose COMMIT answer is lost answers 503 `outcome_unknown`, never "not applied"
(issue 23; DESIGN, "Who may spend the customer's money", last bullet), on both databases.

The connection is dropped for real right after the server committed: the dialect's COMMIT runs,
then (PostgreSQL) the driver connection is closed and the driver's own "server closed the
connection" error raised, or (SQLite) the driver's "disk I/O error". The balance has moved; the
answer says the outcome is unknown and to retry with the same Idempotency-Key; the retry returns
the first result and charges nothing twice. Errors before COMMIT keep their answers.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from typing import Any

import psycopg
import pytest
from flask.testing import FlaskClient
from sqlalchemy import Engine, event

from app.bootstrap import Container
from tests.http_fixtures import *  # noqa: F403
from tests.http_fixtures import Tokens, bearer, count_rows, table_counts


class CommitDropper:
    """Makes the next `armed` COMMITs land and then lose their connection."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self.armed = 0
        self.dropped = 0
        self._original = engine.dialect.do_commit
        engine.dialect.do_commit = self._do_commit  # type: ignore[method-assign]

    def _do_commit(self, connection: Any) -> None:
        if not self.armed:
            self._original(connection)
            return
        self.armed -= 1
        self.dropped += 1
        postgres = self.engine.dialect.name == "postgresql"
        self._original(connection)  # the server has committed ...
        if postgres:
            # ... and the connection drops before its answer is read.
            getattr(connection, "dbapi_connection", connection).close()
            raise psycopg.OperationalError(
                "consuming input failed: server closed the connection unexpectedly")
        raise sqlite3.OperationalError("disk I/O error")

    def restore(self) -> None:
        self.engine.dialect.do_commit = self._original  # type: ignore[method-assign]


@pytest.fixture
def dropper(api_container: Container) -> Iterator[CommitDropper]:
    drop = CommitDropper(api_container.store.engine)
    yield drop
    drop.restore()


@pytest.fixture
def admin(tokens: Tokens) -> dict[str, str]:
    return bearer(tokens.m2m("credits:admin"))


@pytest.fixture
def funded(client: FlaskClient, admin: dict[str, str]) -> str:
    answer = client.post("/v1/wallets/kp_lost/top-ups",
                         json={"credits": 1000, "reason": "seed"}, headers=admin)
    assert answer.status_code == 201
    return "kp_lost"


def _balance(client: FlaskClient, admin: dict[str, str]) -> int:
    answer = client.get("/v1/wallets/kp_lost", headers=admin)
    assert answer.status_code == 200
    return int(answer.json["balance"])


def test_lost_commit_of_usage_is_outcome_unknown_and_retry_replays(
    client: FlaskClient, admin: dict[str, str], funded: str, dropper: CommitDropper,
    db_url: str,
) -> None:
    headers = {**admin, "Idempotency-Key": "use-1"}
    dropper.armed = 1
    answer = client.post("/v1/wallets/kp_lost/usage",
                         json={"feature": "api_call", "quantity": 7}, headers=headers)
    assert dropper.dropped == 1
    assert answer.status_code == 503, answer.get_data(as_text=True)
    error = answer.json["error"]
    assert error["code"] == "outcome_unknown"
    assert "Idempotency-Key" in error["message"] and "not applied" not in error["message"]
    charged = 1000 - _balance(client, admin)
    assert charged > 0  # the commit landed: the balance moved
    entries = count_rows(db_url, "entries")

    retry = client.post("/v1/wallets/kp_lost/usage",
                        json={"feature": "api_call", "quantity": 7}, headers=headers)
    assert retry.status_code == 201, retry.get_data(as_text=True)
    assert retry.headers.get("Idempotent-Replayed") == "true"
    assert retry.json["balance"] == 1000 - charged
    assert _balance(client, admin) == 1000 - charged  # charged once
    assert count_rows(db_url, "entries") == entries


def test_lost_commit_of_a_batch_is_outcome_unknown_per_record_and_retry_replays(
    client: FlaskClient, admin: dict[str, str], funded: str, dropper: CommitDropper,
    db_url: str,
) -> None:
    body = {"records": [{"wallet_id": "kp_lost", "feature": "api_call", "quantity": 1}
                        for _ in range(5)]}
    headers = {**admin, "Idempotency-Key": "batch-1"}
    dropper.armed = 1
    answer = client.post("/v1/usage/batch", json=body, headers=headers)
    assert dropper.dropped == 1
    assert answer.status_code == 200, answer.get_data(as_text=True)
    results = answer.json["results"]
    assert {r["status"] for r in results} == {503}, results
    assert {r["error"]["code"] for r in results} == {"outcome_unknown"}
    assert all("Idempotency-Key" in r["error"]["message"] for r in results)
    assert not any("not applied" in r["error"]["message"] for r in results)
    spent = 1000 - _balance(client, admin)
    assert spent > 0
    entries = count_rows(db_url, "entries")

    retry = client.post("/v1/usage/batch", json=body, headers=headers)
    assert [r["status"] for r in retry.json["results"]] == [201] * 5
    assert all(r["replayed"] for r in retry.json["results"])
    assert _balance(client, admin) == 1000 - spent
    assert count_rows(db_url, "entries") == entries


def test_failure_before_commit_still_says_not_applied(
    client: FlaskClient, admin: dict[str, str], funded: str, dropper: CommitDropper,
    db_url: str,
) -> None:
    """The connection fails on the ledger INSERT, before COMMIT: nothing was applied."""
    engine = dropper.engine
    postgres = engine.dialect.name == "postgresql"
    failed: list[str] = []

    def fail_insert(_conn: Any, _cursor: Any, statement: str, *_args: Any) -> None:
        if statement.lstrip().upper().startswith("INSERT INTO ENTRIES"):
            failed.append(statement)
            raise (psycopg.OperationalError if postgres else sqlite3.OperationalError)(
                "connection lost before COMMIT")

    before = table_counts(db_url)
    event.listen(engine, "before_cursor_execute", fail_insert)
    try:
        answer = client.post("/v1/wallets/kp_lost/usage",
                             json={"feature": "api_call", "quantity": 7},
                             headers={**admin, "Idempotency-Key": "use-2"})
    finally:
        event.remove(engine, "before_cursor_execute", fail_insert)
    assert failed
    assert answer.status_code == 500
    assert answer.json["error"]["code"] == "internal_error"
    assert table_counts(db_url) == before
