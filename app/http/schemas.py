"""marshmallow schemas of the `/v1` API: what requests may hold and what answers look like.

flask-smorest builds `/openapi.json` from these, so they are the documentation; they are also
what the responses are dumped through, so a field missing here is missing from the API. Field
names are a contract (DESIGN.md, "HTTP API"). Timestamps arrive from the services already
rendered as RFC 3339 strings (so idempotent replays are byte-identical), hence `String` fields
with `format: date-time` on the way out.

Request schemas reject unknown fields (marshmallow's default `RAISE`): a typo such as `quantitiy`
must not silently record the default.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import marshmallow as ma
from marshmallow import fields, validate

from app.domain.text import text_problem
from app.services.ledger import MAX_CREDITS, MAX_HOLD_SECONDS, MAX_QUANTITY

# Wallet ids are Kinde owner ids (app.domain.ledger.owner_type_of): kp_... or org_..., at most 64
# characters of letters, digits, _ and -. Hold ids are opaque.
WALLET_ID_PATTERN = r"(?:kp_[A-Za-z0-9_-]{1,61}|org_[A-Za-z0-9_-]{1,60})"
HOLD_ID_PATTERN = r"[A-Za-z0-9_-]{1,64}"

MAX_BATCH = 1000
MAX_LEDGER_PAGE = 200
KEY_LENGTH = validate.Length(min=1, max=64)


def safe_text(value: str) -> None:
    """Field validator: ids and keys hold no control or bidi characters (app.domain.text)."""
    if (why := text_problem(value)) is not None:
        raise ma.ValidationError(f"{why}; ids and keys may not hold control or bidi characters")


def _timestamp(description: str, **kwargs: Any) -> fields.String:
    return fields.String(metadata={"format": "date-time", "description": description}, **kwargs)


def _nullable_timestamp(description: str) -> fields.String:
    return _timestamp(description, allow_none=True)


class UtcDateTime(fields.AwareDateTime):
    """An RFC 3339 timestamp, naive ones read as UTC, stored and shown in UTC.

    Normalising here makes "10:00+01:00" and "09:00Z" the same request for idempotency.
    """

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(default_timezone=UTC, **kwargs)

    # Usage and events happen now-ish: a moment before 2000 or more than a day ahead is a bug
    # in the caller (and year 1 or 9999 with an offset would not even convert to UTC).
    EARLIEST = datetime(2000, 1, 1, tzinfo=UTC)
    MAX_AHEAD = timedelta(days=1)

    def _deserialize(self, value: Any, attr: str | None, data: Any, **kwargs: Any) -> datetime:
        parsed = super()._deserialize(value, attr, data, **kwargs)
        try:
            moment = parsed.astimezone(UTC)
        except (OverflowError, ValueError):
            raise ma.ValidationError("not a representable moment") from None
        if moment < self.EARLIEST or moment > datetime.now(UTC) + self.MAX_AHEAD:
            raise ma.ValidationError("must be a real moment: from 2000 until tomorrow")
        return moment


class StrictBoolean(fields.Boolean):
    """JSON true or false only. `truthy={True}` alone lets 1, 1.0 and 0 through, because they
    equal True and False in Python."""

    def _deserialize(self, value: Any, attr: str | None, data: Any, **kwargs: Any) -> bool:
        if not isinstance(value, bool):
            raise self.make_error("invalid")
        return value


# -- errors --------------------------------------------------------------------------------


class ErrorDetailSchema(ma.Schema):
    code = fields.String(
        required=True,
        metadata={"description": "stable machine-readable code, e.g. insufficient_credits"},
    )
    message = fields.String(required=True, metadata={"description": "for humans"})
    needed = fields.Integer(metadata={"description": "insufficient_credits: credits needed"})
    available = fields.Integer(
        metadata={"description": "insufficient_credits: credits available"}
    )
    available_to_member = fields.Integer(
        metadata={"description": "member_budget_exceeded: credits left of the member's caps"}
    )
    details = fields.Raw(metadata={"description": "invalid_request: per-field problems"})


class ErrorSchema(ma.Schema):
    error = fields.Nested(ErrorDetailSchema, required=True)


# -- shared pieces -------------------------------------------------------------------------


class EntrySchema(ma.Schema):
    id = fields.Integer(required=True)
    kind = fields.String(
        required=True,
        metadata={"description": "grant, purchase, allotment, usage, hold, capture, release, "
                                 "expiry, adjustment or void"},
    )
    amount = fields.Integer(required=True, metadata={"description": "signed credits"})
    balance_after = fields.Integer(required=True)
    description = fields.String(
        required=True, metadata={"description": "in use terms, e.g. '-50 credits for ...'"}
    )
    reason = fields.String(allow_none=True)
    feature = fields.String(allow_none=True)
    quantity = fields.Integer(allow_none=True)
    hold_id = fields.String(allow_none=True)
    occurred_at = _nullable_timestamp("when the usage happened, if reported")
    created_at = _timestamp("when the entry was written", required=True)


class ValueSchema(ma.Schema):
    feature = fields.String(required=True)
    label = fields.String(required=True)
    units_left = fields.Integer(required=True)
    text = fields.String(required=True, metadata={"description": "e.g. 'about 48 reports left'"})


class HoldSchema(ma.Schema):
    hold_id = fields.String(required=True)
    wallet_id = fields.String(required=True)
    amount = fields.Integer(required=True)
    status = fields.String(
        required=True, validate=validate.OneOf(["open", "captured", "released", "expired"])
    )
    feature = fields.String(allow_none=True)
    description = fields.String(required=True)
    captured_amount = fields.Integer(allow_none=True)
    expires_at = _timestamp("when an open hold releases itself", required=True)
    created_at = _timestamp("when the hold was placed", required=True)
    settled_at = _nullable_timestamp("when it was captured, released or expired")


class BlockSchema(ma.Schema):
    id = fields.String(required=True)
    kind = fields.String(required=True)
    original = fields.Integer(required=True)
    remaining = fields.Integer(required=True)
    expires_at = _nullable_timestamp("when the remainder expires; null for never")
    reason = fields.String(required=True)


# -- wallet and ledger ---------------------------------------------------------------------


class AlertSettingsSchema(ma.Schema):
    thresholds_percent = fields.List(
        fields.Integer(strict=True, validate=validate.Range(min=1, max=99)),
        validate=validate.Length(max=20),
        metadata={"description": "percentages of the balance right after the latest credit"},
    )
    thresholds_credits = fields.List(
        fields.Integer(strict=True, validate=validate.Range(min=1, max=MAX_CREDITS)),
        validate=validate.Length(max=20),
        metadata={"description": "absolute balances, in credits"},
    )
    notify_at_zero = StrictBoolean(  # "yes" or 1 is refused, not guessed
        metadata={"description": "send credits.depleted at zero"},
    )


class AlertSettingsRequestSchema(AlertSettingsSchema):
    notify_email = fields.Email(
        allow_none=True,
        validate=validate.Length(max=320),
        metadata={"description": "where alert e-mails go (e.g. an org's billing address); "
                                 "null removes it"},
    )


class AlertSettingsViewSchema(AlertSettingsSchema):
    custom = fields.Boolean(metadata={"description": "false: the catalog's defaults apply"})
    fired = fields.List(fields.String(), metadata={
        "description": "thresholds crossed since the latest credit (p50, c1000, zero)"})


class AlertSettingsResultSchema(ma.Schema):
    wallet_id = fields.String(required=True)
    alerts = fields.Nested(AlertSettingsSchema, required=True)
    notify_email = fields.String(allow_none=True, metadata={
        "description": "where alert e-mails go: set here, or the user's e-mail from Kinde"})


class AutoRechargeRequestSchema(ma.Schema):
    enabled = StrictBoolean(required=True)
    threshold_credits = fields.Integer(
        strict=True,
        validate=validate.Range(min=1, max=MAX_CREDITS),
        metadata={"description": "buy when a debit leaves the balance below this"},
    )
    bundle = fields.String(validate=validate.Length(min=1, max=64),
                           metadata={"description": "catalog bundle to buy"})


class RechargePurchaseSchema(ma.Schema):
    id = fields.String(required=True)
    bundle = fields.String(required=True)
    credits = fields.Integer(required=True)
    price = fields.String(required=True)
    currency = fields.String(required=True)
    status = fields.String(
        required=True, validate=validate.OneOf(["pending", "invoiced", "failed"]),
        metadata={"description": "failed: the invoice could not be delivered to Kinde"})
    failure_reason = fields.String(allow_none=True)
    created_at = fields.String(required=True)
    settled_at = fields.String(allow_none=True)


class AutoRechargeSchema(ma.Schema):
    enabled = fields.Boolean(required=True)
    threshold_credits = fields.Integer(allow_none=True)
    bundle = fields.String(allow_none=True)
    suspended = fields.Boolean(required=True)
    suspended_reason = fields.String(
        allow_none=True, metadata={"description": "why it stopped (a failed charge)"})
    last_purchase = fields.Nested(
        RechargePurchaseSchema, allow_none=True,
        metadata={"description": "the latest auto-recharge purchase and its invoice status"})


class AutoRechargeResultSchema(ma.Schema):
    wallet_id = fields.String(required=True)
    auto_recharge = fields.Nested(AutoRechargeSchema, required=True)


class WalletSchema(ma.Schema):
    wallet_id = fields.String(required=True)
    owner_type = fields.String(required=True, validate=validate.OneOf(["user", "org"]))
    exists = fields.Boolean(
        required=True, metadata={"description": "false until the first credit arrives"}
    )
    balance = fields.Integer(required=True)
    available = fields.Integer(required=True, metadata={"description": "balance - held"})
    held = fields.Integer(required=True)
    arrears = fields.Integer(required=True)
    overdraft_limit = fields.Integer(required=True)
    blocks = fields.List(fields.Nested(BlockSchema), required=True)
    holds = fields.List(fields.Nested(HoldSchema), required=True)
    next_expiry_at = _nullable_timestamp("when credits next expire")
    value = fields.List(
        fields.Nested(ValueSchema), required=True,
        metadata={"description": "what the available credits buy, per feature"},
    )
    alerts = fields.Nested(AlertSettingsViewSchema, required=True)
    auto_recharge = fields.Nested(AutoRechargeSchema, required=True)


class LedgerQuerySchema(ma.Schema):
    limit = fields.Integer(
        load_default=50,
        validate=validate.Range(min=1, max=MAX_LEDGER_PAGE),
        metadata={"description": f"entries per page, 1 to {MAX_LEDGER_PAGE}"},
    )
    cursor = fields.String(
        validate=validate.Length(min=1, max=32),
        metadata={"description": "next_cursor from the previous page"},
    )


class LedgerPageSchema(ma.Schema):
    entries = fields.List(fields.Nested(EntrySchema), required=True)
    next_cursor = fields.String(
        required=True, allow_none=True, metadata={"description": "null on the last page"}
    )


# -- usage ---------------------------------------------------------------------------------


def _quantity() -> fields.Integer:
    return fields.Integer(
        strict=True,  # 1.5 and "3" are refused, not rounded or coerced
        required=True,
        validate=validate.Range(min=1, max=MAX_QUANTITY),
        metadata={"description": "units of the feature used (whole, positive)"},
    )


class UsageRequestSchema(ma.Schema):
    feature = fields.String(required=True, validate=KEY_LENGTH)
    quantity = _quantity()
    occurred_at = UtcDateTime(metadata={"description": "when it happened; default now"})
    member = fields.String(  # team budgets: see app.http.budget_schemas
        validate=validate.Length(min=1, max=64),
        metadata={"description": "org wallets: the Kinde user (kp_...) spending (M2M)"})


class UsageResultSchema(ma.Schema):
    entry = fields.Nested(EntrySchema, required=True)
    balance = fields.Integer(required=True)
    available = fields.Integer(required=True)
    value = fields.String(
        required=True, metadata={"description": "what is left of this feature, in use terms"}
    )
    member = fields.String(metadata={"description": "the member charged (org wallets)"})


class BatchRecordSchema(UsageRequestSchema):
    wallet_id = fields.String(
        required=True,
        validate=validate.Regexp(f"^{WALLET_ID_PATTERN}$", error="not a Kinde user or org id"),
        metadata={"description": "kp_... (user) or org_... (organization)"},
    )
    idempotency_key = fields.String(validate=[validate.Length(min=1, max=255), safe_text])


class BatchRequestSchema(ma.Schema):
    records = fields.List(
        fields.Nested(BatchRecordSchema),
        required=True,
        validate=validate.Length(min=1, max=MAX_BATCH),
    )


class BatchResultSchema(ma.Schema):
    index = fields.Integer(required=True, metadata={"description": "position in `records`"})
    status = fields.Integer(required=True, metadata={"description": "what alone would answer"})
    result = fields.Nested(UsageResultSchema, metadata={"description": "on success"})
    replayed = fields.Boolean()
    error = fields.Nested(ErrorDetailSchema, metadata={"description": "on failure"})


class BatchResponseSchema(ma.Schema):
    results = fields.List(fields.Nested(BatchResultSchema), required=True)


# -- credits -------------------------------------------------------------------------------


class TopUpRequestSchema(ma.Schema):
    """`{bundle}` sells a pack (credits:write); `{credits, reason}` grants (credits:admin)."""

    bundle = fields.String(validate=KEY_LENGTH, metadata={"description": "catalog bundle key"})
    credits = fields.Integer(
        strict=True,
        validate=validate.Range(min=1, max=MAX_CREDITS),
        metadata={"description": "a grant of this many credits (needs credits:admin)"},
    )
    reason = fields.String(
        validate=validate.Length(min=1, max=200),
        metadata={"description": "why (shown in the ledger); required with credits"},
    )
    expires_after_days = fields.Integer(
        strict=True, validate=validate.Range(min=1, max=36500),
        metadata={"description": "grant only: the credits expire after this many days"},
    )

    @ma.validates_schema
    def _one_kind(self, data: dict[str, Any], **_: Any) -> None:
        if ("bundle" in data) == ("credits" in data):
            raise ma.ValidationError("send either bundle, or credits with a reason")
        if "credits" in data and not (data.get("reason") or "").strip():
            raise ma.ValidationError("a grant needs a reason", "reason")
        if "bundle" in data and ("reason" in data or "expires_after_days" in data):
            raise ma.ValidationError("reason and expires_after_days go with credits, not bundle")


class CreditResultSchema(ma.Schema):
    entry = fields.Nested(EntrySchema, required=True)
    balance = fields.Integer(required=True)
    available = fields.Integer(required=True)


# -- holds ---------------------------------------------------------------------------------


class HoldRequestSchema(ma.Schema):
    """Reserve `credits`, or what `quantity` units of `feature` cost."""

    credits = fields.Integer(strict=True, validate=validate.Range(min=1, max=MAX_CREDITS))
    feature = fields.String(validate=KEY_LENGTH)
    quantity = fields.Integer(strict=True, validate=validate.Range(min=1, max=MAX_QUANTITY))
    expires_in_seconds = fields.Integer(
        strict=True,
        load_default=15 * 60,
        validate=validate.Range(min=1, max=MAX_HOLD_SECONDS),
        metadata={"description": "the hold releases itself after this long (default 900)"},
    )

    member = fields.String(
        validate=validate.Length(min=1, max=64),
        metadata={"description": "org wallets: the Kinde user (kp_...) the hold is for (M2M)"})

    @ma.validates_schema
    def _one_kind(self, data: dict[str, Any], **_: Any) -> None:
        if ("credits" in data) == ("feature" in data):
            raise ma.ValidationError("send either credits, or feature (and quantity)")
        if "quantity" in data and "feature" not in data:
            raise ma.ValidationError("quantity goes with feature", "quantity")


class HoldResultSchema(HoldSchema):
    balance = fields.Integer(required=True)
    available = fields.Integer(required=True)
    member = fields.String(metadata={"description": "the member the hold is for"})


class CaptureRequestSchema(ma.Schema):
    credits = fields.Integer(
        strict=True,
        validate=validate.Range(min=1, max=MAX_CREDITS),
        metadata={"description": "the real amount to debit; default the whole hold"},
    )


class ReleaseRequestSchema(ma.Schema):
    """Release takes no fields; an empty object (or no body) is fine."""


class SettledHoldSchema(HoldResultSchema):
    entry_kind = fields.String(required=True, metadata={"description": "capture or release"})


# -- catalog -------------------------------------------------------------------------------


class CatalogFeatureSchema(ma.Schema):
    key = fields.String(required=True)
    label = fields.String(required=True)
    unit = fields.String(required=True)
    credits_per_unit = fields.Integer(required=True)
    source = fields.String(
        required=True,
        validate=validate.OneOf(["app", "kinde"]),
        metadata={"description": "app: report usage to this API; kinde: Kinde meters it"},
    )


class BundleValueSchema(ma.Schema):
    feature = fields.String(required=True)
    units = fields.Integer(required=True)
    text = fields.String(required=True, metadata={"description": "e.g. 'about 2,500 ...'"})


class CatalogBundleSchema(ma.Schema):
    key = fields.String(required=True)
    label = fields.String(metadata={"description": "what customers call it, e.g. 'Starter pack'"})
    credits = fields.Integer(required=True)
    price = fields.String(required=True, metadata={"description": "decimal, e.g. '49.00'"})
    currency = fields.String(required=True)
    description = fields.String(required=True)
    expires_after_days = fields.Integer(allow_none=True)
    value = fields.List(fields.Nested(BundleValueSchema), required=True)


class CatalogSchema(ma.Schema):
    features = fields.List(fields.Nested(CatalogFeatureSchema), required=True)
    bundles = fields.List(fields.Nested(CatalogBundleSchema), required=True)


# -- corrections, refunds and forecasts ------------------------------------------------------


class FutureUtcDateTime(fields.AwareDateTime):
    """An RFC 3339 timestamp (naive ones read as UTC), normalised to UTC; any real moment (the
    service refuses one that is not in the future where it must be)."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(default_timezone=UTC, **kwargs)

    def _deserialize(self, value: Any, attr: str | None, data: Any, **kwargs: Any) -> datetime:
        parsed = super()._deserialize(value, attr, data, **kwargs)
        try:
            moment = parsed.astimezone(UTC)
        except (OverflowError, ValueError):
            raise ma.ValidationError("not a representable moment") from None
        if moment < UtcDateTime.EARLIEST or moment.year > 9000:
            raise ma.ValidationError("must be a real moment")
        return moment


