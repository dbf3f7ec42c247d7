"""`kinde-credits events` and `kinde-credits simulate` against real databases and a real
running HTTP server (simulate signs with the local key and POSTs over the network)."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner
from werkzeug.serving import make_server

from app import create_app
from app.bootstrap import build_container
from app.cli import main
from app.cli_webhooks import build_payload
from app.settings import Settings
from tests.webhook_fixtures import (
    WebhookEnv,
    event,
    meter,
)

# Fixtures: jwks, signing_key, other_key, webhook_env.
pytest_plugins = ["tests.webhook_fixtures"]


def run(args: list[str], env: dict[str, str]) -> Any:
    result = CliRunner().invoke(main, args, env=env, catch_exceptions=False)
    return result


@pytest.fixture
def cli_env(webhook_env: WebhookEnv, tmp_path: Path) -> dict[str, str]:
    # The CLI reads the same database; it runs in local mode (its own key) for reading.
    return {
        "DATABASE_URL": webhook_env.container.settings.database_url,
        "KINDE_CREDITS_VAR_DIR": str(tmp_path / "cli"),
        "KINDE_DOMAIN": "",
        "KINDE_API_AUDIENCE": "",
    }


def test_events_lists_filters_and_retries(webhook_env: WebhookEnv,
                                          cli_env: dict[str, str]) -> None:
    parked = meter("customer_c", "2")
    webhook_env.deliver(parked)
    webhook_env.deliver(event("user.created", {"user": {"id": "kp_c"}}))
    webhook_env.deliver(event("role.created", {}))

    result = run(["events", "--json"], cli_env)
    assert result.exit_code == 0, result.output
    rows = json.loads(result.output)["events"]
    assert sorted(r["status"] for r in rows) == ["ignored", "parked", "processed"]
    assert all(set(r) >= {"event_id", "type", "status", "reason", "wallet_id", "payload"}
               for r in rows)

    result = run(["events", "--parked", "--json"], cli_env)
    [row] = json.loads(result.output)["events"]
    assert row["event_id"] == parked["event_id"]
    assert "unknown customer customer_c" in row["reason"]

    text = run(["events", "--parked"], cli_env).output
    assert parked["event_id"] in text and "unknown customer" in text

    assert [r["type"] for r in json.loads(
        run(["events", "--wallet", "kp_c", "--json"], cli_env).output)["events"]
    ] == ["user.created"]
    assert len(json.loads(
        run(["events", "--type", "role.created", "--json"], cli_env).output)["events"]) == 1

    # Nothing maps the customer yet: a forced retry parks it again (never drops it).
    result = run(["events", "--retry", "--json"], cli_env)
    assert json.loads(result.output) == {"applied": 0, "still_parked": 1}
    with webhook_env.container.store(True) as uow:
        uow.wallets.update_profile("kp_c", billing_customer_id="customer_c")
        uow.commit()
    result = run(["events", "--retry"], cli_env)
    assert "applied 1 parked event(s); 0 still parked" in result.output
    assert webhook_env.balance("kp_c") == 500 - 200
    assert sorted(r["type"] for r in json.loads(
        run(["events", "--wallet", "kp_c", "--json"], cli_env).output)["events"]
    ) == ["customer.meter_usage_updated", "user.created"]


def test_simulate_refuses_in_kinde_mode(tmp_path: Path) -> None:
    result = CliRunner().invoke(main, ["simulate", "user.created", "--user", "kp_x"], env={
        "KINDE_DOMAIN": "https://acme.kinde.com",
        "KINDE_API_AUDIENCE": "https://api.acme.test",
        "KINDE_CREDITS_VAR_DIR": str(tmp_path),
    })
    assert result.exit_code == 1
    assert "only works in local mode" in result.output


def test_simulate_needs_its_ids(tmp_path: Path) -> None:
    result = CliRunner().invoke(main, ["simulate", "user.created"], env={
        "KINDE_DOMAIN": "", "KINDE_CREDITS_VAR_DIR": str(tmp_path)})
    assert result.exit_code == 2 and "--user" in result.output


def test_build_payload_shapes() -> None:
    p = build_payload("customer.meter_usage_updated", customer="c1", feature="storage_gb",
                      value="3", absolute=True, org="org_a", agreement="a1")
    assert p["type"] == "customer.meter_usage_updated" and p["source"] == "api"
    assert p["event_id"].startswith("event_") and len(p["event_id"]) == 38
    assert p["data"]["meter_value"] == "3" and p["data"]["meter_type_code"] == "absolute"
    assert (p["data"]["customer_id"], p["data"]["org_code"], p["data"]["agreement_id"]) == (
        "c1", "org_a", "a1")
    u = build_payload("user.created", user="kp_1", email="a@example.com")
    assert u["data"]["user"]["id"] == "kp_1" and u["data"]["user"]["email"] == "a@example.com"
    # A simulated agreement states its current period (this month unless told otherwise), so
    # absolute values without one can be applied (issue 9: periods are never guessed).
    a = build_payload("customer.agreement_created", customer="c1", agreement="a1",
                      now=datetime(2026, 12, 20, 8, tzinfo=UTC))
    assert (a["data"]["current_period_start"], a["data"]["current_period_end"]) == (
        "2026-12-01T00:00:00Z", "2027-01-01T00:00:00Z")
    b = build_payload("customer.plan_changed", customer="c1", agreement="a1",
                      period_start="2026-12-15T00:00:00Z", period_end="2027-01-15T00:00:00Z")
    assert b["data"]["current_period_end"] == "2027-01-15T00:00:00Z"


@pytest.fixture
def local_server(tmp_path: Path, sqlite_url: str) -> Iterator[tuple[str, dict[str, str], Any]]:
    env = {"DATABASE_URL": sqlite_url, "KINDE_CREDITS_VAR_DIR": str(tmp_path),
           "KINDE_DOMAIN": "", "KINDE_API_AUDIENCE": "", "RUN_WORKER": "false"}
    container = build_container(Settings.from_env(env, load_dotenv=False))
    server = make_server("127.0.0.1", 0, create_app(container=container), threaded=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_port}/webhooks/kinde", env, container
    finally:
        server.shutdown()
        thread.join(timeout=5)
        container.close()


def test_simulate_signs_and_sends_to_the_running_service(
    local_server: tuple[str, dict[str, str], Any],
) -> None:
    url, env, container = local_server

    def simulate(*args: str) -> dict[str, Any]:
        result = CliRunner().invoke(main, ["simulate", *args, "--url", url], env=env)
        assert result.exit_code == 0, result.output
        return dict(json.loads(result.output.strip().splitlines()[-1]))

    assert simulate("user.created", "--user", "kp_sim", "--email", "s@example.com")[
        "status"] == "processed"
    assert simulate("customer.meter_usage_updated", "--customer", "cust_sim", "--feature",
                    "storage_gb", "--value", "2")["status"] == "parked"
    assert simulate("customer.agreement_created", "--customer", "cust_sim", "--agreement",
                    "agr_sim", "--user", "kp_sim", "--plan", "pro")["status"] == "processed"
    assert simulate("customer.meter_usage_updated", "--customer", "cust_sim", "--feature",
                    "storage_gb", "--value", "3", "--absolute")["status"] == "processed"
    # The agreement puts kp_sim on plan pro: its 20,000 credits for this period (issue 12).
    assert container.ledger.get_wallet("kp_sim")["balance"] == 500 + 20000 - 200 - 300
    again = simulate("organization.created", "--org", "org_sim")
    assert again["status"] == "processed"
    assert container.ledger.get_wallet("org_sim")["balance"] == 2000
    assert simulate("organization.created", "--org", "org_sim", "--event-id",
                    again["event_id"])["status"] == "duplicate"


def test_simulate_reports_an_unreachable_service(tmp_path: Path) -> None:
    result = CliRunner().invoke(
        main, ["simulate", "user.created", "--user", "kp_x", "--url",
               "http://127.0.0.1:9/webhooks/kinde"],
        env={"KINDE_DOMAIN": "", "KINDE_CREDITS_VAR_DIR": str(tmp_path)},
    )
    assert result.exit_code == 1 and "could not reach" in result.output
