"""`kinde-credits report refunds`: the refunds made in a period, for the operator to act on.

A refund with `invoice = credit_note_due` is money the customer was (or will be) invoiced by
Kinde for credits they gave back: the operator issues a credit note for `amount` in Kinde. A
`reduced` refund needs nothing: Kinde was sent a pack count one lower before it invoiced the
period. Totals per currency and invoice kind close the report.
"""

from __future__ import annotations

import csv
import io
from collections import defaultdict
from datetime import datetime
from decimal import Decimal
from typing import Any

from app.domain.money import format_money
from app.domain.text import escaped, spreadsheet_safe
from app.services.ports import UnitOfWorkFactory
from app.services.views import iso

FIELDS = ("created_at", "wallet_id", "purchase_entry_id", "void_entry_id", "recharge_id",
          "credits", "amount", "currency", "invoice", "reason")


def refunds_report(uow_factory: UnitOfWorkFactory, since: datetime,
                   until: datetime) -> dict[str, Any]:
    with uow_factory(False) as uow:
        records = uow.refunds.between(since, until)
    totals: dict[str, dict[str, Decimal]] = defaultdict(
        lambda: {"reduced": Decimal(0), "credit_note_due": Decimal(0)})
    rows = []
    for r in records:
        totals[r.currency][r.invoice] += r.amount
        rows.append({
            "created_at": iso(r.created_at), "wallet_id": r.wallet_id,
            "purchase_entry_id": r.purchase_entry_id, "void_entry_id": r.void_entry_id,
            "recharge_id": r.recharge_id, "credits": r.credits, "amount": str(r.amount),
            "currency": r.currency, "invoice": r.invoice, "reason": r.reason,
        })
    return {
        "since": since.isoformat(), "until": until.isoformat(), "refunds": rows,
        "totals": {cur: {k: format_money(v, cur) for k, v in t.items()}
                   for cur, t in sorted(totals.items())},
    }


def as_csv(report: dict[str, Any]) -> str:
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(FIELDS)
    for row in report["refunds"]:
        writer.writerow([spreadsheet_safe(row[k]) if isinstance(row[k], str) else
                         ("" if row[k] is None else row[k]) for k in FIELDS])
    return out.getvalue()


def as_text(report: dict[str, Any]) -> str:
    lines = [f"Refunds {report['since']} .. {report['until']} (until exclusive)"]
    if not report["refunds"]:
        lines.append("  none")
    for r in report["refunds"]:
        action = "credit note due" if r["invoice"] == "credit_note_due" else (
            "taken off Kinde's count")
        lines.append(
            f"  {r['created_at']} {r['wallet_id']} entry {r['purchase_entry_id']}: "
            f"{r['credits']:,} credits, {r['amount']} {r['currency']}, {action} "
            f"({escaped(r['reason'])})")
    for cur, t in report["totals"].items():
        lines.append(f"  {cur}: credit notes due {t['credit_note_due']}, taken off Kinde "
                     f"invoices {t['reduced']}")
    return "\n".join(lines)