class AdjustmentRequestSchema(ma.Schema):
    """`{credits, reason, expires_at?}`: positive adds a block, negative draws like usage."""

    credits = fields.Integer(
        strict=True, required=True,
        validate=[validate.Range(min=-MAX_CREDITS, max=MAX_CREDITS),
                  validate.NoneOf([0], error="credits must not be 0")],
        metadata={"description": "non-zero: positive adds credits, negative takes them away"},
    )
    reason = fields.String(
        required=True, validate=validate.Length(min=1, max=500),
        metadata={"description": "why (1-500 characters), shown in the wallet's history"},
    )
    expires_at = FutureUtcDateTime(
        metadata={"description": "positive adjustments only: when the credits expire"})


class RefundRequestSchema(ma.Schema):
    reason = fields.String(
        required=True, validate=validate.Length(min=1, max=500),
        metadata={"description": "why (1-500 characters), kept with the refund"},
    )


class RefundResultSchema(ma.Schema):
    refunded_credits = fields.Integer(required=True)
    refunded_amount = fields.String(
        required=True, metadata={"description": "decimal string in the currency's minor unit",
                                 "example": "49.00"})
    currency = fields.String(required=True)
    invoice = fields.String(
        required=True, validate=validate.OneOf(["reduced", "credit_note_due"]),
        metadata={"description": "reduced: Kinde invoices one pack fewer this period; "
                                 "credit_note_due: issue a credit note in Kinde "
                                 "(`kinde-credits report refunds`)"})
    purchase_entry_id = fields.Integer(required=True)
    entry = fields.Nested(EntrySchema, required=True)
    balance = fields.Integer(required=True)
    available = fields.Integer(required=True)


