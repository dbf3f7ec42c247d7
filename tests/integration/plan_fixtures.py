"""Shared set-up for the plan period tests: a catalog with one plan per policy, a container on
a real database driven by a fake clock, and helpers to send plan events and run the worker."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from app.bootstrap import Container, build_container
from app.domain.catalog import Catalog, parse_catalog
from app.services.plans import PlanService
from app.settings import Settings
from app.worker import run_worker
from tests.conftest import FakeClock
from tests.fakes.fake_kinde import FakeKinde

T0 = datetime(2026, 1, 1, tzinfo=UTC)
DAY = timedelta(days=1)


def day(n: float) -> datetime:
    return T0 + n * DAY


PLAN_CATALOG: dict[str, Any] = {
    "features": {
        "api": {"label": "API Call", "unit": "API call", "credits_per_unit": 1,
                "kinde_feature_code": "api_calls", "source": "app"},
    },
    "bundles": {
        "pack": {"credits": 5000, "price": "50.00", "currency": "USD",
                 "description": "Pack", "expires_after_days": 365},
        "odd": {"credits": 3, "price": "1.00", "currency": "EUR",
                "description": "Odd pack", "expires_after_days": 5},
    },
    "plans": {
        "basic": {"credits_per_period": 1000, "rollover": "expire"},
        "pro": {"credits_per_period": 1000, "rollover": "rollover",
                "rollover_expires_after_days": 60, "rollover_max_credits": 1500},
        "max": {"credits_per_period": 1000, "rollover": "full", "rollover_max_credits": 2500},
        "team": {"credits_per_period": 1000, "rollover": "full", "rollover_max_credits": 500},
    },
}


def plan_catalog() -> Catalog:
    return parse_catalog(PLAN_CATALOG)


@dataclass
class PlanWorld:
    container: Container
    clock: FakeClock

    @property
    def plans(self) -> PlanService:
        service = self.container.plans
        assert isinstance(service, PlanService)
        return service

    def event(self, event_type: str, wallet: str, *, plan: str | None = None,
              agreement: str | None = None, start: datetime | None = None,
              end: datetime | None = None, event_id: str | None = None,
              customer: str | None = None) -> str:
        data: dict[str, Any] = {"org_code": wallet, "agreement_id": agreement or f"agr_{wallet}",
                                "customer_id": customer or f"customer_{wallet}"}
        if plan:
            data["plan_code"] = plan
        if start is not None:
            data["current_period_start"] = start.isoformat().replace("+00:00", "Z")
        if end is not None:
            data["current_period_end"] = end.isoformat()
        claims = {"type": event_type, "event_id": event_id or f"event_{uuid.uuid4().hex}",
                  "source": "api", "timestamp": self.clock().isoformat(), "data": data}
        return self.container.webhooks.receive(claims, "raw.jwt").status

    def worker(self) -> None:
        run_worker(self.container, once=True)

    def balance(self, wallet: str) -> int:
        return int(self.container.ledger.get_wallet(wallet)["balance"])

    def use(self, wallet: str, credits: int) -> None:
        outcome = self.container.ledger.record_usage(wallet, "api", credits)
        assert outcome.status == 201, outcome.body

    def entries(self, wallet: str) -> list[dict[str, Any]]:
        page = self.container.ledger.ledger_page(wallet, limit=200)
        return list(reversed(page["entries"]))

    def allotment_rows(self, wallet: str) -> list[Any]:
        with self.container.store(False) as uow:
            return list(uow.plans.periods(wallet))


@pytest.fixture
def world(db_url: str, tmp_path: Path) -> Iterator[PlanWorld]:
    clock = FakeClock(T0 + timedelta(hours=1))
    env = {"DATABASE_URL": db_url, "KINDE_CREDITS_VAR_DIR": str(tmp_path)}
    c = build_container(Settings.from_env(env), catalog=plan_catalog(), clock=clock)
    yield PlanWorld(c, clock)
    c.close()


# -- the same against the fake Kinde, over real HTTP ------------------------------------------


@pytest.fixture
def kinde() -> Iterator[FakeKinde]:
    fake = FakeKinde()
    fake.start()
    fake.add_customer("customer_org_k", org_code="org_k")
    fake.add_agreement("customer_org_k", "agr_org_k", "team", ["api_calls"], day(0), day(30))
    yield fake
    fake.stop()
    assert fake.spec_violations == [], fake.spec_violations


@pytest.fixture
def kinde_world(db_url: str, kinde: FakeKinde, tmp_path: Path) -> Iterator[PlanWorld]:
    from adapters.local_keys import LocalKeyring

    clock = FakeClock(day(0) + timedelta(hours=1))
    env = {
        "DATABASE_URL": db_url,
        "KINDE_DOMAIN": kinde.url,
        "KINDE_API_AUDIENCE": "https://api.example.com",
        "KINDE_M2M_CLIENT_ID": kinde.client_id,
        "KINDE_M2M_CLIENT_SECRET": kinde.client_secret,
        "KINDE_CREDITS_VAR_DIR": str(tmp_path),
    }
    keyring = LocalKeyring.load_or_create(tmp_path / "k.pem")
    c = build_container(Settings.from_env(env), catalog=plan_catalog(), clock=clock,
                        key_source=keyring.key_source())
    yield PlanWorld(c, clock)
    c.close()
