"""marshmallow schemas of the team-budget endpoints and the spend pre-check.

Kept beside `schemas.py` (which holds the core API's) so the feature adds its own file; field
names are a contract (DESIGN.md, "Team budgets").
"""

from __future__ import annotations

from typing import Any

import marshmallow as ma
from marshmallow import fields, validate

from app.domain.budgets import MAX_CAP, MAX_MEMBER_LENGTH
from app.http.schemas import KEY_LENGTH
from app.services.ledger import MAX_QUANTITY

MEMBER_DESCRIPTION = (
    "the Kinde user (kp_...) spending from an org wallet. M2M calls name it here; a user "
    "token spends as its own sub (naming anyone else is 403). Not allowed on a user's wallet."
)


def member_field(**kwargs: Any) -> fields.String:
    # Content (kp_ prefix, characters) is checked by app.domain.budgets.validate_member.
    return fields.String(validate=validate.Length(min=1, max=MAX_MEMBER_LENGTH),
                         metadata={"description": MEMBER_DESCRIPTION}, **kwargs)


def _cap(window: str) -> fields.Integer:
    return fields.Integer(
        strict=True, allow_none=True, validate=validate.Range(min=0, max=MAX_CAP),
        metadata={"description": f"credits the member may spend per UTC {window} (holds "
                                 "count); null removes the cap; omitted keeps it"},
    )


class BudgetRequestSchema(ma.Schema):
    credits_per_day = _cap("day")
    credits_per_month = _cap("month")

    @ma.validates_schema
    def _something(self, data: dict[str, Any], **_: Any) -> None:
        if not data:
            raise ma.ValidationError("send credits_per_day and/or credits_per_month")


class BudgetResultSchema(ma.Schema):
    wallet_id = fields.String(required=True)
    member = fields.String(required=True)
    credits_per_day = fields.Integer(required=True, allow_none=True)
    credits_per_month = fields.Integer(required=True, allow_none=True)


class FeatureSpendSchema(ma.Schema):
    feature = fields.String(required=True, allow_none=True,
                            metadata={"description": "null for a hold of plain credits"})
    credits = fields.Integer(required=True)
    units = fields.Integer(required=True)


class WindowSpendSchema(ma.Schema):
    spent = fields.Integer(required=True, metadata={"description": "usage and captures"})
    cap = fields.Integer(required=True, allow_none=True)
    remaining = fields.Integer(
        required=True, allow_none=True,
        metadata={"description": "cap - spent - held, never below 0; null without a cap"})
    by_feature = fields.List(fields.Nested(FeatureSpendSchema), required=True)


class CapsSchema(ma.Schema):
    credits_per_day = fields.Integer(required=True, allow_none=True)
    credits_per_month = fields.Integer(required=True, allow_none=True)


class MemberSchema(ma.Schema):
    member = fields.String(required=True)
    budget = fields.Nested(CapsSchema, required=True)
    held = fields.Integer(required=True, metadata={"description": "open holds"})
    today = fields.Nested(WindowSpendSchema, required=True)
    this_month = fields.Nested(WindowSpendSchema, required=True)


class MembersSchema(ma.Schema):
    wallet_id = fields.String(required=True)
    day = fields.String(required=True, metadata={"description": "the UTC day, YYYY-MM-DD"})
    month = fields.String(required=True, metadata={"description": "the UTC month, YYYY-MM"})
    day_resets_at = fields.String(required=True, metadata={"format": "date-time"})
    month_resets_at = fields.String(required=True, metadata={"format": "date-time"})
    members = fields.List(fields.Nested(MemberSchema), required=True)


class CheckQuerySchema(ma.Schema):
    feature = fields.String(required=True, validate=KEY_LENGTH)
    quantity = fields.Integer(
        load_default=1, validate=validate.Range(min=1, max=MAX_QUANTITY),
        metadata={"description": "units of the feature (default 1)"})
    member = member_field()


class CheckResultSchema(ma.Schema):
    allowed = fields.Boolean(required=True)
    credits = fields.Integer(required=True, metadata={"description": "what the usage costs"})
    available = fields.Integer(
        required=True,
        metadata={"description": "credits this call could spend now: the wallet's available "
                                 "credits and overdraft, capped by the member's budget"})
    wallet_available = fields.Integer(required=True)
    member = fields.String()
    member_remaining = fields.Integer(
        allow_none=True,
        metadata={"description": "left of the member's caps (spend and open holds counted); "
                                 "null: no cap"})
    reason = fields.String(metadata={"description": "why not, for humans (when refused)"})
    code = fields.String(metadata={
        "description": "insufficient_credits or member_budget_exceeded (when refused)"})