class FeaturePaceSchema(ma.Schema):
    feature = fields.String(required=True)
    credits_per_day = fields.Float(required=True)


class SuggestedBundleSchema(ma.Schema):
    bundle = fields.String(required=True)
    label = fields.String(required=True)
    credits = fields.Integer(required=True)
    price = fields.String(required=True)
    currency = fields.String(required=True)


class ForecastSchema(ma.Schema):
    wallet_id = fields.String(required=True)
    available = fields.Integer(required=True)
    window_days = fields.Integer(
        required=True, metadata={"description": "7, or 30 when the last 7 days hold too little"})
    credits_per_day = fields.Float(required=True)
    days_left = fields.Integer(required=True, allow_none=True,
                               metadata={"description": "floored; null when nothing is used"})
    runs_out_at = fields.String(required=True, allow_none=True,
                                metadata={"format": "date-time"})
    by_feature = fields.List(fields.Nested(FeaturePaceSchema), required=True)
    expiring_before_run_out = fields.Integer(
        required=True, metadata={"description": "credits that expire unused before run-out"})
    suggested_bundle = fields.Nested(SuggestedBundleSchema, required=True, allow_none=True,
                                     metadata={"description": "lasts about a month at this pace"})
    runway = fields.String(required=True, metadata={"description": "the runway in words"})
