"""Plan credits: the three unused-credit policies as pure rules (DESIGN.md "Plans and periods").

Given a plan and a billing period, these functions say when an allotment expires, how it is
described, which unused allotment credits a cap takes away at a period end, and which periods
follow one another. Nothing here reads a clock, a database or Kinde: the period service
(app.services.plans) feeds in the instants and applies the answers to a locked wallet.

- "expire" (use it or lose it): an allotment expires at the end of its period.
- "rollover" (rollover with expiry): an allotment expires `rollover_expires_after_days` after
  the end of its period.
- "full" (full rollover): allotments never expire.
- `rollover_max_credits`: at each period end, unused allotment credits above the cap expire,
  soonest-expiring first, BEFORE the next period's allotment is granted (which does not count
  against it): cap 500, 700 unused, allotment 1000 -> the new period starts at 1,500.

The cap counts the unused allotments of the agreement whose period ends (the caller passes
them): an old agreement's end never caps a new agreement's allotment. Purchases and grants are
never touched by it. Periods themselves (their calendar, tolerance and plausibility) are
app.domain.agreements'.
"""

from __future__ import annotations

from datetime import datetime, timedelta

from app.domain.agreements import Period
from app.domain.catalog import Plan
from app.domain.ledger import REASON_WHEN_SEPARATOR, Block
from app.domain.usage_terms import describe_credit, describe_unused_expiry


def allotment_expiry(plan: Plan, period: Period) -> datetime | None:
    """When the allotment granted for `period` expires under the plan's policy."""
    if plan.rollover == "expire":
        return period.end
    if plan.rollover == "rollover":
        assert plan.rollover_expires_after_days is not None  # the catalog requires it
        return period.end + timedelta(days=plan.rollover_expires_after_days)
    return None


def allotment_reason(plan: Plan, period: Period) -> str:
    """The block's reason; its second half completes the expiry entry's description."""
    what = f"{plan.name} plan credits for {period.label}"
    if plan.rollover == "expire":
        return f"{what}{REASON_WHEN_SEPARATOR}at period end"
    if plan.rollover == "rollover":
        days = plan.rollover_expires_after_days
        return f"{what}{REASON_WHEN_SEPARATOR}{days} days after their period ended"
    return what


def allotment_description(plan: Plan, period: Period) -> str:
    policy = {
        "expire": "use it or lose it: expires at period end",
        "rollover": f"rolls over; expires {plan.rollover_expires_after_days} days after the "
        "period ends",
        "full": "rolls over; never expires",
    }[plan.rollover]
    return describe_credit(plan.credits_per_period,
                           f"{plan.name} plan allotment for {period.label} ({policy})")


def cap_expiries(plan: Plan, blocks: list[Block], at: datetime,
                 available: int) -> list[tuple[Block, int]]:
    """Unused allotment credits above the plan's cap at a period end: (block, credits) to
    expire, those that expire soonest first. Blocks already due at `at` are not counted
    (they expire anyway). Credits reserved by holds open at `at` are not unused: the cap
    never takes more than `available` (balance - held, with the holds that expired before
    `at` already released by the caller), so a capture of a hold placed before the period
    end is always covered and never becomes arrears."""
    cap = plan.rollover_max_credits
    if cap is None or plan.rollover == "expire":
        return []
    carried = [
        b for b in blocks
        if b.kind == "allotment" and b.remaining > 0
        and (b.expires_at is None or b.expires_at > at)
    ]
    excess = min(sum(b.remaining for b in carried) - cap, max(available, 0))
    out: list[tuple[Block, int]] = []
    for block in sorted(carried, key=Block.consumption_order):
        if excess <= 0:
            break
        take = min(block.remaining, excess)
        out.append((block, take))
        excess -= take
    return out


def cap_description(plan: Plan, block: Block, credits: int) -> str:
    what = block.reason.partition(REASON_WHEN_SEPARATOR)[0]
    return describe_unused_expiry(
        credits, what, f"at period end (over the {plan.rollover_max_credits:,}-credit rollover "
        f"cap of the {plan.name} plan)")
