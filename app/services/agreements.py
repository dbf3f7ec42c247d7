"""Where billing periods come from, and the one cache of Kinde's agreements.

The composition root picks one `PeriodSource` strategy:
- `KindePeriods`: Kinde's agreements API (Management API credentials configured). Renewals are
  granted provisionally on the agreement's calendar at the period end and confirmed (or moved,
  or withdrawn) when Kinde reports the agreement again.
- `EventPeriods`: Kinde without Management API credentials: periods come from agreement events,
  and renewals follow the agreement's calendar (an event stating a period settles it).
- `LocalCalendar`: local mode (no Kinde at all): the agreement's calendar is the truth, so
  renewals are granted outright; an event without a period starts one calendar month.

`AgreementCache` keeps what is known of each agreement (`billing_agreements`, `uow.billing`):
the period an event or a look-up stated. It never moves a period back: a stated period older
than the known one is ignored; the same period with a later end extends it.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Protocol

from app.domain import agreements as rules
from app.domain.agreements import Period
from app.services.ports import Agreement, AgreementInfo, AgreementSource, BillingRepository


class PeriodUnknown(Exception):
    """The source cannot say the agreement's period now (unreachable, not renewed yet, or a
    source that is never asked)."""


class PeriodSource(Protocol):
    """Where an agreement's periods come from (chosen at the composition root)."""

    # True when a renewal must be confirmed by the source after it was granted on the
    # calendar; False when the calendar is the source (local mode).
    renewals_provisional: bool
    # True when the worker may ask the source about an agreement.
    can_look_up: bool

    def agreements(self, customer_id: str) -> list[Agreement]:
        """The customer's agreements as the source reports them now, or PeriodUnknown."""

    def first_period(self, event_time: datetime) -> Period | None:
        """The period an agreement event without one starts, when the source decides it."""


class KindePeriods:
    renewals_provisional = True
    can_look_up = True

    def __init__(self, kinde: AgreementSource) -> None:
        self.kinde = kinde

    def agreements(self, customer_id: str) -> list[Agreement]:
        try:
            return self.kinde.list_agreements(customer_id)
        except Exception as exc:  # unreachable, 5xx, 429, auth: all mean "ask again later"
            raise PeriodUnknown(f"Kinde did not answer: {type(exc).__name__}: {exc}") from exc

    def first_period(self, event_time: datetime) -> Period | None:
        return None


class EventPeriods:
    # Nobody can confirm a renewal (Kinde sends no event for a routine one): the agreement's
    # calendar is the best source; an event that states a period settles it.
    renewals_provisional = False
    can_look_up = False

    def agreements(self, customer_id: str) -> list[Agreement]:
        raise PeriodUnknown("no Kinde Management API credentials: periods come from "
                            "agreement events")

    def first_period(self, event_time: datetime) -> Period | None:
        return None


class LocalCalendar:
    renewals_provisional = False
    can_look_up = False

    def agreements(self, customer_id: str) -> list[Agreement]:
        raise PeriodUnknown("local mode: there is no Kinde to ask")

    def first_period(self, event_time: datetime) -> Period | None:
        return Period(event_time, rules.add_month(event_time))


@dataclass(frozen=True)
class KnownAgreement:
    """What the cache knows of an agreement: its latest stated period, if any."""

    id: str
    customer_id: str
    plan_code: str | None
    period: Period | None
    fetched_at: datetime


class AgreementCache:
    """The one read and write path of the agreements cache."""

    def __init__(self, billing: BillingRepository) -> None:
        self.billing = billing

    def get(self, agreement_id: str) -> KnownAgreement | None:
        info = self.billing.agreement(agreement_id)
        if info is None:
            return None
        period = None
        if info.period_start is not None and info.period_end is not None and (
            rules.plausibility_problem(info.period_start, info.period_end) is None
        ):
            period = Period(info.period_start, info.period_end)
        return KnownAgreement(info.id, info.customer_id, info.plan_code, period,
                              info.fetched_at)

    def remember(self, agreement_id: str, customer_id: str | None, plan_code: str | None,
                 start: datetime | None, end: datetime | None, now: datetime,
                 feature_codes: tuple[str, ...] | None = None) -> None:
        """Store what an event or a look-up said. An older period never replaces a later one,
        an implausible one is not stored, and a statement without dates keeps the known ones."""
        known = self.billing.agreement(agreement_id)
        if rules.plausibility_problem(start, end) is not None:
            start = end = None
        if (known is not None and start is not None and known.period_start is not None
                and start < known.period_start
                and not rules.same_period(start, known.period_start)):
            return
        if start is None and known is not None:
            start, end = known.period_start, known.period_end
        self.billing.save_agreement(AgreementInfo(
            id=agreement_id,
            customer_id=customer_id or (known.customer_id if known else ""),
            plan_code=plan_code or (known.plan_code if known else None),
            period_start=start,
            period_end=end,
            feature_codes=feature_codes if feature_codes is not None else (
                known.feature_codes if known else ()),
            fetched_at=now,
        ))

    def remember_all(self, customer_id: str, listed: list[Agreement], now: datetime) -> None:
        for a in listed:
            self.remember(a.id, customer_id, a.plan_code, a.current_period_start,
                          a.current_period_end, now, tuple(a.feature_codes))
