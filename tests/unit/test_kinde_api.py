"""Unit tests of the Kinde Management API client, with HTTP mocked by `responses`.

These pin down the client's own behaviour (token caching, retries, error mapping, request
shapes). That the requests match Kinde's spec is checked over real HTTP against the fake in
tests/integration/test_fake_kinde.py.
"""

from __future__ import annotations

import json
import logging
import threading
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta, timezone
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest
import requests
import responses
from responses import matchers
from urllib3.exceptions import MaxRetryError, NewConnectionError, ProtocolError

from adapters.kinde_api import (
    Agreement,
    KindeApiError,
    KindeAuthError,
    KindeManagementClient,
    KindeNotFound,
    KindeRateLimited,
    KindeRequestRejected,
    KindeUnavailable,
)

DOMAIN = "https://acme.kinde.com"
TOKEN_URL = f"{DOMAIN}/oauth2/token"
METER_URL = f"{DOMAIN}/api/v1/billing/meter_usage"
AGREEMENTS_URL = f"{DOMAIN}/api/v1/billing/agreements"
WEBHOOKS_URL = f"{DOMAIN}/api/v1/webhooks"
SECRET = "s3cr3t-client-secret"
OK = {"code": "OK", "message": "Success"}


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def mock() -> Iterator[responses.RequestsMock]:
    with responses.RequestsMock(assert_all_requests_are_fired=False) as rsps:
        yield rsps


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def client(clock: FakeClock) -> KindeManagementClient:
    # Trailing slash on purpose: it must be tolerated.
    return KindeManagementClient(DOMAIN + "/", "m2m-client", SECRET, timeout=2.0, clock=clock)


def add_token(mock: responses.RequestsMock, expires_in: int = 86400, token: str = "tok-1") -> None:
    mock.post(
        TOKEN_URL,
        json={"access_token": token, "token_type": "Bearer", "expires_in": expires_in},
    )


def calls_to(mock: responses.RequestsMock, url: str) -> list[Any]:
    return [c for c in mock.calls if str(c.request.url).split("?")[0] == url]


def sent_json(call: Any) -> dict[str, Any]:
    body = call.request.body
    return dict(json.loads(body))


# -- token ------------------------------------------------------------------------------------


def test_token_request_is_form_encoded_client_credentials(
    mock: responses.RequestsMock, client: KindeManagementClient
) -> None:
    mock.post(
        TOKEN_URL,
        match=[
            matchers.urlencoded_params_matcher(
                {
                    "grant_type": "client_credentials",
                    "client_id": "m2m-client",
                    "client_secret": SECRET,
                    "audience": f"{DOMAIN}/api",
                }
            )
        ],
        json={"access_token": "tok-1", "token_type": "Bearer", "expires_in": 86400},
    )
    mock.get(WEBHOOKS_URL, json={**OK, "webhooks": []})
    assert client.list_webhooks() == []
    api_call = calls_to(mock, WEBHOOKS_URL)[0]
    assert api_call.request.headers["Authorization"] == "Bearer tok-1"


def test_one_token_for_many_calls(
    mock: responses.RequestsMock, client: KindeManagementClient
) -> None:
    add_token(mock)
    mock.post(METER_URL, json=OK)
    for i in range(10):
        client.record_meter_usage("agreement_1", "credits", i)
    assert len(calls_to(mock, TOKEN_URL)) == 1
    assert len(calls_to(mock, METER_URL)) == 10


def test_one_token_for_many_threads(
    mock: responses.RequestsMock, client: KindeManagementClient
) -> None:
    add_token(mock)
    mock.post(METER_URL, json=OK)
    errors: list[BaseException] = []

    def work() -> None:
        try:
            for _ in range(5):
                client.record_meter_usage("agreement_1", "credits", 1, meter_type_code="delta")
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=work) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    assert len(calls_to(mock, TOKEN_URL)) == 1
    assert len(calls_to(mock, METER_URL)) == 40


def test_token_refreshed_60s_before_expiry(
    mock: responses.RequestsMock, client: KindeManagementClient, clock: FakeClock
) -> None:
    add_token(mock, expires_in=3600)
    mock.get(WEBHOOKS_URL, json={**OK, "webhooks": []})
    client.list_webhooks()
    clock.now += 3600 - 60 - 1
    client.list_webhooks()
    assert len(calls_to(mock, TOKEN_URL)) == 1
    clock.now += 2  # now inside the last 60 s
    client.list_webhooks()
    assert len(calls_to(mock, TOKEN_URL)) == 2


