"""Which errors from COMMIT leave its outcome unknown (adapters.sql.engine.is_lost_commit):
a lost connection may have committed; an answer from the server (or SQLite busy) did not."""

from __future__ import annotations

import sqlite3
from typing import Any

import pytest
from sqlalchemy.exc import IntegrityError, InterfaceError, OperationalError

from adapters.sql.engine import is_lost_commit


class _DriverError(Exception):
    def __init__(self, sqlstate: str | None = None, sqlite_errorcode: int | None = None):
        super().__init__("driver error")
        if sqlstate is not None:
            self.sqlstate = sqlstate
        if sqlite_errorcode is not None:
            self.sqlite_errorcode = sqlite_errorcode


def _sqlite_error(code: int) -> sqlite3.OperationalError:
    error = sqlite3.OperationalError("database is locked" if code == 5 else "disk I/O error")
    error.sqlite_errorcode = code  # type: ignore[attr-defined]
    return error


@pytest.mark.parametrize(("error", "lost"), [
    (OperationalError("COMMIT", {}, _DriverError()), True),  # no answer from the server
    (OperationalError("COMMIT", {}, _DriverError(sqlstate="08006")), True),  # connection
    (InterfaceError("COMMIT", {}, _DriverError()), True),  # connection already closed
    (OperationalError("COMMIT", {}, _DriverError(sqlstate="40001")), False),  # serialization
    (OperationalError("COMMIT", {}, _DriverError(sqlstate="57014")), False),  # cancelled
    (IntegrityError("COMMIT", {}, _DriverError(sqlstate="23505")), False),  # deferred unique
    (OperationalError("COMMIT", {}, _sqlite_error(5)), False),  # SQLITE_BUSY: not committed
    (OperationalError("COMMIT", {}, _sqlite_error(10)), True),  # SQLITE_IOERR
    (RuntimeError("not a database error"), False),
])
def test_errors_from_commit_that_may_have_committed(error: Any, lost: bool) -> None:
    assert is_lost_commit(error) is lost


def test_an_invalidated_connection_is_lost_whatever_the_driver_said() -> None:
    error = OperationalError("COMMIT", {}, _DriverError(sqlstate="40001"),
                             connection_invalidated=True)
    assert is_lost_commit(error) is True


def test_both_clients_retry_outcome_unknown_with_the_same_key() -> None:
    """The shared client contract retries a 503 (same Idempotency-Key) and, once retries run
    out, raises ServiceUnavailable for `outcome_unknown`."""
    import json
    from pathlib import Path

    from kinde_credits_client import ServiceUnavailable
    from kinde_credits_client.errors import error_for

    contract = json.loads((Path(__file__).resolve().parents[2] / "clients" /
                           "operations.json").read_text())
    assert "outcome_unknown" in contract["exhausted_retries"]["codes"]
    assert 503 in contract["retry"]["statuses"]
    error = error_for(503, {"error": {"code": "outcome_unknown", "message": "retry"}})
    assert type(error) is ServiceUnavailable and error.code == "outcome_unknown"
