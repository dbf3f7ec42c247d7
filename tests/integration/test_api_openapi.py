"""The OpenAPI document, the docs page, the uniform error body for router/server errors, and a
bounded schemathesis run against the WSGI app with a real (JWKS-verified) admin token."""

from __future__ import annotations

import pytest
from flask import Flask
from flask.testing import FlaskClient

from tests.http_fixtures import *  # noqa: F403
from tests.http_fixtures import Tokens, bearer

EXPECTED_PATHS = {
    "/v1/wallets/{wallet_id}": {"get"},
    "/v1/wallets/{wallet_id}/ledger": {"get"},
    "/v1/wallets/{wallet_id}/usage": {"post"},
    "/v1/usage/batch": {"post"},
    "/v1/wallets/{wallet_id}/top-ups": {"post"},
    "/v1/wallets/{wallet_id}/holds": {"post"},
    "/v1/holds/{hold_id}/capture": {"post"},
    "/v1/holds/{hold_id}/release": {"post"},
    "/v1/catalog": {"get"},
}


def test_openapi_document_is_valid_and_complete(client: FlaskClient) -> None:
    from openapi_spec_validator import validate

    response = client.get("/openapi.json")
    assert response.status_code == 200
    spec = response.json
    validate(spec)
    for path, methods in EXPECTED_PATHS.items():
        assert set(spec["paths"][path]) >= methods, path
    usage = spec["paths"]["/v1/wallets/{wallet_id}/usage"]["post"]
    assert {"201", "402", "422"} <= set(usage["responses"])
    assert any(p["name"] == "Idempotency-Key" for p in usage["parameters"])
    error = spec["components"]["schemas"]["Error"]
    assert error["required"] == ["error"]
    assert spec["components"]["securitySchemes"]["bearerAuth"]["scheme"] == "bearer"


def test_docs_page(client: FlaskClient) -> None:
    response = client.get("/docs")
    assert response.status_code == 200 and response.mimetype == "text/html"
    page = response.get_data(as_text=True)
    assert "/v1/wallets/{wallet_id}/usage" in page and "/openapi.json" in page


def test_router_errors_are_json(client: FlaskClient, tokens: Tokens) -> None:
    missing = client.get("/v1/nothing-here")
    assert missing.status_code == 404 and missing.json["error"]["code"] == "not_found"
    wrong = client.delete("/v1/catalog", headers=bearer(tokens.m2m("credits:admin")))
    assert wrong.status_code == 405
    assert wrong.json["error"]["code"] == "method_not_allowed"
    assert "GET" in wrong.headers["Allow"]


def test_body_over_limit_is_413_json(client: FlaskClient, tokens: Tokens) -> None:
    response = client.post(
        "/v1/wallets/kp_alice/usage",
        data=b'{"feature": "' + b"x" * (2 * 1024 * 1024) + b'"}',
        content_type="application/json",
        headers=bearer(tokens.m2m("credits:admin")),
    )
    assert response.status_code == 413
    assert response.json["error"]["code"] == "payload_too_large"


def test_unhandled_exception_is_json_500_without_details(
    api_app: Flask, client: FlaskClient, tokens: Tokens, monkeypatch: pytest.MonkeyPatch
) -> None:
    api_app.config["PROPAGATE_EXCEPTIONS"] = False  # behave as in production

    def boom(*_: object, **__: object) -> None:
        raise RuntimeError("secret database detail")

    monkeypatch.setattr(api_app.extensions["kinde_credits"].ledger, "get_wallet", boom)
    response = client.get("/v1/wallets/kp_alice", headers=bearer(tokens.user("kp_alice")))
    assert response.status_code == 500
    assert response.json["error"]["code"] == "internal_error"
    assert "secret" not in response.get_data(as_text=True)


@pytest.mark.slow
@pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)
def test_schemathesis_finds_no_server_errors(api_app: Flask, tokens: Tokens) -> None:
    import schemathesis
    from hypothesis import HealthCheck, Phase, given, settings
    from schemathesis.checks import (
        content_type_conformance,
        not_a_server_error,
        response_schema_conformance,
        status_code_conformance,
    )

    schema = schemathesis.openapi.from_wsgi("/openapi.json", api_app)
    token = tokens.m2m("credits:admin")
    checks = [not_a_server_error, status_code_conformance, content_type_conformance,
              response_schema_conformance]
    failures: list[str] = []

    @settings(max_examples=25, deadline=None, phases=[Phase.generate],
              suppress_health_check=list(HealthCheck), derandomize=True)
    def run(case: schemathesis.Case) -> None:
        case.headers = {**(case.headers or {}), "Authorization": f"Bearer {token}"}
        response = case.call()
        try:
            case.validate_response(response, checks=checks)
        except Exception as exc:  # collect all, then report every failing operation at once
            failures.append(f"{case.method} {case.path}: {exc}"[:2000])

    operations = [result.ok() for result in schema.get_all_operations()]
    assert len(operations) >= len(EXPECTED_PATHS)
    for operation in operations:
        given(case=operation.as_strategy())(run)()
    assert not failures, "\n\n".join(failures)
