"""Verified events with malformed contents (issues 12 and 13, webhook part) on SQLite and
PostgreSQL: a NUL character in any stored text, timestamps that cannot be converted, wrong
types, huge numbers and deep nesting are kept as `parked` with a reason and answered 200, and a
redelivery is a `duplicate`; nothing answers 5xx, and no answer echoes SQL or exception text.
A 5xx is only for the database being unreachable, and its body says nothing about why."""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import pytest

from adapters.tokens import JwksKeySource
from app.bootstrap import build_container
from app.domain.catalog import Catalog
from tests.conftest import FakeClock
from tests.fakes.jwks_server import JwksServer
from tests.webhook_fixtures import SigningKey, WebhookEnv, event, kinde_settings, meter

# Fixtures: jwks, signing_key, other_key, webhook_env.
pytest_plugins = ["tests.webhook_fixtures"]

# What must never reach a response body: SQL, driver names, Python exception text.
LEAKS = ("SQL", "INSERT", "UPDATE", "SELECT", "psycopg", "sqlite", "Error", "Traceback",
         "\\u0000", "\x00")


def assert_no_leak(text: str) -> None:
    for word in LEAKS:
        assert word not in text, f"{word!r} in response body: {text[:500]}"


def user_created(**user: Any) -> dict[str, Any]:
    return event("user.created", {"user": {"id": "kp_nul", "email": "n@example.com", **user}})


def _set(payload: dict[str, Any], path: str, value: Any) -> dict[str, Any]:
    out = copy.deepcopy(payload)
    node = out
    parts = path.split(".")
    for part in parts[:-1]:
        node = node[part]
    node[parts[-1]] = value
    return out


AGREEMENT = {"customer_id": "customer_nul", "agreement_id": "agreement_nul",
             "user_id": "kp_nul2", "plan_code": "pro"}

NUL_CASES = [
    ("event_id", user_created(), "event_id", "event_\x00abc"),
    ("type", user_created(), "type", "user.created\x00"),
    ("user-id", user_created(), "data.user.id", "kp_a\x00b"),
    ("email", user_created(), "data.user.email", "a\x00b@example.com"),
    ("customer-id", event("customer.agreement_created", AGREEMENT), "data.customer_id",
     "customer_\x00x"),
    ("agreement-id", event("customer.agreement_created", AGREEMENT), "data.agreement_id",
     "agreement_\x00x"),
    ("plan-code", event("customer.agreement_created", AGREEMENT), "data.plan_code", "pro\x00"),
    ("org-code", event("customer.agreement_created", AGREEMENT), "data.user_id", "org_a\x00"),
    ("feature-code", meter("customer_nul", "2"), "data.feature_code", "storage_gb\x00"),
    ("meter-type", meter("customer_nul", "2"), "data.meter_type_code", "absolute\x00"),
    ("period-start", meter("customer_nul", "2", absolute=True), "data.period_start",
     "2026-11-01\x00"),
    ("timestamp", user_created(), "timestamp", "2026-11-24T12:00:00\x00Z"),
]


def _deliver_twice(env: WebhookEnv, payload: dict[str, Any]) -> dict[str, Any]:
    first = env.deliver(payload)
    assert first.status_code == 200, first.get_data(as_text=True)
    assert_no_leak(first.get_data(as_text=True))
    body = first.get_json()
    again = env.deliver(payload)
    assert again.status_code == 200, again.get_data(as_text=True)
    assert again.get_json()["status"] == "duplicate"
    assert_no_leak(again.get_data(as_text=True))
    return dict(body)


@pytest.mark.parametrize("payload, path, value", [c[1:] for c in NUL_CASES],
                         ids=[c[0] for c in NUL_CASES])
def test_nul_in_stored_text_is_parked_not_5xx(
    webhook_env: WebhookEnv, payload: dict[str, Any], path: str, value: str
) -> None:
    bad = _set(payload, path, value)
    body = _deliver_twice(webhook_env, bad)
    assert body["status"] == "parked"
    assert "NUL" in body["reason"] or "control character" in body["reason"]
    row = webhook_env.inbox_row(body["event_id"])
    assert row is not None and row.status == "parked"
    assert "\x00" not in (row.park_reason or "")
    # The event is kept whole: its payload (JSON-escaped) and raw body are stored.
    assert row.payload.get("data") is not None
    # Nothing was credited or debited for it.
    assert webhook_env.counts()["entries"] == 0


def test_nul_in_webhook_id_header_is_dropped(webhook_env: WebhookEnv) -> None:
    payload = user_created()
    r = webhook_env.deliver(payload, webhook_id="msg_\x00x")
    assert r.status_code == 200, r.get_data(as_text=True)
    assert r.get_json()["status"] == "processed"
    row = webhook_env.inbox_row(payload["event_id"])
    assert row.webhook_id is None


