"""Ledger use cases. Each public method is one unit of work: one transaction, all or nothing.

Idempotency: a write may carry a key (scope = wallet for the API). The first successful result
is stored with the key in the same transaction; a retry with the same request gets that result
back, with a different request `IdempotencyConflict`. A failed write stores nothing, so its key
stays free for a corrected retry.
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Callable
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from typing import Any

from app.domain import alerts as alert_rules
from app.domain.alerts import Alert, AlertSettings
from app.domain.budgets import MemberBudgetExceeded
from app.domain.catalog import Catalog, Feature
from app.domain.ledger import (
    CREDIT_KINDS,
    Hold,
    InsufficientCredits,
    InvalidAmount,
    LedgerError,
    Wallet,
    new_id,
    owner_type_of,
)
from app.domain.recharge import AutoRecharge
from app.domain.usage_terms import describe_debit, describe_units_left
from app.services import budgets as member_budgets
from app.services import views
from app.services.ports import Clock, DuplicateKey, UnitOfWork, UnitOfWorkFactory
from app.services.recharge import AutoRecharger, PaymentGateway, suspended_notice

log = logging.getLogger("kinde_credits.ledger")

MAX_QUANTITY = 10**9
MAX_CREDITS = 10**12
MAX_HOLD_SECONDS = 7 * 24 * 3600
DEFAULT_HOLD_SECONDS = 15 * 60

log = logging.getLogger(__name__)


class NotFound(LedgerError):
    code = "not_found"


class UnknownFeature(LedgerError):
    code = "unknown_feature"


class UnknownBundle(LedgerError):
    code = "unknown_bundle"


class IdempotencyConflict(LedgerError):
    code = "idempotency_conflict"


@dataclass(frozen=True)
class Outcome:
    """A write's answer: HTTP-ish status, the response body, and whether it was a replay."""

    status: int
    body: dict[str, Any]
    replayed: bool = False


