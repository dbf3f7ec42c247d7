"""`CreditsClient`: the kinde-credits HTTP API for a product's backend.

Safe retries: every write carries an `Idempotency-Key` (the caller's, or one generated once per
call), and a timeout, a dropped connection, a 5xx or a 429 is retried with that same key and a
growing, jittered pause. The service stores the first successful result under the key, so a
retry of a write that did go through returns that result instead of charging again.

Imports only `requests` and the standard library.
"""

from __future__ import annotations

import contextlib
import random
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import datetime
from types import TracebackType
from typing import Any

import requests

from kinde_credits_client.errors import (
    CreditsError,
    ServiceUnavailable,
    TransportError,
    error_for,
)

RETRY_STATUSES = frozenset({429, 500, 502, 503, 504})
_UNCHANGED: Any = object()


@dataclass(frozen=True)
class UsageResult:
    entry: dict[str, Any]
    balance: int
    available: int
    value: str
    member: str | None = None
    replayed: bool = False


@dataclass(frozen=True)
class CheckResult:
    """Would this usage be allowed now? A hint for the UI; the debit itself still decides."""

    allowed: bool
    credits: int
    available: int
    reason: str | None = None
    code: str | None = None
    member: str | None = None
    member_remaining: int | None = None


@dataclass(frozen=True)
class Wallet:
    wallet_id: str
    owner_type: str
    balance: int
    available: int
    held: int
    raw: dict[str, Any] = field(repr=False, default_factory=dict)


@dataclass(frozen=True)
class LedgerEntry:
    id: int
    kind: str
    amount: int
    balance_after: int
    description: str
    created_at: str
    raw: dict[str, Any] = field(repr=False, default_factory=dict)


@dataclass(frozen=True)
class LedgerPage:
    entries: list[LedgerEntry]
    next_cursor: str | None


