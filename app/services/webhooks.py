"""Kinde webhooks as a use case: store every verified event in the inbox, apply it once, park
what cannot be applied yet, and retry parked events when what they wait for arrives.

Guarantees (issue 4, DESIGN.md):
- The inbox row and the event's effects commit in ONE transaction: a crash can neither apply an
  event without recording it nor record it as processed without applying it.
- Exactly once per `event_id`: the inbox primary key decides. On SQLite, `BEGIN IMMEDIATE`
  serialises writers, so the look-up before the insert is race-free; on PostgreSQL a concurrent
  delivery blocks on the primary key until the first commits, then gets a unique violation and
  answers `duplicate`. Retries of a parked event lock its inbox row first (FOR UPDATE), then the
  wallet, the same order as a fresh delivery, so two workers cannot both apply it.
- Never dropped: an event we cannot apply (unknown customer, missing field, unknown feature, or
  even a bug in a handler) is stored as `parked` with its reason and answered 200 (Kinde would
  otherwise retry for 72 hours and then disable the endpoint). Parked events are retried right
  after a mapping for their customer commits, by the worker (`retry_parked`), and on demand.
- Nothing slow runs here: no call to Kinde; only local database work.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, cast

from app.domain.catalog import Catalog
from app.domain.kinde_events import (
    BillingFields,
    EventKind,
    InvalidEvent,
    KindeEvent,
    extract_billing,
    parse_envelope,
    signup_owner,
)
from app.domain.ledger import Wallet
from app.domain.usage_terms import describe_debit
from app.services.inbox_ports import InboxEvent, InboxStatus, WebhookUnitOfWork
from app.services.ledger import LedgerService, request_fingerprint
from app.services.plans import PlanService, plan_service_for
from app.services.ports import DuplicateKey

log = logging.getLogger("kinde_credits.webhooks")

SIGNUP_SCOPE = "signup"
# Parked events retried right after their customer's mapping commits, on the request path.
# More than this are left to the worker, so one mapping event can't make a slow response.
INLINE_RETRY_LIMIT = 20
# Events parked by an unexpected failure are retried by the worker with growing delays
# (30 s, 2 min, 8 min, 32 min, ~2 h after receipt), then wait for `events --retry`.
FAILURE_RETRY_BASE = timedelta(seconds=30)
FAILURE_RETRY_MAX_ATTEMPTS = 5
FAILED_PREFIX = "failed: "

__all__ = [
    "InvalidEvent",
    "Receipt",
    "WebhookService",
    "retry_parked",
    "service_for",
]


@dataclass(frozen=True)
class Receipt:
    """The answer to one delivery: `status` is processed | duplicate | ignored | parked."""

    status: str
    event_id: str
    reason: str | None = None

    def body(self) -> dict[str, Any]:
        out: dict[str, Any] = {"status": self.status, "event_id": self.event_id}
        if self.reason:
            out["reason"] = self.reason
        return out


@dataclass
class _Applied:
    """What a handler did: the inbox outcome plus the customer it mapped (to wake parked
    events waiting for that mapping)."""

    status: InboxStatus
    reason: str | None = None
    wallet_id: str | None = None
    customer_id: str | None = None
    mapped_customer: str | None = None


def _parked(
    reason: str, fields: BillingFields | None = None, wallet_id: str | None = None
) -> _Applied:
    return _Applied(
        "parked", reason, wallet_id=wallet_id, customer_id=fields.customer_id if fields else None
    )


@dataclass
class WebhookService:
    ledger: LedgerService
    plans: PlanService | None = None
    # Per-process position of the worker's scan over parked events (an optimisation only:
    # another instance needs nothing from it).
    _scan_after: tuple[datetime, str] | None = field(default=None, repr=False)

    @property
    def catalog(self) -> Catalog:
        return self.ledger.catalog

    def _uow(self, write: bool) -> AbstractContextManager[WebhookUnitOfWork]:
        # The store's unit of work offers `inbox` and `meters` once adapters.sql.inbox is
        # imported (the composition root does it); the Protocol says so for the type checker.
        return cast(AbstractContextManager[WebhookUnitOfWork], self.ledger.uow(write))

    # -- receiving ------------------------------------------------------------------------

    def receive(
        self, claims: Mapping[str, Any], raw_body: str, webhook_id: str | None = None
    ) -> Receipt:
        """Store and apply one verified delivery. Raises InvalidEvent for a payload that
        cannot even be keyed (nothing is written then)."""
        event = parse_envelope(claims)
        payload = json.dumps(dict(claims), separators=(",", ":"), sort_keys=True, default=str)
        if webhook_id is not None:
            webhook_id = webhook_id.strip()[:128] or None
        for _ in range(3):
            try:
                receipt, mapped = self._receive_once(event, payload, raw_body, webhook_id)
            except DuplicateKey:
                # A concurrent delivery of this event won (PostgreSQL), or the unsigned
                # webhook-id header collided with another event's: look which.
                with self._uow(False) as uow:
                    if uow.inbox.get(event.event_id) is not None:
                        return Receipt("duplicate", event.event_id)
                webhook_id = None
                continue
            if mapped:
                self._retry_customer(mapped, INLINE_RETRY_LIMIT)
            return receipt
        raise RuntimeError(f"could not store event {event.event_id} (kept colliding)")

    def _receive_once(
        self, event: KindeEvent, payload: str, raw_body: str, webhook_id: str | None
    ) -> tuple[Receipt, str | None]:
        failure: Exception | None = None
        with self._uow(True) as uow:
            if uow.inbox.get(event.event_id) is not None:
                return Receipt("duplicate", event.event_id), None
            if webhook_id is not None and uow.inbox.webhook_id_taken(webhook_id):
                # webhook-id is not signed: never let it block or alias a signed event_id.
                webhook_id = None
            now = self.ledger.clock()
            # The row goes in first: on PostgreSQL this insert is where a racing redelivery
            # waits, before either touches a wallet.
            uow.inbox.add(event.event_id, webhook_id, event.type, payload, raw_body, now)
            try:
                applied = self._apply(uow, event, now)
            except DuplicateKey:
                raise
            except Exception as exc:  # parked below, in a fresh transaction
                failure = exc
            else:
                self._finish(uow, event.event_id, applied, now)
                uow.commit()
                return _receipt(event.event_id, applied), applied.mapped_customer
        # The handler failed: its partial work is rolled back; keep the event, parked.
        log.exception("webhook %s (%s) failed; parked", event.event_id, event.type,
                      exc_info=failure)
        reason = _failure_reason(failure)
        with self._uow(True) as uow:
            if uow.inbox.get(event.event_id) is not None:
                return Receipt("duplicate", event.event_id), None
            now = self.ledger.clock()
            uow.inbox.add(event.event_id, webhook_id, event.type, payload, raw_body, now)
            uow.inbox.finish(event.event_id, "parked", reason=reason, wallet_id=None,
                             customer_id=None, now=now)
            uow.commit()
        return Receipt("parked", event.event_id, reason), None

    @staticmethod
    def _finish(uow: WebhookUnitOfWork, event_id: str, applied: _Applied, now: datetime) -> None:
        uow.inbox.finish(
            event_id,
            applied.status,
            reason=applied.reason,
            wallet_id=applied.wallet_id,
            customer_id=applied.customer_id,
            now=now,
        )

    # -- retrying parked events -----------------------------------------------------------

    def retry_event(self, event_id: str) -> str | None:
        """Apply one parked event now (in its own transaction). Returns its new status, or None
        when it is not parked (already applied by someone else, or unknown)."""
        queue = [event_id]
        first: str | None = None
        applied_ids: set[str] = set()
        while queue:
            current = queue.pop(0)
            if current in applied_ids:
                continue
            applied_ids.add(current)
            status, mapped = self._retry_once(current)
            if first is None and current == event_id:
                first = status
            if mapped:
                queue.extend(
                    e.event_id
                    for e in self._parked_for_customer(mapped, INLINE_RETRY_LIMIT)
                    if e.event_id not in applied_ids
                )
        return first

    def _retry_once(self, event_id: str) -> tuple[str | None, str | None]:
        failure: Exception | None = None
        with self._uow(True) as uow:
            row = uow.inbox.get(event_id, lock=True)
            if row is None or row.status != "parked":
                return None, None
            now = self.ledger.clock()
            try:
                applied = self._apply(uow, parse_envelope(row.payload), now)
            except Exception as exc:
                failure = exc
            else:
                self._finish(uow, event_id, applied, now)
                uow.commit()
                return applied.status, applied.mapped_customer
        log.exception("retry of webhook %s failed; still parked", event_id, exc_info=failure)
        with self._uow(True) as uow:
            row = uow.inbox.get(event_id, lock=True)
            if row is None or row.status != "parked":
                return None, None
            uow.inbox.finish(event_id, "parked", reason=_failure_reason(failure),
                             wallet_id=row.wallet_id, customer_id=row.customer_id,
                             now=self.ledger.clock())
            uow.commit()
        return "parked", None

    def _parked_for_customer(self, customer_id: str, limit: int) -> list[InboxEvent]:
        with self._uow(False) as uow:
            return uow.inbox.search(status="parked", customer_id=customer_id, limit=limit)

    def _retry_customer(self, customer_id: str, limit: int) -> int:
        applied = 0
        for event in self._parked_for_customer(customer_id, limit):
            try:
                if self.retry_event(event.event_id) in ("processed", "ignored"):
                    applied += 1
            except Exception:  # the delivery that triggered this has committed: never fail it
                log.exception("retry of parked webhook %s failed", event.event_id)
        return applied

    def retry_parked(self, *, force: bool = False, limit: int = 500) -> int:
        """Retry parked events whose blocker has gone (their customer is now mapped, their
        feature is now in the catalog, a failure's back-off has passed); with `force`, every
        parked event. Returns how many got applied (the worker sleeps when it is 0)."""
        now = self.ledger.clock()
        ready: list[str] = []
        with self._uow(False) as uow:
            rows = uow.inbox.search(status="parked", after=self._scan_after, limit=limit)
            for row in rows:
                if force or self._ready(uow, row, now):
                    ready.append(row.event_id)
        # Rotate through a large backlog page by page; start over after the last page.
        self._scan_after = (rows[-1].received_at, rows[-1].event_id) if len(rows) == limit else None
        applied = 0
        for event_id in ready:
            try:
                if self.retry_event(event_id) in ("processed", "ignored"):
                    applied += 1
            except Exception:
                log.exception("retry of parked webhook %s failed", event_id)
        return applied

    def _ready(self, uow: WebhookUnitOfWork, row: InboxEvent, now: datetime) -> bool:
        """Would a retry get further than last time? Read-only and cheap: the worker asks this
        every pass, so it must not take the write lock for events that would only park again."""
        reason = row.park_reason or ""
        if reason.startswith(FAILED_PREFIX):
            due = row.received_at + FAILURE_RETRY_BASE * (4 ** max(row.attempts - 1, 0))
            return row.attempts < FAILURE_RETRY_MAX_ATTEMPTS and now >= due
        try:
            event = parse_envelope(row.payload)
        except InvalidEvent:
            return False
        kind = event.kind
        if kind not in (EventKind.METER_USAGE, EventKind.MAPPING, EventKind.HISTORY):
            return False  # a sign-up without a usable id won't grow one
        fields = extract_billing(event)
        if kind is EventKind.METER_USAGE:
            # Mirrors the handler's checks that depend on the event alone: they don't fix
            # themselves. (The catalog changes only with a restart, and then too we re-check.)
            code = fields.feature_code
            feature = self.catalog.feature_by_kinde_code(code) if code else None
            if feature is None:
                return False
            if feature.source == "kinde" and (
                fields.value is None
                or (fields.meter_type == "absolute" and fields.period_key is None)
            ):
                return False
        wallet_id, _ = self._resolve(uow, fields)
        if wallet_id is None:
            return False
        profile = uow.wallets.profile(wallet_id)
        known = profile.billing_customer_id if profile else None
        return not (known and fields.customer_id and known != fields.customer_id)

    # -- reading ---------------------------------------------------------------------------

    def events(
        self,
        *,
        status: str | None = None,
        wallet_id: str | None = None,
        event_type: str | None = None,
        limit: int = 100,
    ) -> list[InboxEvent]:
        """The inbox, oldest first; the rows with a wallet id are that wallet's history."""
        with self._uow(False) as uow:
            return uow.inbox.search(
                status=status, wallet_id=wallet_id, event_type=event_type, limit=limit
            )

    # -- handlers ---------------------------------------------------------------------------

    def _apply(self, uow: WebhookUnitOfWork, event: KindeEvent, now: datetime) -> _Applied:
        kind = event.kind
        if kind in (EventKind.USER_CREATED, EventKind.ORG_CREATED):
            return self._signup(uow, event, now)
        if kind is EventKind.METER_USAGE:
            return self._meter_usage(uow, event, now)
        if kind is EventKind.MAPPING:
            return self._mapping(uow, event, now)
        if kind is EventKind.HISTORY:
            return self._history(uow, event, now)
        return _Applied("ignored", f"event type {event.type!r} is not handled")

    def _signup(self, uow: WebhookUnitOfWork, event: KindeEvent, now: datetime) -> _Applied:
        wallet_id, email = signup_owner(event)
        if wallet_id is None:
            where = "data.user.id (kp_...)" if event.kind is EventKind.USER_CREATED else (
                "data.organization.code (org_...)"
            )
            return _parked(f"{event.type} without a usable {where}")
        wallet = self.ledger.sweep_locked(uow, uow.wallets.lock_or_create(wallet_id, now), now)
        if email:
            uow.wallets.update_profile(wallet_id, email=email)
        fields = extract_billing(event)
        problem = self._learn(uow, wallet_id, fields, agreement=True)
        if problem:
            self._save(uow, wallet, now)
            return _parked(problem, fields, wallet_id)
        signup = self.catalog.signup
        credits = signup.user_credits if wallet.owner_type == "user" else signup.org_credits
        note: str | None = None
        if credits <= 0:
            note = "no sign-up credits configured"
        elif uow.idempotency.get(SIGNUP_SCOPE, wallet_id) is not None:
            # Kinde may send a second creation event (a new event_id) for one owner.
            note = "sign-up credits were already granted to this wallet"
        else:
            expires = (
                now + timedelta(days=signup.expires_after_days)
                if signup.expires_after_days
                else None
            )
            wallet.credit(
                credits,
                kind="grant",
                reason="signup",
                description=f"+{credits:,} sign-up credits",
                now=now,
                expires_at=expires,
            )
            body = {"event_id": event.event_id, "credits": credits}
            uow.idempotency.put(
                SIGNUP_SCOPE, wallet_id, request_fingerprint({"op": "signup", **body}), 201,
                body, now,
            )
        self._save(uow, wallet, now)
        return _Applied("processed", note, wallet_id=wallet_id, customer_id=fields.customer_id,
                        mapped_customer=fields.customer_id)

    def _meter_usage(self, uow: WebhookUnitOfWork, event: KindeEvent, now: datetime) -> _Applied:
        fields = extract_billing(event)
        code = fields.feature_code
        if code is None:
            return _parked(
                "no feature code (data.feature_code / data.billing_feature_code / data.meter_id)",
                fields,
            )
        feature = self.catalog.feature_by_kinde_code(code)
        if feature is None:
            if any(b.kinde_feature_code == code for b in self.catalog.bundles.values()):
                # Our own invoice for a credit pack (reported as meter usage): not usage.
                return _Applied("processed", f"credit pack invoice usage on {code!r}; nothing "
                                "to debit", wallet_id=self._peek_wallet(uow, fields),
                                customer_id=fields.customer_id)
            return _parked(f"unknown feature code {code!r}: not in the credits catalog "
                           f"({self.catalog.path})", fields)
        if feature.source == "app":
            # The product already reported this usage to us (and we to Kinde): debiting again
            # would charge twice. Keep the event for reconciliation only.
            return _Applied(
                "processed",
                f"feature {feature.key!r} has source 'app': recorded for reconciliation only",
                wallet_id=self._peek_wallet(uow, fields),
                customer_id=fields.customer_id,
            )
        if fields.value is None:
            return _parked(fields.value_problem or "no meter value", fields)
        if fields.meter_type == "absolute" and fields.period_key is None:
            return _parked("absolute meter value without a period start or timestamp", fields)
        wallet_id, problem = self._resolve(uow, fields)
        if wallet_id is None:
            return _parked(problem or "no wallet", fields)
        wallet = self.ledger.sweep_locked(uow, uow.wallets.lock_or_create(wallet_id, now), now)
        problem = self._learn(uow, wallet_id, fields, agreement=False)
        if problem:
            self._save(uow, wallet, now)
            return _parked(problem, fields, wallet_id)
        units = fields.value
        if fields.meter_type == "absolute":
            assert fields.period_key is not None
            # Kinde's absolute value is the period's running total: debit only the increase
            # over the last total seen (the wallet lock serialises this read-then-write).
            # Keyed by the resolved wallet: events naming the customer and events naming only
            # the user or org must share one running total, or the total is debited twice.
            key = wallet_id
            last = uow.meters.last_value(key, code, fields.period_key)
            units = max(0, fields.value - (last or 0))
            if last is None or fields.value > last:
                uow.meters.record(key, code, fields.period_key, fields.value, now)
        note: str | None = None
        if units > 0:
            credits = units * feature.credits_per_unit
            wallet.debit(
                credits,
                reason=f"kinde:{event.event_id}",
                description=describe_debit(credits, feature.label, units, feature.unit)
                + " (metered by Kinde)",
                now=now,
                refusable=False,  # usage that already happened: a shortfall becomes arrears
                feature=feature.key,
                quantity=units,
                occurred_at=fields.occurred_at,
            )
        else:
            note = "no new usage" if fields.meter_type == "delta" else (
                "absolute value not above the last one seen for this period"
            )
        self._save(uow, wallet, now)
        return _Applied("processed", note, wallet_id=wallet_id, customer_id=fields.customer_id,
                        mapped_customer=fields.customer_id)

    def _mapping(self, uow: WebhookUnitOfWork, event: KindeEvent, now: datetime) -> _Applied:
        fields = extract_billing(event)
        wallet_id, problem = self._resolve(uow, fields)
        if wallet_id is None:
            return _parked(problem or "no wallet", fields)
        wallet = uow.wallets.lock_or_create(wallet_id, now)  # the lock orders profile updates
        problem = self._learn(uow, wallet.id, fields, agreement=True)
        if problem:
            return _parked(problem, fields, wallet_id)
        note: str | None = None
        if self.plans is not None:
            # Plan credits for the agreement's current period, once (app.services.plans).
            wallet = self.ledger.sweep_locked(uow, wallet, now)
            note = self.plans.on_agreement_event(uow, wallet, fields, event.timestamp, now)
            self._save(uow, wallet, now)
        return _Applied("processed", note, wallet_id=wallet_id, customer_id=fields.customer_id,
                        mapped_customer=fields.customer_id)

    def _history(self, uow: WebhookUnitOfWork, event: KindeEvent, now: datetime) -> _Applied:
        # The inbox row with its wallet id set IS the wallet's history entry.
        fields = extract_billing(event)
        wallet_id, problem = self._resolve(uow, fields)
        if wallet_id is None:
            return _parked(problem or "no wallet", fields)
        note: str | None = None
        if event.type == "customer.payment_failed" and self.ledger.suspend_auto_recharge_in(
            uow, wallet_id, "Kinde reported a failed payment", now
        ):
            # Never keep buying on a card that fails: the owner re-enables it after fixing it.
            note = "auto-recharge suspended"
        if event.type == "customer.agreement_cancelled" and self.plans is not None:
            uow.wallets.lock_or_create(wallet_id, now)  # the wallet lock orders plan changes
            note = self.plans.on_agreement_cancelled(uow, wallet_id, fields.agreement_id)
        return _Applied("processed", note, wallet_id=wallet_id, customer_id=fields.customer_id)

    # -- helpers ----------------------------------------------------------------------------

    def _save(self, uow: WebhookUnitOfWork, wallet: Wallet, now: datetime) -> None:
        if wallet.has_pending_changes() or wallet.touched_blocks or wallet.new_blocks:
            self.ledger.save_wallet(uow, wallet, now)

    @staticmethod
    def _resolve(uow: WebhookUnitOfWork, fields: BillingFields) -> tuple[str | None, str | None]:
        """The wallet a billing event is about: the owner it names (user id / org code), or
        the wallet mapped to its billing customer. (None, why) when neither is known yet."""
        mapped = (
            uow.wallets.find_by_customer(fields.customer_id) if fields.customer_id else None
        )
        named = [o for o in (fields.org_code, fields.user_id) if o]
        if mapped is not None:
            if named and mapped not in named:
                return None, (
                    f"customer {fields.customer_id} belongs to wallet {mapped}, but the event "
                    f"names {' / '.join(named)}"
                )
            return mapped, None
        if named:
            return named[0], None
        if fields.customer_id:
            return None, (
                f"unknown customer {fields.customer_id}: no wallet is mapped to it yet "
                "(waiting for customer.agreement_created or an event naming the user/org)"
            )
        return None, (
            "no customer id (data.customer_id / data.customer.id) and no data.user_id / "
            "data.org_code"
        )

    @staticmethod
    def _peek_wallet(uow: WebhookUnitOfWork, fields: BillingFields) -> str | None:
        """Best-effort wallet for history of events that change nothing (never parks)."""
        if fields.customer_id:
            found = uow.wallets.find_by_customer(fields.customer_id)
            if found:
                return found
        return fields.owner_id

    @staticmethod
    def _learn(
        uow: WebhookUnitOfWork, wallet_id: str, fields: BillingFields, *, agreement: bool
    ) -> str | None:
        """Record the billing customer (and agreement / plan) on a locked wallet. Returns a
        reason to park when the event contradicts what the wallet already knows."""
        profile = uow.wallets.profile(wallet_id)
        updates: dict[str, str | None] = {}
        if fields.customer_id:
            known = profile.billing_customer_id if profile else None
            if known and known != fields.customer_id:
                return (
                    f"wallet {wallet_id} is billed as customer {known}, but the event says "
                    f"{fields.customer_id}"
                )
            if not known:
                other = uow.wallets.find_by_customer(fields.customer_id)
                if other is not None and other != wallet_id:
                    return (
                        f"customer {fields.customer_id} already belongs to wallet {other}, not "
                        f"{wallet_id}"
                    )
                updates["billing_customer_id"] = fields.customer_id
        known_agreement = profile.agreement_id if profile else None
        # Meter events only fill in a missing agreement; agreement/plan events may change it.
        if (
            fields.agreement_id
            and (agreement or not known_agreement)
            and known_agreement != fields.agreement_id
        ):
            updates["agreement_id"] = fields.agreement_id
        known_plan = profile.plan_code if profile else None
        if agreement and fields.plan_code and known_plan != fields.plan_code:
            updates["plan_code"] = fields.plan_code
        if updates:
            uow.wallets.update_profile(wallet_id, **updates)
        return None


def _receipt(event_id: str, applied: _Applied) -> Receipt:
    return Receipt(applied.status, event_id, applied.reason)


def _failure_reason(exc: BaseException | None) -> str:
    detail = str(exc)[:300] if exc is not None else "unknown error"
    return f"{FAILED_PREFIX}{type(exc).__name__}: {detail}"


# -- composition helpers (used by the HTTP blueprint, the CLI and the worker) ----------------


def service_for(container: Any) -> WebhookService:
    """The container's webhook service, made once per container."""
    service = container.extras.get("webhook_service")
    if service is None:
        service = WebhookService(container.ledger, plans=plan_service_for(container))
        container.extras["webhook_service"] = service
    return cast(WebhookService, service)


def retry_parked(container: Any) -> int:
    """Worker step: retry parked events that can now be applied; returns how many were."""
    return service_for(container).retry_parked()
