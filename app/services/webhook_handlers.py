"""One handler per kind of Kinde event, each applying its event inside the inbox's unit of
work (app.services.webhooks owns receiving, parking and retrying; these only decide what an
event does to a wallet). `EventHandlers` routes an event to its handler."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta

from app.domain.agreements import plausibility_problem
from app.domain.catalog import Catalog
from app.domain.kinde_events import (
    EventKind,
    KindeEvent,
    absolute_increase,
    extract_billing,
    known_period_key,
    read_signup,
)
from app.domain.ledger import Wallet
from app.domain.park_reasons import ParkKind, ParkReason
from app.domain.usage_terms import describe_metered_debit, describe_signup_credit
from app.services.idempotency import request_fingerprint
from app.services.plans import PlanService
from app.services.ports import AgreementSource, WebhookUnitOfWork
from app.services.wallet_settings import WalletSettingsService
from app.services.wallet_writer import WalletWriter
from app.services.webhook_billing import (
    absolute_period,
    learn,
    legacy_month_total,
    peek_wallet,
    remember_period,
    replaced_agreement,
    resolve,
)
from app.services.webhook_outcomes import Applied, malformed, parked

SIGNUP_SCOPE = "signup"


@dataclass
class _Handler:
    writer: WalletWriter
    # Kinde's agreements, asked by the worker only (None without Management API credentials).
    kinde: AgreementSource | None = None
    # Plan credits (app.services.plans): allotments on agreement and plan events.
    plans: PlanService | None = None

    @property
    def catalog(self) -> Catalog:
        return self.writer.catalog

    def _catch_up(self, uow: WebhookUnitOfWork, wallet_id: str, now: datetime) -> None:
        """Apply the period ends that passed before this event changes the wallet's plan or
        agreement: each end renews the plan that was in force at it, not the event's."""
        if self.plans is not None:
            self.writer.write(uow, wallet_id, now, lambda _wallet: None)

    def _write(
        self, uow: WebhookUnitOfWork, wallet_id: str, now: datetime,
        apply: Callable[[Wallet], Applied],
    ) -> Applied:
        """Apply an event's change to its wallet (created if new) through the wallet writer."""
        written = self.writer.write(uow, wallet_id, now, apply, create=True)
        assert written is not None  # created when missing
        return written.result


class SignupHandler(_Handler):
    """`user.created` / `organization.created`: the wallet, its e-mail and billing customer, and
    the sign-up credits, once per owner."""

    def __call__(self, uow: WebhookUnitOfWork, event: KindeEvent, now: datetime) -> Applied:
        wallet_id, email, problems = read_signup(event)
        fields = extract_billing(event)
        problems += fields.problems
        if problems:
            return malformed(f"{event.type} event: " + "; ".join(problems))
        if wallet_id is None:
            where = "data.user.id (kp_...)" if event.kind is EventKind.USER_CREATED else (
                "data.organization.code (org_...)"
            )
            return malformed(f"{event.type} without a usable {where}")
        signup_wallet = wallet_id

        def sign_up(wallet: Wallet) -> Applied:
            if email:
                uow.wallets.update_profile(signup_wallet, email=email)
            problem = learn(uow, signup_wallet, fields, agreement=True)
            if problem:
                return parked(ParkReason(ParkKind.NO_WALLET, problem), fields, signup_wallet)
            signup = self.catalog.signup
            credits = signup.user_credits if wallet.owner_type == "user" else signup.org_credits
            note: str | None = None
            if credits <= 0:
                note = "no sign-up credits configured"
            elif uow.idempotency.get(SIGNUP_SCOPE, signup_wallet) is not None:
                # Kinde may send a second creation event (a new event_id) for one owner.
                note = "sign-up credits were already granted to this wallet"
            else:
                wallet.credit(
                    credits,
                    kind="grant",
                    reason="signup",
                    description=describe_signup_credit(credits),
                    now=now,
                    expires_at=now + timedelta(days=signup.expires_after_days)
                    if signup.expires_after_days else None,
                )
                body = {"event_id": event.event_id, "credits": credits}
                uow.idempotency.put(
                    SIGNUP_SCOPE, signup_wallet,
                    request_fingerprint({"op": "signup", **body}), 201, body, now,
                )
            return Applied("processed", note, wallet_id=signup_wallet,
                            customer_id=fields.customer_id, mapped_customer=fields.customer_id)

        return self._write(uow, wallet_id, now, sign_up)


