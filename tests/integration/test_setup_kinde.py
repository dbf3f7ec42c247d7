"""`kinde-credits setup-kinde` against the spec-validating fake Kinde over real HTTP."""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from click.testing import CliRunner

from app.cli import main
from app.services.kinde_setup import HANDLED_EVENT_TYPES
from app.settings import DEFAULT_CATALOG
from tests.fakes.fake_kinde import DEFAULT_EVENT_TYPES, FakeKinde

ENDPOINT = "https://credits.example.com/webhooks/kinde"


@pytest.fixture
def kinde() -> Iterator[FakeKinde]:
    fake = FakeKinde()
    fake.event_types = [dict(t) for t in DEFAULT_EVENT_TYPES] + [
        {"id": f"evt_{code}", "code": code, "name": code, "origin": "billing", "schema": {}}
        for code in HANDLED_EVENT_TYPES
        if code not in {t["code"] for t in DEFAULT_EVENT_TYPES}
    ]
    fake.start()
    now = datetime.now(UTC)
    fake.add_customer("customer_1", user_id="kp_a")
    fake.add_agreement("customer_1", "agreement_1", "pro",
                       ["file_conversions", "api_calls", "reports", "storage_gb",
                        "credit_pack_starter", "credit_pack_starter_auto"],
                       now - timedelta(days=1), now + timedelta(days=29))
    yield fake
    fake.stop()
    assert fake.spec_violations == []


def run(kinde: FakeKinde, tmp_path: Path, *args: str) -> tuple[int, str]:
    env = {
        "DATABASE_URL": f"sqlite:///{tmp_path / 'db.sqlite'}",
        "KINDE_DOMAIN": kinde.url,
        "KINDE_API_AUDIENCE": "https://api.example.com",
        "KINDE_M2M_CLIENT_ID": kinde.client_id,
        "KINDE_M2M_CLIENT_SECRET": kinde.client_secret,
        "CREDITS_CATALOG": str(DEFAULT_CATALOG),
        "KINDE_CREDITS_VAR_DIR": str(tmp_path),
    }
    from adapters.sql.migrate import upgrade

    upgrade(env["DATABASE_URL"])
    result = CliRunner().invoke(main, ["setup-kinde", "--url", ENDPOINT, *args], env=env)
    return result.exit_code, result.output


def test_dry_run_changes_nothing(kinde: FakeKinde, tmp_path: Path) -> None:
    code, out = run(kinde, tmp_path, "--dry-run", "--customer", "customer_1")
    assert "DRY RUN" in out and "create webhook" in out
    assert kinde.webhooks() == []
    # The bundle "growth" pack's feature is not on any plan: reported, exit code 1.
    assert code == 1 and "MISSING  credit_pack_growth" in out


def test_registers_once_then_updates_in_place(kinde: FakeKinde, tmp_path: Path) -> None:
    run(kinde, tmp_path, "--customer", "customer_1")
    [hook] = kinde.webhooks()
    assert hook["endpoint"] == ENDPOINT
    assert set(hook["event_types"]) == set(HANDLED_EVENT_TYPES)
    code, out = run(kinde, tmp_path, "--customer", "customer_1", "--json")
    report = json.loads(out)
    assert len(kinde.webhooks()) == 1, "a second run must not duplicate the subscription"
    assert report["actions"] == [f"webhook {report['webhook_id']} already up to date"]
    assert "api_calls" in report["features_found"]
    # The auto-recharge codes are checked too: growth's is missing, starter's is found.
    assert report["features_missing"] == [
        "credit_pack_growth (bundles.growth)",
        "credit_pack_growth_auto (bundles.growth.auto_recharge_kinde_feature_code)",
    ]
    assert "credit_pack_starter_auto" in report["features_found"]


def test_without_kinde_credentials_it_explains(tmp_path: Path) -> None:
    result = CliRunner().invoke(
        main, ["setup-kinde", "--url", ENDPOINT],
        env={"KINDE_CREDITS_VAR_DIR": str(tmp_path), "DATABASE_URL":
             f"sqlite:///{tmp_path / 'x.db'}"},
    )
    assert result.exit_code != 0 and "KINDE_M2M_CLIENT_ID" in result.output


def test_plain_http_url_refused(kinde: FakeKinde, tmp_path: Path) -> None:
    result = CliRunner().invoke(main, ["setup-kinde", "--url", "http://example.com/hook"])
    assert result.exit_code == 2 and "https" in result.output
