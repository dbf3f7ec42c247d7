"""The customer dashboard's use cases: signed links, the link's session, and what the page
shows and does.

A link (`create_link`) is `/dashboard/<wallet>?token=...` where the token signs the wallet id,
an expiry and a nonce. Opening it (`open_link`) starts a session bound to that wallet: the HTTP
layer keeps it in an HttpOnly, SameSite=Strict cookie, and every form on the page carries a
CSRF token derived from the session. Nothing is stored server-side, so any instance can serve
any request (only the signing key is shared).

Buying goes through `LedgerService.top_up_bundle`, the same use case as
`POST /v1/wallets/{id}/top-ups {bundle}`, with an idempotency key minted when the page is
rendered: a double click sends the same key twice and buys (and invoices) once.
"""

from __future__ import annotations

import re
import secrets
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import quote

from app.domain import dashboard as rules
from app.domain.dashboard import AccessRefused
from app.domain.forecast import runway_sentence
from app.domain.ledger import InvalidRequest
from app.domain.money import discounted
from app.domain.usage_terms import fmt
from app.services.ledger import LedgerService, Outcome
from app.services.ports import Signer

# Page actions a link can carry: "buy" (a sale, like POST /top-ups {bundle}) and
# "auto_recharge" (like PUT /auto-recharge).
ACTIONS = frozenset({"buy", "auto_recharge"})
LINK = "link"
SESSION = "session"
CSRF = "csrf"
BUY_KEY_RE = re.compile(r"^dashboard:[0-9a-f]{32}$")


class InvalidSignature(Exception):
    """A token whose signature does not verify (raised by Signer implementations)."""


@dataclass(frozen=True)
class Session:
    wallet_id: str
    sid: str
    expires_at: datetime
    # What the caller who asked for the link may do on the page (ACTIONS), signed into the
    # link and the session: a link never grants more than its maker could do through the API.
    actions: frozenset[str] = frozenset()


@dataclass(frozen=True)
class Policy:
    """What the operator lets customers do on the page."""

    # None: buying is allowed; otherwise why the buy buttons are disabled.
    buy_disabled_reason: str | None
    # None: auto-recharge is editable; otherwise why it is not.
    auto_recharge_disabled_reason: str | None


def policy_for(ledger: LedgerService, *, unbilled_purchases: bool,
               auto_recharge_editable: bool) -> Policy:
    """Decide from how sales are paid for.

    A pack bought on the page must be paid for. With Kinde billing (and not
    SALES_PAID_ELSEWHERE) the sale is invoiced through Kinde, so buying is allowed. Otherwise a
    sale would just add credits (the product is supposed to collect payment first), so the buy
    buttons are disabled unless the operator says DASHBOARD_UNBILLED_PURCHASES=true.
    """
    # The API lets only credits:admin record a sale nobody is charged for; on the page the
    # operator makes that decision once, with DASHBOARD_UNBILLED_PURCHASES.
    invoiced = ledger.sales_are_invoiced()
    buy_reason = None
    if not invoiced and not unbilled_purchases:
        buy_reason = ("Packs cannot be bought on this page because this service does not "
                      "take payments here. Buy credits where you manage your subscription.")
    recharge_reason = None
    if ledger.recharger is None:
        recharge_reason = ("Auto-recharge is not available: this service is not connected to "
                           "a billing provider that can charge for it.")
    elif not auto_recharge_editable:
        recharge_reason = "Auto-recharge is managed for you; ask your provider to change it."
    return Policy(buy_reason, recharge_reason)


