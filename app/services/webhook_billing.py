"""Who a Kinde billing event is about, what it teaches about the wallet's billing profile, and
which billing period an absolute meter value belongs to (for app.services.webhooks).

Each function works inside the caller's unit of work, under the wallet's lock where it writes.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from app.domain.agreements import current_period
from app.domain.kinde_events import BillingFields
from app.domain.park_reasons import ParkKind, ParkReason
from app.services.agreements import AgreementCache
from app.services.ports import WebhookUnitOfWork


def resolve(uow: WebhookUnitOfWork, fields: BillingFields) -> tuple[str | None, str | None]:
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


def peek_wallet(uow: WebhookUnitOfWork, fields: BillingFields) -> str | None:
    """Best-effort wallet for history of events that change nothing (never parks)."""
    if fields.customer_id:
        found = uow.wallets.find_by_customer(fields.customer_id)
        if found:
            return found
    return fields.owner_id


def replaced_agreement(uow: WebhookUnitOfWork, wallet_id: str,
                       fields: BillingFields) -> str | None:
    """Why an agreement event is stale: it names an agreement the wallet has moved on from (one
    whose periods all began before the current agreement's first), or states a period that
    began before the current agreement's. None when it may change the wallet's agreement."""
    profile = uow.wallets.profile(wallet_id)
    current = profile.agreement_id if profile else None
    named = fields.agreement_id
    if not (named and current and named != current):
        return None
    rows = uow.plans.periods(wallet_id)
    current_starts = [r.period_start for r in rows if r.agreement_id == current]
    named_starts = [r.period_start for r in rows if r.agreement_id == named]
    if not current_starts:
        return None
    began = min(current_starts)
    if (named_starts and max(named_starts) < began) or (
        fields.period_start is not None and aware(fields.period_start) < began
    ):
        return (f"agreement {named} was replaced by {current} on this wallet: the late event "
                "changes nothing")
    return None


def learn(
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


def remember_period(
    uow: WebhookUnitOfWork, fields: BillingFields, wallet_id: str, now: datetime
) -> None:
    """Keep the current period an event states for its agreement (app.services.agreements:
    never moved back; the same period with a later end extends it), for the plan worker and
    for absolute meter values that don't state theirs."""
    profile = uow.wallets.profile(wallet_id)
    customer_id = fields.customer_id or (profile.billing_customer_id if profile else None)
    if not (fields.agreement_id and customer_id and fields.period_start):
        return
    AgreementCache(uow.billing).remember(
        fields.agreement_id, customer_id, fields.plan_code, aware(fields.period_start),
        aware(fields.period_end) if fields.period_end else None, now)


def absolute_period(
    uow: WebhookUnitOfWork, fields: BillingFields, wallet_id: str, now: datetime,
    *, asks_kinde: bool,
) -> tuple[datetime | None, ParkReason | None]:
    """The start of the billing period an absolute meter value belongs to: the period the
    event states, else the current period of the agreement (when the usage falls inside
    it). (None, why) when neither is known: the caller parks the event."""
    if fields.period_start is not None:
        return fields.period_start, None
    at = fields.occurred_at or now
    profile = uow.wallets.profile(wallet_id)
    agreement_id = fields.agreement_id or (profile.agreement_id if profile else None)
    info = uow.billing.agreement(agreement_id) if agreement_id else None
    if info is not None and info.period_start is not None:
        start = aware(info.period_start)
        if at < start:
            # Usage from before the period we know of (a late event): which period it
            # counted in is not ours to guess.
            return None, ParkReason(
                ParkKind.PERIOD_PAST,
                f"absolute meter value for {at:%Y-%m-%d %H:%M} UTC predates the current "
                f"period of agreement {agreement_id} (from {start:%Y-%m-%d %H:%M} UTC); "
                "its billing period is unknown, so it is not debited on a guess"
            )
        end = aware(info.period_end) if info.period_end is not None else None
        if current_period(start, end, aware(info.fetched_at), at, now) is not None:
            return start, None
    where = (
        "asking Kinde for the agreement's current period"
        if asks_kinde
        else "waiting for an agreement event stating current_period_start and "
        "current_period_end (no Kinde Management API credentials are configured)"
    )
    subject = f"agreement {agreement_id}" if agreement_id else "the customer's agreement"
    return None, ParkReason(
        ParkKind.PERIOD_UNKNOWN,
        f"the absolute meter value states no billing period and the current "
        f"period of {subject} is not known for {at:%Y-%m-%d %H:%M} UTC; {where}"
    )


def legacy_month_total(
    uow: WebhookUnitOfWork, wallet_id: str, code: str, start: datetime, at: datetime
) -> int | None:
    """The running total an earlier version stored for this period under a calendar-month key
    ("month:YYYY-MM"), so that upgrading never debits a period's total again. Only readings
    raised since the period started count: a month reading last raised before that belongs to
    the previous period."""
    best: int | None = None
    month = start.astimezone(UTC).replace(day=1, hour=0, minute=0, second=0, microsecond=0)
    last_month = max(at, start).astimezone(UTC)
    for _ in range(14):  # a billing period spans at most 13 calendar months (yearly plans)
        if month > last_month:
            break
        found = uow.meters.reading(wallet_id, code, f"month:{month:%Y-%m}")
        if found is not None and aware(found[1]) >= start:
            best = max(best or 0, found[0])
        month = (month + timedelta(days=32)).replace(day=1)
    return best


def aware(value: datetime) -> datetime:
    return value if value.tzinfo is not None else value.replace(tzinfo=UTC)
