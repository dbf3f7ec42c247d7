"""Team budgets over HTTP (Flask test client, SQLite and PostgreSQL): setting caps, who the
member is (a user token's sub, or `member` from M2M), 402 member_budget_exceeded, the members
report, the pre-check, and nothing written on any refusal."""

from __future__ import annotations

from typing import Any

import pytest
from flask.testing import FlaskClient

from tests.http_fixtures import *  # noqa: F403
from tests.http_fixtures import Tokens, bearer, table_counts

ORG = "org_acme"


@pytest.fixture
def admin(tokens: Tokens) -> dict[str, str]:
    return bearer(tokens.m2m("credits:admin"))


@pytest.fixture
def app_m2m(tokens: Tokens) -> dict[str, str]:
    return bearer(tokens.m2m("credits:write"))


@pytest.fixture
def funded(client: FlaskClient, admin: dict[str, str]) -> str:
    response = client.post(f"/v1/wallets/{ORG}/top-ups",
                           json={"credits": 1000, "reason": "team"}, headers=admin)
    assert response.status_code == 201
    return ORG


def put_budget(client: FlaskClient, headers: dict[str, str], member: str,
               body: Any) -> Any:
    return client.put(f"/v1/wallets/{ORG}/members/{member}/budget", json=body, headers=headers)


def usage(client: FlaskClient, headers: dict[str, str], body: dict[str, Any],
          wallet: str = ORG) -> Any:
    return client.post(f"/v1/wallets/{wallet}/usage", json=body, headers=headers)


def test_admin_sets_caps_and_a_member_is_refused_past_them(
    client: FlaskClient, admin: dict[str, str], app_m2m: dict[str, str], funded: str,
    db_url: str,
) -> None:
    put = put_budget(client, admin, "kp_alice", {"credits_per_day": 100})
    assert put.status_code == 200, put.json
    assert put.json == {"wallet_id": ORG, "member": "kp_alice", "credits_per_day": 100,
                        "credits_per_month": None}
    put = put_budget(client, admin, "kp_alice", {"credits_per_month": 500})
    assert put.json["credits_per_day"] == 100 and put.json["credits_per_month"] == 500

    ok = usage(client, app_m2m, {"feature": "report_generation", "quantity": 2,
                                 "member": "kp_alice"})
    assert ok.status_code == 201 and ok.json["member"] == "kp_alice"
    before = table_counts(db_url)
    refused = usage(client, app_m2m, {"feature": "api_call", "quantity": 1,
                                      "member": "kp_alice"})
    assert refused.status_code == 402
    assert refused.json["error"] | {"message": ""} == {
        "code": "member_budget_exceeded", "message": "", "needed": 1, "available_to_member": 0}
    assert table_counts(db_url) == before  # the org wallet is untouched

    removed = put_budget(client, admin, "kp_alice", {"credits_per_day": None})
    assert removed.json["credits_per_day"] is None
    assert usage(client, app_m2m, {"feature": "api_call", "quantity": 1,
                                   "member": "kp_alice"}).status_code == 201


def test_a_user_token_spends_as_itself(
    client: FlaskClient, admin: dict[str, str], tokens: Tokens, funded: str, db_url: str
) -> None:
    put_budget(client, admin, "kp_alice", {"credits_per_day": 60})
    alice = bearer(tokens.user("kp_alice", org=ORG, scopes=("credits:write",)))
    assert usage(client, alice, {"feature": "report_generation", "quantity": 1}).json[
        "member"] == "kp_alice"
    assert usage(client, alice, {"feature": "api_call", "quantity": 10,
                                 "member": "kp_alice"}).status_code == 201
    before = table_counts(db_url)
    over = usage(client, alice, {"feature": "api_call", "quantity": 1})
    assert over.status_code == 402 and over.json["error"]["code"] == "member_budget_exceeded"
    # Naming someone else's budget to dodge one's own cap is refused.
    dodge = usage(client, alice, {"feature": "api_call", "quantity": 1, "member": "kp_bob"})
    assert dodge.status_code == 403 and dodge.json["error"]["code"] == "forbidden"
    hold = client.post(f"/v1/wallets/{ORG}/holds", json={"credits": 5, "member": "kp_bob"},
                       headers=alice)
    assert hold.status_code == 403
    assert table_counts(db_url) == before

    # On a user's own wallet there are no members.
    client.post("/v1/wallets/kp_alice/top-ups", json={"credits": 10, "reason": "own"},
                headers=admin)
    own = usage(client, alice, {"feature": "api_call", "quantity": 1}, wallet="kp_alice")
    assert own.status_code == 201 and "member" not in own.json
    named = usage(client, admin, {"feature": "api_call", "quantity": 1, "member": "kp_alice"},
                  wallet="kp_alice")
    assert named.status_code == 422 and named.json["error"]["code"] == "invalid_request"


