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
- Never a 5xx for what a verified event contains: malformed contents (an id holding a NUL
  character, a timestamp that cannot be converted, wrong types, huge numbers, deep nesting) park
  the event with a reason. A 5xx means only that the database could not be reached, and no
  answer carries SQL or exception text (the log has the details).
- Absolute meter values (a period's running total) are keyed by the billing period the event
  states, or else by the agreement's current period (from agreement events, or asked of Kinde by
  the worker); never by a guessed one. Until the period is known the event waits, parked.
- Nothing slow runs on the request path: no call to Kinde; only local database work. The
  worker asks Kinde for agreement periods (`retry_parked`).
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Mapping
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from app.domain.catalog import Catalog
from app.domain.kinde_events import (
    UNUSABLE_ID_PREFIX,
    BillingFields,
    InvalidEvent,
    KindeEvent,
    extract_billing,
    parse_envelope,
    text_problem,
)
from app.domain.park_reasons import ParkKind, ParkReason
from app.domain.text import unsafe_char
from app.services.agreements import AgreementCache
from app.services.plans import PlanService
from app.services.ports import (
    AgreementSource,
    DuplicateKey,
    InboxEvent,
    WebhookUnitOfWork,
)
from app.services.wallet_writer import WalletWriter
from app.services.webhook_billing import (
    absolute_period,
    aware,
    resolve,
)
from app.services.webhook_handlers import EventHandlers
from app.services.webhook_outcomes import Applied, Receipt

log = logging.getLogger("kinde_credits.webhooks")

SIGNUP_SCOPE = "signup"
# Parked events retried right after their customer's mapping commits, on the request path.
# More than this are left to the worker, so one mapping event can't make a slow response.
INLINE_RETRY_LIMIT = 20
# Events parked by an unexpected failure are retried by the worker with growing delays
# (30 s, 2 min, 8 min, 32 min, ~2 h after receipt), then wait for `events --retry`.
FAILURE_RETRY_BASE = timedelta(seconds=30)
FAILURE_RETRY_MAX_ATTEMPTS = 5
# Absolute meter events whose billing period is not known yet: the worker asks Kinde for the
# agreement's current period and retries them, with growing delays up to an hour apart, for as
# long as it takes (never debiting on a guessed period meanwhile).
PERIOD_RETRY_MAX_DELAY = timedelta(hours=1)
# What an HTTP answer says about a handler failure: the details (which may hold SQL or values
# from the event) stay in the log and in the stored reason, never in a response body.
FAILURE_ANSWER = ParkReason(ParkKind.FAILED, "could not be applied; kept and retried later").text

__all__ = [
    "InvalidEvent",
    "Receipt",
    "WebhookService",
]