@pytest.mark.parametrize("field, value", [
    ("timestamp", "0001-01-01T00:00:00+01:00"),  # overflows when converted to UTC
    ("timestamp", "9999-12-31T23:59:59-01:00"),
    ("event_timestamp", "0001-01-01T00:00:00+01:00"),
    ("timestamp", "yesterday"),
    ("timestamp", {"nested": [1, 2]}),
])
def test_unconvertible_timestamp_is_parked_and_answered_200(
    webhook_env: WebhookEnv, field: str, value: Any
) -> None:
    payload = {**user_created(), field: value}
    body = _deliver_twice(webhook_env, payload)
    assert body["status"] == "parked"
    assert field in body["reason"]
    assert webhook_env.inbox_row(payload["event_id"]).status == "parked"
    assert webhook_env.counts()["entries"] == 0


def _deep(depth: int) -> Any:
    node: Any = "bottom"
    for _ in range(depth):
        node = {"x": node}
    return node


# (A `type` or `event_id` that is not a non-empty string is refused by the verifier, 401.)
MALFORMED = [
    ("data-list", event("user.created", [1, 2, 3]), "data"),  # type: ignore[arg-type]
    ("data-string", event("customer.meter_usage_updated", "x"), "data"),  # type: ignore[arg-type]
    ("event-id-too-long", {**user_created(), "event_id": "e" * 500}, "event_id"),
    ("huge-exponent", meter("customer_nul", "1e999999999"), "meter value"),
    ("huge-int", meter("customer_nul", 10**4000), "meter value"),
    ("huge-float", meter("customer_nul", 1e308), "meter value"),
    ("deep-nesting", event("user.created", {"user": {"id": "kp_deep"}, "extra": _deep(300)}),
     "nested"),
    ("very-deep-nesting", event("user.created", {"user": {"id": "kp_deep"},
                                                "extra": _deep(900)}), "nested"),
    ("wrong-types", event("customer.meter_usage_updated",
                          {"customer_id": {"id": [1]}, "feature_code": ["storage_gb"],
                           "meter_value": {"v": 1}, "meter_type_code": 7}), "customer"),
]


@pytest.mark.parametrize("payload, why", [c[1:] for c in MALFORMED], ids=[c[0] for c in MALFORMED])
def test_malformed_verified_event_is_parked_never_5xx(
    webhook_env: WebhookEnv, payload: dict[str, Any], why: str
) -> None:
    body = _deliver_twice(webhook_env, payload)
    assert body["status"] == "parked", body
    assert why in body["reason"], body
    row = webhook_env.inbox_row(body["event_id"])
    assert row is not None and row.status == "parked"
    assert webhook_env.counts()["entries"] == 0
    # The worker and the CLI can read the parked row back (no crash on its payload).

    service = webhook_env.container.webhooks
    assert body["event_id"] in {e.event_id for e in service.events(status="parked")}
    service.retry_parked(force=True)
    assert webhook_env.inbox_row(body["event_id"]).status == "parked"


def test_extractor_uses_a_later_valid_spelling(webhook_env: WebhookEnv) -> None:
    # The first spelling of the customer id is too long (and the user id is not a user id):
    # later spellings are valid and are used, instead of parking as if none were given.
    mapping = event("customer.agreement_created", {
        "customer_id": "c" * 200, "customer": {"id": "customer_later"},
        "agreement_id": "x\x00", "agreement": {"id": "agreement_later"},
        "user_id": "not-a-user", "user": {"id": "kp_later"}})
    r = webhook_env.deliver(mapping)
    assert r.status_code == 200 and r.get_json()["status"] == "processed", r.get_json()
    with webhook_env.container.store(False) as uow:
        profile = uow.wallets.profile("kp_later")
    assert profile is not None
    assert (profile.billing_customer_id, profile.agreement_id) == (
        "customer_later", "agreement_later")


def test_database_down_is_503_without_details(
    tmp_path: Path, jwks: JwksServer, signing_key: SigningKey, catalog: Catalog,
    clock: FakeClock,
) -> None:
    # Nothing listens on port 1: every connection fails (a transient infrastructure failure).
    settings = kinde_settings("postgresql+psycopg://postgres:secret@127.0.0.1:1/nodb",
                              tmp_path, jwks.url)
    container = build_container(settings, catalog=catalog, clock=clock,
                                key_source=JwksKeySource(jwks.url, timeout=2.0))
    try:
        env = WebhookEnv(container, signing_key)
        r = env.deliver(user_created())
        assert r.status_code == 503
        text = r.get_data(as_text=True)
        assert_no_leak(text)
        assert "127.0.0.1:1" not in text and "secret" not in text
        assert json.loads(text)["error"]["code"] == "unavailable"
    finally:
        container.close()