def test_short_lived_token_refreshed_at_90_percent(
    mock: responses.RequestsMock, client: KindeManagementClient, clock: FakeClock
) -> None:
    add_token(mock, expires_in=100)  # 10% (10 s) is shorter than 60 s
    mock.get(WEBHOOKS_URL, json={**OK, "webhooks": []})
    client.list_webhooks()
    clock.now += 89
    client.list_webhooks()
    assert len(calls_to(mock, TOKEN_URL)) == 1
    clock.now += 2
    client.list_webhooks()
    assert len(calls_to(mock, TOKEN_URL)) == 2


def test_401_drops_token_and_retries_once(
    mock: responses.RequestsMock, client: KindeManagementClient
) -> None:
    add_token(mock, token="old")
    add_token(mock, token="new")
    mock.post(METER_URL, status=401, json={"errors": [{"code": "UNAUTHORIZED", "message": "x"}]})
    mock.post(METER_URL, json=OK)
    client.record_meter_usage("agreement_1", "credits", 3)
    meter_calls = calls_to(mock, METER_URL)
    assert [c.request.headers["Authorization"] for c in meter_calls] == [
        "Bearer old",
        "Bearer new",
    ]
    assert len(calls_to(mock, TOKEN_URL)) == 2


def test_401_twice_is_an_auth_error_not_a_loop(
    mock: responses.RequestsMock, client: KindeManagementClient
) -> None:
    add_token(mock)
    mock.post(METER_URL, status=401, json={"errors": [{"code": "UNAUTHORIZED", "message": "x"}]})
    with pytest.raises(KindeAuthError) as info:
        client.record_meter_usage("agreement_1", "credits", 3)
    assert info.value.status == 401
    assert len(calls_to(mock, METER_URL)) == 2
    assert len(calls_to(mock, TOKEN_URL)) == 2


@pytest.mark.parametrize("status", [400, 401, 403])
def test_token_endpoint_rejection_is_auth_error(
    mock: responses.RequestsMock, client: KindeManagementClient, status: int
) -> None:
    mock.post(
        TOKEN_URL,
        status=status,
        json={"error": "invalid_client", "error_description": "Client authentication failed"},
    )
    with pytest.raises(KindeAuthError) as info:
        client.list_webhooks()
    assert info.value.code == "invalid_client"
    assert not calls_to(mock, WEBHOOKS_URL)


def test_token_endpoint_5xx_is_unavailable(
    mock: responses.RequestsMock, client: KindeManagementClient
) -> None:
    mock.post(TOKEN_URL, status=502, body="<html>Bad gateway</html>")
    with pytest.raises(KindeUnavailable):
        client.list_webhooks()


def test_token_answer_without_access_token(
    mock: responses.RequestsMock, client: KindeManagementClient
) -> None:
    mock.post(TOKEN_URL, json={"token_type": "Bearer"})
    with pytest.raises(KindeApiError) as info:
        client.list_webhooks()
    assert info.value.code == "INVALID_TOKEN_RESPONSE"


