"""Reporting app-source usage to Kinde's metering, exactly once in effect.

Every debit of a feature with `source = "app"` enqueues (in the debit's own transaction) the
outbox topic `meter:<wallet>:<feature>`; many debits coalesce into that one pending row, so
Kinde calls grow with active customers, not with events.

The worker reports an `absolute` value: the units used in the agreement's current period,
computed as (all units ever used) - base_units, where base_units are the units Kinde already
counted in earlier periods or agreements. Resending the same absolute total after a lost answer
changes nothing at Kinde, so a crash or timeout can never double-bill. When the period rolls
over, what Kinde acknowledged stays in the old period and anything not yet acknowledged is
carried into the new one (Kinde counts late usage in the next cycle anyway).

A total sent after its period closed (our clock past the period's end while Kinde's agreement
still shows the old period, as it may for a little after a renewal) lands in the next cycle at
Kinde. It is not recorded as acknowledged in the old period, and the row goes again after
`confirm_after_seconds`, so once the new period shows, its total is sent and corrects Kinde's.

Every send whose outcome was uncertain (a failed attempt before this one: timeout, lost answer,
a killed worker) is followed by a confirming send of the then current total, including a
confirmation whose own outcome was uncertain: an older, smaller total can never be the last.

Known limit: if an answer is lost in the very moment a period closes, Kinde may have counted
those units in the old period while we carry them into the new one.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from app.domain.agreements import is_fresh
from app.domain.catalog import AUTO_METER_PREFIX, SALE_METER_PREFIX, Catalog, Feature
from app.domain.ledger import Wallet
from app.services.outbox_kinds import METER_USAGE, meter_topic
from app.services.ports import (
    AgreementInfo,
    Clock,
    DeliveryError,
    KindeAuthError,
    KindeBilling,
    KindeNotFound,
    KindeRateLimited,
    KindeRequestRejected,
    KindeUnavailable,
    NeedsConfirmation,
    OutboxMessage,
    UnitOfWork,
    UnitOfWorkFactory,
    UsageReportState,
)

# How long after a period's end a total that landed late is re-sent until Kinde lists the new
# period. Past it the agreement is not lagging a renewal (it ended, say): the next report goes
# with the next usage, rather than every few minutes for good.
LATE_RECHECK_WINDOW = timedelta(days=1)


def units_for_credits(feature: Feature, credits: int) -> int:
    """Units a captured hold stands for: whole units, rounded up (a started unit counts)."""
    return math.ceil(credits / feature.credits_per_unit)


def usage_report_hook(
    catalog: Catalog,
) -> Callable[[UnitOfWork, Wallet, list[tuple[int, Any]], datetime], None]:
    """After-write hook: enqueue one report topic per app-source feature a write used."""
    reported = {key for key, f in catalog.features.items() if f.source == "app"}

    def hook(
        uow: UnitOfWork, wallet: Wallet, saved: list[tuple[int, Any]], now: datetime
    ) -> None:
        touched: dict[str, datetime] = {}
        for _entry_id, entry in saved:
            if entry.kind in ("usage", "capture") and entry.feature in reported:
                touched[entry.feature] = entry.created_at
        for feature, when in sorted(touched.items()):
            uow.outbox.enqueue(
                METER_USAGE,
                meter_topic(wallet.id, feature),
                wallet.id,
                {"wallet_id": wallet.id, "feature": feature},
                when,
            )

    return hook


def kinde_delivery_error(exc: Exception) -> DeliveryError:
    """Turn the Kinde client's typed errors into retry decisions."""
    if isinstance(exc, KindeRateLimited):
        return DeliveryError(str(exc), rate_limited=True, retry_after=exc.retry_after_seconds)
    if isinstance(exc, KindeUnavailable):
        return DeliveryError(f"Kinde unavailable: {exc}")
    if isinstance(exc, KindeAuthError):
        # Credentials or scopes may be fixed by an operator: keep retrying with backoff.
        return DeliveryError(f"Kinde refused our credentials or scope: {exc}")
    if isinstance(exc, KindeNotFound):
        return DeliveryError(f"Kinde does not know it (yet): {exc}")
    if isinstance(exc, KindeRequestRejected):
        return DeliveryError(f"Kinde rejected the request: {exc}", retryable=False)
    return DeliveryError(f"{type(exc).__name__}: {exc}")


