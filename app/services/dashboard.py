"""The customer dashboard's use cases: signed links, the link's one session, and what the page
shows and does.

A link (`create_link`) is `/dashboard/<wallet>?token=...` where the token signs the wallet id,
when it was made, an expiry, a link id and the principal who asked for it (its maker). Opening
it (`open_link`) starts the link's one session, recorded under the link id (a second open of
the same link is refused: `LinkAlreadyUsed`); the session ends 60 minutes after the link was
made at the latest, or at "Sign out" (`sign_out`). The HTTP layer keeps the session in an
HttpOnly, SameSite=Strict cookie, and every form on the page carries a CSRF token derived from
the session.

Every page action is an operation of the access table (app.domain.access), decided for the
link's maker exactly as the API decides it for their token: buying needs what
`POST /top-ups {bundle}` needs, auto-recharge what `PUT /auto-recharge` needs, and an unbilled
sale (DASHBOARD_UNBILLED_PURCHASES) credits:admin. Buying goes through the same sale path as the
API (app.services.payment_standing.sell_pack), with an idempotency key minted when the page is
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
from app.domain.access import RULES, allowed
from app.domain.dashboard import AccessRefused
from app.domain.forecast import runway_sentence
from app.domain.ledger import InvalidRequest
from app.domain.money import discounted
from app.domain.principal import SCOPE_LEVELS, Principal, is_org_code, is_user_id
from app.domain.text import spreadsheet_safe
from app.domain.usage_terms import fmt
from app.services.ledger import LedgerService, Outcome
from app.services.payment_standing import OVERDUE_MESSAGE, SaleGuard, sell_pack
from app.services.ports import LinkSession, Signer

LINK = "link"
SESSION = "session"
CSRF = "csrf"
# fullmatch: `$` would also accept a trailing newline.
BUY_KEY_RE = re.compile(r"dashboard:[0-9a-f]{32}")


class InvalidSignature(Exception):
    """A token whose signature does not verify (raised by Signer implementations)."""


@dataclass(frozen=True)
class Session:
    wallet_id: str
    # The link's id: the session is recorded under it (uow.link_sessions).
    sid: str
    expires_at: datetime
    # Who asked for the link, signed into the link and the session: every page action is
    # decided for this principal by the access table, as the API decides it for their token.
    maker: Principal


class LinkAlreadyUsed(Exception):
    """A link that already opened its one session (403 with a page that says so)."""


class SignedOut(Exception):
    """A session that was ended with "Sign out"."""


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
        sales: SaleGuard,
    ) -> None:
        self.ledger = ledger
        self.sales = sales
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

    def create_link(self, wallet_id: str, ttl_seconds: object, base_url: str | None,
                    maker: Principal) -> dict[str, str]:
        """A link for `maker` (who may reach the wallet: the API checked it). `base_url` is
        DASHBOARD_BASE_URL; without it the link is a path, never built from request headers."""
        ttl = rules.link_ttl(ttl_seconds)
        now = self.clock()
        made = int(now.timestamp())
        expires = made + ttl
        token = self.signer.sign(LINK, {"w": wallet_id, "iat": made, "exp": expires,
                                        "n": secrets.token_urlsafe(16),
                                        "m": _maker_claims(maker)})
        url = f"{(base_url or '').rstrip('/')}/dashboard/{quote(wallet_id)}?token={token}"
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
        """The link's one session: for the wallet the (valid, unexpired) link was made for, at
        most 60 minutes after the link was made. A second open of the link (from any browser,
        on any instance, however close in time) is refused with `LinkAlreadyUsed`."""
        payload = self._grant(LINK, token, wallet_id)
        link_id, made, maker = payload.get("n"), payload.get("iat"), _maker(payload.get("m"))
        if not isinstance(link_id, str) or not link_id or len(link_id) > 64 \
                or isinstance(made, bool) or not isinstance(made, int) or maker is None:
            raise AccessRefused("the link is not valid")
        now = self.clock()
        expires = min(now + timedelta(seconds=rules.SESSION_SECONDS),
                      datetime.fromtimestamp(made, UTC) + timedelta(seconds=rules.SESSION_SECONDS))
        session = Session(wallet_id, link_id, expires, maker)
        with self.ledger.uow(True) as uow:
            if not uow.link_sessions.open(LinkSession(link_id, wallet_id, now, expires, None)):
                raise LinkAlreadyUsed(link_id)
            uow.commit()
        return session

    def session_cookie(self, session: Session) -> str:
        return self.signer.sign(SESSION, {"w": session.wallet_id, "sid": session.sid,
                                          "exp": int(session.expires_at.timestamp()),
                                          "m": _maker_claims(session.maker)})

    def resume(self, wallet_id: str, cookie: str | None) -> Session:
        """The session a cookie carries, while its recorded session is open."""
        payload = self._grant(SESSION, cookie or "", wallet_id)
        sid, maker = payload.get("sid"), _maker(payload.get("m"))
        if not isinstance(sid, str) or maker is None:
            raise AccessRefused("not a session")
        with self.ledger.uow(False) as uow:
            recorded = uow.link_sessions.get(sid)
        if recorded is None or recorded.wallet_id != wallet_id:
            raise AccessRefused("not a session")
        if recorded.ended_at is not None:
            raise SignedOut(sid)
        if self.clock() >= recorded.expires_at:
            raise AccessRefused("the session has ended")
        return Session(wallet_id, sid, recorded.expires_at, maker)

    def sign_out(self, session: Session) -> None:
        """End the session now; its cookie grants nothing afterwards, on any instance."""
        with self.ledger.uow(True) as uow:
            uow.link_sessions.end(session.sid, self.clock())
            uow.commit()

    def may(self, operation: str, session: Session) -> bool:
        """The access table's answer for the link's maker (app.domain.access)."""
        return allowed(RULES[operation], session.maker, session.wallet_id)

    def buy_operation(self) -> str:
        """A sale invoiced through Kinde, or one nobody is charged for (an admin's only)."""
        return "dashboard.buy" if self.ledger.sales_are_invoiced() else "dashboard.buy.unbilled"

    def _overdue(self, wallet_id: str) -> bool:
        with self.ledger.uow(False) as uow:
            return uow.payment_standing.overdue(wallet_id)

    def policy_for_session(self, session: Session) -> Policy:
        """The operator's policy, narrowed to what the link's maker may do through the API."""
        buy, recharge = self.policy.buy_disabled_reason, self.policy.auto_recharge_disabled_reason
        if buy is None and not self.may(self.buy_operation(), session):
            buy = ("Packs cannot be bought from this link: buying needs permission to buy "
                   "credits for this account. Ask an account admin.")
        if buy is None and self._overdue(session.wallet_id):  # the page buys as the customer
            buy = OVERDUE_MESSAGE
        if recharge is None and not self.may("dashboard.auto_recharge", session):
            recharge = ("Auto-recharge cannot be changed from this link: it needs an account "
                        "admin.")
        return Policy(buy, recharge)

    def alerts_disabled_reason(self, session: Session) -> str | None:
        if self.may("dashboard.alerts", session):
            return None
        return "Alerts cannot be changed from this link: it needs an account admin."

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
            "alerts_disabled_reason": self.alerts_disabled_reason(session),
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
                       str(e["balance_after"]), spreadsheet_safe(e["description"]),
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
        if not BUY_KEY_RE.fullmatch(idempotency_key or ""):
            raise InvalidRequest("the form is out of date; reload the page and try again")
        # A page buy is the customer's own purchase, whoever made the link: after a failed
        # payment it waits like any sale not made by an admin (DESIGN "Who may spend").
        return sell_pack(self.ledger, self.sales, wallet_id, bundle,
                         by_admin=False, idempotency_key=idempotency_key)

    def save_alerts(self, wallet_id: str, form: Mapping[str, str], session: Session) -> Outcome:
        reason = self.alerts_disabled_reason(session)
        if reason is not None:
            raise BuyingDisabled(reason)
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


def _maker_claims(maker: Principal) -> dict[str, Any]:
    """The maker as signed into a link: kind, subject, org and credits scopes (nothing else
    decides a page action)."""
    return {"k": "m" if maker.is_machine else "u", "s": maker.subject, "o": maker.org_code,
            "sc": sorted(s for s in maker.scopes if s in SCOPE_LEVELS)}


def _maker(claims: object) -> Principal | None:
    """The maker a signed link or session names; None for anything malformed (grants
    nothing). Links made before makers were signed in carry none, and open nothing."""
    if not isinstance(claims, dict) or claims.get("k") not in ("m", "u"):
        return None
    subject, org, scopes = claims.get("s"), claims.get("o"), claims.get("sc")
    if not isinstance(scopes, list) or not all(s in SCOPE_LEVELS for s in scopes):
        return None
    if org is not None and not is_org_code(org):
        return None
    machine = claims["k"] == "m"
    if not machine and not is_user_id(subject):
        return None
    if subject is not None and not isinstance(subject, str):
        return None
    return Principal(subject=subject, org_code=org, scopes=frozenset(scopes),
                     is_machine=machine, client_id=None)


class BuyingDisabled(Exception):
    """This action is not allowed on the page: by the operator, or to the link's maker
    (403)."""


def _iso(moment: datetime) -> str:
    return moment.isoformat().replace("+00:00", "Z")


def _percent(value: Any) -> str:
    text = format(value.normalize(), "f") if hasattr(value, "normalize") else str(value)
    return f"{text}%"