@pytest.mark.parametrize("member", [
    "alice", "org_acme", "kp_", "kp_a\x00b", "kp_" + "x" * 300, "kp_a b", "kp_é", 7, None, [],
])
def test_odd_member_names_are_422_and_write_nothing(
    client: FlaskClient, app_m2m: dict[str, str], funded: str, db_url: str, member: Any
) -> None:
    before = table_counts(db_url)
    response = usage(client, app_m2m, {"feature": "api_call", "quantity": 1, "member": member})
    assert response.status_code == 422, response.json
    assert response.json["error"]["code"] == "invalid_request"
    hold = client.post(f"/v1/wallets/{ORG}/holds", json={"credits": 1, "member": member},
                       headers=app_m2m)
    assert hold.status_code == 422
    assert table_counts(db_url) == before


@pytest.mark.parametrize(("member", "body"), [
    ("kp_alice", {}),
    ("kp_alice", {"credits_per_day": -1}),
    ("kp_alice", {"credits_per_day": "100"}),
    ("kp_alice", {"credits_per_day": 1.5}),
    ("kp_alice", {"credits_per_day": True}),
    ("kp_alice", {"credits_per_week": 5}),
    ("kp_alice", [1]),
    ("alice", {"credits_per_day": 5}),
    ("kp_a%00b", {"credits_per_day": 5}),
    ("kp_" + "x" * 400, {"credits_per_day": 5}),
])
def test_bad_budgets_are_422_and_write_nothing(
    client: FlaskClient, admin: dict[str, str], funded: str, db_url: str, member: str,
    body: Any,
) -> None:
    before = table_counts(db_url)
    response = put_budget(client, admin, member, body)
    assert response.status_code == 422, response.json
    assert response.json["error"]["code"] == "invalid_request"
    assert table_counts(db_url) == before


def test_who_may_set_and_read_budgets(
    client: FlaskClient, admin: dict[str, str], app_m2m: dict[str, str], tokens: Tokens,
    funded: str,
) -> None:
    body = {"credits_per_day": 5}
    assert put_budget(client, app_m2m, "kp_alice", body).status_code == 403
    alice = bearer(tokens.user("kp_alice", org=ORG))
    assert put_budget(client, alice, "kp_alice", body).status_code == 403
    other_org = bearer(tokens.m2m("credits:admin", org="org_other"))
    assert put_budget(client, other_org, "kp_alice", body).status_code == 404
    assert client.get(f"/v1/wallets/{ORG}/members", headers=other_org).status_code == 404
    user_wallet = client.put("/v1/wallets/kp_alice/members/kp_bob/budget", json=body,
                             headers=admin)
    assert user_wallet.status_code == 422
    assert put_budget(client, {}, "kp_alice", body).status_code == 401


def test_members_report_by_feature_and_who_sees_it(
    client: FlaskClient, admin: dict[str, str], app_m2m: dict[str, str], tokens: Tokens,
    funded: str,
) -> None:
    put_budget(client, admin, "kp_alice", {"credits_per_day": 300, "credits_per_month": 2000})
    put_budget(client, admin, "kp_carol", {"credits_per_month": 10})
    usage(client, app_m2m, {"feature": "report_generation", "quantity": 2, "member": "kp_alice"})
    usage(client, app_m2m, {"feature": "api_call", "quantity": 7, "member": "kp_alice"})
    usage(client, app_m2m, {"feature": "file_conversion", "quantity": 3, "member": "kp_bob"})
    hold = client.post(f"/v1/wallets/{ORG}/holds",
                       json={"feature": "report_generation", "quantity": 1,
                             "member": "kp_alice"}, headers=app_m2m)
    assert hold.status_code == 201 and hold.json["member"] == "kp_alice"

    report = client.get(f"/v1/wallets/{ORG}/members", headers=admin)
    assert report.status_code == 200, report.json
    members = {m["member"]: m for m in report.json["members"]}
    assert list(members) == ["kp_alice", "kp_bob", "kp_carol"]
    alice = members["kp_alice"]
    assert alice["held"] == 50 and alice["budget"] == {"credits_per_day": 300,
                                                       "credits_per_month": 2000}
    assert alice["today"] == {"spent": 107, "cap": 300, "remaining": 143, "by_feature": [
        {"feature": "api_call", "credits": 7, "units": 7},
        {"feature": "report_generation", "credits": 100, "units": 2}]}
    assert alice["this_month"]["remaining"] == 2000 - 107 - 50
    assert members["kp_bob"]["today"]["spent"] == 6
    assert members["kp_carol"]["this_month"] == {"spent": 0, "cap": 10, "remaining": 10,
                                                 "by_feature": []}

    captured = client.post(f"/v1/holds/{hold.json['hold_id']}/capture", json={"credits": 20},
                           headers=app_m2m)
    assert captured.status_code == 200, captured.json
    again = client.get(f"/v1/wallets/{ORG}/members", headers=admin).json
    alice = next(m for m in again["members"] if m["member"] == "kp_alice")
    assert alice["held"] == 0 and alice["today"]["spent"] == 127

    # A member without the admin scope sees only their own row; a stranger sees nothing.
    bob = client.get(f"/v1/wallets/{ORG}/members",
                     headers=bearer(tokens.user("kp_bob", org=ORG))).json
    assert [m["member"] for m in bob["members"]] == ["kp_bob"]
    dave = client.get(f"/v1/wallets/{ORG}/members",
                      headers=bearer(tokens.user("kp_dave", org=ORG))).json
    assert dave["members"][0]["member"] == "kp_dave"
    assert dave["members"][0]["today"]["spent"] == 0
    assert client.get("/v1/wallets/kp_bob/members", headers=admin).status_code == 422
    assert client.get(f"/v1/wallets/{ORG}/members",
                      headers=bearer(tokens.user("kp_bob", org="org_x"))).status_code == 404


