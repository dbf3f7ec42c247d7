"""`kinde-credits setup-kinde`: register our webhook in Kinde and check the catalog against it.

Kinde has no API to create plans, features or meters (they are made in its dashboard), so this
does the two things that can be automated: the webhook subscription (created once, updated in
place, never duplicated; matched by endpoint because Kinde cannot PATCH an endpoint) and a
check that every `kinde_feature_code` of the catalog exists in the business's plans, as far as
Kinde lets us see (the entitlements and agreements of billing customers we know).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from app.domain.catalog import Catalog
from app.services.ports import KindeSetupApi

HANDLED_EVENT_TYPES: tuple[str, ...] = (
    "user.created",
    "organization.created",
    "customer.meter_usage_updated",
    "customer.agreement_created",
    "customer.plan_assigned",
    "customer.plan_changed",
    "customer.agreement_cancelled",
    "customer.payment_failed",
    "customer.payment_succeeded",
    "customer.invoice_overdue",
)
WEBHOOK_NAME = "kinde-credits"


@dataclass
class SetupReport:
    dry_run: bool
    actions: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    features_found: dict[str, list[str]] = field(default_factory=dict)
    features_missing: list[str] = field(default_factory=list)
    features_unchecked: list[str] = field(default_factory=list)
    webhook_id: str | None = None

    @property
    def ok(self) -> bool:
        return not self.features_missing

    def as_dict(self) -> dict[str, Any]:
        return {
            "dry_run": self.dry_run,
            "webhook_id": self.webhook_id,
            "actions": self.actions,
            "warnings": self.warnings,
            "features_found": self.features_found,
            "features_missing": self.features_missing,
            "features_unchecked": self.features_unchecked,
            "ok": self.ok,
        }


def register_webhook(api: KindeSetupApi, endpoint: str, report: SetupReport) -> None:
    known = {e.code for e in api.list_event_types()}
    wanted = [t for t in HANDLED_EVENT_TYPES if not known or t in known]
    for missing in sorted(set(HANDLED_EVENT_TYPES) - set(wanted)):
        report.warnings.append(f"Kinde does not offer event type {missing}: not subscribed")
    same_endpoint = [w for w in api.list_webhooks() if (w.endpoint or "") == endpoint]
    if len(same_endpoint) > 1:
        extra = ", ".join(w.id for w in same_endpoint[1:])
        report.warnings.append(
            f"{len(same_endpoint)} subscriptions deliver to {endpoint}: every event arrives "
            f"more than once (harmless, but delete {extra} in Kinde)"
        )
    description = "Prepaid credits: sign-up grants, metered usage and billing events"
    if not same_endpoint:
        report.actions.append(f"create webhook {WEBHOOK_NAME} -> {endpoint} for "
                              f"{len(wanted)} event types")
        if not report.dry_run:
            report.webhook_id = api.create_webhook(endpoint, wanted, WEBHOOK_NAME, description)
        return
    current = same_endpoint[0]
    report.webhook_id = current.id
    have = set(current.event_types)
    if have >= set(wanted) and current.name == WEBHOOK_NAME:
        report.actions.append(f"webhook {current.id} already up to date")
        return
    # Keep event types someone else added to our subscription: only ever add.
    merged = sorted(have | set(wanted))
    report.actions.append(
        f"update webhook {current.id}: add {', '.join(sorted(set(wanted) - have)) or 'nothing'}"
    )
    if not report.dry_run:
        api.update_webhook(current.id, event_types=merged, name=WEBHOOK_NAME,
                           description=description)


def check_features(
    api: KindeSetupApi, catalog: Catalog, customer_ids: Iterable[str], report: SetupReport
) -> None:
    wanted: dict[str, str] = {}
    for key, feature in catalog.features.items():
        wanted[feature.kinde_feature_code] = f"features.{key}"
    for key, bundle in catalog.bundles.items():
        if bundle.kinde_feature_code:
            wanted[bundle.kinde_feature_code] = f"bundles.{key}"
        if bundle.auto_recharge_kinde_feature_code:
            # Auto-recharges are invoiced on this one (at the discounted pack price).
            wanted[bundle.auto_recharge_kinde_feature_code] = (
                f"bundles.{key}.auto_recharge_kinde_feature_code"
            )
    seen: dict[str, set[str]] = {}
    checked_any = False
    for customer_id in customer_ids:
        checked_any = True
        entitlements = api.get_entitlements(customer_id)
        for code in entitlements.feature_codes:
            seen.setdefault(code, set()).add(f"entitlements of {customer_id}")
        for agreement in api.list_agreements(customer_id):
            for code in agreement.feature_codes:
                seen.setdefault(code, set()).add(f"plan {agreement.plan_code or agreement.id}")
    for code, where in sorted(wanted.items()):
        if code in seen:
            report.features_found[code] = sorted(seen[code])
        elif checked_any:
            report.features_missing.append(f"{code} ({where})")
        else:
            report.features_unchecked.append(f"{code} ({where})")
    if not checked_any:
        report.warnings.append(
            "no billing customer known yet, so features could not be checked: pass "
            "--customer customer_... (any customer on your plans) to check them"
        )