# -- the report protocol, as pure functions ----------------------------------------------------


def baseline(state: UsageReportState, agreement: AgreementInfo) -> tuple[int, int | None]:
    """(units Kinde counted before this period, the total it acknowledged in this period).

    In a new period or agreement what Kinde acknowledged stays where it was counted: it joins
    the base, and nothing is acknowledged yet.
    """
    if state.agreement_id == agreement.id and state.period_start == agreement.period_start:
        return state.base_units, state.last_sent_total
    return state.base_units + (state.last_sent_total if state.agreement_id else 0), None


def must_send(value: int, acknowledged: int | None, *, confirming: bool) -> bool:
    """Whether to send `value`: Kinde may not have it, or this send confirms an earlier one."""
    return confirming or value != acknowledged


def landed_late(period_end: datetime | None, sent_at: datetime) -> bool:
    """A total sent at or after its period's end counts in Kinde's next cycle: it is not the
    acknowledged total of the period it was computed for."""
    return period_end is not None and sent_at >= period_end


def recheck_late(period_end: datetime | None, sent_at: datetime) -> bool:
    """A late total is sent again (to correct the next period) for a while after the end."""
    return landed_late(period_end, sent_at) and period_end is not None and (
        sent_at - period_end < LATE_RECHECK_WINDOW)


def confirmation_due(
    *, attempts: int, late: bool, recently_dead: bool, confirm_left: float | None,
    confirm_after: float,
) -> float | None:
    """Seconds until the current total must be sent once more, or None when it need not be.

    An earlier attempt whose outcome is unknown (attempts > 1, or the topic's previous row died
    recently) may still land after this send with an older, smaller total; so may the request
    a pending confirmation was waiting out (then the rest of its wait). A total that landed
    late is sent again to correct the next period.
    """
    if attempts > 1 or late or recently_dead:
        return confirm_after
    if confirm_left is not None and confirm_left > 0:
        return confirm_left
    return None


@dataclass(frozen=True)
class Meter:
    """What one report counts: a feature's units, or the purchases of an auto-recharge bundle."""

    key: str  # the usage_reports key: feature key, "bundle:<key>" or "bundle-auto:<key>"
    kinde_feature_code: str
    bundle: str | None = None


