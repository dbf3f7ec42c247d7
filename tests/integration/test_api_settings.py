"""PUT /v1/wallets/{id}/alerts and /auto-recharge over the Flask test client."""

from __future__ import annotations

from flask.testing import FlaskClient

from tests.http_fixtures import *  # noqa: F403
from tests.http_fixtures import Tokens, bearer, table_counts


def test_alerts_round_trip_and_show_on_the_wallet(client: FlaskClient, tokens: Tokens) -> None:
    admin = bearer(tokens.m2m("credits:admin"))
    answer = client.put("/v1/wallets/kp_alice/alerts",
                        json={"thresholds_percent": [30], "thresholds_credits": [200]},
                        headers=admin)
    assert answer.status_code == 200, answer.json
    assert answer.json["alerts"] == {"thresholds_percent": [30], "thresholds_credits": [200],
                                     "notify_at_zero": True}
    wallet = client.get("/v1/wallets/kp_alice", headers=admin).json
    assert wallet["alerts"]["custom"] is True and wallet["alerts"]["thresholds_percent"] == [30]
    assert wallet["auto_recharge"]["enabled"] is False


def test_settings_need_admin_and_valid_input(client: FlaskClient, tokens: Tokens,
                                             db_url: str) -> None:
    before = table_counts(db_url)
    write = bearer(tokens.m2m("credits:write"))
    assert client.put("/v1/wallets/kp_alice/alerts", json={}, headers=write).status_code == 403
    user = bearer(tokens.user("kp_alice"))
    # Customers set their own alerts (issue 13; see test_dashboard_http), but neither
    # auto-recharge nor where alert e-mails go.
    assert client.put("/v1/wallets/kp_alice/auto-recharge", json={"enabled": False},
                      headers=user).status_code == 403
    assert client.put("/v1/wallets/kp_alice/alerts", json={"notify_email": "me@example.com"},
                      headers=user).status_code == 403
    admin = bearer(tokens.m2m("credits:admin"))
    bad = client.put("/v1/wallets/kp_alice/alerts", json={"thresholds_percent": [150]},
                     headers=admin)
    assert bad.status_code == 422 and bad.json["error"]["code"] == "invalid_request"
    unknown = client.put("/v1/wallets/kp_alice/alerts", json={"colour": "red"}, headers=admin)
    assert unknown.status_code == 422
    # Local mode has no payment gateway: auto-recharge is refused with the reason.
    recharge = client.put("/v1/wallets/kp_alice/auto-recharge",
                          json={"enabled": True, "threshold_credits": 100,
                                "bundle": "starter"}, headers=admin)
    assert recharge.status_code == 422 and "Kinde" in recharge.json["error"]["message"]
    assert table_counts(db_url) == before


def test_kinde_metered_feature_cannot_be_reported_by_the_app(client: FlaskClient,
                                                             tokens: Tokens) -> None:
    admin = bearer(tokens.m2m("credits:admin"))
    client.post("/v1/wallets/kp_alice/top-ups", json={"credits": 1000, "reason": "t"},
                headers=admin)
    answer = client.post("/v1/wallets/kp_alice/usage", json={"feature": "storage",
                                                             "quantity": 1}, headers=admin)
    assert answer.status_code == 422 and answer.json["error"]["code"] == "unknown_feature"
    assert "metered by Kinde" in answer.json["error"]["message"]


def test_kinde_mode_without_a_gateway_refuses_to_give_packs_away(db_url: str,
                                                                  tmp_path: object) -> None:
    from pathlib import Path

    import pytest

    from app.bootstrap import build_container
    from app.domain.ledger import InvalidRequest
    from app.settings import Settings

    settings = Settings.from_env({
        "DATABASE_URL": db_url, "KINDE_CREDITS_VAR_DIR": str(tmp_path),
        "KINDE_DOMAIN": "https://acme.kinde.com", "KINDE_API_AUDIENCE": "https://api",
    })
    from adapters.local_keys import LocalKeyring

    keys = LocalKeyring.load_or_create(Path(str(tmp_path)) / "k.pem")
    c = build_container(settings, key_source=keys.key_source())
    try:
        with pytest.raises(InvalidRequest, match="SALES_PAID_ELSEWHERE"):
            c.ledger.top_up_bundle("kp_a", "starter")
    finally:
        c.close()
