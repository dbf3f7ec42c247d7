"""Revenue roll-forward for any past period: `report revenue` and `GET /v1/reports/revenue`.

Per currency, for [since, until):
    opening_deferred + sales - refunds - recognised - breakage = closing_deferred  (exactly)
- sales: the cost basis of credit blocks created in the period (purchases, and plan allotments
  when the catalog gives the plan a price);
- recognised: credits used in the period (usage, captured holds, credits that paid arrears)
  times their block's cost basis;
- refunds: the money of a refunded pack's unused credits (the `void` entry a `refunds` row
  names; a void that is not a refund, such as a withdrawn provisional plan allotment, counts
  with breakage: credits that left unused);
- breakage: credits expired unused in the period times their block's cost basis;
- deferred (opening / closing): the cost basis of credits still unused at that instant.

Exact for any period, not only "to date": every debit and expiry records which block it drew
from and when (`block_draws`, written in the entry's own transaction; migration 0013 backfilled
older ledgers by replaying them). Money is allocated per block in draw order (time, then entry
id): after a block's first n credits are consumed, round(cost x n / original) of its money is
consumed, rounded to the currency's minor unit (app.domain.money: JPY 0, USD 2, KWD 3
decimals). Each draw gets the difference, so every figure is a sum of whole minor units, none
is ever negative (nor printed "-0.00"), a fully used block consumes exactly its cost, and the
identity above holds exactly in every period. Credits with no cost basis (sign-up, grants,
plans without a price) are reported as credit counts only, with the same roll-forward in
credits.
"""

from __future__ import annotations

import csv
import io
from collections import defaultdict
from datetime import datetime
from decimal import Decimal
from typing import Any

from app.domain.money import format_money, round_money, share_of
from app.services.ports import RevenueInputs, RevenueRepository, UnitOfWorkFactory

MONEY_FIELDS = ("opening_deferred", "sales", "refunds", "recognised", "breakage",
                "closing_deferred")
CREDIT_FIELDS = ("opening", "added", "refunded", "used", "expired", "closing")


def roll_forward(inputs: RevenueInputs, since: datetime, until: datetime) -> dict[str, Any]:
    """The report from its inputs (pure, so property tests can drive it directly)."""
    money: dict[str, dict[str, Decimal]] = defaultdict(
        lambda: {k: Decimal(0) for k in MONEY_FIELDS})
    credits: dict[str, dict[str, int]] = defaultdict(lambda: {k: 0 for k in CREDIT_FIELDS})
    for b in inputs.blocks:
        row, count, cur = money[b.currency], credits[b.currency], b.currency
        # Stored costs are whole minor units (the catalog refuses finer prices); rounding here
        # too keeps the identity exact for rows written before that rule.
        cost = round_money(b.cost, cur)
        consumed = b.consumed_before
        taken = share_of(cost, b.original, consumed, cur)
        if b.created_at < since:
            row["opening_deferred"] += cost - taken
            count["opening"] += b.original - consumed
        else:
            row["sales"] += cost
            count["added"] += b.original
        for amount, kind in b.draws:
            consumed += amount
            now_taken = share_of(cost, b.original, consumed, cur)
            share = now_taken - taken
            taken = now_taken
            if kind in ("expiry", "void"):
                # A void that is no refund (a provisional plan allotment Kinde did not renew)
                # takes back credits nobody used: like breakage, never earned revenue.
                row["breakage"] += share
                count["expired"] += amount
            elif kind == "refund":
                row["refunds"] += share
                count["refunded"] += amount
            else:
                row["recognised"] += share
                count["used"] += amount
        row["closing_deferred"] += cost - taken
        count["closing"] += b.original - consumed
    u = inputs.uncosted
    return {
        "since": since.isoformat(),
        "until": until.isoformat(),
        "currencies": {
            cur: {
                **{k: format_money(money[cur][k], cur) for k in MONEY_FIELDS},
                "credits": dict(credits[cur]),
            }
            for cur in sorted(money)
        },
        # Credits with no cost basis (sign-up, grants, plans without a price): counts only.
        # Only purchases are refunded, and every purchase has a cost basis: refunded is 0.
        "uncosted_credits": {"opening": u.opening, "added": u.added, "refunded": 0,
                             "used": u.used,
                             "expired": u.expired, "closing": u.closing},
    }


def revenue_report(
    uow_factory: UnitOfWorkFactory, since: datetime, until: datetime
) -> dict[str, Any]:
    with uow_factory(False) as uow:
        repo: RevenueRepository = uow.revenue
        inputs = repo.revenue_inputs(since, until)
    return roll_forward(inputs, since, until)


def as_csv(report: dict[str, Any]) -> str:
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(["currency", *MONEY_FIELDS, *(f"credits_{k}" for k in CREDIT_FIELDS)])
    for cur, row in report["currencies"].items():
        writer.writerow([cur, *(row[k] for k in MONEY_FIELDS),
                         *(row["credits"][k] for k in CREDIT_FIELDS)])
    u = report["uncosted_credits"]
    writer.writerow(["(no cost basis)", *("" for _ in MONEY_FIELDS),
                     *(u[k] for k in CREDIT_FIELDS)])
    return out.getvalue()


def as_text(report: dict[str, Any]) -> str:
    lines = [f"Revenue roll-forward {report['since']} .. {report['until']} (until exclusive)"]
    if not report["currencies"]:
        lines.append("  no credits with a cost basis")
    for cur, row in report["currencies"].items():
        c = row["credits"]
        lines.append(
            f"  {cur}: opening deferred {row['opening_deferred']} + sales {row['sales']} "
            f"- refunds {row['refunds']} - recognised {row['recognised']} "
            f"- breakage {row['breakage']} = closing deferred {row['closing_deferred']}"
        )
        lines.append(
            f"       credits: {c['opening']:,} + {c['added']:,} sold - {c['refunded']:,} "
            f"refunded - {c['used']:,} used - {c['expired']:,} expired = {c['closing']:,}"
        )
    u = report["uncosted_credits"]
    lines.append(
        f"  credits without cost basis: {u['opening']:,} + {u['added']:,} granted "
        f"- {u['used']:,} used - {u['expired']:,} expired = {u['closing']:,}"
    )
    return "\n".join(lines)


def parse_bound(value: str | None, name: str) -> datetime | None:
    """`YYYY-MM-DD` (midnight UTC) or an ISO 8601 date-time (an offset or Z; none = UTC)."""
    from datetime import UTC

    from app.domain.ledger import InvalidRequest

    if value is None or not value.strip():
        return None
    text = value.strip()
    if text.endswith(("Z", "z")):
        text = text[:-1] + "+00:00"
    try:
        parsed = datetime.fromisoformat(text)
        # A moment at the edge of the calendar (9999-12-31T23:00-05:00) overflows in UTC.
        return parsed.replace(tzinfo=UTC) if parsed.tzinfo is None else parsed.astimezone(UTC)
    except (ValueError, OverflowError):
        raise InvalidRequest(
            f"{name} must be a date (2026-11-01) or an ISO 8601 date-time, got {value[:40]!r}"
        ) from None


def report_bounds(
    since: str | None, until: str | None, now: datetime
) -> tuple[datetime, datetime]:
    """The period asked for; by default from the first of this month (UTC) until now."""
    from app.domain.ledger import InvalidRequest

    start = parse_bound(since, "since") or now.replace(day=1, hour=0, minute=0, second=0,
                                                       microsecond=0)
    end = parse_bound(until, "until") or now
    if end <= start:
        raise InvalidRequest("until must be after since")
    return start, end