class UsageReporter:
    """Outbox handler for `meter_usage` rows: a feature's absolute units in the period."""

    def __init__(
        self,
        uow: UnitOfWorkFactory,
        catalog: Catalog,
        kinde: KindeBilling,
        clock: Clock,
        confirm_after_seconds: float = 300.0,
    ) -> None:
        self.uow = uow
        self.catalog = catalog
        self.kinde = kinde
        self.clock = clock
        # How long a request whose answer we never saw may still take to land at Kinde.
        self.confirm_after_seconds = confirm_after_seconds

    def __call__(self, message: OutboxMessage) -> None:
        wallet_id = message.payload["wallet_id"]
        meter = self._meter(message.payload)
        if meter is None:
            return  # the catalog changed since: nothing of ours to report
        confirm_at = message.payload.get("confirm_at")
        try:
            late = self._report(wallet_id, meter, force=confirm_at is not None)
        except DeliveryError:
            raise
        except Exception as exc:
            raise kinde_delivery_error(exc) from exc
        due = confirmation_due(
            attempts=message.attempts,
            late=late,
            recently_dead=message.attempts <= 1 and not late
            and self._recently_dead(message.topic),
            confirm_left=(datetime.fromisoformat(confirm_at) - self.clock()).total_seconds()
            if confirm_at is not None else None,
            confirm_after=self.confirm_after_seconds,
        )
        if due is not None:
            raise NeedsConfirmation(due)

    def _recently_dead(self, topic: str) -> bool:
        """The topic's previous row was dead-lettered so recently that its last attempt (a
        timeout, say) may still land at Kinde after this send: confirm this one too."""
        since = self.clock() - timedelta(seconds=self.confirm_after_seconds)
        with self.uow(False) as uow:
            return bool(uow.outbox.died_since(topic, since))

    def _meter(self, payload: dict[str, Any]) -> Meter | None:
        """What the row counts: an app-source feature's units (None: no longer reported)."""
        feature = self.catalog.features.get(payload["feature"])
        if feature is None or feature.source != "app":
            return None
        return Meter(feature.key, feature.kinde_feature_code)

    def _report(self, wallet_id: str, feature: Meter, force: bool = False) -> bool:
        """Send the meter's absolute total for the current period if Kinde may not have it.
        True when it was sent after the period's end (so it lands in the next cycle) and should
        be sent again once Kinde lists the new period."""
        with self.uow(False) as uow:
            profile = uow.wallets.profile(wallet_id)
        if profile is None:
            raise DeliveryError(f"wallet {wallet_id} does not exist", retryable=False)
        customer_id = profile.billing_customer_id or self._resolve_customer(wallet_id)
        agreement = self._agreement(wallet_id, profile.agreement_id, customer_id, feature)

        counted: list[str] = []
        with self.uow(False) as uow:
            state = uow.billing.report_state(wallet_id, feature.key)
            if feature.bundle:
                # The purchases counted, by id: exactly these are marked invoiced below, never
                # one that committed after this read.
                units, counted = uow.recharges.billable(wallet_id, feature.key)
            else:
                units = uow.billing.units_used(wallet_id, feature.key)
        base, acknowledged = baseline(state, agreement)
        value = units - base
        if value < 0:
            raise DeliveryError(
                f"usage total for {wallet_id}/{feature.key} went below what Kinde has",
                retryable=False,
            )
        if not must_send(value, acknowledged, confirming=force):
            if counted:
                # Kinde already has this count, so every purchase counted is invoiced.
                with self.uow(True) as uow:
                    uow.recharges.mark_invoiced(counted, self.clock())
                    uow.commit()
            return False  # Kinde already has exactly this total
        sent_at = self.clock()
        self.kinde.record_meter_usage(
            agreement.id, feature.kinde_feature_code, value, meter_type_code="absolute"
        )
        # Kinde counts what arrives after a cycle closed in the next cycle: such a total is
        # not this period's acknowledged total (it is corrected by a later send).
        late = landed_late(agreement.period_end, sent_at)
        with self.uow(True) as uow:
            if not late:
                uow.billing.save_report_state(
                    UsageReportState(
                        wallet_id=wallet_id,
                        feature=feature.key,
                        agreement_id=agreement.id,
                        period_start=agreement.period_start,
                        base_units=base,
                        last_sent_total=value,
                        last_sent_at=self.clock(),
                    )
                )
            if counted:
                # Kinde now has every purchase counted above (in this cycle or the next).
                uow.recharges.mark_invoiced(counted, self.clock())
            uow.commit()
        return recheck_late(agreement.period_end, sent_at)

    def _resolve_customer(self, wallet_id: str) -> str:
        email: str | None = None
        if wallet_id.startswith("kp_"):
            user = self.kinde.get_user(wallet_id)
            customer_id, email = user.customer_id, user.email
        else:
            customer_id = self.kinde.get_org_billing(wallet_id).customer_id
        if not customer_id:
            raise DeliveryError(f"{wallet_id} has no Kinde billing customer yet")
        with self.uow(True) as uow:
            # Under the wallet's lock, as webhooks write these fields: what a webhook learned
            # while we asked Kinde is newer than our look-up and is kept.
            uow.wallets.lock(wallet_id)
            profile = uow.wallets.profile(wallet_id)
            if profile is not None and profile.billing_customer_id:
                return str(profile.billing_customer_id)
            fields: dict[str, str | None] = {"billing_customer_id": customer_id}
            if email and not (profile or _NoProfile).email:
                fields["email"] = email
            uow.wallets.update_profile(wallet_id, **fields)
            uow.commit()
        return str(customer_id)

    def _agreement(
        self, wallet_id: str, agreement_id: str | None, customer_id: str, feature: Meter
    ) -> AgreementInfo:
        now = self.clock()
        if agreement_id:
            with self.uow(False) as uow:
                cached = uow.billing.agreement(agreement_id)
            if cached is not None and _fresh(cached, now):
                return cached
        agreements = [
            a for a in self.kinde.list_agreements(customer_id)
            if a.expires_on is None or a.expires_on > now
        ]
        chosen = next((a for a in agreements if a.id == agreement_id), None)
        chosen = chosen or next(
            (a for a in agreements if feature.kinde_feature_code in a.feature_codes), None
        )
        chosen = chosen or (agreements[0] if agreements else None)
        if chosen is None:
            raise DeliveryError(f"billing customer {customer_id} has no active agreement")
        infos = {
            a.id: AgreementInfo(
                id=a.id,
                customer_id=customer_id,
                plan_code=a.plan_code,
                period_start=a.current_period_start,
                period_end=a.current_period_end,
                feature_codes=tuple(a.feature_codes),
                fetched_at=now,
            )
            for a in agreements
        }
        use = chosen.id
        with self.uow(True) as uow:
            if chosen.id != agreement_id:
                # The wallet's lock first (webhooks take it before writing the agreement), then
                # a compare-and-set: a webhook that mapped another agreement while we asked
                # Kinde (a plan change makes a new one) knows better than our guess.
                uow.wallets.lock(wallet_id)
                current = uow.wallets.profile(wallet_id)
                known = current.agreement_id if current is not None else None
                if known == agreement_id:
                    uow.wallets.update_profile(wallet_id, agreement_id=chosen.id,
                                               plan_code=chosen.plan_code)
                elif known in infos:
                    use = str(known)
                else:
                    raise DeliveryError(
                        f"{wallet_id} was mapped to agreement {known} while reporting; again"
                    )
            for info in infos.values():
                uow.billing.save_agreement(info)
            uow.commit()
        return infos[use]


