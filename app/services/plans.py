"""Plan periods as use cases: grant each period's allotment once, apply each period's end
(expiries and the rollover cap), and learn the next period.

Where a period comes from (one source of truth: the `billing_agreements` cache, `uow.billing`):
- an agreement or plan event that carries `current_period_start` / `current_period_end` stores
  them there and grants at once (`on_agreement_event`, inside the webhook's transaction);
- otherwise the worker reads the agreement from Kinde's agreements API, stores it, and grants;
- in local mode (no Kinde) an event without a period starts one calendar month at the event.

How a period's end is learned: the worker (`run_due`) finds allotment rows whose period has
ended. It first applies the end on its own (expiries dated at the period end, then the cap),
then asks Kinde for the agreement's next period and grants it, dated at its start. While Kinde
does not answer, or still reports the old period, nothing is guessed: it retries with back-off
(30 s doubling to 15 min) and grants when Kinde answers, dated at the period start, so the
ledger reads as if it never waited. Without Kinde the next period has the same length.

Exactly once: each grant first claims its (wallet, agreement, period start, plan) row in
`plan_allotments` (primary key) in the same transaction as the allotment entry; a second claim,
from a repeated or reordered event or a racing worker, inserts nothing and grants nothing.
"""

from __future__ import annotations

import calendar
import logging
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from app.domain import plans as rules
from app.domain.catalog import Plan
from app.domain.ledger import Wallet
from app.domain.plans import Period
from app.services.ports import (
    AgreementInfo,
    AgreementSource,
    AllotmentRecord,
    BillingRepository,
    Clock,
    PlanRepository,
    UnitOfWork,
)
from app.services.wallet_writer import WalletWriter

log = logging.getLogger("kinde_credits.plans")

RETRY_BASE = timedelta(seconds=30)
RETRY_MAX = timedelta(minutes=15)
FIRST_SCAN_EVERY = timedelta(minutes=1)
MAX_CATCH_UP = 1000  # periods per wallet per pass: a bound, never reached in practice


class PeriodUnknown(Exception):
    """Kinde did not tell us the next period (unreachable, or not renewed yet)."""


def add_month(moment: datetime) -> datetime:
    """The same day and time one calendar month later (clamped to the month's last day)."""
    year, month = (moment.year + 1, 1) if moment.month == 12 else (moment.year, moment.month + 1)
    day = min(moment.day, calendar.monthrange(year, month)[1])
    return moment.replace(year=year, month=month, day=day)


def _plans(uow: UnitOfWork) -> PlanRepository:
    return uow.plans


def _billing(uow: UnitOfWork) -> BillingRepository:
    return uow.billing