def test_pre_check_over_http_agrees_and_writes_nothing(
    client: FlaskClient, admin: dict[str, str], app_m2m: dict[str, str], tokens: Tokens,
    funded: str, db_url: str,
) -> None:
    put_budget(client, admin, "kp_alice", {"credits_per_day": 120})
    read = bearer(tokens.m2m("credits:read"))
    before = table_counts(db_url)
    yes = client.get(f"/v1/wallets/{ORG}/check?feature=report_generation&quantity=2"
                     "&member=kp_alice", headers=read)
    assert yes.status_code == 200, yes.json
    assert yes.json == {"allowed": True, "credits": 100, "available": 120,
                        "wallet_available": 1000, "member": "kp_alice",
                        "member_remaining": 120}
    no = client.get(f"/v1/wallets/{ORG}/check?feature=report_generation&quantity=3"
                    "&member=kp_alice", headers=read)
    assert no.json["allowed"] is False and no.json["code"] == "member_budget_exceeded"
    assert no.json["reason"]
    assert table_counts(db_url) == before
    # The debits then do what the checks said.
    assert usage(client, app_m2m, {"feature": "report_generation", "quantity": 3,
                                   "member": "kp_alice"}).status_code == 402
    assert usage(client, app_m2m, {"feature": "report_generation", "quantity": 2,
                                   "member": "kp_alice"}).status_code == 201

    # A signed-in member checks their own budget with a plain login token.
    alice = bearer(tokens.user("kp_alice", org=ORG))
    own = client.get(f"/v1/wallets/{ORG}/check?feature=api_call&quantity=20", headers=alice)
    assert own.json | {"reason": ""} == {"allowed": True, "credits": 20, "available": 20,
                                         "wallet_available": 900, "member": "kp_alice",
                                         "member_remaining": 20, "reason": ""}
    assert client.get(f"/v1/wallets/{ORG}/check?feature=api_call&member=kp_bob",
                      headers=alice).status_code == 403
    whole = client.get(f"/v1/wallets/{ORG}/check?feature=api_call&quantity=901", headers=read)
    assert whole.json["allowed"] is False and whole.json["code"] == "insufficient_credits"
    for query in ("feature=storage", "feature=nope", "feature=api_call&quantity=0",
                  "feature=api_call&quantity=x", "quantity=1", "feature=api_call&member=bob",
                  "feature=api_call&member=kp_a%00b"):
        bad = client.get(f"/v1/wallets/{ORG}/check?{query}", headers=read)
        assert bad.status_code == 422, (query, bad.json)
    user_wallet = client.get("/v1/wallets/kp_zed/check?feature=api_call&member=kp_zed",
                             headers=read)
    assert user_wallet.status_code == 422
    assert table_counts(db_url) == before | {"entries": before["entries"] + 1,
                                             "balance_sum": before["balance_sum"] - 100}


def test_batch_records_name_members(
    client: FlaskClient, admin: dict[str, str], tokens: Tokens, funded: str
) -> None:
    put_budget(client, admin, "kp_alice", {"credits_per_day": 3})
    alice = bearer(tokens.user("kp_alice", org=ORG, scopes=("credits:write",)))
    batch = client.post("/v1/usage/batch", headers=alice, json={"records": [
        {"wallet_id": ORG, "feature": "api_call", "quantity": 2},
        {"wallet_id": ORG, "feature": "api_call", "quantity": 2},
        {"wallet_id": ORG, "feature": "api_call", "quantity": 1, "member": "kp_bob"},
        {"wallet_id": ORG, "feature": "api_call", "quantity": 1, "member": "kp_alice"},
    ]})
    assert batch.status_code == 200, batch.json
    results = batch.json["results"]
    assert [r["status"] for r in results] == [201, 402, 403, 201]
    assert results[1]["error"] | {"message": ""} == {
        "code": "member_budget_exceeded", "message": "", "needed": 2, "available_to_member": 1}


def test_openapi_documents_budgets(client: FlaskClient) -> None:
    spec = client.get("/openapi.json").json
    assert set(spec["paths"]["/v1/wallets/{wallet_id}/members/{user_id}/budget"]) >= {"put"}
    assert set(spec["paths"]["/v1/wallets/{wallet_id}/members"]) >= {"get"}
    check = spec["paths"]["/v1/wallets/{wallet_id}/check"]["get"]
    assert {p["name"] for p in check["parameters"]} >= {"feature", "quantity", "member"}
    assert "member_budget_exceeded" in spec["paths"]["/v1/wallets/{wallet_id}/usage"]["post"][
        "responses"]["402"]["description"]
    detail = spec["components"]["schemas"]["ErrorDetail"]["properties"]
    assert "available_to_member" in detail
