"""The customer's dashboard: server-rendered HTML (Jinja2), a little CSS and JavaScript shipped
in the package, nothing from a CDN.

- `GET /dashboard/<wallet>?token=...` opens a signed link: it starts the link's one session for
  that wallet (an HttpOnly, SameSite=Strict cookie scoped to `/dashboard/<wallet>`) and shows
  the page. A second open of the same link is refused with a page that says so. The page is
  rendered on that very request rather than after a redirect, because a browser does not send
  a SameSite=Strict cookie on a redirect that a cross-site link started.
- `GET /dashboard/<wallet>` (the cookie) shows it again; `?before=` pages the history.
- `GET /dashboard/<wallet>/history.csv` downloads the whole history.
- `POST /dashboard/<wallet>/buy|alerts|auto-recharge` act for the session's wallet only; each
  needs the session cookie, the form's CSRF token, and a same-origin `Origin` (or `Referer`),
  and the access table must allow the link's maker that action (app.domain.access), exactly
  as the API would. Success answers 303 back to the page; a refused form re-renders it with
  the reason (422, or the API's status for the same refusal).
- `POST /dashboard/<wallet>/sign-out` ends the session (same checks) and clears the cookie.
A missing, tampered, expired or other-wallet link or session answers 403 with a page that
shows nothing of the wallet.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Iterator
from typing import Any
from urllib.parse import urlsplit

from flask import Blueprint, Response, redirect, render_template, request, url_for
from werkzeug.datastructures import MultiDict

from app.domain.dashboard import AccessRefused
from app.domain.ledger import LedgerError
from app.http.api import container
from app.services.dashboard import (
    BuyingDisabled,
    DashboardService,
    LinkAlreadyUsed,
    Session,
    SignedOut,
)
from app.services.errors import status_for

bp = Blueprint(
    "dashboard", __name__, url_prefix="/dashboard", template_folder="templates",
    static_folder="static/dashboard", static_url_path="/static",
)

COOKIE = "kc_dashboard"
_PAGE = "/<wallet_id:wallet_id>"
_MAX_FORM_FIELD = 2000
# Where a 303 lands after each action, and the message shown there (no free text in URLs).
_DONE = {"alerts": "Your alert settings are saved.",
         "auto-recharge": "Your auto-recharge settings are saved."}
# Refusals of a sale, said to the customer in plain words (the API's messages are for
# operators).
_PLAIN = {
    "no_billing_customer": "Packs cannot be bought here yet: billing is not set up for this "
                           "account. Ask your provider to set it up, then try again.",
    "unavailable": "We could not reach the billing service, so nothing was bought. Please "
                   "try again in a minute.",
}
SECURITY_HEADERS = {
    # Only our own files; inline scripts and styles are refused, so injected markup is inert.
    "Content-Security-Policy": (
        "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
        "connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'"
    ),
    # same-origin: the link's token never leaves in a Referer, and the browser still sends
    # Origin on our own POSTs (with no-referrer it would send "Origin: null").
    "Referrer-Policy": "same-origin",
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Cache-Control": "no-store",
}


def service() -> DashboardService:
    return container().dashboard


@bp.after_request
def _headers(response: Response) -> Response:
    for name, value in SECURITY_HEADERS.items():
        if name == "Cache-Control" and request.endpoint == "dashboard.static":
            continue
        response.headers.setdefault(name, value)
    return response


@bp.errorhandler(AccessRefused)
def _refused(exc: AccessRefused) -> tuple[str, int]:
    # Say what to do, not which check failed or whose wallet it was.
    return render_template("dashboard/refused.html"), 403


@bp.errorhandler(BuyingDisabled)
def _disabled(exc: BuyingDisabled) -> tuple[str, int]:
    return render_template("dashboard/refused.html", message=str(exc)), 403


@bp.errorhandler(LinkAlreadyUsed)
def _used(exc: LinkAlreadyUsed) -> tuple[str, int]:
    return render_template(
        "dashboard/refused.html", title="This link has already been used",
        message="Each dashboard link opens once. Go back to the app and open your credits "
                "dashboard again to get a new link."), 403


@bp.errorhandler(SignedOut)
def _signed_out(exc: SignedOut) -> tuple[str, int]:
    return render_template(
        "dashboard/refused.html", title="You are signed out",
        message="You signed out of this dashboard. Go back to the app and open your credits "
                "dashboard again to get a new link."), 403


def _session(wallet_id: str) -> Session:
    session = service().resume(wallet_id, request.cookies.get(COOKIE))
    # Seeing the page is reading the wallet: the same row as GET /v1/wallets/{id}.
    if not service().may("dashboard.page", session):
        raise AccessRefused("the link's maker may not read this wallet")
    return session


def _render(wallet_id: str, session: Session, *, status: int = 200,
            error: str | None = None, error_form: str | None = None,
            form: MultiDict[str, str] | None = None) -> tuple[str, int]:
    dashboard = service()
    before = request.args.get("before") if request.method == "GET" else None
    try:
        view = dashboard.page(wallet_id, session, before=before or None)
    except LedgerError:
        # A cursor this page never gave out: show the first page instead of an error.
        view = dashboard.page(wallet_id, session)
    done = request.args.get("done", "") if request.method == "GET" else ""
    notice = _DONE.get(done)
    if done.startswith("bought:"):
        bundle = dashboard.catalog.bundles.get(done.removeprefix("bought:"))
        if bundle is not None:
            notice = f"Thank you: {bundle.label} bought, {bundle.credits:,} credits added."
    return render_template(
        "dashboard/page.html", v=view, wallet_id=wallet_id,
        csrf_token=dashboard.csrf_token(session), notice=notice, error=error,
        error_form=error_form, form=form or MultiDict(),
    ), status


@bp.get(_PAGE)
def page(wallet_id: str) -> Any:
    token = request.args.get("token")
    if token is not None:
        dashboard = service()
        session = dashboard.open_link(wallet_id, token)
        body, status = _render(wallet_id, session)
        response = Response(body, status, mimetype="text/html")
        response.set_cookie(
            COOKIE, dashboard.session_cookie(session),
            expires=session.expires_at, path=f"/dashboard/{wallet_id}",
            httponly=True, samesite="Strict", secure=_secure(),
        )
        return response
    return _render(wallet_id, _session(wallet_id))


@bp.get(f"{_PAGE}/history.csv")
def history_csv(wallet_id: str) -> Response:
    _session(wallet_id)
    rows = service().history_rows(wallet_id)

    def stream() -> Iterator[str]:
        buffer = io.StringIO()
        writer = csv.writer(buffer)
        for row in rows:
            writer.writerow(row)
            yield buffer.getvalue()
            buffer.seek(0)
            buffer.truncate()

    return Response(stream(), mimetype="text/csv", headers={
        "Content-Disposition": f'attachment; filename="credits-history-{wallet_id}.csv"'})


def _checked_form(wallet_id: str) -> tuple[Session, MultiDict[str, str]]:
    """The session and form of a page POST, after the cross-site checks."""
    if not _same_origin():
        raise AccessRefused("cross-site request")
    session = _session(wallet_id)
    form = request.form
    if any(len(value) > _MAX_FORM_FIELD for value in form.values()):
        raise AccessRefused("form too large")
    service().check_csrf(session, form.get("csrf_token"))
    return session, form


def _back(wallet_id: str, done: str, anchor: str) -> Any:
    url = url_for("dashboard.page", wallet_id=wallet_id, done=done, _anchor=anchor)
    return redirect(url, code=303)


@bp.post(f"{_PAGE}/buy")
def buy(wallet_id: str) -> Any:
    session, form = _checked_form(wallet_id)
    bundle = form.get("bundle", "")
    try:
        service().buy(wallet_id, bundle, form.get("idempotency_key", ""), session)
    except LedgerError as exc:
        return _render(wallet_id, session, status=status_for(exc),
                       error=_PLAIN.get(exc.code, exc.message), error_form="buy")
    return _back(wallet_id, f"bought:{bundle}", "buy")


@bp.post(f"{_PAGE}/alerts")
def alerts(wallet_id: str) -> Any:
    session, form = _checked_form(wallet_id)
    try:
        service().save_alerts(wallet_id, form, session)
    except LedgerError as exc:
        return _render(wallet_id, session, status=422, error=exc.message,
                       error_form="alerts", form=form)
    return _back(wallet_id, "alerts", "alerts")


@bp.post(f"{_PAGE}/auto-recharge")
def auto_recharge(wallet_id: str) -> Any:
    session, form = _checked_form(wallet_id)
    try:
        service().save_auto_recharge(wallet_id, form, session)
    except LedgerError as exc:
        return _render(wallet_id, session, status=422, error=exc.message,
                       error_form="auto-recharge", form=form)
    return _back(wallet_id, "auto-recharge", "auto-recharge")


@bp.post(f"{_PAGE}/sign-out")
def sign_out(wallet_id: str) -> Any:
    session, _ = _checked_form(wallet_id)
    service().sign_out(session)
    response = Response(render_template(
        "dashboard/refused.html", title="You are signed out",
        message="You signed out of your credits dashboard. To see it again, open it from "
                "the app."), 200, mimetype="text/html")
    response.delete_cookie(COOKIE, path=f"/dashboard/{wallet_id}", httponly=True,
                           samesite="Strict", secure=_secure())
    return response


def _origin(url: str) -> str | None:
    parts = urlsplit(url)
    if not parts.scheme or not parts.netloc:
        return None
    return f"{parts.scheme}://{parts.netloc}".lower()


def _allowed_origins() -> set[str]:
    allowed = {_origin(request.host_url)}
    configured = container().settings.dashboard_base_url
    if configured:
        allowed.add(_origin(configured))
    return {o for o in allowed if o}


def _same_origin() -> bool:
    """The POST came from our own page: Fetch metadata, then Origin, then Referer."""
    if request.headers.get("Sec-Fetch-Site", "same-origin") not in ("same-origin", "none"):
        return False
    origin = request.headers.get("Origin")
    if origin is None:
        referer = request.headers.get("Referer")
        origin = _origin(referer) if referer else None
    return origin is not None and origin.lower() in _allowed_origins()


def _secure() -> bool:
    base = container().settings.dashboard_base_url or ""
    return request.is_secure or base.startswith("https://")
