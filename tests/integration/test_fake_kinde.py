"""The Kinde client against FakeKinde over real HTTP, with every request validated against
Kinde's official OpenAPI spec; and tests of the fake itself (its validator must be able to fail).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
import requests

from adapters.kinde_api import (
    KindeAuthError,
    KindeManagementClient,
    KindeNotFound,
    KindeRateLimited,
    KindeUnavailable,
)
from tests.fakes.fake_kinde import FakeKinde

NOW = datetime.now(UTC).replace(microsecond=0)
PERIOD_START = NOW - timedelta(days=3)
PERIOD_END = NOW + timedelta(days=27)
# The client's timeout: generous, so a loaded CI machine never times out a healthy call; the
# stall tests stall for three times as long.
TIMEOUT = 2.0


def seed(kinde: FakeKinde) -> None:
    kinde.add_customer("customer_1", user_id="kp_1", org_code="org_1", email="ada@example.com")
    kinde.add_agreement(
        "customer_1", "agreement_1", "pro", ["credits", "seats"], PERIOD_START, PERIOD_END
    )


@pytest.fixture
def raw_kinde() -> Iterator[FakeKinde]:
    """A seeded fake whose spec violations the test inspects itself."""
    with FakeKinde() as kinde:
        seed(kinde)
        yield kinde


@pytest.fixture
def kinde(raw_kinde: FakeKinde) -> Iterator[FakeKinde]:
    """A seeded fake; the test fails if any request the client sent broke the spec."""
    yield raw_kinde
    assert raw_kinde.spec_violations == []


@pytest.fixture
def client(kinde: FakeKinde) -> KindeManagementClient:
    return KindeManagementClient(kinde.url, kinde.client_id, kinde.client_secret, timeout=TIMEOUT)


def raw_token(kinde: FakeKinde) -> str:
    answer = requests.post(
        f"{kinde.url}/oauth2/token",
        data={
            "grant_type": "client_credentials",
            "client_id": kinde.client_id,
            "client_secret": kinde.client_secret,
            "audience": f"{kinde.url}/api",
        },
        timeout=2,
    )
    answer.raise_for_status()
    return str(answer.json()["access_token"])


def raw_call(kinde: FakeKinde, method: str, path: str, **kwargs: Any) -> requests.Response:
    headers = kwargs.pop("headers", {"Authorization": f"Bearer {raw_token(kinde)}"})
    return requests.request(method, f"{kinde.url}{path}", headers=headers, timeout=2, **kwargs)


# -- the client over real HTTP ----------------------------------------------------------------


def test_every_call_matches_the_spec(kinde: FakeKinde, client: KindeManagementClient) -> None:
    client.record_meter_usage("agreement_1", "credits", 5)
    client.record_meter_usage(
        "agreement_1", "seats", 2, meter_type_code="delta", meter_usage_timestamp=NOW
    )
    [agreement] = client.list_agreements("customer_1")
    assert agreement.id == "agreement_1"
    assert agreement.plan_code == "pro"
    assert (agreement.current_period_start, agreement.current_period_end) == (
        PERIOD_START,
        PERIOD_END,
    )
    assert agreement.feature_codes == ("credits", "seats")
    entitlements = client.get_entitlements("customer_1")
    assert entitlements.feature_codes == ("credits", "seats")
    assert entitlements.plan_codes == ("pro",)
    user = client.get_user("kp_1")
    assert (user.email, user.customer_id) == ("ada@example.com", "customer_1")
    org = client.get_org_billing("org_1")
    assert org.customer_id == "customer_1"
    assert [a.agreement_id for a in org.agreements] == ["agreement_1"]
    webhook_id = client.create_webhook(
        "https://credits.example.com/kinde/webhooks", ["customer.meter_usage_updated"], "credits"
    )
    client.update_webhook(
        webhook_id, event_types=["user.created", "user.updated"], name="credits2", description="x"
    )
    [webhook] = client.list_webhooks()
    assert webhook.id == webhook_id
    assert webhook.event_types == ("user.created", "user.updated")
    assert webhook.endpoint == "https://credits.example.com/kinde/webhooks"
    assert webhook.name == "credits2"
    assert "customer.meter_usage_updated" in {t.code for t in client.list_event_types()}
    assert kinde.token_requests == 1


def test_absolute_overrides_and_delta_adds(kinde: FakeKinde, client: KindeManagementClient) -> None:
    client.record_meter_usage("agreement_1", "credits", 10)
    assert kinde.usage_total("agreement_1", "credits") == 10
    client.record_meter_usage("agreement_1", "credits", 5, meter_type_code="delta")
    assert kinde.usage_total("agreement_1", "credits") == 15
    client.record_meter_usage("agreement_1", "credits", 7, meter_type_code="absolute")
    assert kinde.usage_total("agreement_1", "credits") == 7
    assert kinde.usage_total("agreement_1", "seats") == 0
    assert [c.meter_value for c in kinde.meter_calls] == [10, 5, 7]


def test_usage_after_a_cycle_rolls_counts_in_the_new_period(
    kinde: FakeKinde, client: KindeManagementClient
) -> None:
    client.record_meter_usage("agreement_1", "credits", 10)
    kinde.roll_period("agreement_1", PERIOD_END, PERIOD_END + timedelta(days=30))
    client.record_meter_usage("agreement_1", "credits", 3, meter_type_code="delta")
    assert kinde.usage_total("agreement_1", "credits") == 3
    assert kinde.usage_total("agreement_1", "credits", PERIOD_START) == 10


def test_many_agreements_are_paginated(kinde: FakeKinde, client: KindeManagementClient) -> None:
    for i in range(2, 251):
        kinde.add_agreement(
            "customer_1", f"agreement_{i:03d}", "pro", ["credits"], PERIOD_START, PERIOD_END
        )
    agreements = client.list_agreements("customer_1")
    assert len(agreements) == 250
    assert len({a.id for a in agreements}) == 250
    assert kinde.api_requests.count(("GET", "/api/v1/billing/agreements")) == 3


def test_lost_answer_is_outcome_unknown_and_absolute_resend_is_harmless(
    kinde: FakeKinde, client: KindeManagementClient
) -> None:
    kinde.lose_answer_next(1)
    with pytest.raises(KindeUnavailable) as info:
        client.record_meter_usage("agreement_1", "credits", 40)
    assert info.value.outcome_unknown is True
    assert kinde.usage_total("agreement_1", "credits") == 40  # Kinde did apply it
    client.record_meter_usage("agreement_1", "credits", 40)  # the worker's resend
    assert kinde.usage_total("agreement_1", "credits") == 40
    assert len(kinde.meter_calls) == 2


def test_lost_answer_then_delta_resend_counts_twice(
    kinde: FakeKinde, client: KindeManagementClient
) -> None:
    # Why the outbox prefers absolute totals: Kinde has no idempotency key for deltas.
    kinde.lose_answer_next(1)
    with pytest.raises(KindeUnavailable):
        client.record_meter_usage("agreement_1", "credits", 4, meter_type_code="delta")
    client.record_meter_usage("agreement_1", "credits", 4, meter_type_code="delta")
    assert kinde.usage_total("agreement_1", "credits") == 8


def test_stall_beyond_timeout_is_unavailable(
    kinde: FakeKinde, client: KindeManagementClient
) -> None:
    kinde.stall_next(1, TIMEOUT * 3)
    started = time.monotonic()
    with pytest.raises(KindeUnavailable) as info:
        client.record_meter_usage("agreement_1", "credits", 5)
    # It gave up before the stalled answer came: the timeout, not the server, ended the call.
    assert time.monotonic() - started < TIMEOUT * 3
    assert info.value.outcome_unknown is True
    assert info.value.code == "TIMEOUT"


def test_short_stall_within_timeout_succeeds(
    kinde: FakeKinde, client: KindeManagementClient
) -> None:
    kinde.stall_next(1, 0.1)
    client.record_meter_usage("agreement_1", "credits", 5)
    assert kinde.usage_total("agreement_1", "credits") == 5


def test_429_is_rate_limited_with_retry_after(
    kinde: FakeKinde, client: KindeManagementClient
) -> None:
    kinde.rate_limit_next(1, reset_seconds=7)
    with pytest.raises(KindeRateLimited) as info:
        client.record_meter_usage("agreement_1", "credits", 5)
    assert info.value.retry_after_seconds == 7
    assert kinde.usage_total("agreement_1", "credits") == 0
    client.record_meter_usage("agreement_1", "credits", 5)  # the fault was consumed
    assert kinde.usage_total("agreement_1", "credits") == 5


def test_injected_500_then_recovery(kinde: FakeKinde, client: KindeManagementClient) -> None:
    kinde.fail_next(2, status=500)
    for _ in range(2):
        with pytest.raises(KindeUnavailable):
            client.list_webhooks()
    assert client.list_webhooks() == []


def test_faults_can_be_scoped_to_a_path(kinde: FakeKinde, client: KindeManagementClient) -> None:
    kinde.fail_next(1, status=500, path_prefix="/api/v1/webhooks")
    client.record_meter_usage("agreement_1", "credits", 5)  # not affected
    with pytest.raises(KindeUnavailable):
        client.list_webhooks()


def test_outage_then_recovery(kinde: FakeKinde, client: KindeManagementClient) -> None:
    kinde.outage(True)
    with pytest.raises(KindeUnavailable) as info:
        client.record_meter_usage("agreement_1", "credits", 5)
    assert info.value.status == 503
    kinde.outage(False)
    client.record_meter_usage("agreement_1", "credits", 5)
    assert kinde.usage_total("agreement_1", "credits") == 5


def test_lost_token_answer_is_unavailable_then_recovers(
    kinde: FakeKinde, client: KindeManagementClient
) -> None:
    kinde.lose_answer_next(1, path_prefix="/oauth2/token")
    with pytest.raises(KindeUnavailable):
        client.list_webhooks()
    assert client.list_webhooks() == []


def test_revoked_token_is_refetched_once(kinde: FakeKinde, client: KindeManagementClient) -> None:
    client.record_meter_usage("agreement_1", "credits", 1)
    kinde.revoke_tokens()
    client.record_meter_usage("agreement_1", "credits", 2)
    assert kinde.token_requests == 2
    assert kinde.usage_total("agreement_1", "credits") == 2


def test_threads_share_one_token(kinde: FakeKinde, client: KindeManagementClient) -> None:
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
    assert kinde.token_requests == 1
    assert kinde.usage_total("agreement_1", "credits") == 40


def test_wrong_secret_is_auth_error(kinde: FakeKinde) -> None:
    client = KindeManagementClient(kinde.url, kinde.client_id, "wrong", timeout=TIMEOUT)
    with pytest.raises(KindeAuthError):
        client.list_webhooks()
    assert kinde.token_requests == 0


def test_unknown_user_and_webhook_are_not_found(
    kinde: FakeKinde, client: KindeManagementClient
) -> None:
    with pytest.raises(KindeNotFound):
        client.get_user("kp_nobody")
    with pytest.raises(KindeNotFound):
        client.update_webhook("webhook_nope", event_types=["user.created"], name="credits")


# -- the fake itself --------------------------------------------------------------------------


def test_validator_flags_meter_usage_without_agreement_id(raw_kinde: FakeKinde) -> None:
    answer = raw_call(
        raw_kinde,
        "POST",
        "/api/v1/billing/meter_usage",
        json={"billing_feature_code": "credits", "meter_value": "5"},
    )
    assert answer.status_code == 400
    assert answer.json()["errors"][0]["code"] == "INVALID_REQUEST"
    [violation] = raw_kinde.spec_violations
    assert violation.path == "/api/v1/billing/meter_usage"
    assert "customer_agreement_id" in " ".join(violation.errors)
    assert raw_kinde.meter_calls == []


@pytest.mark.parametrize(
    ("method", "path", "kwargs", "needle"),
    [
        (
            "POST",
            "/api/v1/billing/meter_usage",
            {
                "json": {
                    "customer_agreement_id": "agreement_1",
                    "billing_feature_code": "credits",
                    "meter_value": 5,
                }
            },
            "not of type 'string'",
        ),
        (
            "POST",
            "/api/v1/billing/meter_usage",
            {
                "json": {
                    "customer_agreement_id": "agreement_1",
                    "billing_feature_code": "credits",
                    "meter_value": "5",
                    "meter_usage_timestamp": "yesterday",
                }
            },
            "date-time",
        ),
        (
            "PATCH",
            "/api/v1/webhooks/webhook_1",
            {"json": {"endpoint": "https://elsewhere", "name": "n", "event_types": []}},
            "'endpoint' was unexpected",
        ),
        ("GET", "/api/v1/billing/agreements", {"params": {"page_size": 5}}, "customer_id"),
        (
            "GET",
            "/api/v1/billing/agreements",
            {"params": {"customer_id": "customer_1", "limit": 5}},
            "undeclared query parameter 'limit'",
        ),
        ("GET", "/api/v1/no_such_route", {}, "PathNotFound"),
        ("GET", "/api/v1/webhooks", {"headers": {}}, "Security"),
    ],
)
def test_validator_flags_malformed_requests(
    raw_kinde: FakeKinde, method: str, path: str, kwargs: dict[str, Any], needle: str
) -> None:
    answer = raw_call(raw_kinde, method, path, **kwargs)
    assert answer.status_code == 400
    [violation] = raw_kinde.spec_violations
    assert needle in " ".join(violation.errors)


def test_fake_rejects_unknown_bearer_token(raw_kinde: FakeKinde) -> None:
    answer = raw_call(
        raw_kinde, "GET", "/api/v1/webhooks", headers={"Authorization": "Bearer forged"}
    )
    assert answer.status_code == 401
    assert raw_kinde.spec_violations == []


def test_fake_token_endpoint_checks_audience_and_credentials(raw_kinde: FakeKinde) -> None:
    form = {
        "grant_type": "client_credentials",
        "client_id": raw_kinde.client_id,
        "client_secret": raw_kinde.client_secret,
        "audience": "https://other.kinde.com/api",
    }
    url = f"{raw_kinde.url}/oauth2/token"
    assert requests.post(url, data=form, timeout=2).status_code == 400
    bad_secret = {**form, "audience": f"{raw_kinde.url}/api", "client_secret": "nope"}
    assert requests.post(url, data=bad_secret, timeout=2).status_code == 401
    assert raw_kinde.token_requests == 0
    token = raw_token(raw_kinde)
    assert token and raw_kinde.token_requests == 1


def test_fake_pages_with_the_spec_default_size(raw_kinde: FakeKinde) -> None:
    for i in range(2, 13):
        raw_kinde.add_agreement("customer_1", f"agreement_{i}", "pro", ["credits"], NOW, NOW)
    body = raw_call(
        raw_kinde, "GET", "/api/v1/billing/agreements", params={"customer_id": "customer_1"}
    ).json()
    assert len(body["agreements"]) == 10  # default page_size per the spec
    assert body["has_more"] is True
    assert raw_kinde.spec_violations == []
