"""`GET /v1/reports/revenue?since=&until=` (credits:admin): the revenue roll-forward, the same
JSON as `kinde-credits report revenue --json` (app.services.revenue)."""

from __future__ import annotations

from typing import Any

import marshmallow as ma
from marshmallow import fields, validate

from app.http.api import container, make_blueprint, operation

bp = make_blueprint("reports", "Reports: the revenue roll-forward")

_MONEY = {"description": "decimal string, to the cent", "example": "49.00"}


class RevenueQuerySchema(ma.Schema):
    since = fields.String(
        validate=validate.Length(min=1, max=40),
        metadata={"description": "start, inclusive: 2026-11-01 or an ISO 8601 date-time "
                                 "(default: the first of this month, UTC)"},
    )
    until = fields.String(
        validate=validate.Length(min=1, max=40),
        metadata={"description": "end, exclusive (default: now)"},
    )


class CreditCountsSchema(ma.Schema):
    opening = fields.Integer(required=True)
    added = fields.Integer(required=True)
    refunded = fields.Integer(metadata={"description": "credits of refunded packs (costed "
                                                    "credits only)"})
    used = fields.Integer(required=True)
    expired = fields.Integer(required=True)
    closing = fields.Integer(required=True)


class CurrencyRevenueSchema(ma.Schema):
    opening_deferred = fields.String(required=True, metadata=_MONEY)
    sales = fields.String(required=True, metadata=_MONEY)
    refunds = fields.String(required=True, metadata=_MONEY)
    recognised = fields.String(required=True, metadata=_MONEY)
    breakage = fields.String(required=True, metadata=_MONEY)
    closing_deferred = fields.String(required=True, metadata=_MONEY)
    credits = fields.Nested(CreditCountsSchema, required=True)


class RevenueReportSchema(ma.Schema):
    since = fields.String(required=True, metadata={"format": "date-time"})
    until = fields.String(required=True, metadata={"format": "date-time"})
    currencies = fields.Dict(keys=fields.String(), values=fields.Nested(CurrencyRevenueSchema),
                             required=True)
    uncosted_credits = fields.Nested(CreditCountsSchema, required=True)


@operation(bp, "/v1/reports/revenue", "GET",
           query=RevenueQuerySchema, response=(200, RevenueReportSchema),
           errors=(401, 403, 422, 503))
def get_revenue(since: str | None = None, until: str | None = None) -> dict[str, Any]:
    """Per currency: opening deferred + sales - refunds - recognised - breakage = closing
    deferred, to the cent, for [since, until); credits without a cost basis as counts."""
    return container().operations.revenue_report(since, until)
