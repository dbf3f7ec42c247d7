"""Unit tests of the HTTP layer's pieces: error rendering, bearer parsing and request schemas
(no database, no network)."""

from __future__ import annotations

import marshmallow as ma
import pytest
from flask import Flask

from app.http import errors, schemas
from app.http.auth import bearer_token
from app.http.errors import ApiError


def test_summarise_flattens_webargs_messages() -> None:
    lines = errors._summarise({"json": {"quantity": ["Not a valid integer."],
                                        "records": {"0": {"feature": ["Missing."]}}}})
    assert lines == ["quantity: Not a valid integer.", "records.0.feature: Missing."]


def test_every_http_status_renders_the_contract_shape() -> None:
    from werkzeug.exceptions import default_exceptions

    app = Flask(__name__)
    with app.test_request_context():
        for status, exc_class in default_exceptions.items():
            response = errors.http_exception_response(exc_class())
            assert response.status_code == status
            body = response.get_json()
            assert set(body) == {"error"} and body["error"]["code"] and body["error"]["message"]
            assert response.mimetype == "application/json"


def test_unauthorized_challenge_is_a_valid_quoted_string() -> None:
    error = errors.unauthorized('bad "quoted" \\ thing')
    challenge = error.headers["WWW-Authenticate"]
    assert challenge.startswith('Bearer realm="kinde-credits", error="invalid_token"')
    assert challenge.count('"') == 6


@pytest.mark.parametrize(
    ("header", "ok"),
    [("Bearer abc", True), ("bearer  abc ", True), ("", False), ("Basic abc", False),
     ("Bearer", False), ("Bearer " + "x" * 20000, False)],
)
def test_bearer_token_parsing(header: str, ok: bool) -> None:
    app = Flask(__name__)
    with app.test_request_context(headers={"Authorization": header} if header else {}):
        if ok:
            assert bearer_token() == "abc"
        else:
            with pytest.raises(ApiError) as caught:
                bearer_token()
            assert caught.value.status == 401
            assert "WWW-Authenticate" in caught.value.headers


@pytest.mark.parametrize(
    ("schema", "data", "valid"),
    [
        (schemas.UsageRequestSchema, {"feature": "api_call", "quantity": 1}, True),
        (schemas.UsageRequestSchema, {"feature": "api_call", "quantity": True}, False),
        (schemas.UsageRequestSchema, {"feature": "", "quantity": 1}, False),
        (schemas.TopUpRequestSchema, {"bundle": "starter"}, True),
        (schemas.TopUpRequestSchema, {"credits": 5, "reason": "r"}, True),
        (schemas.TopUpRequestSchema, {"credits": 5, "reason": "r", "bundle": "b"}, False),
        (schemas.HoldRequestSchema, {"credits": 5}, True),
        (schemas.HoldRequestSchema, {"feature": "api_call", "quantity": 3}, True),
        (schemas.HoldRequestSchema, {"quantity": 3}, False),
        (schemas.BatchRequestSchema,
         {"records": [{"wallet_id": "kp_a", "feature": "f", "quantity": 1}]}, True),
        (schemas.BatchRequestSchema,
         {"records": [{"wallet_id": "acct", "feature": "f", "quantity": 1}]}, False),
        (schemas.CaptureRequestSchema, {}, True),
        (schemas.ReleaseRequestSchema, {"credits": 1}, False),
    ],
)
def test_request_schemas(schema: type[ma.Schema], data: dict, valid: bool) -> None:
    if valid:
        schema().load(data)
    else:
        with pytest.raises(ma.ValidationError):
            schema().load(data)


def test_occurred_at_is_normalised_to_utc() -> None:
    loaded = schemas.UsageRequestSchema().load(
        {"feature": "f", "quantity": 1, "occurred_at": "2026-01-01T01:00:00+01:00"})
    assert loaded["occurred_at"].isoformat() == "2026-01-01T00:00:00+00:00"
    naive = schemas.UsageRequestSchema().load(
        {"feature": "f", "quantity": 1, "occurred_at": "2026-01-01T01:00:00"})
    assert naive["occurred_at"].utcoffset().total_seconds() == 0


def test_every_v1_view_has_a_row_in_the_access_table() -> None:
    """Fail closed is the fallback; every real route has its row in app.domain.access (the
    full check over the app's URL map is tests/integration/test_access_matrix.py)."""
    from app.domain.access import RULES

    for endpoint in ("wallets.get_wallet", "wallets.get_ledger", "wallets.record_usage",
                     "wallets.record_usage_batch", "wallets.top_up", "holds.place_hold",
                     "holds.capture_hold", "holds.release_hold", "catalog.get_catalog"):
        assert endpoint in RULES, endpoint