class MeterUsageHandler(_Handler):
    """`customer.meter_usage_updated`: debit what Kinde metered (never refused: a shortfall
    becomes arrears); an absolute total is debited only by its increase within its period."""

    def __call__(self, uow: WebhookUnitOfWork, event: KindeEvent, now: datetime) -> Applied:
        fields = extract_billing(event)
        code = fields.feature_code
        if code is None:
            return parked(ParkReason(
                ParkKind.MALFORMED,
                "no feature code (data.feature_code / data.billing_feature_code / data.meter_id)",
            ), fields)
        feature = self.catalog.feature_by_kinde_code(code)
        if feature is None:
            if self.catalog.bundle_by_kinde_code(code) is not None:
                # Our own invoice for a credit pack (reported as meter usage): not usage.
                return Applied("processed", f"credit pack invoice usage on {code!r}; nothing "
                                "to debit", wallet_id=peek_wallet(uow, fields),
                                customer_id=fields.customer_id)
            return parked(ParkReason(
                ParkKind.UNKNOWN_FEATURE,
                f"code {code!r} is not in the credits catalog "
                f"({self.catalog.path})"), fields)
        if feature.source == "app":
            # The product already reported this usage to us (and we to Kinde): debiting again
            # would charge twice. Keep the event for reconciliation only.
            return Applied(
                "processed",
                f"feature {feature.key!r} has source 'app': recorded for reconciliation only",
                wallet_id=peek_wallet(uow, fields),
                customer_id=fields.customer_id,
            )
        if fields.value is None:
            return parked(
                ParkReason(ParkKind.MALFORMED, fields.value_problem or "no meter value"), fields)
        wallet_id, problem = resolve(uow, fields)
        if wallet_id is None:
            return parked(ParkReason(ParkKind.NO_WALLET, problem or "no wallet"), fields)
        resolved, value = wallet_id, fields.value

        def debit(wallet: Wallet) -> Applied:
            wallet_id = resolved
            assert value is not None
            problem = learn(uow, wallet_id, fields, agreement=False)
            if problem:
                return parked(ParkReason(ParkKind.NO_WALLET, problem), fields, wallet_id)
            units = value
            if fields.meter_type == "absolute":
                # Kinde's absolute value is the period's running total: debit only the
                # increase over the last total seen (the wallet lock serialises this
                # read-then-write). Keyed by the resolved wallet: events naming the customer
                # and events naming only the user or org must share one running total, or
                # the total is debited twice. And keyed by the real billing period, never a
                # guessed one: a guess that differs between two events of one period debits
                # the whole total again.
                start, waiting = absolute_period(uow, fields, wallet_id, now,
                                   asks_kinde=self.kinde is not None)
                if start is None:
                    assert waiting is not None
                    return parked(waiting, fields, wallet_id)
                key = wallet_id
                period = known_period_key(start, uow.meters.period_keys(key, code))
                if fields.period_start is not None:
                    # A stated period serves later events of its agreement that state none.
                    remember_period(uow, fields, wallet_id, now)
                last = uow.meters.last_value(key, code, period)
                if last is None:
                    last = legacy_month_total(uow, key, code, start, fields.occurred_at or now)
                units = absolute_increase(value, last)
                if last is None or value > last:
                    uow.meters.record(key, code, period, value, now)
            note: str | None = None
            if units > 0:
                credits = units * feature.credits_per_unit
                wallet.debit(
                    credits,
                    reason=f"kinde:{event.event_id}",
                    description=describe_metered_debit(credits, feature.label, units,
                                                       feature.unit),
                    now=now,
                    # Usage that already happened: a shortfall becomes arrears.
                    refusable=False,
                    feature=feature.key,
                    quantity=units,
                    occurred_at=fields.occurred_at,
                )
            else:
                note = "no new usage" if fields.meter_type == "delta" else (
                    "absolute value not above the last one seen for this period"
                )
            return Applied("processed", note, wallet_id=wallet_id,
                            customer_id=fields.customer_id, mapped_customer=fields.customer_id)

        return self._write(uow, wallet_id, now, debit)