class _NoProfile:
    email = None


def _fresh(info: AgreementInfo, now: datetime) -> bool:
    if info.period_end is not None:
        return now < info.period_end
    return is_fresh(info.fetched_at, now)


class PackInvoicer(UsageReporter):
    """Outbox handler for `pack_invoice` rows: the absolute count of packs bought on one Kinde
    code, by the same report protocol. Its dead letters are handled by
    recharge.DeadInvoiceHandler (the purchases fail, auto-recharge suspends)."""

    def _meter(self, payload: dict[str, Any]) -> Meter | None:
        key = payload.get("meter") or f"{SALE_METER_PREFIX}{payload['bundle']}"
        auto = key.startswith(AUTO_METER_PREFIX)
        bundle = self.catalog.bundles.get(payload["bundle"])
        code = bundle.invoice_code(auto=auto) if bundle is not None else None
        if bundle is None or code is None or bundle.invoice_meter(auto=auto) != key:
            # Purchases exist (their credits were granted) but can no longer be invoiced (the
            # catalog no longer invoices this meter on its own code): dead-letter, so they are
            # marked failed and an operator sees it.
            raise DeliveryError(
                f"bundle {payload['bundle']!r} has no Kinde code for {key!r} in the "
                f"catalog any more: its purchases cannot be invoiced",
                retryable=False,
            )
        return Meter(key, code, bundle=bundle.key)