def test_secret_and_token_never_logged_or_shown(
    mock: responses.RequestsMock, client: KindeManagementClient, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    add_token(mock, token="very-secret-token")
    mock.post(METER_URL, status=400, json={"errors": [{"code": "BAD", "message": "no"}]})
    with pytest.raises(KindeRequestRejected) as info:
        client.record_meter_usage("agreement_1", "credits", 3)
    for text in (caplog.text, str(info.value), repr(client)):
        assert SECRET not in text
        assert "very-secret-token" not in text


# -- error mapping ----------------------------------------------------------------------------


def kinde_error(code: str, message: str) -> dict[str, Any]:
    return {"errors": [{"code": code, "message": message}]}


def test_400_is_rejected_with_kinde_code(
    mock: responses.RequestsMock, client: KindeManagementClient
) -> None:
    add_token(mock)
    mock.post(METER_URL, status=400, json=kinde_error("INVALID_AGREEMENT", "Unknown agreement"))
    with pytest.raises(KindeRequestRejected) as info:
        client.record_meter_usage("agreement_x", "credits", 3)
    assert (info.value.status, info.value.code, info.value.message) == (
        400,
        "INVALID_AGREEMENT",
        "Unknown agreement",
    )


def test_403_is_auth_error(mock: responses.RequestsMock, client: KindeManagementClient) -> None:
    add_token(mock)
    mock.post(METER_URL, status=403, json=kinde_error("FORBIDDEN", "Missing scope"))
    with pytest.raises(KindeAuthError) as info:
        client.record_meter_usage("agreement_1", "credits", 3)
    assert info.value.status == 403
    assert len(calls_to(mock, METER_URL)) == 1  # a 403 is not retried


def test_404_with_object_errors_is_not_found(
    mock: responses.RequestsMock, client: KindeManagementClient
) -> None:
    add_token(mock)
    # The spec's not_found_response has `errors` as an object, not a list.
    mock.patch(
        f"{WEBHOOKS_URL}/webhook_1",
        status=404,
        json={"errors": {"code": "ROUTE_NOT_FOUND", "message": "No route"}},
    )
    with pytest.raises(KindeNotFound) as info:
        client.update_webhook("webhook_1", event_types=["user.created"], name="credits")
    assert info.value.code == "ROUTE_NOT_FOUND"


def test_other_4xx_is_rejected(mock: responses.RequestsMock, client: KindeManagementClient) -> None:
    add_token(mock)
    mock.post(METER_URL, status=422, body="unprocessable")
    with pytest.raises(KindeRequestRejected) as info:
        client.record_meter_usage("agreement_1", "credits", 3)
    assert info.value.code == "HTTP_422"
    assert "unprocessable" in info.value.message


@pytest.mark.parametrize(
    ("header", "expected"),
    [("12", 12.0), ("0", 0.0), (None, 60.0), ("soon", 60.0), ("-5", 60.0)],
)
def test_429_reads_ratelimit_reset(
    mock: responses.RequestsMock,
    client: KindeManagementClient,
    header: str | None,
    expected: float,
) -> None:
    add_token(mock)
    headers = {"RateLimit-Reset": header} if header is not None else {}
    mock.post(METER_URL, status=429, headers=headers, json=kinde_error("TOO_MANY_REQUESTS", "slow"))
    with pytest.raises(KindeRateLimited) as info:
        client.record_meter_usage("agreement_1", "credits", 3)
    assert info.value.retry_after_seconds == expected
    assert info.value.status == 429


@pytest.mark.parametrize(("status", "unknown"), [(500, True), (502, True), (503, False)])
def test_5xx_is_unavailable(
    mock: responses.RequestsMock, client: KindeManagementClient, status: int, unknown: bool
) -> None:
    add_token(mock)
    mock.post(METER_URL, status=status, body="<html>oops</html>")
    with pytest.raises(KindeUnavailable) as info:
        client.record_meter_usage("agreement_1", "credits", 3)
    assert info.value.status == status
    assert info.value.code == f"HTTP_{status}"
    assert info.value.outcome_unknown is unknown


def test_read_timeout_is_unavailable_with_unknown_outcome(
    mock: responses.RequestsMock, client: KindeManagementClient
) -> None:
    add_token(mock)
    mock.post(METER_URL, body=requests.ReadTimeout("read timed out"))
    with pytest.raises(KindeUnavailable) as info:
        client.record_meter_usage("agreement_1", "credits", 3)
    assert info.value.outcome_unknown is True
    assert info.value.status is None


def test_connect_timeout_is_unavailable_and_not_sent(
    mock: responses.RequestsMock, client: KindeManagementClient
) -> None:
    add_token(mock)
    mock.post(METER_URL, body=requests.ConnectTimeout("connect timed out"))
    with pytest.raises(KindeUnavailable) as info:
        client.record_meter_usage("agreement_1", "credits", 3)
    assert info.value.outcome_unknown is False


def test_connection_refused_is_unavailable_and_not_sent(
    mock: responses.RequestsMock, client: KindeManagementClient
) -> None:
    add_token(mock)
    refused = MaxRetryError(None, METER_URL, NewConnectionError(None, "Connection refused"))  # type: ignore[arg-type]
    mock.post(METER_URL, body=requests.ConnectionError(refused))
    with pytest.raises(KindeUnavailable) as info:
        client.record_meter_usage("agreement_1", "credits", 3)
    assert info.value.outcome_unknown is False


def test_connection_dropped_after_sending_has_unknown_outcome(
    mock: responses.RequestsMock, client: KindeManagementClient
) -> None:
    add_token(mock)
    dropped = ProtocolError("Connection aborted.", ConnectionResetError("reset"))
    mock.post(METER_URL, body=requests.ConnectionError(dropped))
    with pytest.raises(KindeUnavailable) as info:
        client.record_meter_usage("agreement_1", "credits", 3)
    assert info.value.outcome_unknown is True


def test_unavailable_against_a_closed_port() -> None:
    # A real refused connection (nothing listens on the port we just freed).
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    client = KindeManagementClient(f"http://127.0.0.1:{port}", "id", SECRET, timeout=0.5)
    with pytest.raises(KindeUnavailable) as info:
        client.list_webhooks()
    assert info.value.outcome_unknown is False


# -- request shapes ---------------------------------------------------------------------------


def test_meter_usage_body_has_value_as_string(
    mock: responses.RequestsMock, client: KindeManagementClient
) -> None:
    add_token(mock)
    mock.post(METER_URL, json=OK)
    client.record_meter_usage("agreement_1", "credits", 42)
    assert sent_json(calls_to(mock, METER_URL)[0]) == {
        "customer_agreement_id": "agreement_1",
        "billing_feature_code": "credits",
        "meter_value": "42",
        "meter_type_code": "absolute",
    }


def test_meter_usage_delta_with_timestamp_in_utc(
    mock: responses.RequestsMock, client: KindeManagementClient
) -> None:
    add_token(mock)
    mock.post(METER_URL, json=OK)
    sydney = timezone(timedelta(hours=11))
    client.record_meter_usage(
        "agreement_1",
        "credits",
        7,
        meter_type_code="delta",
        meter_usage_timestamp=datetime(2024, 11, 18, 13, 32, 3, 999, tzinfo=sydney),
    )
    body = sent_json(calls_to(mock, METER_URL)[0])
    assert body["meter_type_code"] == "delta"
    assert body["meter_value"] == "7"
    assert body["meter_usage_timestamp"] == "2024-11-18T02:32:03Z"


def test_meter_usage_rejects_bad_arguments_before_sending(
    mock: responses.RequestsMock, client: KindeManagementClient
) -> None:
    with pytest.raises(ValueError):
        client.record_meter_usage("a", "f", 1, meter_usage_timestamp=datetime(2024, 1, 1))
    with pytest.raises(TypeError):
        client.record_meter_usage("a", "f", True)
    with pytest.raises(TypeError):
        client.record_meter_usage("a", "f", 1.5)  # type: ignore[arg-type]
    with pytest.raises(ValueError):
        client.record_meter_usage("a", "f", 1, meter_type_code="set")  # type: ignore[arg-type]
    assert len(mock.calls) == 0


def agreement_json(agreement_id: str, features: list[str]) -> dict[str, Any]:
    return {
        "id": agreement_id,
        "plan_code": "pro",
        "expires_on": None,
        "billing_group_id": "sbg_1",
        "current_period_start": "2026-08-06T12:53:57Z",
        "current_period_end": "2026-09-06T12:53:57+10:00",
        "entitlements": [
            {"feature_code": f, "entitlement_id": f"entitlement_{f}"} for f in features
        ],
    }


def test_list_agreements_follows_has_more(
    mock: responses.RequestsMock, client: KindeManagementClient
) -> None:
    add_token(mock)
    mock.get(
        AGREEMENTS_URL,
        match=[matchers.query_param_matcher({"customer_id": "customer_1", "page_size": "100"})],
        json={**OK, "has_more": True, "agreements": [agreement_json("agreement_a", ["credits"])]},
    )
    mock.get(
        AGREEMENTS_URL,
        match=[
            matchers.query_param_matcher(
                {"customer_id": "customer_1", "page_size": "100", "starting_after": "agreement_a"}
            )
        ],
        json={
            **OK,
            "has_more": False,
            "agreements": [agreement_json("agreement_b", ["credits", "seats", "credits"])],
        },
    )
    agreements = client.list_agreements("customer_1")
    assert [a.id for a in agreements] == ["agreement_a", "agreement_b"]
    assert agreements[1] == Agreement(
        id="agreement_b",
        plan_code="pro",
        current_period_start=datetime(2026, 8, 6, 12, 53, 57, tzinfo=UTC),
        current_period_end=datetime(2026, 9, 6, 2, 53, 57, tzinfo=UTC),
        expires_on=None,
        feature_codes=("credits", "seats"),
        billing_group_id="sbg_1",
    )


def test_pagination_stops_on_a_repeating_cursor(
    mock: responses.RequestsMock, client: KindeManagementClient
) -> None:
    add_token(mock)
    mock.get(
        AGREEMENTS_URL,
        json={**OK, "has_more": True, "agreements": [agreement_json("agreement_a", [])]},
    )
    with pytest.raises(KindeApiError, match="paginate"):
        client.list_agreements("customer_1")


def test_get_entitlements_asks_for_plans_and_dedupes(
    mock: responses.RequestsMock, client: KindeManagementClient
) -> None:
    add_token(mock)
    mock.get(
        f"{DOMAIN}/api/v1/billing/entitlements",
        json={
            **OK,
            "has_more": False,
            "entitlements": [
                {"id": "entitlement_1", "feature_code": "credits", "feature_name": "Credits"},
                {"id": "entitlement_2", "feature_code": "credits", "entitlement_limit_max": 5},
                {"id": "entitlement_3", "feature_code": "seats"},
            ],
            "plans": [{"code": "pro", "subscribed_on": "2024-11-18T13:32:03+11"}],
        },
    )
    entitlements = client.get_entitlements("customer_1")
    assert entitlements.feature_codes == ("credits", "seats")
    assert entitlements.plan_codes == ("pro",)
    assert entitlements.items[1].entitlement_limit_max == 5
    query = parse_qs(urlsplit(str(mock.calls[-1].request.url)).query)
    assert query["expand"] == ["plans"]


def test_get_user_reads_preferred_email_and_billing(
    mock: responses.RequestsMock, client: KindeManagementClient
) -> None:
    add_token(mock)
    mock.get(
        f"{DOMAIN}/api/v1/user",
        match=[matchers.query_param_matcher({"id": "kp_1", "expand": "billing"})],
        json={"id": "kp_1", "preferred_email": "a@example.com", "billing": {"customer_id": "c_1"}},
    )
    user = client.get_user("kp_1")
    assert (user.id, user.email, user.customer_id) == ("kp_1", "a@example.com", "c_1")


def test_get_user_without_billing(
    mock: responses.RequestsMock, client: KindeManagementClient
) -> None:
    add_token(mock)
    mock.get(f"{DOMAIN}/api/v1/user", json={"id": "kp_2", "email": "b@example.com"})
    assert client.get_user("kp_2").customer_id is None
    assert client.get_user("kp_2").email == "b@example.com"


def test_get_org_billing(mock: responses.RequestsMock, client: KindeManagementClient) -> None:
    add_token(mock)
    mock.get(
        f"{DOMAIN}/api/v1/organization",
        match=[matchers.query_param_matcher({"code": "org_1", "expand": "billing"})],
        json={
            "code": "org_1",
            "billing": {
                "billing_customer_id": "customer_9",
                "agreements": [{"plan_code": "pro", "agreement_id": "agreement_9"}],
            },
        },
    )
    billing = client.get_org_billing("org_1")
    assert billing.customer_id == "customer_9"
    assert [(a.agreement_id, a.plan_code) for a in billing.agreements] == [("agreement_9", "pro")]


def test_webhook_create_and_update_shapes(
    mock: responses.RequestsMock, client: KindeManagementClient
) -> None:
    add_token(mock)
    mock.post(WEBHOOKS_URL, json={**OK, "webhook": {"id": "webhook_1", "endpoint": "https://x"}})
    mock.patch(f"{WEBHOOKS_URL}/webhook%2F1", json={**OK, "webhook": {"id": "webhook/1"}})
    assert client.create_webhook("https://x", ["user.created"], "credits") == "webhook_1"
    client.update_webhook("webhook/1", event_types=["user.updated"], name="n", description="d")
    create, patch = calls_to(mock, WEBHOOKS_URL)[0], mock.calls[-1]
    assert sent_json(create) == {
        "endpoint": "https://x",
        "event_types": ["user.created"],
        "name": "credits",
    }
    # PATCH can't change the endpoint: the spec's body has no such field.
    assert sent_json(patch) == {"event_types": ["user.updated"], "name": "n", "description": "d"}


def test_list_event_types(
    mock: responses.RequestsMock, client: KindeManagementClient
) -> None:
    add_token(mock)
    mock.get(
        f"{DOMAIN}/api/v1/event_types",
        json={
            **OK,
            "event_types": [
                {"id": "1", "code": "user.created", "name": "User created", "schema": {"a": 1}}
            ],
        },
    )
    [event_type] = client.list_event_types()
    assert (event_type.code, event_type.name, dict(event_type.schema)) == (
        "user.created",
        "User created",
        {"a": 1},
    )