@dataclass
class PlanService:
    writer: WalletWriter
    kinde: AgreementSource | None = None
    # Local mode (no KINDE_DOMAIN): periods repeat with the same length. With Kinde but
    # without Management API credentials nothing is guessed: periods come from events only.
    local_mode: bool = True
    # Per-process back-off for Kinde look-ups (an optimisation: another instance only asks
    # again sooner, and grants stay exactly once through the database key).
    _retry_at: dict[str, tuple[int, datetime]] = field(default_factory=dict, repr=False)
    # When the worker last looked for wallets whose first allotment waits on Kinde: a scan over
    # wallets, so at most once a minute (their events usually carry the period anyway).
    _first_scan_at: datetime | None = field(default=None, repr=False)

    @property
    def clock(self) -> Clock:
        return self.writer.clock

    def plan(self, code: str | None) -> Plan | None:
        return self.writer.catalog.plans.get(code) if code else None

    # -- granting -------------------------------------------------------------------------

    def grant_locked(
        self,
        uow: UnitOfWork,
        wallet: Wallet,
        agreement_id: str,
        plan: Plan,
        period: Period,
        at: datetime,
    ) -> bool:
        """Grant `plan`'s allotment for `period` on a locked wallet, once. Period ends up to
        this period's start are applied first (the cap comes before the new allotment).
        Returns False when this period was already granted (nothing changes then)."""
        self.end_periods_locked(uow, wallet, period.start, close=True)
        record = AllotmentRecord(
            wallet.id, agreement_id, period.start, plan.code, period.end,
            plan.credits_per_period,
        )
        if not _plans(uow).claim(record, at):
            return False
        expires = rules.allotment_expiry(plan, period)
        if plan.credits_per_period > 0 and (expires is None or expires > at):
            wallet.credit(
                plan.credits_per_period,
                kind="allotment",
                reason=rules.allotment_reason(plan, period),
                description=rules.allotment_description(plan, period),
                now=at,
                expires_at=expires,
                cost_amount=plan.price,
                currency=plan.currency,
            )
            _plans(uow).set_block(record, wallet.new_blocks[-1].id)
        return True

    def end_periods_locked(
        self, uow: UnitOfWork, wallet: Wallet, up_to: datetime, *, close: bool
    ) -> None:
        """Apply every not yet applied period end up to `up_to`, in order: expiries dated at
        the period end, then the cap of the wallet's plan. With `close`, those periods are also
        done (the caller grants what follows them)."""
        repo = _plans(uow)
        ends = sorted({r.period_end for r in repo.open_periods(wallet.id)
                       if r.period_end <= up_to and r.ended_at is None})
        profile = uow.wallets.profile(wallet.id) if ends else None
        plan = self.plan(profile.plan_code if profile else None)
        for end in ends:
            wallet.expire_blocks(end)
            if plan is not None:
                for block, credits in rules.cap_expiries(plan, wallet.blocks, end,
                                                         wallet.available):
                    wallet.expire_part(block, credits,
                                       description=rules.cap_description(plan, block, credits),
                                       now=end)
        # A read (the wallet view, the spend pre-check) sees the period ends applied in memory
        # and records nothing: a write in a read transaction fails on a busy database.
        if ends and uow.write:
            repo.mark_ended(wallet.id, up_to, self.clock())
        if close and uow.write:
            repo.close(wallet.id, up_to, self.clock())

    def apply_due_ends(self, uow: UnitOfWork, wallet: Wallet, now: datetime) -> None:
        """Before-sweep hook: period ends that passed are applied (expiries, then the cap)
        before anything else expires or is drawn, so a write arriving before the worker, or
        after downtime, sees exactly what the worker would have done at each period end."""
        if any(b.kind == "allotment" for b in wallet.blocks):
            self.end_periods_locked(uow, wallet, now, close=False)

    # -- events ---------------------------------------------------------------------------

    def on_agreement_event(
        self,
        uow: UnitOfWork,
        wallet: Wallet,
        fields: Any,
        event_time: datetime | None,
        now: datetime,
    ) -> str | None:
        """An agreement / plan event for a locked wallet whose profile it already updated:
        store the period it carries and grant that period's allotment (once). Returns a note
        for the inbox when nothing was granted."""
        profile = uow.wallets.profile(wallet.id)
        agreement_id = fields.agreement_id or (profile.agreement_id if profile else None)
        plan = self.plan(fields.plan_code or (profile.plan_code if profile else None))
        if plan is None:
            code = fields.plan_code or (profile.plan_code if profile else None)
            return f"plan {code!r} is not in the credits catalog: no plan credits" if code else (
                None)
        if agreement_id is None:
            return "no agreement id yet: plan credits wait for one"
        period: Period | None = None
        start, end = fields.period_start, fields.period_end
        if start is not None and end is not None and end > start:
            period = Period(start, end)
            customer = fields.customer_id or (profile.billing_customer_id if profile else None)
            self._remember(uow, agreement_id, customer, plan.code, period, now)
        else:
            cached = _billing(uow).agreement(agreement_id)
            if cached and cached.period_start and cached.period_end and (
                cached.period_start <= now < cached.period_end
            ):
                period = Period(cached.period_start, cached.period_end)
            elif self.kinde is None and self.local_mode:
                # Local mode: no Kinde to ask; a calendar month from the event.
                begin = event_time or now
                period = Period(begin, add_month(begin))
                self._remember(uow, agreement_id, None, plan.code, period, now)
        if period is None:
            return "billing period not in the event: the worker reads it from Kinde"
        if now < period.start:
            return "the billing period has not started yet: granted when it starts"
        if any(r.agreement_id == agreement_id and r.period_start > period.start
               for r in _plans(uow).periods(wallet.id)):
            return f"a later period of {agreement_id} was already granted: nothing to do"
        # A period that already ended (a late event, or the walkthrough's past dates) is
        # granted as of its start; the worker then applies its end and what followed.
        at = now if now < period.end else period.start
        granted = self.grant_locked(uow, wallet, agreement_id, plan, period, at)
        return None if granted else (
            f"{plan.name} plan credits for {period.label} were already granted"
        )

    def _remember(
        self,
        uow: UnitOfWork,
        agreement_id: str,
        customer_id: str | None,
        plan_code: str | None,
        period: Period,
        now: datetime,
    ) -> None:
        """Store an agreement's current period in the one agreements cache."""
        billing = _billing(uow)
        known = billing.agreement(agreement_id)
        if known is not None and known.period_start and known.period_start > period.start:
            return  # an older event must not move the period back
        billing.save_agreement(AgreementInfo(
            id=agreement_id,
            customer_id=customer_id or (known.customer_id if known else ""),
            plan_code=plan_code or (known.plan_code if known else None),
            period_start=period.start,
            period_end=period.end,
            feature_codes=known.feature_codes if known else (),
            fetched_at=now,
        ))

    def on_agreement_cancelled(self, uow: UnitOfWork, wallet_id: str,
                               agreement_id: str | None) -> str | None:
        """A cancelled agreement is not renewed: its open periods are closed now. What was
        granted keeps its own expiry (an "expire" allotment still expires at period end)."""
        if agreement_id is None:
            return None
        rows = [r for r in _plans(uow).open_periods(wallet_id) if r.agreement_id == agreement_id]
        if not rows:
            return None
        _plans(uow).close_agreement(wallet_id, agreement_id, self.clock())
        return f"agreement {agreement_id} cancelled: its plan credits are not renewed"

    # -- worker ---------------------------------------------------------------------------

    def run_due(self, limit: int = 200) -> int:
        """Worker step: first allotments to learn, period ends to apply, renewals to grant.
        Returns how much was done (the worker sleeps when 0)."""
        done = 0
        codes = sorted(self.writer.catalog.plans)
        now = self.clock()
        scan = self._first_scan_at is None or now - self._first_scan_at >= FIRST_SCAN_EVERY
        with self.writer.uow(False) as uow:
            first = _plans(uow).wallets_without_allotment(codes, limit) if scan else []
            due = _plans(uow).due_wallets(now, limit)
        if scan:
            self._first_scan_at = now
        for wallet_id in first:
            try:
                done += self.first_allotment(wallet_id)
            except Exception:
                log.exception("first plan allotment for %s failed", wallet_id)
        now = self.clock()
        for wallet_id in due:
            if not self._may_ask(wallet_id, now):
                continue  # its period end is applied; the next period waits for Kinde
            try:
                done += self.renew(wallet_id)
            except Exception:
                log.exception("plan renewal for %s failed", wallet_id)
        return done

    def first_allotment(self, wallet_id: str) -> int:
        """A wallet on a plan whose agreement has no allotment yet (its event carried no
        period): read the period from the cache or Kinde, then grant."""
        with self.writer.uow(False) as uow:
            profile = uow.wallets.profile(wallet_id)
            cached = _billing(uow).agreement(profile.agreement_id) if profile and (
                profile.agreement_id) else None
        if profile is None or profile.agreement_id is None:
            return 0
        plan = self.plan(profile.plan_code)
        if plan is None:
            return 0
        now = self.clock()
        period: Period | None = None
        if cached and cached.period_start and cached.period_end and (
            cached.period_end > now
        ):
            period = Period(cached.period_start, cached.period_end)
        else:
            if self.kinde is None or not self._may_ask(wallet_id, now):
                return 0
            try:
                current = self._ask_kinde(wallet_id, profile.billing_customer_id,
                                          profile.agreement_id, now)
            except PeriodUnknown as exc:
                self._back_off(wallet_id, now, str(exc))
                return 0
            if current is None:
                return 0
            period = current
        if period.start > now:
            return 0  # granted when it starts
        agreement_id = profile.agreement_id
        with self.writer.uow(True) as uow:
            now = self.clock()
            written = self.writer.write(
                uow, wallet_id, now,
                lambda wallet: self.grant_locked(uow, wallet, agreement_id, plan, period, now))
            uow.commit()
        return int(written is not None and written.result)

    def renew(self, wallet_id: str) -> int:
        """Apply due period ends of one wallet and grant what follows them, catching up over
        any number of periods (each dated when it happened)."""
        done = 0
        for _ in range(MAX_CATCH_UP):
            step = self._renew_once(wallet_id)
            if step <= 0:
                return done
            done += step
        return done

    def _renew_once(self, wallet_id: str) -> int:
        # 1. Apply the earliest due period end on its own: it needs nothing from Kinde.
        with self.writer.uow(True) as uow:
            now = self.clock()
            if uow.wallets.lock(wallet_id) is None:  # held for the whole step
                return 0
            due = [r for r in _plans(uow).open_periods(wallet_id) if r.period_end <= now]
            if not due:
                return 0
            end = min(r.period_end for r in due)
            group = [r for r in due if r.period_end == end]
            if any(r.ended_at is None for r in group):
                # Not swept: this end is applied on its own, dated when it happened.
                self.writer.write(
                    uow, wallet_id, now,
                    lambda wallet: self.end_periods_locked(uow, wallet, end, close=False),
                    sweep=False)
            profile = uow.wallets.profile(wallet_id)
            plan = self.plan(profile.plan_code if profile else None)
            current = next(
                (r for r in group if profile and r.agreement_id == profile.agreement_id), None
            )
            if plan is None or current is None or profile is None:
                # Plan dropped from the catalog, or the agreement was replaced: no renewal.
                _plans(uow).close(wallet_id, end, now)
                uow.commit()
                return 1
            cached = _billing(uow).agreement(current.agreement_id)
            uow.commit()
        # 2. Learn the next period: the cache when it already moved on, else Kinde, else
        #    (local mode) the same length again.
        last = current.period
        kinde_current: Period | None = None
        if cached and cached.period_start and cached.period_end and (
            cached.period_end > end and cached.period_start > last.start
        ):
            kinde_current = Period(cached.period_start, cached.period_end)
        if kinde_current is not None:
            upcoming = rules.periods_between(last, kinde_current)
        elif self.kinde is None and self.local_mode:
            upcoming = [rules.next_local_period(last)]
        elif self.kinde is None:
            # No credentials to ask Kinde: the next agreement event will carry the period.
            self._back_off(wallet_id, now, "no Kinde Management API credentials")
            return 0
        else:
            if not self._may_ask(wallet_id, now):
                return 0
            try:
                asked = self._ask_kinde(wallet_id, profile.billing_customer_id,
                                        current.agreement_id, now, after=end)
            except PeriodUnknown as exc:
                self._back_off(wallet_id, now, str(exc))
                return 0
            if asked is None:
                with self.writer.uow(True) as uow:  # the agreement is over: nothing follows
                    _plans(uow).close(wallet_id, end, self.clock())
                    uow.commit()
                return 1
            upcoming = rules.periods_between(last, asked)
        # 3. Grant, each dated at its period's start (the cap of each end comes first).
        now = self.clock()
        started = [p for p in upcoming if p.start <= now]
        if upcoming and not started:
            return 0  # the next period has not begun: asked again on a later pass

        def grant_started(wallet: Wallet) -> None:
            for period in started:
                self.grant_locked(uow, wallet, current.agreement_id, plan, period, period.start)
            _plans(uow).close(wallet_id, end, now)

        with self.writer.uow(True) as uow:
            # Not swept: each period is granted dated at its start, its end's cap first.
            if self.writer.write(uow, wallet_id, now, grant_started, sweep=False) is None:
                return 0
            uow.commit()
        self._retry_at.pop(wallet_id, None)
        return 1

    # -- Kinde ----------------------------------------------------------------------------

    def _ask_kinde(
        self,
        wallet_id: str,
        customer_id: str | None,
        agreement_id: str,
        now: datetime,
        *,
        after: datetime | None = None,
    ) -> Period | None:
        """Kinde's current period of the agreement (stored in the cache). None when Kinde says
        the agreement is gone or over; PeriodUnknown when it cannot say yet."""
        assert self.kinde is not None
        if not customer_id:
            raise PeriodUnknown(f"{wallet_id} has no billing customer id to look agreements up")
        try:
            agreements = self.kinde.list_agreements(customer_id)
        except Exception as exc:  # unreachable, 5xx, 429, auth: all mean "ask again later"
            raise PeriodUnknown(f"Kinde did not answer: {type(exc).__name__}: {exc}") from exc
        found = next((a for a in agreements if a.id == agreement_id), None)
        with self.writer.uow(True) as uow:
            for a in agreements:
                _billing(uow).save_agreement(AgreementInfo(
                    id=a.id, customer_id=customer_id, plan_code=a.plan_code,
                    period_start=a.current_period_start, period_end=a.current_period_end,
                    feature_codes=tuple(a.feature_codes), fetched_at=now,
                ))
            uow.commit()
        if found is None or (found.expires_on is not None and after is not None
                             and found.expires_on <= after):
            return None
        start, end = found.current_period_start, found.current_period_end
        if start is None or end is None or end <= start:
            raise PeriodUnknown(f"Kinde gives agreement {agreement_id} no current period yet")
        if after is not None and end <= after:
            raise PeriodUnknown(f"Kinde still reports the period ending {end.isoformat()}")
        return Period(start, end)

    def _may_ask(self, wallet_id: str, now: datetime) -> bool:
        waiting = self._retry_at.get(wallet_id)
        return waiting is None or now >= waiting[1]

    def _back_off(self, wallet_id: str, now: datetime, why: str) -> None:
        attempts = self._retry_at.get(wallet_id, (0, now))[0] + 1
        delay = min(RETRY_BASE * (2 ** (attempts - 1)), RETRY_MAX)
        self._retry_at[wallet_id] = (attempts, now + delay)
        log.warning("plan period of %s unknown (%s); asking again in %s", wallet_id, why, delay)
