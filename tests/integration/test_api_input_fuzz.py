"""Bad input on every JSON endpoint, on SQLite and PostgreSQL: a clear 4xx, nothing written,
never a 5xx, and never SQL in the answer.

Found in review: a NUL character in any stored text (a grant reason, an idempotency key, an
e-mail) answered 500 on PostgreSQL, whose text columns refuse it, while SQLite stored it; a
JSON integer of 4,300+ digits answered 500 on both (Python's int-string conversion limit).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from flask.testing import FlaskClient
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import create_engine, text

from tests.http_fixtures import *  # noqa: F403
from tests.http_fixtures import Tokens, bearer

HUGE = "9" * 4400  # past Python's 4,300-digit int conversion limit
BIG = [2**63, 2**64, -(2**63) - 1, 10**30, 10**4000]
NUL = "a\x00b"

# (method, path, body): a body is JSON text when a str (so it can hold what json.dumps cannot
# make, like a 4,400-digit literal), else a value to serialise.
Case = tuple[str, str, Any]

USAGE = "/v1/wallets/kp_a/usage"
TOPUP = "/v1/wallets/kp_a/top-ups"
HOLDS = "/v1/wallets/kp_a/holds"
ALERTS = "/v1/wallets/kp_a/alerts"
RECHARGE = "/v1/wallets/kp_a/auto-recharge"
BATCH = "/v1/usage/batch"
CAPTURE = "/v1/holds/{hold}/capture"
RELEASE = "/v1/holds/{hold}/release"

# Where each endpoint takes a number, and a valid body around it.
NUMBER_FIELDS: list[tuple[str, str, dict[str, Any], str]] = [
    ("post", USAGE, {"feature": "api_call"}, "quantity"),
    ("post", TOPUP, {"reason": "x"}, "credits"),
    ("post", TOPUP, {"credits": 5, "reason": "x"}, "expires_after_days"),
    ("post", HOLDS, {}, "credits"),
    ("post", HOLDS, {"credits": 5}, "expires_in_seconds"),
    ("post", HOLDS, {"feature": "api_call"}, "quantity"),
    ("post", CAPTURE, {}, "credits"),
    ("put", RECHARGE, {"enabled": False, "bundle": "starter"}, "threshold_credits"),
]

# Where each endpoint takes text that could be stored.
TEXT_FIELDS: list[tuple[str, str, dict[str, Any], str]] = [
    ("post", USAGE, {"quantity": 1}, "feature"),
    ("post", TOPUP, {"credits": 5}, "reason"),
    ("post", TOPUP, {}, "bundle"),
    ("post", HOLDS, {}, "feature"),
    ("put", RECHARGE, {"enabled": False}, "bundle"),
    ("put", ALERTS, {}, "notify_email"),
]


def _raw(base: dict[str, Any], field: str, literal: str) -> str:
    """`base` plus `field` as JSON text with `literal` written verbatim as its value."""
    return json.dumps({**base, field: "__literal__"}).replace('"__literal__"', literal)


def _number_cases() -> list[Case]:
    cases: list[Case] = []
    for method, path, base, field in NUMBER_FIELDS:
        cases += [(method, path, _raw(base, field, HUGE)),
                  (method, path, _raw(base, field, "-" + HUGE))]
        cases += [(method, path, {**base, field: n}) for n in BIG]
    cases += [
        ("put", ALERTS, _raw({}, "thresholds_credits", f"[{HUGE}]")),
        ("put", ALERTS, {"thresholds_credits": [2**63]}),
        ("put", ALERTS, {"thresholds_percent": [2**64]}),
        ("post", BATCH, _raw({}, "records", _raw(
            {"wallet_id": "kp_a", "feature": "api_call"}, "quantity", HUGE).join("[]"))),
        ("post", BATCH, {"records": [{"wallet_id": "kp_a", "feature": "api_call",
                                      "quantity": 2**63}]}),
        ("get", "/v1/wallets/kp_a/ledger?limit=" + HUGE, None),
        ("get", "/v1/wallets/kp_a/ledger?limit=9223372036854775808", None),
        ("get", "/v1/wallets/kp_a/ledger?cursor=" + HUGE, None),
    ]
    return cases


def _text_cases() -> list[Case]:
    cases: list[Case] = []
    for method, path, base, field in TEXT_FIELDS:
        for bad in (NUL, "\x00", "x\ud800", "\udfff"):
            value = f"{bad}@example.com" if field == "notify_email" else bad
            cases.append((method, path, {**base, field: value}))
    record = {"wallet_id": "kp_a", "feature": "api_call", "quantity": 1}
    cases += [
        ("post", BATCH, {"records": [{**record, "idempotency_key": NUL}]}),
        ("post", BATCH, {"records": [{**record, "feature": NUL}]}),
        ("post", BATCH, {"records": [{**record, "wallet_id": "kp_a\x00"}]}),
        ("post", BATCH, {"records": [record, {**record, "idempotency_key": "k\ud800"}]}),
        ("put", ALERTS, {"notify_email": "alice@exa\x00mple.com"}),
        ("post", USAGE, {"feature": "api_call", "quantity": 1, "extra\x00": 1}),
        ("post", TOPUP, {"credits": 5, "reason": "x", NUL: NUL}),
        ("get", "/v1/wallets/kp_a/ledger?cursor=1%00", None),
        ("get", "/v1/wallets/kp_a/ledger?limit=5%00", None),
    ]
    return cases


def _shape_cases() -> list[Case]:
    """Wrong types, empties and odd JSON on every endpoint."""
    deep = '{"deep": ' + '{"a": ' * 5000 + "{}" + "}" * 5000 + "}"
    cases: list[Case] = []
    for method, path in (("post", USAGE), ("post", TOPUP), ("post", HOLDS),
                         ("post", CAPTURE), ("post", RELEASE), ("put", ALERTS),
                         ("put", RECHARGE), ("post", BATCH)):
        cases += [
            (method, path, "[]"), (method, path, '"text"'), (method, path, "17"),
            (method, path, "null"), (method, path, "{"), (method, path, "NaN"),
            (method, path, '{"": ""}'), (method, path, "[" * 100_000 + "]" * 100_000),
            (method, path, deep),
        ]
    cases += [
        ("post", USAGE, {"feature": "", "quantity": 1}),
        ("post", USAGE, {"feature": "api_call", "quantity": "1"}),
        ("post", USAGE, {"feature": "api_call", "quantity": 1.5}),
        ("post", USAGE, '{"feature": "api_call", "quantity": NaN}'),
        ("post", USAGE, '{"feature": "api_call", "quantity": Infinity}'),
        ("post", USAGE, {"feature": "api_call", "quantity": True}),
        ("post", USAGE, {"feature": ["api_call"], "quantity": 1}),
        ("post", USAGE, {"feature": {"x": 1}, "quantity": 1}),
        ("post", USAGE, {"feature": "api_call", "quantity": 1, "occurred_at": ""}),
        ("post", USAGE, {"feature": "api_call", "quantity": 1, "occurred_at": 1e300}),
        ("post", TOPUP, {"credits": 5, "reason": ""}),
        ("post", TOPUP, {"credits": 5, "reason": "   "}),
        ("post", TOPUP, {"credits": 5, "reason": "x" * 201}),
        ("post", TOPUP, {"bundle": ""}),
        ("post", HOLDS, {"credits": 0}),
        ("post", HOLDS, {"credits": -1}),
        ("post", HOLDS, {"credits": 5, "expires_in_seconds": 0}),
        ("put", ALERTS, {"thresholds_percent": "50"}),
        ("put", ALERTS, {"thresholds_percent": [[50]]}),
        ("put", ALERTS, {"thresholds_credits": [-5]}),
        ("put", ALERTS, {"notify_email": ""}),
        ("put", ALERTS, {"notify_email": "x" * 400 + "@example.com"}),
        ("put", RECHARGE, {"enabled": None}),
        ("put", RECHARGE, {"enabled": False, "bundle": ""}),
        ("post", BATCH, {"records": []}),
        ("post", BATCH, {"records": {}}),
        ("post", BATCH, {"records": [None]}),
        ("post", BATCH, {"records": [{"wallet_id": "", "feature": "api_call", "quantity": 1}]}),
        ("post", BATCH, {"records": [{"wallet_id": "kp_a", "feature": "api_call",
                                      "quantity": 1, "idempotency_key": ""}]}),
        ("post", BATCH, {"records": [{"wallet_id": "kp_a", "feature": "api_call",
                                      "quantity": 1, "idempotency_key": "k" * 256}]}),
    ]
    return cases


@pytest.fixture
def admin(tokens: Tokens) -> dict[str, str]:
    return bearer(tokens.m2m("credits:admin"))


@pytest.fixture
def hold_id(client: FlaskClient, admin: dict[str, str]) -> str:
    seeded = client.post(TOPUP, json={"credits": 100, "reason": "seed"}, headers=admin)
    assert seeded.status_code == 201
    hold = client.post(HOLDS, json={"credits": 10}, headers=admin)
    assert hold.status_code == 201
    return str(hold.json["hold_id"])


def _send(client: FlaskClient, headers: dict[str, str], hold: str, case: Case) -> Any:
    method, path, body = case
    path = path.format(hold=hold)
    if body is None:
        return getattr(client, method)(path, headers=headers)
    data = body if isinstance(body, str) else json.dumps(body)
    return getattr(client, method)(path, data=data.encode("utf-8", "surrogatepass"),
                                   headers=headers, content_type="application/json")


def _refusal_problem(answer: Any, codes: tuple[str, ...]) -> str | None:
    """Why `answer` is not a clean refusal (a 4xx JSON error with one of `codes`, no SQL)."""
    text = answer.get_data(as_text=True)
    if answer.status_code not in (400, 404, 409, 422):
        return f"status {answer.status_code}: {text[:300]}"
    body = answer.get_json(silent=True) or {}
    if not isinstance(body, dict) or body.get("error", {}).get("code") not in codes:
        return f"not one of {codes}: {text[:300]}"
    leaks = [w for w in ("INSERT", "SELECT", "UPDATE ", "psycopg", "sqlalchemy", "Traceback")
             if w in text]
    return f"leaks {leaks}: {text[:300]}" if leaks else None


@pytest.fixture
def counts(db_url: str) -> Iterator[Callable[[], dict[str, int]]]:
    """Row counts and balance sums of every table a write could touch (one engine per test:
    the tables below run hundreds of requests)."""
    engine = create_engine(db_url)

    def read() -> dict[str, int]:
        with engine.connect() as conn:
            found = {table: int(conn.execute(text(f"SELECT COUNT(*) FROM {table}")).scalar_one())
                     for table in ("wallets", "entries", "blocks", "holds", "idempotency_keys",
                                   "outbox")}
            balance, held = conn.execute(
                text("SELECT COALESCE(SUM(balance), 0), COALESCE(SUM(held), 0) FROM wallets")
            ).one()
        return {**found, "balance_sum": int(balance), "held_sum": int(held)}

    yield read
    engine.dispose()


def _check_all(client: FlaskClient, headers: dict[str, str], hold: str, cases: list[Case],
               counts: Callable[[], dict[str, int]], *, status: int | None = 422,
               codes: tuple[str, ...] = ("invalid_request",)) -> None:
    """Send every case; collect every one that was not refused cleanly, then fail once."""
    problems: list[str] = []
    for case in cases:
        before = counts()
        answer = _send(client, headers, hold, case)
        problem = _refusal_problem(answer, codes)
        if status is not None and answer.status_code != status:
            problem = problem or f"status {answer.status_code}, wanted {status}"
        if problem is None and counts() != before:
            problem = "something was written"
        if problem is not None:
            problems.append(f"{case[0]} {case[1][:60]} {str(case[2])[:80]!r}: {problem}")
    assert not problems, "\n".join(problems)


def test_overlarge_numbers_are_422(client: FlaskClient, admin: dict[str, str], hold_id: str,
                                   counts: Callable[[], dict[str, int]]) -> None:
    _check_all(client, admin, hold_id, _number_cases(), counts)


def test_unstorable_text_is_422(client: FlaskClient, admin: dict[str, str], hold_id: str,
                                counts: Callable[[], dict[str, int]]) -> None:
    _check_all(client, admin, hold_id, _text_cases(), counts)


@pytest.mark.parametrize("key", ["k\x00", "\x00", "a\x00" * 10, "tab\there", "bell\x07"])
def test_unstorable_idempotency_key_header_is_422(
    client: FlaskClient, admin: dict[str, str], hold_id: str,
    counts: Callable[[], dict[str, int]], key: str,
) -> None:
    cases: list[Case] = [
        ("post", USAGE, {"feature": "api_call", "quantity": 1}),
        ("post", TOPUP, {"credits": 5, "reason": "x"}),
        ("post", HOLDS, {"credits": 5}),
        ("post", CAPTURE, {}),
        ("post", RELEASE, {}),
        ("put", ALERTS, {"notify_at_zero": True}),
        ("put", RECHARGE, {"enabled": False}),
        ("post", BATCH, {"records": [{"wallet_id": "kp_a", "feature": "api_call",
                                      "quantity": 1}]}),
    ]
    _check_all(client, {**admin, "Idempotency-Key": key}, hold_id, cases, counts)


def test_malformed_bodies_are_refused(client: FlaskClient, admin: dict[str, str], hold_id: str,
                                      counts: Callable[[], dict[str, int]]) -> None:
    _check_all(client, admin, hold_id, _shape_cases(), counts, status=None,
               codes=("invalid_request", "unknown_feature", "unknown_bundle"))


_json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False)
    | st.text(max_size=40),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=10), inner,
                                                                max_size=4),
    max_leaves=12,
)
_numbers = st.integers(min_value=-(2**70), max_value=2**70) | st.sampled_from(BIG)
_texts = st.text(max_size=60) | st.sampled_from([NUL, "\x00", "\ud800", "", " "])
_fields = {
    "feature": _texts | st.sampled_from(["api_call", "report_generation", "storage"]),
    "quantity": _numbers, "credits": _numbers, "reason": _texts,
    "expires_after_days": _numbers, "expires_in_seconds": _numbers,
    "bundle": _texts | st.just("starter"), "threshold_credits": _numbers,
    "enabled": st.booleans() | _json_values, "notify_email": _texts,
    "thresholds_percent": st.lists(_numbers, max_size=3) | _json_values,
    "thresholds_credits": st.lists(_numbers, max_size=3) | _json_values,
    "notify_at_zero": st.booleans() | _json_values,
    "occurred_at": _texts, "records": st.lists(
        st.fixed_dictionaries({"wallet_id": st.sampled_from(["kp_a", "org_b", "kp_a\x00"]),
                               "feature": st.just("api_call"), "quantity": _numbers},
                              optional={"idempotency_key": _texts}), max_size=3),
    "extra": _json_values,
}
_bodies = st.dictionaries(st.sampled_from(sorted(_fields)), st.none(), max_size=4).flatmap(
    lambda keys: st.fixed_dictionaries({k: _fields[k] for k in keys})
)
_endpoints = st.sampled_from([("post", USAGE), ("post", TOPUP), ("post", HOLDS),
                              ("post", CAPTURE), ("post", RELEASE), ("put", ALERTS),
                              ("put", RECHARGE), ("post", BATCH)])


@settings(max_examples=60, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(endpoint=_endpoints, body=_bodies,
       key=st.none() | st.text(st.characters(max_codepoint=0xFF), max_size=60))
def test_fuzzed_requests_never_answer_5xx(
    client: FlaskClient, admin: dict[str, str], hold_id: str,
    endpoint: tuple[str, str], body: dict[str, Any], key: str | None,
) -> None:
    headers = dict(admin)
    if key is not None and "\n" not in key and "\r" not in key:
        headers["Idempotency-Key"] = key
    answer = _send(client, headers, hold_id, (*endpoint, body))
    assert answer.status_code < 500, (endpoint, body, answer.get_data(as_text=True)[:500])
    assert answer.is_json and ("error" in answer.json) == (answer.status_code >= 400)


def test_malformed_wallet_id_in_the_path_is_404(
    client: FlaskClient, admin: dict[str, str], hold_id: str,
    counts: Callable[[], dict[str, int]],
) -> None:
    """Ids in the path are matched by the route: a NUL or a surrogate makes no route match, so
    it answers like a wallet out of reach (the documented rule for malformed ids)."""
    before = counts()
    for path in ("/v1/wallets/kp_a%00", "/v1/wallets/kp_a%00/usage", "/v1/holds/h%00/capture",
                 "/v1/wallets/kp_%ED%A0%80/top-ups"):
        method = client.get if path.endswith("%00") else client.post
        answer = method(path, json={"feature": "api_call", "quantity": 1, "credits": 1},
                        headers=admin)
        assert answer.status_code == 404 and answer.json["error"]["code"] == "not_found", path
    assert counts() == before


def test_database_failure_is_a_generic_500_without_sql(
    client: FlaskClient, admin: dict[str, str], hold_id: str, db_url: str
) -> None:
    """An error the database raises (here: a table gone missing) must not reach the client
    with its SQL or parameters; the generic handler answers, and the log keeps the detail."""
    engine = create_engine(db_url)
    try:
        with engine.begin() as conn:
            conn.execute(text("ALTER TABLE idempotency_keys RENAME TO idempotency_keys_gone"))
        answer = client.post(USAGE, json={"feature": "api_call", "quantity": 1},
                             headers={**admin, "Idempotency-Key": "secret-key-value"})
        body = answer.get_data(as_text=True)
        assert answer.status_code == 500
        assert answer.json == {"error": {"code": "internal_error", "message":
                                         "internal error; the request was not applied"}}
        for leak in ("idempotency_keys", "secret-key-value", "INSERT", "SELECT"):
            assert leak not in body
    finally:
        with engine.begin() as conn:
            conn.execute(text("ALTER TABLE idempotency_keys_gone RENAME TO idempotency_keys"))
        engine.dispose()
