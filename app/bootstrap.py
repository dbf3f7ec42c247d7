"""The composition root: the only place that picks concrete adapters for the ports.

`build_container(settings)` wires the store, catalog, token verifiers and services once per
process; tests build their own container (or swap single adapters) through the same function.
In local mode (no KINDE_DOMAIN) the service signs and verifies with its own RSA key.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from adapters.dashboard_signing import ItsDangerousSigner, load_or_create_secret
from adapters.kinde_api import KindeManagementClient
from adapters.local_keys import LocalKeyring
from adapters.notify import NotifyConfigError, build_channels
from adapters.sql.engine import is_transient_error, make_engine
from adapters.sql.operations import SqlOperationsReader
from adapters.sql.store import SqlStore
from adapters.tokens import AccessTokenVerifier, JwksKeySource, KeySource, WebhookVerifier
from app.domain.catalog import Catalog, load_catalog
from app.services.agreements import EventPeriods, KindePeriods, LocalCalendar, PeriodSource
from app.services.dashboard import DashboardService, policy_for
from app.services.deferred_recharges import DeferredRechargeService
from app.services.group_commit import GroupCommitRunner
from app.services.ledger import LedgerService, utc_now
from app.services.metrics import MetricsService
from app.services.notifications import ChannelHandler, Notifier
from app.services.operations import OperationsService
from app.services.outbox import OutboxDispatcher, RetryPolicy
from app.services.outbox_kinds import METER_USAGE, NOTIFY_PREFIX, PACK_INVOICE
from app.services.payments import KindeInvoicing, sale_payments
from app.services.plans import PlanService
from app.services.ports import Clock
from app.services.recharge import AutoRecharger, DeadInvoiceHandler
from app.services.usage_reporting import PackInvoicer, UsageReporter, usage_report_hook
from app.services.webhooks import WebhookService
from app.settings import Settings, SettingsError

LOCAL_AUDIENCE = "kinde-credits-local"


@dataclass
class Container:
    settings: Settings
    catalog: Catalog
    store: SqlStore
    ledger: LedgerService
    clock: Clock
    key_source: KeySource
    access_verifier: AccessTokenVerifier
    webhook_verifier: WebhookVerifier
    dispatcher: OutboxDispatcher
    metrics: MetricsService
    operations: OperationsService
    plans: PlanService
    webhooks: WebhookService
    dashboard: DashboardService
    deferred_recharges: DeferredRechargeService
    keyring: LocalKeyring | None = None
    kinde: KindeManagementClient | None = None

    @property
    def audience(self) -> str:
        return self.settings.kinde_api_audience or LOCAL_AUDIENCE

    def close(self) -> None:
        self.store.engine.dispose()


def build_container(
    settings: Settings,
    *,
    catalog: Catalog | None = None,
    clock: Clock = utc_now,
    pool_size: int = 10,
    key_source: KeySource | None = None,
    kinde: KindeManagementClient | None = None,
) -> Container:
    catalog = catalog or load_catalog(settings.catalog_path)
    store = SqlStore(make_engine(settings.database_url, pool_size=pool_size))
    ledger = LedgerService(store, catalog, clock)
    # Concurrent API writes share transactions and commits (app.services.group_commit).
    ledger.writer.runner = GroupCommitRunner(store, is_transient=is_transient_error)

    keyring: LocalKeyring | None = None
    if key_source is None:
        if settings.local_mode:
            keyring = LocalKeyring.load_or_create(settings.local_key_path)
            key_source = keyring.key_source()
        else:
            assert settings.jwks_url is not None
            key_source = JwksKeySource(settings.jwks_url)
    audience = settings.kinde_api_audience or (LOCAL_AUDIENCE if settings.local_mode else None)

    # Usage of app-source features is reported to Kinde only when we can talk to Kinde.
    if kinde is None and settings.kinde_domain and settings.kinde_m2m_client_id:
        kinde = KindeManagementClient(
            settings.kinde_domain,
            settings.kinde_m2m_client_id,
            settings.kinde_m2m_client_secret or "",
        )
    handlers: dict[str, Any] = {}
    # How a sold pack is paid for (app.services.payments): decided here, once.
    ledger.payments = sale_payments(kinde_billing=kinde is not None,
                                    paid_elsewhere=settings.sales_paid_elsewhere)
    if kinde is not None:
        ledger.after_write.append(usage_report_hook(catalog))
        handlers[METER_USAGE] = UsageReporter(
            store, catalog, kinde, clock, settings.outbox_confirm_seconds
        )
        handlers[PACK_INVOICE] = PackInvoicer(
            store, catalog, kinde, clock, settings.outbox_confirm_seconds
        )
        # Auto-recharge needs a way to charge: with Kinde, purchases are invoiced through it.
        ledger.recharger = AutoRecharger(catalog, KindeInvoicing())

    try:
        channels = build_channels(settings.as_env())
    except NotifyConfigError as exc:
        raise SettingsError(str(exc)) from exc
    ledger.after_write.append(Notifier(catalog, [c.name for c in channels], settings.top_up_url))
    for channel in channels:
        handlers[NOTIFY_PREFIX + channel.name] = ChannelHandler(channel)

    dispatcher = OutboxDispatcher(
        store, handlers, clock, RetryPolicy(
            max_attempts=settings.outbox_max_attempts,
            lease_seconds=settings.outbox_lease_seconds,
        ),
    )

    # A dead pack invoice fails its purchases and suspends auto-recharge.
    dispatcher.dead_listeners.append(
        DeadInvoiceHandler(store, ledger.suspend_auto_recharge_in, clock)
    )
    # Plan periods: where they come from is chosen here, once (app.services.agreements);
    # every write and read applies due period ends and renewals, the worker confirms them.
    period_source: PeriodSource = (
        LocalCalendar() if settings.local_mode
        else KindePeriods(kinde) if kinde is not None
        else EventPeriods()
    )
    plans = PlanService(ledger.writer, period_source)
    ledger.before_sweep.append(plans.advance)
    operations = OperationsService(store, SqlOperationsReader(store.engine), clock)
    container = Container(
        settings=settings,
        catalog=catalog,
        store=store,
        ledger=ledger,
        clock=clock,
        key_source=key_source,
        access_verifier=AccessTokenVerifier(
            key_source, settings.issuer, audience,
            max_lifetime=settings.token_max_lifetime_seconds,
        ),
        webhook_verifier=WebhookVerifier(key_source, settings.kinde_domain),
        dispatcher=dispatcher,
        metrics=MetricsService(operations),
        operations=operations,
        plans=plans,
        # The Kinde client (with Management API credentials) lets the worker learn agreement
        # periods for absolute meter values that state none.
        webhooks=WebhookService(ledger.writer, kinde=kinde, plans=plans),
        dashboard=build_dashboard(settings, ledger, clock),
        deferred_recharges=DeferredRechargeService(ledger.writer),
        keyring=keyring,
        kinde=kinde,
    )
    return container


def build_dashboard(settings: Settings, ledger: LedgerService, clock: Clock) -> DashboardService:
    """The customer dashboard, signing with DASHBOARD_SECRET or a key kept under var_dir."""

    def signer() -> ItsDangerousSigner:
        secret = settings.dashboard_secret or load_or_create_secret(
            settings.dashboard_secret_path)
        return ItsDangerousSigner(secret)

    policy = policy_for(ledger, unbilled_purchases=settings.dashboard_unbilled_purchases,
                        auto_recharge_editable=settings.dashboard_auto_recharge)
    return DashboardService(ledger, signer, clock, policy)


def upgrade_schema(database_url: str, revision: str = "head") -> None:
    """Create or migrate the schema (Alembic); imported on use, so serving never loads it."""
    from adapters.sql.migrate import upgrade

    upgrade(database_url, revision)


def schema_revision(database_url: str) -> str | None:
    """The schema's Alembic revision, or None when the database has no schema (or is down)."""
    from adapters.sql.migrate import current

    return current(database_url)
