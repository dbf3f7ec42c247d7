"""Plan periods as use cases: grant each period's allotment once, and at each period end apply
the end (expiries, then the rollover cap) and begin the next period, in one transaction.

Guarantees (DESIGN "Plans and periods"):
- One period, one allotment: a period of the same agreement and plan whose start is within a
  day of a granted one is that period (`app.domain.agreements.same_period`); the row's primary
  key in `plan_allotments` backs this up under races.
- Time at a period end is the end's time, whenever a write, a read or the worker gets there:
  holds that expired before the end are released first (dated at their expiry), the plan's
  expiries and cap are computed as of the end, and the next period's allotment is dated at
  its start. The end and the next grant are one transaction, so no alert fires for a balance
  that only passed through zero inside a renewal.
- A late renewal costs the customer nothing: when a period ends and the source (Kinde) has not
  yet reported the next one, the next period on the agreement's calendar is granted
  provisionally in that same transaction. The worker asks Kinde (one back-off schedule, kept
  in the database) and confirms it (moving its end to Kinde's if they differ), or, when Kinde
  says the agreement was not renewed, takes its unused credits back with a `void` entry.
- An end applies the policy of the plan of ITS agreement to that agreement's allotments only:
  a new agreement's allotment is never expired or capped by the old agreement's end.
- A period that only extends a known one (same start, later end) moves its end (and the
  allotment's expiry) and nothing else. A cancelled agreement's last period still ends (its
  expiries and cap apply); nothing follows it.
- Catch-up after downtime rebuilds missed periods on the agreement's calendar.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from typing import Any

from app.domain import agreements as periods
from app.domain import plans as rules
from app.domain.agreements import Calendar, Period
from app.domain.catalog import Plan
from app.domain.ledger import Wallet
from app.services.agreements import AgreementCache, KnownAgreement, PeriodSource, PeriodUnknown
from app.services.ports import (
    Agreement,
    AllotmentRecord,
    Clock,
    PeriodStatus,
    PlanRepository,
    UnitOfWork,
    WalletProfile,
)
from app.services.wallet_writer import WalletWriter

log = logging.getLogger("kinde_credits.plans")

MAX_CATCH_UP = periods.MAX_PERIODS_BETWEEN  # period ends per wallet per write: a bound


@dataclass
class _Rows:
    """A wallet's period rows for one write or read: the store's, plus what this write did
    (a read changes nothing in the store, so it follows its own changes here)."""

    uow: UnitOfWork
    wallet_id: str
    all: list[AllotmentRecord]

    @property
    def repo(self) -> PlanRepository:
        return self.uow.plans

    def replace(self, old: AllotmentRecord, new: AllotmentRecord) -> AllotmentRecord:
        self.all = [new if r is old else r for r in self.all]
        return new

    def of(self, agreement_id: str) -> list[AllotmentRecord]:
        return [r for r in self.all if r.agreement_id == agreement_id]


def _granted_order(row: AllotmentRecord) -> tuple[datetime, datetime]:
    """Rows in the order they were granted (a plan change grants a row for the same start;
    `created_at` is strictly increasing per wallet)."""
    return row.period_start, row.created_at or row.period_start


@dataclass
class PlanService:
    writer: WalletWriter
    source: PeriodSource
    # Per-process back-off for first allotments that wait on Kinde (renewals keep theirs in
    # the database); it only spares Kinde repeated questions.
    _first_retry: dict[str, tuple[int, datetime]] = field(default_factory=dict, repr=False)

    @property
    def clock(self) -> Clock:
        return self.writer.clock

    def plan(self, code: str | None) -> Plan | None:
        return self.writer.catalog.plans.get(code) if code else None

    # -- the sweep hook: period ends and renewals, as of each end ------------------------

    def advance(self, uow: UnitOfWork, wallet: Wallet, now: datetime) -> None:
        """Before-sweep hook of every write and read: apply each period end that passed, in
        time order and as of its own time, and begin what follows it."""
        # Every change to a wallet's periods leaves `next_period_end_at` at its next end not yet
        # applied (None: none pending), so most writes need no look at the periods at all.
        if wallet.next_period_end_at is None or wallet.next_period_end_at > now:
            return
        rows = _Rows(uow, wallet.id, uow.plans.periods(wallet.id))
        self._advance(rows, wallet, now)

    def _advance(self, rows: _Rows, wallet: Wallet, now: datetime) -> None:
        for _ in range(MAX_CATCH_UP):
            pending = [r for r in rows.all if r.closed_at is None and r.ended_at is None]
            due = [r for r in pending if r.period_end <= now]
            if not due:
                # Reads and sweeps of this wallet look again when the next end passes.
                wallet.next_period_end_at = min((r.period_end for r in pending), default=None)
                return
            end = min(r.period_end for r in due)
            group = [r for r in due if r.period_end == end]
            for agreement_id in dict.fromkeys(r.agreement_id for r in group):
                self._end_period(rows, wallet, agreement_id, [
                    r for r in group if r.agreement_id == agreement_id], end, now)

    def _end_period(self, rows: _Rows, wallet: Wallet, agreement_id: str,
                    ending: list[AllotmentRecord], end: datetime, now: datetime) -> None:
        uow = rows.uow
        cache = AgreementCache(uow.billing)
        known = cache.get(agreement_id)
        last = max(ending, key=_granted_order)
        # Kinde extended this period (same start, later end): move its end, nothing else.
        if known is not None and known.period is not None and not last.final and (
            periods.extends(last.period, known.period)
        ):
            for row in ending:
                self._move_end(rows, wallet, row, known.period.end, now)
            return
        self.writer.release_expired_holds(uow, wallet, end)
        wallet.expire_blocks(end)
        self._apply_caps(rows, wallet, agreement_id, end)
        for row in ending:
            if uow.write:
                rows.repo.mark_ended(row, now)
            rows.replace(row, replace(row, ended_at=now))
        plan, status, following = self._next_periods(
            rows, uow.wallets.profile(wallet.id), agreement_id, last, known)
        for period in following:
            assert plan is not None
            # A next period that starts within a day of the end is the renewal (Kinde's
            # clocks differ): it begins at the end, so the customer never waits for it.
            at = end if periods.same_period(period.start, end) else period.start
            if at <= now:
                self._grant(rows, wallet, agreement_id, plan, period, at, status)
        for row in ending:
            current = next(r for r in rows.all if r.agreement_id == row.agreement_id
                           and r.period_start == row.period_start
                           and r.plan_code == row.plan_code)
            if uow.write:
                rows.repo.close(current, now)
            rows.replace(current, replace(current, closed_at=now))

    def _next_periods(
        self, rows: _Rows, profile: WalletProfile | None, agreement_id: str,
        last: AllotmentRecord, known: KnownAgreement | None,
    ) -> tuple[Plan | None, str, list[Period]]:
        """What follows `last`: (plan, status, periods), no periods when nothing follows. The
        next period renews the wallet's plan (every plan event applies the ends that passed
        before it changes the plan, so this is the plan chosen for the next period); a plan
        change processed later grants its own allotment."""
        plan = self.plan(profile.plan_code) if profile is not None else None
        continuing = (
            profile is not None and profile.agreement_id == agreement_id and plan is not None
            and not last.final and last.status != PeriodStatus.WITHDRAWN
        )
        if not continuing or any(r.period_end > last.period_end
                                 for r in rows.of(agreement_id)):
            # Replaced, cancelled, off the catalog, or a later period (a plan change with
            # its own period) already runs: nothing follows this one.
            return None, PeriodStatus.GRANTED, []
        calendar = self._calendar(rows, agreement_id)
        if known is not None and known.period is not None and (
            known.period.start > last.period_start
            and not periods.same_period(known.period.start, last.period_start)
        ):
            return plan, PeriodStatus.GRANTED, periods.periods_between(
                last.period, known.period, calendar)
        if not self.source.renewals_provisional:
            return plan, PeriodStatus.GRANTED, [calendar.after(last.period)]
        # Renewals go on, on the calendar, while Kinde does not answer; each is confirmed or
        # withdrawn once it does.
        return plan, PeriodStatus.PROVISIONAL, [calendar.after(last.period)]

    @staticmethod
    def _calendar(rows: _Rows, agreement_id: str) -> Calendar:
        first = min((r for r in rows.of(agreement_id)), key=lambda r: r.period_start)
        return Calendar.of(first.period)

    def _apply_caps(self, rows: _Rows, wallet: Wallet, agreement_id: str,
                    end: datetime) -> None:
        """At an end, as of `end`: each plan's cap on the allotments that plan granted on this
        agreement and that are carried into the next period (those of its periods that ended
        by `end`). Credits follow the policy of the plan that granted them, so a plan change
        never leaves the old plan's credits uncapped, and a period of a newer plan that runs
        past `end` keeps its own allotment whole."""
        carried = [r for r in rows.of(agreement_id) if r.block_id and r.period_end <= end]
        for code in sorted({r.plan_code for r in carried}):
            plan = self.plan(code)
            if plan is None:
                continue
            blocks = {r.block_id for r in carried if r.plan_code == code}
            own = [b for b in wallet.blocks if b.id in blocks]
            for block, credits in rules.cap_expiries(plan, own, end, wallet.available):
                wallet.expire_part(block, credits,
                                   description=rules.cap_description(plan, block, credits),
                                   now=end)

    def _move_end(self, rows: _Rows, wallet: Wallet, row: AllotmentRecord,
                  new_end: datetime, now: datetime) -> AllotmentRecord:
        """The period's end moved (Kinde extended or corrected it): so does its allotment's
        expiry, when the plan ties it to the period end."""
        plan = self.plan(row.plan_code)
        if row.block_id and plan is not None:
            wallet.move_expiry(row.block_id,
                               rules.allotment_expiry(plan, Period(row.period_start, new_end)),
                               now)
        if rows.uow.write:
            rows.repo.update(row, period_end=new_end)
        return rows.replace(row, replace(row, period_end=new_end))

    # -- granting -------------------------------------------------------------------------

    def _grant(self, rows: _Rows, wallet: Wallet, agreement_id: str, plan: Plan,
               period: Period, at: datetime, status: str) -> bool:
        """Grant `plan`'s allotment for `period`, once (a period within a day of a granted one
        of the same agreement and plan is that one)."""
        if any(r.agreement_id == agreement_id and r.plan_code == plan.code
               and periods.same_period(r.period_start, period.start) for r in rows.all):
            return False
        # Grants of one wallet are strictly ordered (plan events at the same instant too): the
        # last one granted for a period is the plan in force at its end.
        granted_at = self.clock()
        latest = max((r.created_at for r in rows.all if r.created_at), default=None)
        if latest is not None and granted_at <= latest:
            granted_at = latest + timedelta(microseconds=1)
        record = AllotmentRecord(
            wallet.id, agreement_id, period.start, plan.code, period.end,
            plan.credits_per_period, status=status,
            check_at=at if status == PeriodStatus.PROVISIONAL else None,
            created_at=granted_at,
        )
        if rows.uow.write and not rows.repo.claim(record, granted_at):
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
            record = replace(record, block_id=wallet.new_blocks[-1].id)
            if rows.uow.write:
                rows.repo.set_block(record, record.block_id or "")
        rows.all.append(record)
        return True

    def grant_for_event(self, uow: UnitOfWork, wallet: Wallet, agreement_id: str,
                        plan: Plan, period: Period, now: datetime) -> str | None:
        """An event stated `period` for the agreement: confirm, extend or grant it. Returns a
        note for the inbox when nothing was granted."""
        rows = _Rows(uow, wallet.id, uow.plans.periods(wallet.id))
        same = [r for r in rows.of(agreement_id)
                if periods.same_period(r.period_start, period.start)]
        mine = next((r for r in same if r.plan_code == plan.code), None)
        if mine is not None:
            self._settle(rows, wallet, mine, period, now)
            self._advance(rows, wallet, now)  # its end may have moved
            return f"{plan.name} plan credits for {period.label} were already granted"
        if any(r.period_start > period.start for r in rows.of(agreement_id)):
            return f"a later period of {agreement_id} was already granted: nothing to do"
        # A period that already ended (a late event) is granted as of its start; its end
        # and what followed are then applied as of their own times.
        at = now if now < period.end else period.start
        self._grant(rows, wallet, agreement_id, plan, period, at, PeriodStatus.GRANTED)
        self._advance(rows, wallet, now)
        return None

    def _settle(self, rows: _Rows, wallet: Wallet, row: AllotmentRecord, stated: Period,
                now: datetime, *, confirming: bool = False) -> None:
        """The source stated a period that is `row`'s: confirm it. Its end is taken when the
        statement has the same start (an extension or correction), or when Kinde confirms a
        provisional period; a restatement a moment off changes nothing."""
        takes_end = confirming or stated.start == row.period_start
        if takes_end and stated.end != row.period_end and row.ended_at is None:
            row = self._move_end(rows, wallet, row, stated.end, now)
        if row.provisional:
            if rows.uow.write:
                rows.repo.update(row, status=PeriodStatus.GRANTED, attempts=0)
            rows.replace(row, replace(row, status=PeriodStatus.GRANTED))

    # -- events ---------------------------------------------------------------------------

    def on_agreement_event(
        self,
        uow: UnitOfWork,
        wallet: Wallet,
        fields: Any,
        event_time: datetime | None,
        now: datetime,
    ) -> str | None:
        """An agreement / plan event for a locked wallet whose profile it already updated
        (and whose stated period the cache already holds): grant that period once."""
        profile = uow.wallets.profile(wallet.id)
        agreement_id = fields.agreement_id or (profile.agreement_id if profile else None)
        code = fields.plan_code or (profile.plan_code if profile else None)
        plan = self.plan(code)
        if plan is None:
            return f"plan {code!r} is not in the credits catalog: no plan credits" if code else (
                None)
        if agreement_id is None:
            return "no agreement id yet: plan credits wait for one"
        period: Period | None = None
        start, end = fields.period_start, fields.period_end
        if start is not None and end is not None:
            period = Period(start, end)  # plausible: the handler parks implausible ones
        else:
            known = AgreementCache(uow.billing).get(agreement_id)
            if known is not None and known.period is not None and known.period.contains(now):
                period = known.period
            else:
                period = self.source.first_period(event_time or now)
                if period is not None:
                    AgreementCache(uow.billing).remember(
                        agreement_id, None, plan.code, period.start, period.end, now)
        if period is None:
            return "billing period not in the event: the worker reads it from Kinde"
        if now < period.start:
            return "the billing period has not started yet: granted when it starts"
        return self.grant_for_event(uow, wallet, agreement_id, plan, period, now)

    def on_agreement_cancelled(self, uow: UnitOfWork, wallet_id: str,
                               agreement_id: str | None) -> str | None:
        """A cancelled agreement is not renewed: its current period still ends as its plan
        says (expiries and cap, dated at the end), and nothing follows it."""
        if agreement_id is None:
            return None
        rows = [r for r in uow.plans.open_periods(wallet_id) if r.agreement_id == agreement_id]
        if not rows:
            return None
        uow.plans.mark_final(wallet_id, agreement_id)
        return f"agreement {agreement_id} cancelled: its plan credits are not renewed"

    # -- worker ---------------------------------------------------------------------------

    def run_due(self, limit: int = 200) -> int:
        """Worker step: first allotments to learn, period ends to apply (with their renewals),
        provisional renewals to confirm with Kinde. Returns how much was done."""
        done = 0
        now = self.clock()
        codes = sorted(self.writer.catalog.plans)
        waiting = {w for w, (_, at) in self._first_retry.items() if at > now}
        with self.writer.uow(False) as uow:
            first = uow.plans.wallets_without_allotment(codes, limit, skip=waiting)
            due = uow.plans.due_wallets(now, limit)
            unconfirmed = (uow.plans.provisional_due(now, limit)
                           if self.source.can_look_up else [])
        for wallet_id in first:
            done += self._guarded("first plan allotment", wallet_id, self.first_allotment)
        for wallet_id in due:
            done += self._guarded("plan period end", wallet_id, self.renew)
        for row in unconfirmed:
            done += self._guarded("plan renewal check", row.wallet_id,
                                  lambda _w, row=row: self.confirm(row))
        return done

    @staticmethod
    def _guarded(what: str, wallet_id: str, step: Any) -> int:
        try:
            return int(step(wallet_id))
        except Exception:
            log.exception("%s for %s failed", what, wallet_id)
            return 0

    def renew(self, wallet_id: str) -> int:
        """Apply a wallet's due period ends and begin what follows (one transaction). The
        source is asked first, once per end, so that an extended or renewed period is known;
        when it does not answer, the renewal is provisional."""
        if self.source.can_look_up:
            with self.writer.uow(False) as uow:
                profile = uow.wallets.profile(wallet_id)
            if profile is not None and profile.agreement_id:
                try:
                    found = self._listed(profile.billing_customer_id, profile.agreement_id,
                                         self.clock())
                    if found is None or (found.expires_on is not None
                                         and found.expires_on <= self.clock()):
                        with self.writer.uow(True) as uow:  # over: its end applies, no more
                            uow.plans.mark_final(wallet_id, profile.agreement_id)
                            uow.commit()
                except PeriodUnknown as exc:
                    log.warning("period end of %s: Kinde not asked or silent (%s); the "
                                "renewal is provisional", wallet_id, exc)
        with self.writer.uow(True) as uow:
            written = self.writer.write(uow, wallet_id, self.clock(), lambda _w: None)
            uow.commit()
        return int(written is not None)

    def first_allotment(self, wallet_id: str) -> int:
        """A wallet on a plan whose agreement has no allotment yet (its event carried no
        period): the period from the cache or the source, then the grant."""
        with self.writer.uow(False) as uow:
            profile = uow.wallets.profile(wallet_id)
            known = AgreementCache(uow.billing).get(profile.agreement_id) if profile and (
                profile.agreement_id) else None
        if profile is None or profile.agreement_id is None:
            return 0
        plan = self.plan(profile.plan_code)
        if plan is None:
            return 0
        now = self.clock()
        period = known.period if known is not None and known.period is not None and (
            known.period.end > now) else None
        if period is None:
            if not self.source.can_look_up:
                return 0
            try:
                period = self._look_up(profile.billing_customer_id, profile.agreement_id, now)
            except PeriodUnknown as exc:
                attempts = self._first_retry.get(wallet_id, (0, now))[0] + 1
                delay = periods.retry_delay(attempts)
                self._first_retry[wallet_id] = (attempts, now + delay)
                log.warning("plan period of %s unknown (%s); asking again in %s",
                            wallet_id, exc, delay)
                return 0
            if period is None:
                return 0
        self._first_retry.pop(wallet_id, None)
        if period.start > now:
            return 0  # granted when it starts
        agreement_id = profile.agreement_id
        with self.writer.uow(True) as uow:
            now = self.clock()
            written = self.writer.write(
                uow, wallet_id, now,
                lambda wallet: self.grant_for_event(uow, wallet, agreement_id, plan, period,
                                                    now))
            uow.commit()
        return int(written is not None and written.result is None)

    def confirm(self, row: AllotmentRecord) -> int:
        """Ask the source about a provisional period; confirm, move or withdraw it."""
        with self.writer.uow(False) as uow:
            profile = uow.wallets.profile(row.wallet_id)
        now = self.clock()
        try:
            found = self._listed(profile.billing_customer_id if profile else None,
                                 row.agreement_id, now)
            over = found is None or (found.expires_on is not None
                                     and found.expires_on <= row.period_start)
            reported: Period | None = None
            if not over:
                assert found is not None
                if periods.plausibility_problem(found.current_period_start,
                                                found.current_period_end) is None and (
                        found.current_period_start is not None
                        and found.current_period_end is not None):
                    reported = Period(found.current_period_start, found.current_period_end)
                if reported is None or reported.end <= row.period_start or (
                    reported.start < row.period_start
                    and not periods.same_period(reported.start, row.period_start)
                ):
                    # Not renewed yet, or the period before was extended: ask again later
                    # (the provisional period then meets Kinde's next one).
                    raise PeriodUnknown("Kinde still reports the period before "
                                        f"{row.period_start.isoformat()}")
        except PeriodUnknown as exc:
            attempts = row.attempts + 1
            delay = periods.retry_delay(attempts)
            log.warning("renewal of %s unconfirmed (%s); asking again in %s",
                        row.wallet_id, exc, delay)
            with self.writer.uow(True) as uow:
                uow.plans.update(row, check_at=now + delay, attempts=attempts)
                uow.commit()
            return 0
        with self.writer.uow(True) as uow:
            now = self.clock()
            self.writer.write(
                uow, row.wallet_id, now,
                lambda wallet: self._resolve(uow, wallet, row, reported, now))
            uow.commit()
        return 1

    def _resolve(self, uow: UnitOfWork, wallet: Wallet, row: AllotmentRecord,
                 reported: Period | None, now: datetime) -> None:
        rows = _Rows(uow, wallet.id, uow.plans.periods(wallet.id))
        current = next((r for r in rows.all if r.agreement_id == row.agreement_id
                        and r.period_start == row.period_start
                        and r.plan_code == row.plan_code), None)
        if current is None or not current.provisional:
            return  # settled meanwhile (an event, another worker)
        if reported is None:
            self._withdraw(rows, wallet, current, now)
            return
        if periods.same_period(reported.start, current.period_start) or (
            reported.start >= current.period_end
        ):
            # Kinde renewed as the calendar said (maybe with another end), or it is already
            # further on: the provisional period was a real one.
            stated = reported if periods.same_period(reported.start, current.period_start) \
                else current.period
            self._settle(rows, wallet, current, stated, now, confirming=True)
        else:
            # Kinde's calendar differs: the provisional period ends where Kinde's starts.
            moved = self._move_end(rows, wallet, current, max(reported.start,
                                                              current.period_start
                                                              + periods.SHORTEST_PERIOD), now)
            self._settle(rows, wallet, moved, moved.period, now, confirming=True)
        self._advance(rows, wallet, now)

    def _withdraw(self, rows: _Rows, wallet: Wallet, row: AllotmentRecord,
                  now: datetime) -> None:
        """Kinde did not renew the agreement: the provisional allotment's unused credits go
        back (a `void` entry); what was used of it during the wait stays used."""
        block = next((b for b in wallet.blocks if b.id == row.block_id), None)
        # What open holds reserve stays (their captures are promised); the rest goes back.
        amount = min(block.remaining, max(wallet.available, 0)) if block is not None else 0
        if block is not None and amount > 0:
            wallet.void_part(block, amount, now=now, description=(
                f"-{amount:,} credits: {block.reason.split(' | ')[0]} withdrawn "
                "(Kinde did not renew the agreement)"))
        rows.uow.plans.update(row, status=PeriodStatus.WITHDRAWN)
        rows.uow.plans.mark_final(row.wallet_id, row.agreement_id)
        rows.replace(row, replace(row, status=PeriodStatus.WITHDRAWN, final=True))

    def _listed(self, customer_id: str | None, agreement_id: str,
                now: datetime) -> Agreement | None:
        """The agreement as the source lists it now (the cache stores all it listed); None
        when the source does not list it."""
        if not customer_id:
            raise PeriodUnknown("no billing customer id to look agreements up")
        listed = self.source.agreements(customer_id)
        with self.writer.uow(True) as uow:
            AgreementCache(uow.billing).remember_all(customer_id, listed, now)
            uow.commit()
        return next((a for a in listed if a.id == agreement_id), None)

    def _look_up(self, customer_id: str | None, agreement_id: str,
                 now: datetime) -> Period | None:
        """The source's current period of the agreement; None when it is gone."""
        found = self._listed(customer_id, agreement_id, now)
        if found is None:
            return None
        start, end = found.current_period_start, found.current_period_end
        if start is None or end is None or periods.plausibility_problem(start, end):
            raise PeriodUnknown(f"Kinde gives agreement {agreement_id} no plausible period")
        return Period(start, end)