@dataclass
class WebhookService:
    writer: WalletWriter
    # Kinde's agreements (current billing periods), asked by the worker only; None without
    # Management API credentials (then periods come only from events).
    kinde: AgreementSource | None = None
    # Plan credits (app.services.plans): allotments on agreement and plan events.
    plans: PlanService | None = None
    # Per-process position of the worker's scan over parked events (an optimisation only:
    # another instance needs nothing from it).
    _scan_after: tuple[datetime, str] | None = field(default=None, repr=False)
    # What each kind of event does (app.services.webhook_handlers).
    handlers: EventHandlers = field(init=False, repr=False)

    def __post_init__(self) -> None:
        self.handlers = EventHandlers(self.writer, self.kinde, self.plans)

    @property
    def catalog(self) -> Catalog:
        return self.writer.catalog

    def _uow(self, write: bool) -> AbstractContextManager[WebhookUnitOfWork]:
        return self.writer.uow(write)

    # -- receiving ------------------------------------------------------------------------

    def receive(
        self, claims: Mapping[str, Any], raw_body: str, webhook_id: str | None = None
    ) -> Receipt:
        """Store and apply one verified delivery. Whatever the claims contain, the event is
        stored (parked when it is malformed); only a database failure raises."""
        # An event whose own id is unusable is keyed by its delivery: Kinde resends the same
        # signed body, so a redelivery is still a duplicate.
        fallback = UNUSABLE_ID_PREFIX + hashlib.sha256(
            raw_body.encode("utf-8", "replace")).hexdigest()[:48]
        event = parse_envelope(claims, fallback_id=fallback)
        payload = _stored_payload(claims, event)
        # The JWT itself is ASCII; a NUL could only come from a broken proxy. Never let it
        # make the row unstorable.
        raw_body = raw_body.replace("\x00", "\ufffd")
        webhook_id = _usable_header(webhook_id)
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
        try:
            with self._uow(True) as uow:
                if uow.inbox.get(event.event_id) is not None:
                    return Receipt("duplicate", event.event_id), None
                if webhook_id is not None and uow.inbox.webhook_id_taken(webhook_id):
                    # webhook-id is not signed: never let it block or alias a signed event_id.
                    webhook_id = None
                now = self.writer.clock()
                # The row goes in first: on PostgreSQL this insert is where a racing
                # redelivery waits, before either touches a wallet.
                uow.inbox.add(event.event_id, webhook_id, event.type, payload, raw_body, now)
                applied = self.handlers.apply(uow, event, now)
                self._finish(uow, event.event_id, applied, now)
                uow.commit()
                return _receipt(event.event_id, applied), applied.mapped_customer
        except DuplicateKey:
            raise
        except Exception as exc:  # parked below, in a fresh transaction
            failure = exc
        # The handler (or storing the row) failed: the partial work is rolled back; keep the
        # event, parked. If the database itself is down, this raises too (answered 503).
        log.error("webhook %s (%s) failed; parking it", event.event_id, event.type,
                  exc_info=failure)
        reason = _failure_reason(failure)
        try:
            stored = self._store_parked(event, payload, raw_body, webhook_id, reason)
        except DuplicateKey:
            raise
        except Exception:
            # Perhaps something in the payload itself could not be stored: keep the envelope
            # only (the raw body, which is kept, has everything).
            log.exception("webhook %s could not be parked whole; keeping its envelope",
                          event.event_id)
            stored = self._store_parked(event, _envelope_only(event, "could not be stored"),
                                        raw_body, None, reason)
        if not stored:
            return Receipt("duplicate", event.event_id), None
        return Receipt("parked", event.event_id, FAILURE_ANSWER), None

    def _store_parked(self, event: KindeEvent, payload: str, raw_body: str,
                      webhook_id: str | None, reason: str) -> bool:
        """Store the event as parked; False when it is there already."""
        with self._uow(True) as uow:
            if uow.inbox.get(event.event_id) is not None:
                return False
            if webhook_id is not None and uow.inbox.webhook_id_taken(webhook_id):
                webhook_id = None
            now = self.writer.clock()
            uow.inbox.add(event.event_id, webhook_id, event.type, payload, raw_body, now)
            uow.inbox.finish(event.event_id, "parked", reason=reason, wallet_id=None,
                             customer_id=None, now=now)
            uow.commit()
        return True

    @staticmethod
    def _finish(uow: WebhookUnitOfWork, event_id: str, applied: Applied, now: datetime) -> None:
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
            now = self.writer.clock()
            try:
                event = parse_envelope(row.payload, fallback_id=event_id)
                applied = self.handlers.apply(uow, event, now)
            except Exception as exc:
                failure = exc
            else:
                self._finish(uow, event_id, applied, now)
                uow.commit()
                return applied.status, applied.mapped_customer
        log.error("retry of webhook %s failed; still parked", event_id, exc_info=failure)
        with self._uow(True) as uow:
            row = uow.inbox.get(event_id, lock=True)
            if row is None or row.status != "parked":
                return None, None
            uow.inbox.finish(event_id, "parked", reason=_failure_reason(failure),
                             wallet_id=row.wallet_id, customer_id=row.customer_id,
                             now=self.writer.clock())
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
        feature is now in the catalog, a failure's back-off has passed, their billing period
        is now known, asking Kinde if need be); with `force`, every parked event. Returns how
        many got applied (the worker sleeps when it is 0)."""
        now = self.writer.clock()
        ready: list[str] = []
        # Billing customer -> events waiting for its agreement's current period.
        periods: dict[str, list[str]] = {}
        with self._uow(False) as uow:
            rows = uow.inbox.search(status="parked", after=self._scan_after, limit=limit)
            for row in rows:
                waiting = ParkReason.parse(row.park_reason).kind is ParkKind.PERIOD_UNKNOWN
                if waiting and self.kinde is not None and (force or _period_retry_due(row, now)):
                    customer = row.customer_id or _profile_customer(uow, row.wallet_id)
                    if customer:
                        periods.setdefault(customer, []).append(row.event_id)
                        continue
                if force or self._ready(uow, row, now):
                    ready.append(row.event_id)
        # Rotate through a large backlog page by page; start over after the last page.
        self._scan_after = (rows[-1].received_at, rows[-1].event_id) if len(rows) == limit else None
        for customer, event_ids in periods.items():
            # Outside any transaction: Kinde may be slow. Retried whatever the answer, so a
            # failed look-up counts as an attempt (the delay before the next one grows).
            self._learn_agreements(customer, now)
            ready.extend(event_ids)
        applied = 0
        for event_id in ready:
            try:
                if self.retry_event(event_id) in ("processed", "ignored"):
                    applied += 1
            except Exception:
                log.exception("retry of parked webhook %s failed", event_id)
        return applied

    def _learn_agreements(self, customer_id: str, now: datetime) -> None:
        """Ask Kinde for a billing customer's agreements and store their current periods (and
        the wallet's agreement, when it has none or Kinde no longer lists it)."""
        assert self.kinde is not None
        try:
            agreements = [
                a for a in self.kinde.list_agreements(customer_id)
                if a.expires_on is None or aware(a.expires_on) > now
            ]
        except Exception as exc:
            log.warning("could not read the agreements of %s from Kinde (%s); parked meter "
                        "events wait", customer_id, type(exc).__name__)
            return
        with self._uow(True) as uow:
            AgreementCache(uow.billing).remember_all(customer_id, agreements, now)
            wallet_id = uow.wallets.find_by_customer(customer_id)
            profile = uow.wallets.profile(wallet_id) if wallet_id else None
            if wallet_id and profile is not None:
                listed = {a.id for a in agreements}
                if profile.agreement_id not in listed and len(agreements) == 1:
                    # The one agreement Kinde has for this customer (a plan change may have
                    # replaced the one we knew).
                    uow.wallets.update_profile(wallet_id, agreement_id=agreements[0].id)
            uow.commit()

    def _ready(self, uow: WebhookUnitOfWork, row: InboxEvent, now: datetime) -> bool:
        """Would a retry get further than last time? A lookup on what the event waits for (its
        park reason's kind). Read-only and cheap: the worker asks this every pass, so it must
        not take the write lock for events that would only park again."""
        reason = ParkReason.parse(row.park_reason)
        if reason.kind is ParkKind.FAILED:
            due = row.received_at + FAILURE_RETRY_BASE * (4 ** max(row.attempts - 1, 0))
            return row.attempts < FAILURE_RETRY_MAX_ATTEMPTS and now >= due
        if reason.kind is ParkKind.MALFORMED:
            return False  # a malformed event stays malformed
        fields = extract_billing(parse_envelope(row.payload, fallback_id=row.event_id))
        if reason.kind is ParkKind.UNKNOWN_FEATURE:
            code = fields.feature_code
            return code is not None and self.catalog.feature_by_kinde_code(code) is not None
        wallet_id = self._mapped_wallet(uow, fields)
        if reason.kind is ParkKind.NO_WALLET or wallet_id is None:
            return wallet_id is not None
        # Waiting for a period: ready once an agreement event (or Kinde) has brought it.
        start, _ = absolute_period(uow, fields, wallet_id, now,
                                   asks_kinde=self.kinde is not None)
        return start is not None

    def _mapped_wallet(self, uow: WebhookUnitOfWork, fields: BillingFields) -> str | None:
        """The event's wallet, when it resolves and does not contradict its billing customer."""
        wallet_id, _ = resolve(uow, fields)
        if wallet_id is None:
            return None
        profile = uow.wallets.profile(wallet_id)
        known = profile.billing_customer_id if profile else None
        if known and fields.customer_id and known != fields.customer_id:
            return None
        return wallet_id

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

