"""SQL idempotency keys: one stored answer per (scope, key), claimed before the work it answers.

Keys are claimed first (an insert that waits for a concurrent holder of the same key), so
racing requests with one key are serialised on the key and the losers read the winner's stored
answer, on both databases.
"""

from __future__ import annotations

import json
from datetime import datetime
from functools import cache
from typing import Any

from sqlalchemy import Connection, bindparam, insert, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.sql.dml import ReturningInsert

from adapters.sql import dialect
from adapters.sql import schema as t
from app.services.ports import DuplicateKey, StoredResponse

_k = t.idempotency_keys.c
# Statements built once (building one costs several times what executing it does; SQLAlchemy
# caches the compiled form per dialect): the claim differs by dialect, the rest do not.
_GET = select(_k.request_hash, _k.status_code, _k.response).where(
    _k.scope == bindparam("scope"), _k.key == bindparam("key"))
_FILL = (
    update(t.idempotency_keys)
    .where(_k.scope == bindparam("k_scope"), _k.key == bindparam("k_key"))
    .values(request_hash=bindparam("k_hash"), status_code=bindparam("k_status"),
            response=bindparam("k_response"))
)
_INSERT = insert(t.idempotency_keys)


@cache
def _claim_statement(postgresql: bool) -> ReturningInsert[tuple[str]]:
    return (
        dialect.insert_ignore_for(postgresql, t.idempotency_keys)
        .values(
            scope=bindparam("scope"),
            key=bindparam("key"),
            request_hash=bindparam("request_hash"),
            status_code=0,
            response="null",
            created_at=bindparam("created_at"),
        )
        # RETURNING, not rowcount: SQLAlchemy does not report a row count for an INSERT.
        .returning(_k.scope)
    )


class SqlIdempotencyRepository:
    def __init__(self, conn: Connection) -> None:
        self.conn = conn
        # Keys this transaction claimed: their row exists (as a placeholder) and `put` fills it.
        self._claimed: set[tuple[str, str]] = set()

    def get(self, scope: str, key: str) -> StoredResponse | None:
        row = self.conn.execute(_GET, {"scope": scope, "key": key}).first()
        if row is None:
            return None
        return StoredResponse(row.request_hash, row.status_code, json.loads(row.response))

    def claim(
        self, scope: str, key: str, request_hash: str, now: datetime
    ) -> StoredResponse | None:
        """Take the key for this transaction, or return the answer stored with it.

        The insert waits while another open transaction holds the same key (PostgreSQL's
        unique index; SQLite has one writer anyway). If that one commits, the key is taken and
        the stored answer is read with a fresh statement, which under READ COMMITTED sees it;
        if it rolls back (a refused request stores nothing), the key is ours. The placeholder
        row is never visible to others: `put` fills it before the transaction commits.
        """
        inserted = self.conn.execute(
            _claim_statement(dialect.is_postgresql(self.conn)),
            {"scope": scope, "key": key, "request_hash": request_hash, "created_at": now},
        ).first()
        if inserted is not None:
            self._claimed.add((scope, key))
            return None
        stored = self.get(scope, key)
        if stored is None:  # keys are kept for good, so this is a race we cannot explain
            raise DuplicateKey(f"idempotency key {scope}/{key}")
        return stored

    def put(
        self,
        scope: str,
        key: str,
        request_hash: str,
        status_code: int,
        body: dict[str, Any],
        now: datetime,
    ) -> None:
        response = json.dumps(body, separators=(",", ":"))
        if (scope, key) in self._claimed:
            self._claimed.discard((scope, key))
            filled = self.conn.execute(_FILL, {
                "k_scope": scope, "k_key": key, "k_hash": request_hash,
                "k_status": status_code, "k_response": response})
            if filled.rowcount:
                return
            # The placeholder is gone: a savepoint it was claimed under was rolled back.
        # A plain INSERT: the primary key turns a racing duplicate into an error and a rollback.
        try:
            self.conn.execute(_INSERT, {
                "scope": scope, "key": key, "request_hash": request_hash,
                "status_code": status_code, "response": response, "created_at": now})
        except IntegrityError as exc:
            raise DuplicateKey(f"idempotency key {scope}/{key}") from exc
