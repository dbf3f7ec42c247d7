"""Auto-recharge settings and the rule for when a debit should buy a bundle.

Safety lives in the service that applies this (one in flight per wallet, a daily cap, suspend
on failure); this module only says what the owner asked for and whether it is triggered.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from app.domain.ledger import InvalidRequest
from app.domain.limits import is_whole_credits

# A threshold must stay below this many packs of its bundle (DESIGN): a larger one would make
# every debit buy, up to the daily cap, every day.
MAX_THRESHOLD_PACKS = 10


@dataclass(frozen=True)
class AutoRecharge:
    enabled: bool
    threshold_credits: int
    bundle: str
    suspended_reason: str | None = None

    @property
    def active(self) -> bool:
        return self.enabled and self.suspended_reason is None

    def triggered_by(self, balance: int) -> bool:
        """A debit that leaves the balance below the threshold buys the bundle."""
        return self.active and balance < self.threshold_credits

    @classmethod
    def parse(cls, data: dict[str, Any], bundles: Mapping[str, int]) -> AutoRecharge:
        """The owner's settings from a request; `bundles` maps each catalog bundle to its
        credits. Raises `InvalidRequest` naming what is wrong."""
        unknown = set(data) - {"enabled", "threshold_credits", "bundle"}
        if unknown:
            raise InvalidRequest(f"unknown auto-recharge setting(s): {', '.join(sorted(unknown))}")
        enabled = data.get("enabled")
        if not isinstance(enabled, bool):
            raise InvalidRequest("enabled must be true or false")
        threshold = data.get("threshold_credits")
        bundle = data.get("bundle")
        if not enabled and threshold is None and bundle is None:
            return cls(False, 0, "")
        if not is_whole_credits(threshold):
            raise InvalidRequest("threshold_credits must be a positive whole number")
        if not isinstance(bundle, str) or bundle not in bundles:
            known = ", ".join(sorted(bundles)) or "none configured"
            raise InvalidRequest(f"bundle must be one of the catalog's bundles: {known}")
        limit = MAX_THRESHOLD_PACKS * bundles[bundle]
        if threshold >= limit:
            raise InvalidRequest(
                f"threshold_credits must be below {limit:,} ({MAX_THRESHOLD_PACKS} times the "
                f"{bundles[bundle]:,} credits of bundle {bundle!r}), or every debit would buy"
            )
        return cls(enabled, threshold, bundle)

    def as_dict(self) -> dict[str, Any]:
        return {
            "enabled": self.enabled,
            "threshold_credits": self.threshold_credits or None,
            "bundle": self.bundle or None,
            "suspended": self.suspended_reason is not None,
            "suspended_reason": self.suspended_reason,
        }