def _receipt(event_id: str, applied: Applied) -> Receipt:
    return Receipt(applied.status, event_id, applied.reason)


def _failure_reason(exc: BaseException | None) -> str:
    """A stored reason for a handler failure: the exception's type and first line, without the
    SQL statement and parameters a database error appends (they may echo the event's values)."""
    if exc is None:
        return ParkReason(ParkKind.FAILED, "unknown error").text
    detail = str(exc).split("\n", 1)[0].split("[SQL", 1)[0].strip()
    detail = "".join("?" if unsafe_char(ch) else ch for ch in detail)[:200]
    return ParkReason(ParkKind.FAILED, f"{type(exc).__name__}: {detail}").text


def _period_retry_due(row: InboxEvent, now: datetime) -> bool:
    """Events waiting for a period are retried 30 s, 2 min, 8 min, 32 min after being parked,
    then hourly: the delays grow by 4 up to an hour and never stop."""
    wait = timedelta(0)
    for attempt in range(max(row.attempts, 1)):
        step = FAILURE_RETRY_BASE * (4 ** min(attempt, 8))
        if step >= PERIOD_RETRY_MAX_DELAY:
            wait += PERIOD_RETRY_MAX_DELAY * (max(row.attempts, 1) - attempt)
            break
        wait += step
    return now >= row.received_at + wait


def _profile_customer(uow: WebhookUnitOfWork, wallet_id: str | None) -> str | None:
    profile = uow.wallets.profile(wallet_id) if wallet_id else None
    return profile.billing_customer_id if profile else None


def _envelope_only(event: KindeEvent, why: str) -> str:
    return json.dumps({"event_id": event.event_id, "type": event.type,
                       "payload_not_stored": why}, sort_keys=True)


def _stored_payload(claims: Mapping[str, Any], event: KindeEvent) -> str:
    """The claims as JSON text for the inbox (NUL and other control characters come out
    escaped, which any text column stores). A payload too deep to serialise keeps only its
    envelope; the raw body, always stored, still has all of it."""
    if any(p.startswith("payload is nested deeper") for p in event.problems):
        return _envelope_only(event, "nested too deeply")
    try:
        return json.dumps(dict(claims), separators=(",", ":"), sort_keys=True, default=str)
    except (ValueError, TypeError, RecursionError):
        return _envelope_only(event, "could not be serialised")


def _usable_header(webhook_id: str | None) -> str | None:
    """The unsigned webhook-id header, when it is storable; otherwise None (it is only a hint:
    the signed event_id is the key)."""
    if webhook_id is None:
        return None
    text = webhook_id.strip()[:128]
    return text if text and text_problem(text) is None else None