class CreditsClient:
    """A client for one kinde-credits service.

    `token` is a Kinde access token, or a callable returning a current one (called for every
    request, so it can refresh an M2M token). `max_retries` counts retries after the first try.
    """

    def __init__(
        self,
        base_url: str,
        token: str | Callable[[], str],
        *,
        timeout: float = 10.0,
        max_retries: int = 3,
        backoff: float = 0.25,
        max_backoff: float = 5.0,
        session: requests.Session | None = None,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self.base_url = base_url.rstrip("/")
        self._token = token
        self.timeout = timeout
        self.max_retries = max_retries
        self.backoff = backoff
        self.max_backoff = max_backoff
        self.session = session or requests.Session()
        self._sleep = sleep

    # -- plumbing -------------------------------------------------------------------------

    def _headers(self, idempotency_key: str | None) -> dict[str, str]:
        token = self._token() if callable(self._token) else self._token
        headers = {"Authorization": f"Bearer {token}", "Accept": "application/json"}
        if idempotency_key is not None:
            headers["Idempotency-Key"] = idempotency_key
        return headers

    def _pause(self, attempt: int, response: requests.Response | None) -> None:
        delay = min(self.max_backoff, self.backoff * 2 ** attempt) * random.uniform(0.5, 1.0)
        retry_after = response.headers.get("Retry-After") if response is not None else None
        if retry_after and retry_after.isdigit():
            delay = max(delay, min(float(retry_after), self.max_backoff))
        self._sleep(delay)

    def request(
        self,
        method: str,
        path: str,
        *,
        json: Any = None,
        params: dict[str, Any] | None = None,
        idempotency_key: str | None = None,
    ) -> tuple[dict[str, Any], requests.Response]:
        """One API call with retries; returns the JSON body and the final response.

        Writes (anything but GET) always send an idempotency key, so retrying them is safe.
        """
        if method != "GET" and idempotency_key is None:
            idempotency_key = f"kcc-{uuid.uuid4()}"
        url = f"{self.base_url}{path}"
        for attempt in range(self.max_retries + 1):
            last = attempt == self.max_retries
            try:
                response = self.session.request(
                    method, url, json=json, params=params, timeout=self.timeout,
                    headers=self._headers(idempotency_key),
                )
            except (requests.ConnectionError, requests.Timeout) as exc:
                # The request may have been applied with its answer lost: the retry carries
                # the same key, so the service answers with the first result.
                if last:
                    raise TransportError(0, "transport_error",
                                         f"{method} {path} failed: {exc}") from exc
                self._pause(attempt, None)
                continue
            if response.status_code in RETRY_STATUSES and not last:
                self._pause(attempt, response)
                continue
            body = _json(response)
            if response.status_code >= 400:
                raise error_for(response.status_code, body)
            return body, response
        raise ServiceUnavailable(0, "unavailable", "no attempt was made")  # max_retries < 0

    # -- usage and checks -----------------------------------------------------------------

    def record_usage(
        self,
        wallet_id: str,
        feature: str,
        quantity: int = 1,
        *,
        member: str | None = None,
        occurred_at: datetime | None = None,
        idempotency_key: str | None = None,
    ) -> UsageResult:
        """Debit credits for `quantity` units of `feature`. Raises InsufficientCredits or
        MemberBudgetExceeded (402) when refused; nothing is charged then."""
        body: dict[str, Any] = {"feature": feature, "quantity": quantity}
        if member is not None:
            body["member"] = member
        if occurred_at is not None:
            body["occurred_at"] = occurred_at.isoformat()
        data, response = self.request("POST", f"/v1/wallets/{wallet_id}/usage", json=body,
                                       idempotency_key=idempotency_key)
        return UsageResult(
            entry=data["entry"], balance=data["balance"], available=data["available"],
            value=data.get("value", ""), member=data.get("member"),
            replayed=response.headers.get("Idempotent-Replayed") == "true",
        )

    def check(self, wallet_id: str, feature: str, quantity: int = 1, *,
              member: str | None = None) -> CheckResult:
        """Would this usage be allowed now (holds, overdraft and member budget included)?"""
        params: dict[str, Any] = {"feature": feature, "quantity": quantity}
        if member is not None:
            params["member"] = member
        data, _ = self.request("GET", f"/v1/wallets/{wallet_id}/check", params=params)
        return CheckResult(
            allowed=bool(data["allowed"]), credits=data["credits"],
            available=data["available"], reason=data.get("reason"), code=data.get("code"),
            member=data.get("member"), member_remaining=data.get("member_remaining"),
        )

    # -- holds ----------------------------------------------------------------------------

    def hold(
        self,
        wallet_id: str,
        *,
        feature: str | None = None,
        quantity: int | None = None,
        credits: int | None = None,
        member: str | None = None,
        expires_in_seconds: int | None = None,
        idempotency_key: str | None = None,
    ) -> Hold:
        """Reserve credits now; use the result as a context manager:

            with client.hold("org_acme", feature="report_generation", member=user) as hold:
                build_report()          # success: the hold is captured on exit
                hold.capture_credits = 30   # optional: capture less than was held

        An exception inside the block releases the hold and propagates.
        """
        body: dict[str, Any] = {}
        if feature is not None:
            body["feature"] = feature
        if quantity is not None:
            body["quantity"] = quantity
        if credits is not None:
            body["credits"] = credits
        if member is not None:
            body["member"] = member
        if expires_in_seconds is not None:
            body["expires_in_seconds"] = expires_in_seconds
        data, _ = self.request("POST", f"/v1/wallets/{wallet_id}/holds", json=body,
                               idempotency_key=idempotency_key)
        return Hold(self, data)

    def capture_hold(self, hold_id: str, credits: int | None = None, *,
                     idempotency_key: str | None = None) -> dict[str, Any]:
        body = {"credits": credits} if credits is not None else {}
        data, _ = self.request("POST", f"/v1/holds/{hold_id}/capture", json=body,
                               idempotency_key=idempotency_key)
        return data

    def release_hold(self, hold_id: str, *, idempotency_key: str | None = None
                     ) -> dict[str, Any]:
        data, _ = self.request("POST", f"/v1/holds/{hold_id}/release", json={},
                               idempotency_key=idempotency_key)
        return data

    # -- credits, reads and budgets -------------------------------------------------------

    def top_up(
        self,
        wallet_id: str,
        *,
        bundle: str | None = None,
        credits: int | None = None,
        reason: str | None = None,
        expires_after_days: int | None = None,
        idempotency_key: str | None = None,
    ) -> dict[str, Any]:
        """Sell a catalog `bundle`, or grant `credits` with a `reason` (credits:admin)."""
        body: dict[str, Any] = {}
        for name, value in (("bundle", bundle), ("credits", credits), ("reason", reason),
                            ("expires_after_days", expires_after_days)):
            if value is not None:
                body[name] = value
        data, _ = self.request("POST", f"/v1/wallets/{wallet_id}/top-ups", json=body,
                               idempotency_key=idempotency_key)
        return data

    def adjust(self, wallet_id: str, credits: int, reason: str, *,
               expires_at: str | None = None,
               idempotency_key: str | None = None) -> dict[str, Any]:
        """Correct a balance (credits:admin): positive adds credits (expiring at `expires_at`,
        RFC 3339, if given), negative takes them away like usage (InsufficientCredits rather
        than below zero). `reason` (1-500 characters) is shown in the wallet's history."""
        body: dict[str, Any] = {"credits": credits, "reason": reason}
        if expires_at is not None:
            body["expires_at"] = expires_at
        data, _ = self.request("POST", f"/v1/wallets/{wallet_id}/adjustments", json=body,
                               idempotency_key=idempotency_key)
        return data

    def refund(self, wallet_id: str, entry_id: int, reason: str, *,
               idempotency_key: str | None = None) -> dict[str, Any]:
        """Refund the pack a purchase entry sold (credits:admin): its unused credits leave the
        wallet. The answer's `invoice` is "reduced" (Kinde invoices one pack fewer) or
        "credit_note_due" (issue a credit note for `refunded_amount` in Kinde)."""
        data, _ = self.request("POST", f"/v1/wallets/{wallet_id}/purchases/{entry_id}/refund",
                               json={"reason": reason}, idempotency_key=idempotency_key)
        return data

    def forecast(self, wallet_id: str) -> dict[str, Any]:
        """The runway: `credits_per_day`, `days_left`, `runs_out_at` (null when nothing is
        used), `by_feature`, `expiring_before_run_out` and `suggested_bundle`."""
        data, _ = self.request("GET", f"/v1/wallets/{wallet_id}/forecast")
        return data

    def wallet(self, wallet_id: str) -> Wallet:
        data, _ = self.request("GET", f"/v1/wallets/{wallet_id}")
        return Wallet(data["wallet_id"], data["owner_type"], data["balance"],
                      data["available"], data["held"], data)

    def ledger_pages(self, wallet_id: str, *, page_size: int = 50) -> Iterator[LedgerPage]:
        """Pages of the ledger, newest first, following `next_cursor` until the last one."""
        cursor: str | None = None
        while True:
            params: dict[str, Any] = {"limit": page_size}
            if cursor is not None:
                params["cursor"] = cursor
            data, _ = self.request("GET", f"/v1/wallets/{wallet_id}/ledger", params=params)
            entries = [
                LedgerEntry(e["id"], e["kind"], e["amount"], e["balance_after"],
                            e["description"], e["created_at"], e)
                for e in data["entries"]
            ]
            cursor = data.get("next_cursor")
            yield LedgerPage(entries, cursor)
            if cursor is None:
                return

    def ledger(self, wallet_id: str, *, page_size: int = 50) -> Iterator[LedgerEntry]:
        """Every ledger entry, newest first, fetched a page at a time as you iterate."""
        for page in self.ledger_pages(wallet_id, page_size=page_size):
            yield from page.entries

    def set_budget(self, org_id: str, user_id: str, *,
                   credits_per_day: int | None = _UNCHANGED,
                   credits_per_month: int | None = _UNCHANGED) -> dict[str, Any]:
        """Cap a member's spend from an org wallet (credits:admin); None removes a cap, an
        argument left out keeps the current value."""
        body = {name: value for name, value in (("credits_per_day", credits_per_day),
                                                ("credits_per_month", credits_per_month))
                if value is not _UNCHANGED}
        data, _ = self.request("PUT", f"/v1/wallets/{org_id}/members/{user_id}/budget",
                               json=body)
        return data

    def members(self, org_id: str) -> dict[str, Any]:
        """Each member's spend today and this month, by feature, with their caps."""
        data, _ = self.request("GET", f"/v1/wallets/{org_id}/members")
        return data


class Hold:
    """An open hold. As a context manager it captures on success and releases on error."""

    def __init__(self, client: CreditsClient, data: dict[str, Any]) -> None:
        self.client = client
        self.data = data
        self.hold_id: str = data["hold_id"]
        self.amount: int = data["amount"]
        # What to capture on a successful exit; None captures the whole hold.
        self.capture_credits: int | None = None
        self.settled: dict[str, Any] | None = None

    def capture(self, credits: int | None = None) -> dict[str, Any]:
        # A fixed key per hold: a retried or repeated capture can never charge twice.
        self.settled = self.client.capture_hold(self.hold_id, credits,
                                                idempotency_key=f"capture-{self.hold_id}")
        return self.settled

    def release(self) -> dict[str, Any]:
        self.settled = self.client.release_hold(self.hold_id,
                                                idempotency_key=f"release-{self.hold_id}")
        return self.settled

    def __enter__(self) -> Hold:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        if self.settled is not None:
            return
        if exc_type is None:
            self.capture(self.capture_credits)
            return
        # The job's own error matters more; an unreleased hold expires by itself.
        with contextlib.suppress(CreditsError):
            self.release()


def _json(response: requests.Response) -> dict[str, Any]:
    try:
        body = response.json()
    except ValueError:
        return {"error": {"code": "", "message": response.text[:200] or response.reason}}
    return body if isinstance(body, dict) else {"value": body}