class AgreementHandler(_Handler):
    """Agreement and plan events: map the wallet to its billing customer and agreement, and
    grant the plan's allotment for the period the event states (once)."""

    def __call__(self, uow: WebhookUnitOfWork, event: KindeEvent, now: datetime) -> Applied:
        fields = extract_billing(event)
        wallet_id, problem = resolve(uow, fields)
        if wallet_id is None:
            return parked(ParkReason(ParkKind.NO_WALLET, problem or "no wallet"), fields)
        implausible = plausibility_problem(fields.period_start, fields.period_end)
        if implausible is not None:
            # Granting on it could mean an allotment every few seconds, or never ending.
            return parked(ParkReason(ParkKind.MALFORMED, implausible), fields, wallet_id)
        wallet = uow.wallets.lock_or_create(wallet_id, now)  # the lock orders profile updates
        self._catch_up(uow, wallet_id, now)
        # Only plan periods tell which agreement came first (none without plan credits).
        stale = replaced_agreement(uow, wallet.id, fields) if self.plans is not None else None
        if stale is not None:
            return Applied("processed", stale, wallet_id=wallet_id,
                            customer_id=fields.customer_id)
        problem = learn(uow, wallet.id, fields, agreement=True)
        if problem:
            return parked(ParkReason(ParkKind.NO_WALLET, problem), fields, wallet_id)
        remember_period(uow, fields, wallet_id, now)
        note: str | None = None
        plans = self.plans
        if plans is not None:
            # Plan credits for the agreement's current period, once (app.services.plans),
            # after the profile learned the event's plan.
            written = self.writer.write(
                uow, wallet_id, now,
                lambda w: plans.on_agreement_event(uow, w, fields, event.timestamp, now),
                create=True)
            note = written.result if written is not None else None
        return Applied("processed", note, wallet_id=wallet_id, customer_id=fields.customer_id,
                        mapped_customer=fields.customer_id)


class HistoryHandler(_Handler):
    """Billing history events (payments, cancellations): kept as the wallet's history; a failed
    payment suspends auto-recharge, a cancellation ends the plan's renewals."""

    def __call__(self, uow: WebhookUnitOfWork, event: KindeEvent, now: datetime) -> Applied:
        # The inbox row with its wallet id set IS the wallet's history entry.
        fields = extract_billing(event)
        wallet_id, problem = resolve(uow, fields)
        if wallet_id is None:
            return parked(ParkReason(ParkKind.NO_WALLET, problem or "no wallet"), fields)
        note: str | None = None
        if event.type == "customer.payment_failed" and WalletSettingsService(
            self.writer
        ).suspend_auto_recharge_in(uow, wallet_id, "Kinde reported a failed payment", now):
            # Never keep buying on a card that fails: the owner re-enables it after fixing it.
            note = "auto-recharge suspended"
        if event.type == "customer.agreement_cancelled" and self.plans is not None:
            uow.wallets.lock_or_create(wallet_id, now)  # the wallet lock orders plan changes
            self._catch_up(uow, wallet_id, now)
            note = self.plans.on_agreement_cancelled(uow, wallet_id, fields.agreement_id)
        return Applied("processed", note, wallet_id=wallet_id, customer_id=fields.customer_id)


@dataclass
class EventHandlers(_Handler):
    """Routes a verified event to the handler of its kind."""

    def __post_init__(self) -> None:
        args = (self.writer, self.kinde, self.plans)
        self.signup = SignupHandler(*args)
        self.meter_usage = MeterUsageHandler(*args)
        self.agreement = AgreementHandler(*args)
        self.history = HistoryHandler(*args)

    def apply(self, uow: WebhookUnitOfWork, event: KindeEvent, now: datetime) -> Applied:
        if event.problems:
            return malformed("event: " + "; ".join(event.problems))
        kind = event.kind
        if kind in (EventKind.METER_USAGE, EventKind.MAPPING, EventKind.HISTORY):
            fields = extract_billing(event)
            if fields.problems:
                # Acting on part of an event (or storing a value that breaks the database)
                # would be worse than waiting for a person to look at it.
                return malformed("billing event: " + "; ".join(fields.problems))
        if kind in (EventKind.USER_CREATED, EventKind.ORG_CREATED):
            return self.signup(uow, event, now)
        if kind is EventKind.METER_USAGE:
            return self.meter_usage(uow, event, now)
        if kind is EventKind.MAPPING:
            return self.agreement(uow, event, now)
        if kind is EventKind.HISTORY:
            return self.history(uow, event, now)
        return Applied("ignored", f"event type {event.type!r} is not handled")