class DashboardService:
    def __init__(
        self,
        ledger: LedgerService,
        signer: Callable[[], Signer],
        clock: Callable[[], datetime],
        policy: Policy,
    ) -> None:
        self.ledger = ledger
        self.catalog = ledger.catalog
        # Built on first use: the key file is only created once someone uses the dashboard.
        self._signer_factory = signer
        self._signer: Signer | None = None
        self.clock = clock
        self.policy = policy

    @property
    def signer(self) -> Signer:
        if self._signer is None:
            self._signer = self._signer_factory()
        return self._signer

    # -- links and sessions -------------------------------------------------------------------

    def create_link(self, wallet_id: str, ttl_seconds: object, base_url: str,
                    actions: frozenset[str]) -> dict[str, str]:
        ttl = rules.link_ttl(ttl_seconds)
        now = self.clock()
        expires = int(now.timestamp()) + ttl
        token = self.signer.sign(LINK, {"w": wallet_id, "exp": expires,
                                        "n": secrets.token_urlsafe(12),
                                        "a": sorted(actions & ACTIONS)})
        url = f"{base_url.rstrip('/')}/dashboard/{quote(wallet_id)}?token={token}"
        return {"url": url, "expires_at": _iso(datetime.fromtimestamp(expires, UTC))}

    def _verified(self, purpose: str, token: str | None, *, max_length: int, missing: str,
                  invalid: str) -> dict[str, Any]:
        """The signed payload, or AccessRefused: an absent or overlong token is refused
        (`missing`) before any signature check, a forged or tampered one with `invalid`."""
        if not token or len(token) > max_length:
            raise AccessRefused(missing)
        try:
            return self.signer.verify(purpose, token)
        except InvalidSignature:
            raise AccessRefused(invalid) from None

    def _grant(self, purpose: str, token: str, wallet_id: str) -> dict[str, Any]:
        payload = self._verified(purpose, token, max_length=2048, missing="no valid link",
                                 invalid="the link is not valid")
        rules.check_grant(payload, wallet_id, self.clock())
        return payload

    def open_link(self, wallet_id: str, token: str) -> Session:
        """A new session for the wallet the (valid, unexpired) link was made for."""
        payload = self._grant(LINK, token, wallet_id)
        expires = self.clock() + timedelta(seconds=rules.SESSION_SECONDS)
        return Session(wallet_id, secrets.token_urlsafe(16), expires, _actions(payload))

    def session_cookie(self, session: Session) -> str:
        return self.signer.sign(SESSION, {"w": session.wallet_id, "sid": session.sid,
                                          "exp": int(session.expires_at.timestamp()),
                                          "a": sorted(session.actions)})

    def resume(self, wallet_id: str, cookie: str | None) -> Session:
        payload = self._grant(SESSION, cookie or "", wallet_id)
        sid = payload.get("sid")
        if not isinstance(sid, str):
            raise AccessRefused("not a session")
        return Session(wallet_id, sid, datetime.fromtimestamp(int(payload["exp"]), UTC),
                       _actions(payload))

    def policy_for_session(self, session: Session) -> Policy:
        """The operator's policy, narrowed to what the link's maker may do."""
        buy, recharge = self.policy.buy_disabled_reason, self.policy.auto_recharge_disabled_reason
        if buy is None and "buy" not in session.actions:
            buy = "Packs cannot be bought from this link; ask your provider for one that allows it."
        if recharge is None and "auto_recharge" not in session.actions:
            recharge = "Auto-recharge cannot be changed from this link."
        return Policy(buy, recharge)

    def csrf_token(self, session: Session) -> str:
        return self.signer.sign(CSRF, {"sid": session.sid})

    def check_csrf(self, session: Session, token: str | None) -> None:
        payload = self._verified(
            CSRF, token, max_length=512,
            missing="the form is missing its security token; reload the page",
            invalid="the form's security token is not valid")
        if payload.get("sid") != session.sid:
            raise AccessRefused("the form belongs to another session; reload the page")

    # -- the page -----------------------------------------------------------------------------

    def page(self, wallet_id: str, session: Session,
             before: str | None = None) -> dict[str, Any]:
        """Everything the page shows, numbers straight from the same views as the API."""
        policy = self.policy_for_session(session)
        now = self.clock()
        today = now.date()
        wallet = self.ledger.get_wallet(wallet_id)
        first_day = datetime.combine(today - timedelta(days=rules.CHART_DAYS - 1),
                                     datetime.min.time(), UTC)
        runway = self.ledger.forecasts.compute(wallet_id)
        with self.ledger.uow(False) as uow:
            daily = uow.dashboard.daily_usage(wallet_id, first_day)
        history = self.ledger.ledger_page(wallet_id, limit=rules.HISTORY_PAGE_SIZE,
                                          cursor=before)
        features = list(self.catalog.features.values())
        chart = rules.daily_usage_chart(daily, [(f.key, f.label) for f in features], today)
        discount = self.catalog.auto_recharge.discount_percent
        bundles = []
        for b in self.catalog.bundles.values():
            bundles.append({
                "key": b.key,
                "label": b.label or b.key,
                "description": b.description,
                "credits": b.credits,
                "price": str(b.price),
                "currency": b.currency,
                "expires_after_days": b.expires_after_days,
                "value": rules.value_texts(b.credits,
                                           [(f.unit, f.credits_per_unit) for f in features]),
                "idempotency_key": f"dashboard:{secrets.token_hex(16)}",
                "auto_price": str(discounted(b.price, discount, b.currency)),
            })
        expiries = [
            {"credits": block["remaining"],
             "date": rules.long_date(datetime.fromisoformat(block["expires_at"]))}
            for block in sorted(
                (b for b in wallet["blocks"] if b["expires_at"] and b["remaining"] > 0),
                key=lambda b: b["expires_at"],
            )
        ]
        entries = [
            {**e, "sentence": f"{e['description']} on "
                              f"{rules.short_date(datetime.fromisoformat(e['created_at']), today)}"}
            for e in history["entries"]
        ]
        return {
            "wallet": wallet,
            "fmt": fmt,
            "value": wallet["value"],
            # The API's forecast, in words: the one runway computation (app.domain.forecast).
            "runway": runway_sentence(runway),
            "chart": chart,
            "history": {"entries": entries, "next_cursor": history["next_cursor"],
                        "first_page": before is None},
            "expiries": expiries,
            "bundles": bundles,
            "buy_disabled_reason": policy.buy_disabled_reason,
            "discount_percent": discount,
            "discount_text": (f"save {_percent(discount)} when you turn on auto-recharge"
                              if discount > 0 else None),
            "auto_recharge_disabled_reason": policy.auto_recharge_disabled_reason,
            "today": today,
        }

    def history_rows(self, wallet_id: str) -> Iterator[list[str]]:
        """The whole ledger as CSV rows, newest first, read a page at a time."""
        yield ["id", "date", "kind", "credits", "balance_after", "description", "feature",
               "quantity"]
        cursor: str | None = None
        while True:
            page = self.ledger.ledger_page(wallet_id, limit=200, cursor=cursor)
            for e in page["entries"]:
                yield [str(e["id"]), e["created_at"], e["kind"], str(e["amount"]),
                       str(e["balance_after"]), _csv_text(e["description"]),
                       e["feature"] or "", "" if e["quantity"] is None else str(e["quantity"])]
            cursor = page["next_cursor"]
            if cursor is None:
                return

    # -- actions ------------------------------------------------------------------------------

    def buy(self, wallet_id: str, bundle: str, idempotency_key: str,
            session: Session) -> Outcome:
        reason = self.policy_for_session(session).buy_disabled_reason
        if reason is not None:
            raise BuyingDisabled(reason)
        if bundle not in self.catalog.bundles:
            raise InvalidRequest("that pack is not for sale; reload the page")
        if not BUY_KEY_RE.match(idempotency_key or ""):
            raise InvalidRequest("the form is out of date; reload the page and try again")
        return self.ledger.top_up_bundle(wallet_id, bundle, idempotency_key=idempotency_key)

    def save_alerts(self, wallet_id: str, form: Mapping[str, str]) -> Outcome:
        data = {
            "thresholds_percent": rules.parse_number_list(
                form.get("thresholds_percent", ""), "Percent thresholds"),
            "thresholds_credits": rules.parse_number_list(
                form.get("thresholds_credits", ""), "Credit thresholds"),
            "notify_at_zero": form.get("notify_at_zero") == "on",
        }
        return self.ledger.set_alerts(wallet_id, data)

    def save_auto_recharge(self, wallet_id: str, form: Mapping[str, str],
                           session: Session) -> Outcome:
        reason = self.policy_for_session(session).auto_recharge_disabled_reason
        if reason is not None:
            raise BuyingDisabled(reason)
        enabled = form.get("enabled") == "on"
        threshold_text = form.get("threshold_credits", "").strip()
        bundle = form.get("bundle") or None
        data: dict[str, Any] = {"enabled": enabled}
        if enabled or threshold_text or bundle:
            data["threshold_credits"] = rules.parse_whole_number(
                threshold_text, "The auto-recharge threshold")
            data["bundle"] = bundle
        return self.ledger.set_auto_recharge(wallet_id, data)


def _actions(payload: dict[str, Any]) -> frozenset[str]:
    """The signed actions of a link or session; anything else in that field grants nothing."""
    granted = payload.get("a")
    if not isinstance(granted, list):
        return frozenset()
    return frozenset(a for a in granted if isinstance(a, str)) & ACTIONS


class BuyingDisabled(Exception):
    """The operator does not allow this action on the page (403)."""


def _iso(moment: datetime) -> str:
    return moment.isoformat().replace("+00:00", "Z")


def _percent(value: Any) -> str:
    text = format(value.normalize(), "f") if hasattr(value, "normalize") else str(value)
    return f"{text}%"


def _csv_text(value: str) -> str:
    """Text a spreadsheet would run as a formula is prefixed with a quote (OWASP)."""
    return "'" + value if value[:1] in ("=", "+", "-", "@", "\t", "\r") else value