def request_fingerprint(request: dict[str, Any]) -> str:
    canonical = json.dumps(request, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(canonical.encode()).hexdigest()


def utc_now() -> datetime:
    return datetime.now(UTC)


# Hooks that run inside a write's transaction after the ledger changed (outbox rows for Kinde
# reports and notifications): (uow, wallet, [(entry id, entry)], now) -> None. Registered by
# the composition root so this module does not depend on them.
AfterWrite = Callable[[UnitOfWork, Wallet, list[tuple[int, Any]], datetime], None]


class LedgerService:
    def __init__(
        self,
        uow: UnitOfWorkFactory,
        catalog: Catalog,
        clock: Clock = utc_now,
        after_write: list[AfterWrite] | None = None,
        recharger: AutoRecharger | None = None,
        unbilled_sales_allowed: bool = True,
    ) -> None:
        self.uow = uow
        self.catalog = catalog
        self.clock = clock
        self.after_write: list[AfterWrite] = after_write or []
        # Hooks run by sweep_locked before due blocks expire (plan period ends: their cap must
        # apply before later expiries), registered by the composition root.
        self.before_sweep: list[Callable[[UnitOfWork, Wallet, datetime], None]] = []
        self.recharger = recharger
        # Selling a bundle with no payment gateway gives credits away: only allowed when the
        # product collects payment itself (SALES_PAID_ELSEWHERE), or in local mode.
        self.unbilled_sales_allowed = unbilled_sales_allowed
        self.alert_defaults = AlertSettings(
            catalog.alerts.thresholds_percent, (), catalog.alerts.notify_at_zero
        )

    # -- plumbing -------------------------------------------------------------------------

    def _feature(self, key: str) -> Feature:
        """A feature the product may report usage of: `source = "app"` only."""
        feature = self.catalog.features.get(key)
        if feature is None:
            known = ", ".join(sorted(k for k, f in self.catalog.features.items()
                                     if f.source == "app"))
            raise UnknownFeature(f"unknown feature {key[:64]!r}; known features: {known}")
        if feature.source != "app":
            # Kinde meters it and its usage arrives as webhooks: debiting it here too would
            # charge the same usage twice.
            raise UnknownFeature(
                f"feature {key!r} is metered by Kinde; its usage arrives from Kinde and "
                f"cannot be reported here"
            )
        return feature

    def _write(
        self,
        scope: str,
        idempotency_key: str | None,
        request: dict[str, Any],
        action: Callable[[UnitOfWork, datetime], tuple[int, dict[str, Any]]],
    ) -> Outcome:
        fingerprint = request_fingerprint(request)
        for attempt in (1, 2):
            try:
                with self.uow(True) as uow:
                    if idempotency_key:
                        # Claimed before the wallet is locked: racers with one key queue on the
                        # key and then read the first answer, instead of finding the state it
                        # changed (a captured hold, a spent balance) and answering 409 or 402.
                        stored = uow.idempotency.claim(
                            scope, idempotency_key, fingerprint, self.clock()
                        )
                        if stored is not None:
                            if stored.request_hash != fingerprint:
                                raise IdempotencyConflict(
                                    "this Idempotency-Key was already used with a different "
                                    "request; use a new key for a new request"
                                )
                            return Outcome(stored.status_code, stored.body, replayed=True)
                    now = self.clock()
                    status, body = action(uow, now)
                    if idempotency_key:
                        uow.idempotency.put(
                            scope, idempotency_key, fingerprint, status, body, now
                        )
                    uow.commit()
                    return Outcome(status, body)
            except DuplicateKey:
                # Two requests with one key raced (PostgreSQL); the loser re-reads the winner's.
                if attempt == 2 or not idempotency_key:
                    raise
        raise AssertionError("unreachable")

    def save_wallet(self, uow: UnitOfWork, wallet: Wallet, now: datetime) -> list[tuple[int, Any]]:
        """Persist a locked wallet's changes inside `uow` and run the after-write hooks.

        For use cases composed elsewhere (webhooks) that change a wallet in their own unit of
        work; returns (entry id, entry) pairs in order.
        """
        recharged = self.recharger is not None and self.recharger.apply(uow, wallet, now)
        self._evaluate_alerts(wallet, recharged)
        pending = list(wallet.new_entries)
        ids = uow.wallets.save(wallet, now)
        saved = list(zip(ids, pending, strict=True))
        for hook in self.after_write:
            hook(uow, wallet, saved, now)
        return saved

    def _evaluate_alerts(self, wallet: Wallet, recharged: bool) -> None:
        """Walk this write's entries in order: debits may cross thresholds, credits re-arm.

        The customer sees only the state the write ends in: an alert whose threshold a later
        credit of the same write re-armed (e.g. expiry applied before a grant) is dropped, and
        the one that stays (the most severe) describes the final balance.
        """
        settings = wallet.alert_settings or self.alert_defaults
        reference, fired = wallet.reference_at_load, wallet.alerts_fired
        alerts: list[Alert] = []
        for entry in wallet.new_entries:
            if entry.kind in CREDIT_KINDS:
                reference = entry.balance_after
                fired = alert_rules.on_credit(settings, reference, entry.balance_after, fired)
            elif entry.amount < 0:
                fired, alert = alert_rules.on_debit(settings, reference, entry.balance_after,
                                                    fired)
                if alert is not None:
                    alerts.append(alert)
        wallet.alerts_fired = fired
        if recharged:
            # Auto-recharge already topped the wallet up in this very transaction: a
            # "balance low" message now would be wrong. The recharge notice says what happened.
            alerts = []
        wallet.new_alerts[:0] = alert_rules.final_alert(alerts, fired, wallet.balance, reference)

    def _require_wallet(self, uow: UnitOfWork, wallet_id: str) -> Wallet:
        owner_type_of(wallet_id)
        wallet = uow.wallets.lock(wallet_id)
        if wallet is None:
            raise NotFound(f"wallet {wallet_id} has no credits yet")
        return wallet

    # -- usage ----------------------------------------------------------------------------

    def record_usage(
        self,
        wallet_id: str,
        feature_key: str,
        quantity: int,
        *,
        occurred_at: datetime | None = None,
        idempotency_key: str | None = None,
        member: str | None = None,
    ) -> Outcome:
        """Debit `quantity x credits_per_unit` for refusable usage asked for by the product.

        `member` (org wallets only) names the Kinde user spending: their caps are checked and
        their spend recorded in this same transaction, under the wallet's lock.
        """
        feature = self._feature(feature_key)
        credits = _usage_credits(feature, quantity)
        owner_type_of(wallet_id)
        member = member_budgets.member_for(wallet_id, member)

        def action(uow: UnitOfWork, now: datetime) -> tuple[int, dict[str, Any]]:
            wallet = uow.wallets.lock(wallet_id)
            if wallet is None:
                # A wallet that never received credits has none: the same answer as empty.
                raise InsufficientCredits(credits, 0)
            wallet = self.sweep_locked(uow, wallet, now)
            if member is not None:
                member_budgets.admit_debit(uow, wallet, member, credits, now)
            entry = wallet.debit(
                credits,
                reason=f"api:{feature.key}",
                description=describe_debit(credits, feature.label, quantity, feature.unit),
                now=now,
                feature=feature.key,
                quantity=quantity,
                occurred_at=occurred_at,
            )
            if member is not None:
                member_budgets.record_spend(uow, wallet_id, member, feature.key, credits,
                                            quantity, now)
            [(entry_id, _)] = [s for s in self.save_wallet(uow, wallet, now) if s[1] is entry]
            return 201, {
                "entry": views.entry_view(entry, entry_id),
                "balance": wallet.balance,
                "available": wallet.available,
                "value": describe_units_left(
                    wallet.available, feature.credits_per_unit, feature.unit
                ),
                **({"member": member} if member is not None else {}),
            }

        request = {"op": "usage", "feature": feature_key, "quantity": quantity,
                   "occurred_at": views.iso(occurred_at)}
        if member is not None:  # only then, so keys stored before budgets keep their hash
            request["member"] = member
        return self._write(f"wallet:{wallet_id}", idempotency_key, request, action)

    def record_usage_batch(
        self, records: list[dict[str, Any]]
    ) -> list[dict[str, Any]]:
        """Many usage records, each its own unit of work, so one refusal fails only itself."""
        results: list[dict[str, Any]] = []
        for index, record in enumerate(records):
            try:
                outcome = self.record_usage(
                    record["wallet_id"],
                    record["feature"],
                    record["quantity"],
                    occurred_at=record.get("occurred_at"),
                    idempotency_key=record.get("idempotency_key"),
                    member=record.get("member"),
                )
                results.append(
                    {"index": index, "status": outcome.status, "result": outcome.body,
                     "replayed": outcome.replayed}
                )
            except LedgerError as exc:
                error: dict[str, Any] = {"code": exc.code, "message": exc.message}
                status = status_for(exc)
                if isinstance(exc, InsufficientCredits):
                    error.update(needed=exc.needed, available=exc.available)
                if isinstance(exc, MemberBudgetExceeded):
                    error.update(needed=exc.needed,
                                 available_to_member=exc.available_to_member)
                results.append({"index": index, "status": status, "error": error})
            except Exception:
                # The records before this one are committed: a 500 for the whole batch would
                # say "not applied" about them. This record's unit of work rolled back, so the
                # per-record answer is the truth; a retry with the same keys replays the rest.
                log.exception("usage batch record %d failed", index)
                results.append({"index": index, "status": 500, "error": {
                    "code": "internal_error",
                    "message": "internal error; this record was not applied (retry it)",
                }})
        return results

    # -- credits --------------------------------------------------------------------------

    def _sale_gateway(self) -> PaymentGateway | None:
        # When the product collects payment itself, invoicing through Kinde too would charge
        # the customer twice: the sale is recorded with its price, nothing more.
        if self.recharger is not None and not self.unbilled_sales_allowed:
            return self.recharger.gateway
        return None

    def sales_are_invoiced(self) -> bool:
        """Whether a bundle sale is charged through a payment gateway (Kinde).

        When it is not (local mode, SALES_PAID_ELSEWHERE), recording a sale hands out credits
        and books revenue on the caller's word alone: the API lets only admins do that.
        """
        return self._sale_gateway() is not None

    def top_up_bundle(
        self, wallet_id: str, bundle_key: str, *, idempotency_key: str | None = None,
        discount_percent: Any = None,
    ) -> Outcome:
        """Sell a credit pack: a purchase block with the pack's price as cost basis, and the
        charge arranged through the payment gateway in the same transaction."""
        bundle = self.catalog.bundles.get(bundle_key)
        if bundle is None:
            known = ", ".join(sorted(self.catalog.bundles)) or "none configured"
            raise UnknownBundle(f"unknown bundle {bundle_key[:64]!r}; known bundles: {known}")
        gateway = self._sale_gateway()
        if gateway is None and not self.unbilled_sales_allowed:
            raise InvalidAmount(
                "selling a bundle needs a way to charge for it: connect Kinde billing "
                "(KINDE_M2M_CLIENT_ID and KINDE_M2M_CLIENT_SECRET), or set "
                "SALES_PAID_ELSEWHERE=true if your product collects payment itself"
            )
        if gateway is not None and gateway.name == "kinde" and not bundle.kinde_feature_code:
            raise InvalidAmount(f"bundle {bundle.key!r} has no kinde_feature_code to invoice it")
        owner_type_of(wallet_id)

        def action(uow: UnitOfWork, now: datetime) -> tuple[int, dict[str, Any]]:
            wallet = self.sweep_locked(uow, uow.wallets.lock_or_create(wallet_id, now), now)
            expires = (
                now + timedelta(days=bundle.expires_after_days)
                if bundle.expires_after_days
                else None
            )
            entry = wallet.credit(
                bundle.credits,
                kind="purchase",
                reason=f"bundle:{bundle.key}",
                description=f"+{bundle.credits:,} credits: {bundle.description}",
                now=now,
                expires_at=expires,
                cost_amount=bundle.price,
                currency=bundle.currency,
            )
            if gateway is not None:
                purchase_id = new_id("rch")
                uow.recharges.add(
                    purchase_id, wallet_id, bundle.key, bundle.credits, str(bundle.price),
                    bundle.currency, now.date().isoformat(), now, auto=False,
                )
                gateway.charge(uow, wallet_id, bundle, bundle.price, purchase_id, now)
            return 201, self._credit_body(uow, wallet, entry, now)

        request = {"op": "top_up", "bundle": bundle_key}
        return self._write(f"wallet:{wallet_id}", idempotency_key, request, action)

    def grant(
        self,
        wallet_id: str,
        credits: int,
        reason: str,
        *,
        kind: str = "grant",
        expires_after_days: int | None = None,
        idempotency_key: str | None = None,
        scope: str | None = None,
    ) -> Outcome:
        """Give credits that were not sold (sign-up, goodwill, plan allotment)."""
        if isinstance(credits, bool) or not isinstance(credits, int) or not (
            0 < credits <= MAX_CREDITS
        ):
            raise InvalidAmount(f"credits must be a whole number from 1 to {MAX_CREDITS:,}")
        reason = (reason or "").strip()
        if not reason:
            raise InvalidAmount("a grant needs a reason (it is shown in the ledger)")
        owner_type_of(wallet_id)

        def action(uow: UnitOfWork, now: datetime) -> tuple[int, dict[str, Any]]:
            wallet = self.sweep_locked(uow, uow.wallets.lock_or_create(wallet_id, now), now)
            expires = now + timedelta(days=expires_after_days) if expires_after_days else None
            entry = wallet.credit(
                credits,
                kind=kind,
                reason=reason[:200],
                description=f"+{credits:,} credits: {reason[:200]}",
                now=now,
                expires_at=expires,
            )
            return 201, self._credit_body(uow, wallet, entry, now)

        request = {"op": kind, "credits": credits, "reason": reason,
                   "expires_after_days": expires_after_days}
        return self._write(scope or f"wallet:{wallet_id}", idempotency_key, request, action)

    def _credit_body(
        self, uow: UnitOfWork, wallet: Wallet, entry: Any, now: datetime
    ) -> dict[str, Any]:
        [(entry_id, _)] = [s for s in self.save_wallet(uow, wallet, now) if s[1] is entry]
        return {
            "entry": views.entry_view(entry, entry_id),
            "balance": wallet.balance,
            "available": wallet.available,
        }

    # -- holds ----------------------------------------------------------------------------

    def place_hold(
        self,
        wallet_id: str,
        *,
        credits: int | None = None,
        feature_key: str | None = None,
        quantity: int | None = None,
        expires_in_seconds: int = DEFAULT_HOLD_SECONDS,
        idempotency_key: str | None = None,
        member: str | None = None,
    ) -> Outcome:
        feature = self._feature(feature_key) if feature_key else None
        member = member_budgets.member_for(wallet_id, member)
        if feature is not None:
            amount = _usage_credits(feature, quantity if quantity is not None else 1)
            description = f"Held {amount:,} credits for {feature.label}"
        elif credits is not None:
            if isinstance(credits, bool) or not isinstance(credits, int) or not (
                0 < credits <= MAX_CREDITS
            ):
                raise InvalidAmount("credits must be a positive whole number")
            amount = credits
            description = f"Held {amount:,} credits"
        else:
            raise InvalidAmount("a hold needs either credits or a feature (and quantity)")
        if not (0 < expires_in_seconds <= MAX_HOLD_SECONDS):
            raise InvalidAmount(f"expires_in_seconds must be from 1 to {MAX_HOLD_SECONDS}")

        def action(uow: UnitOfWork, now: datetime) -> tuple[int, dict[str, Any]]:
            wallet = self._require_wallet_or_empty(uow, wallet_id, amount)
            wallet = self.sweep_locked(uow, wallet, now)
            if member is not None:  # a hold reserves the member's budget too
                member_budgets.admit_debit(uow, wallet, member, amount, now)
            hold = wallet.place_hold(
                amount,
                expires_at=now + timedelta(seconds=expires_in_seconds),
                description=description,
                now=now,
                feature=feature.key if feature else None,
            )
            self.save_wallet(uow, wallet, now)
            if member is not None:
                member_budgets.note_hold(uow, hold.id, wallet_id, member)
            return 201, {**views.hold_view(hold), "balance": wallet.balance,
                         "available": wallet.available,
                         **({"member": member} if member is not None else {})}

        request = {"op": "hold", "credits": credits, "feature": feature_key,
                   "quantity": quantity, "expires_in_seconds": expires_in_seconds}
        if member is not None:
            request["member"] = member
        return self._write(f"wallet:{wallet_id}", idempotency_key, request, action)

    def _require_wallet_or_empty(self, uow: UnitOfWork, wallet_id: str, needed: int) -> Wallet:
        owner_type_of(wallet_id)
        wallet = uow.wallets.lock(wallet_id)
        if wallet is None:
            raise InsufficientCredits(needed, 0)
        return wallet

    def _settle(
        self,
        hold_id: str,
        op: str,
        credits: int | None,
        idempotency_key: str | None,
        allowed_wallet: Callable[[str], bool] | None = None,
    ) -> Outcome:
        with self.uow(False) as uow:
            hold = uow.wallets.get_hold(hold_id)
        if hold is None or (allowed_wallet is not None and not allowed_wallet(hold.wallet_id)):
            raise NotFound(f"no hold {hold_id[:64]!r}")
        wallet_id = hold.wallet_id

        def action(uow: UnitOfWork, now: datetime) -> tuple[int, dict[str, Any]]:
            wallet = self._require_wallet(uow, wallet_id)
            wallet = self.sweep_locked(uow, wallet, now)
            current = uow.wallets.get_hold(hold_id)
            assert current is not None
            if op == "capture":
                member = member_budgets.hold_member(uow, hold_id)
                amount = current.amount if credits is None else credits
                feature = self.catalog.features.get(current.feature or "")
                entry = wallet.capture_hold(
                    current,
                    amount,
                    description=_capture_description(self.catalog, current, amount),
                    now=now,
                    # Units used, for reporting to Kinde: a started unit counts as one.
                    quantity=-(-amount // feature.credits_per_unit) if feature else None,
                )
                if member is not None:
                    # A capture is at most the hold, whose reservation it replaces: it always
                    # fits the member's budget, and the captured amount becomes spend.
                    member_budgets.record_spend(uow, wallet_id, member, current.feature,
                                                amount, entry.quantity, now)
            else:
                entry = wallet.release_hold(
                    current, description=f"Released {current.amount:,} held credits", now=now
                )
            # Keep the wallet's next hold expiry exact, so sweeps visit only what is due.
            wallet.set_hold_expiry(
                [h for h in uow.wallets.open_holds(wallet_id) if h.id != hold_id]
            )
            self.save_wallet(uow, wallet, now)
            return 200, {**views.hold_view(current), "entry_kind": entry.kind,
                         "balance": wallet.balance, "available": wallet.available}

        request = {"op": op, "hold_id": hold_id, "credits": credits}
        return self._write(f"wallet:{wallet_id}", idempotency_key, request, action)

    def capture_hold(
        self,
        hold_id: str,
        credits: int | None = None,
        *,
        idempotency_key: str | None = None,
        allowed_wallet: Callable[[str], bool] | None = None,
    ) -> Outcome:
        if credits is not None and (
            isinstance(credits, bool) or not isinstance(credits, int) or not (
                0 < credits <= MAX_CREDITS
            )
        ):
            raise InvalidAmount("credits must be a positive whole number")
        return self._settle(hold_id, "capture", credits, idempotency_key, allowed_wallet)

    def release_hold(
        self,
        hold_id: str,
        *,
        idempotency_key: str | None = None,
        allowed_wallet: Callable[[str], bool] | None = None,
    ) -> Outcome:
        return self._settle(hold_id, "release", None, idempotency_key, allowed_wallet)

    def hold_wallet(self, hold_id: str) -> str | None:
        with self.uow(False) as uow:
            hold = uow.wallets.get_hold(hold_id)
        return hold.wallet_id if hold else None

    # -- alert and auto-recharge settings -------------------------------------------------

    def set_alerts(
        self, wallet_id: str, data: dict[str, Any], *, idempotency_key: str | None = None
    ) -> Outcome:
        data = dict(data)
        change_email = "notify_email" in data
        email = data.pop("notify_email", None)  # null clears it
        if email is not None and not _looks_like_email(email):
            raise InvalidAmount("notify_email must be an e-mail address")
        settings = AlertSettings.parse(data, self.alert_defaults)
        owner_type_of(wallet_id)

        def action(uow: UnitOfWork, now: datetime) -> tuple[int, dict[str, Any]]:
            wallet = self.sweep_locked(uow, uow.wallets.lock_or_create(wallet_id, now), now)
            uow.wallets.save_alert_settings(wallet_id, settings)
            if change_email:
                # Kinde's API does not give an org's billing e-mail back after creation, so
                # the product can say where alerts go (it also overrides a user's address).
                uow.wallets.update_profile(wallet_id, email=email)
            wallet.alert_settings = settings
            # Thresholds the balance is already at or below count as crossed: the owner set
            # them knowingly, and an alert fires on the next real crossing.
            wallet.alerts_fired = frozenset(
                t.key for t in settings.thresholds(wallet.reference_balance)
                if wallet.balance <= t.credits
            )
            self.save_wallet(uow, wallet, now)
            profile = uow.wallets.profile(wallet_id)
            return 200, {"wallet_id": wallet_id, "alerts": settings.as_dict(),
                         "notify_email": profile.email if profile else None}

        request = {"op": "alerts", **settings.as_dict(), "notify_email": email,
                   "change_email": change_email}
        return self._write(f"wallet:{wallet_id}", idempotency_key, request, action)

    def set_auto_recharge(
        self, wallet_id: str, data: dict[str, Any], *, idempotency_key: str | None = None
    ) -> Outcome:
        settings = AutoRecharge.parse(data, set(self.catalog.bundles))
        if settings.enabled and self.recharger is None:
            raise InvalidAmount(
                "auto-recharge needs a way to charge: connect Kinde billing (KINDE_DOMAIN, "
                "KINDE_M2M_CLIENT_ID and KINDE_M2M_CLIENT_SECRET)"
            )
        bundle = self.catalog.bundles.get(settings.bundle)
        if settings.enabled and bundle is not None and not bundle.kinde_feature_code:
            raise InvalidAmount(
                f"bundle {bundle.key!r} has no kinde_feature_code, so it cannot be invoiced"
            )
        owner_type_of(wallet_id)

        def action(uow: UnitOfWork, now: datetime) -> tuple[int, dict[str, Any]]:
            uow.wallets.lock_or_create(wallet_id, now)
            # Saving the settings clears any suspension: the owner turned it back on.
            uow.wallets.save_auto_recharge(wallet_id, settings)
            return 200, {"wallet_id": wallet_id, "auto_recharge": settings.as_dict()}

        request = {"op": "auto_recharge", **settings.as_dict()}
        return self._write(f"wallet:{wallet_id}", idempotency_key, request, action)

    def suspend_auto_recharge(self, wallet_id: str, reason: str) -> bool:
        """A charge failed: stop auto-recharge (until re-enabled) and tell the owner."""
        with self.uow(True) as uow:
            changed = self.suspend_auto_recharge_in(uow, wallet_id, reason, self.clock())
            uow.commit()
            return changed

    def suspend_auto_recharge_in(
        self, uow: UnitOfWork, wallet_id: str, reason: str, now: datetime
    ) -> bool:
        """The same inside a caller's unit of work (e.g. with the webhook that reported it)."""
        wallet = uow.wallets.lock(wallet_id)
        if wallet is None or wallet.auto_recharge is None:
            return False
        # Purchases already made stay billable: their credits exist. Only future buying stops.
        if wallet.auto_recharge.suspended_reason is not None or not wallet.auto_recharge.enabled:
            return False
        wallet.auto_recharge = replace(wallet.auto_recharge, suspended_reason=reason)
        uow.wallets.save_auto_recharge(wallet_id, wallet.auto_recharge)
        wallet.new_alerts.append(suspended_notice(wallet_id, reason))
        self.save_wallet(uow, wallet, now)
        return True

    # -- expiry ---------------------------------------------------------------------------

    def sweep_locked(self, uow: UnitOfWork, wallet: Wallet, now: datetime) -> Wallet:
        """Expire due blocks and holds of a locked wallet (inside the caller's transaction)."""
        for hook in self.before_sweep:
            hook(uow, wallet, now)
        # Holds first: credits an expired hold no longer reserves may then expire too.
        if wallet.next_hold_expiry_at is not None and wallet.next_hold_expiry_at <= now:
            open_holds: list[Hold] = uow.wallets.open_holds(wallet.id)
            for hold in open_holds:
                if hold.expires_at <= now:
                    wallet.release_hold(
                        hold,
                        description=f"Hold of {hold.amount:,} credits expired unused",
                        now=now,
                        expired=True,
                    )
            wallet.set_hold_expiry(open_holds)
        wallet.expire_blocks(now)
        return wallet

    def sweep_wallet(self, wallet_id: str) -> None:
        with self.uow(True) as uow:
            wallet = uow.wallets.lock(wallet_id)
            if wallet is None:
                return
            now = self.clock()
            if wallet.needs_sweep(now):
                self.sweep_locked(uow, wallet, now)
                self.save_wallet(uow, wallet, now)
                uow.commit()

    def sweep_due(self, limit: int = 500) -> int:
        """Expire blocks and holds across wallets; run by the worker on a timer.

        Wallets come longest-overdue first. One that fails to sweep is logged and skipped, so
        it cannot hold up the others (it stays due and is tried again on the next pass).
        """
        with self.uow(False) as uow:
            due = uow.wallets.wallets_due_for_sweep(self.clock(), limit)
        for wallet_id in due:
            try:
                self.sweep_wallet(wallet_id)
            except Exception:
                log.exception("expiry sweep of wallet %s failed; the others go on", wallet_id)
        return len(due)

    # -- reads ----------------------------------------------------------------------------

    def get_wallet(self, wallet_id: str) -> dict[str, Any]:
        """The wallet as the API shows it; a wallet with no credits yet reads as zero."""
        owner_type = owner_type_of(wallet_id)
        with self.uow(False) as uow:
            wallet = uow.wallets.read(wallet_id)
            due = wallet is not None and wallet.needs_sweep(self.clock())
        if due:
            # Keep reads O(1) yet right: expiry is applied before showing a stale balance.
            self.sweep_wallet(wallet_id)
        with self.uow(False) as uow:
            wallet = uow.wallets.read(wallet_id)
            holds = uow.wallets.open_holds(wallet_id) if wallet else []
            last_purchase = uow.recharges.latest_auto(wallet_id) if wallet else None
        if wallet is None:
            wallet = Wallet(id=wallet_id, owner_type=owner_type)
            return views.wallet_view(
                self.catalog, wallet, [], self.alert_defaults, exists=False
            )
        return views.wallet_view(self.catalog, wallet, holds, self.alert_defaults,
                                 last_purchase=last_purchase)

    def ledger_page(
        self, wallet_id: str, limit: int = 50, cursor: str | None = None
    ) -> dict[str, Any]:
        owner_type_of(wallet_id)
        if not (1 <= limit <= 200):
            raise InvalidAmount("limit must be from 1 to 200")
        before: int | None = None
        if cursor:
            # Only plain ASCII digits within a 64-bit id, as this API gives them out.
            if not (cursor.isascii() and cursor.isdigit() and 0 < int(cursor) < 2**63):
                raise InvalidAmount("cursor is not one this API gave out")
            before = int(cursor)
        with self.uow(False) as uow:
            rows = uow.wallets.entries(wallet_id, limit + 1, before)
        page = rows[:limit]
        return {
            "entries": [views.entry_view(e, e.id) for e in page],
            "next_cursor": str(page[-1].id) if len(rows) > limit else None,
        }


def verify_ledger(uow_factory: UnitOfWorkFactory, page_size: int = 500) -> dict[str, list[str]]:
    """Check every wallet's invariants; returns {wallet_id: [problems]} for the broken ones."""
    from app.domain.audit import problems

    broken: dict[str, list[str]] = {}
    after: str | None = None
    while True:
        with uow_factory(False) as uow:
            audits = uow.wallets.audit(after, page_size)
        if not audits:
            return broken
        for audit in audits:
            found = problems(audit)
            if found:
                broken[audit.wallet_id] = found
        after = audits[-1].wallet_id


def _looks_like_email(value: Any) -> bool:
    if not isinstance(value, str) or len(value) > 320 or any(c.isspace() for c in value):
        return False
    local, _, domain = value.rpartition("@")
    return bool(local) and "." in domain and not domain.startswith(".")


def _usage_credits(feature: Feature, quantity: Any) -> int:
    if isinstance(quantity, bool) or not isinstance(quantity, int):
        raise InvalidAmount(f"quantity must be a whole number, got {quantity!r}")
    if not (0 < quantity <= MAX_QUANTITY):
        raise InvalidAmount(f"quantity must be from 1 to {MAX_QUANTITY:,}, got {quantity}")
    return quantity * feature.credits_per_unit


def _capture_description(catalog: Catalog, hold: Hold, amount: int) -> str:
    feature = catalog.features.get(hold.feature) if hold.feature else None
    if feature is not None:
        return f"-{amount:,} credits for {feature.label} (captured hold)"
    return f"-{amount:,} credits (captured hold)"


def status_for(exc: LedgerError) -> int:
    return {
        "insufficient_credits": 402,
        "member_budget_exceeded": 402,
        "not_found": 404,
        "idempotency_conflict": 409,
        "hold_not_open": 409,
    }.get(exc.code, 422)
