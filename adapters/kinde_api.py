"""Client for the parts of Kinde's Management API that kinde-credits uses.

One `KindeManagementClient` is shared by every worker thread of a process. It fetches an M2M
access token with the client-credentials grant, caches it until shortly before it expires, and
turns every way a call can fail into one of a few typed exceptions, so the outbox worker can
decide between "retry later", "retry after N seconds", "give up" and "outcome unknown".

Every path, parameter and body field here was checked against Kinde's official OpenAPI spec
(`/work/shared/kinde/kinde-management-api.yaml`); the integration tests validate each request
the client sends against that spec. Where the spec and REFERENCE.md differ, a comment says so.

Secrets and access tokens never appear in log lines, exception messages or reprs.
"""

from __future__ import annotations

import logging
import math
import threading
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Literal
from urllib.parse import quote

import requests
from urllib3.exceptions import NewConnectionError

from app.services.ports import (
    Agreement,
    KindeApiError,
    KindeAuthError,
    KindeNotFound,
    KindeRateLimited,
    KindeRequestRejected,
    KindeUnavailable,
)

log = logging.getLogger(__name__)

MeterTypeCode = Literal["absolute", "delta"]

DEFAULT_RETRY_AFTER_SECONDS = 60.0
# Kinde caps page_size at 500 (REFERENCE.md); the spec only says the default is 10. Agreements
# and entitlements per customer are few, so a moderate page keeps answers small and fast.
PAGE_SIZE = 100
# A safety net against a server that keeps answering has_more=true: never loop forever.
MAX_PAGES = 1000
# Refresh the token this long before it expires (or 10% of its lifetime if that is shorter),
# so a token never expires between being read from the cache and reaching Kinde.
TOKEN_REFRESH_MARGIN_SECONDS = 60.0
_MAX_ERROR_TEXT = 300
_BROKEN_ANSWER = (
    requests.exceptions.ChunkedEncodingError,
    requests.exceptions.ContentDecodingError,
)


# -- exceptions -------------------------------------------------------------------------------


# The error types live with the port (app.services.ports), so services never import this
# module; they are re-exported here for the client's callers.


# -- results ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Entitlement:
    id: str | None
    feature_code: str
    feature_name: str | None
    unit_amount: int | None
    entitlement_limit_max: int | None
    entitlement_limit_min: int | None


@dataclass(frozen=True)
class Entitlements:
    feature_codes: tuple[str, ...]
    plan_codes: tuple[str, ...]
    items: tuple[Entitlement, ...] = ()


@dataclass(frozen=True)
class KindeUser:
    id: str
    email: str | None
    customer_id: str | None


@dataclass(frozen=True)
class OrgAgreement:
    agreement_id: str
    plan_code: str | None


@dataclass(frozen=True)
class OrgBilling:
    org_code: str
    customer_id: str | None
    agreements: tuple[OrgAgreement, ...]


@dataclass(frozen=True)
class WebhookSubscription:
    id: str
    name: str | None
    endpoint: str | None
    event_types: tuple[str, ...]
    description: str | None = None
    created_on: str | None = None


@dataclass(frozen=True)
class EventType:
    code: str
    name: str | None
    origin: str | None = None
    id: str | None = None
    # A JSON schema; compare=False/hash=False because dicts are unhashable.
    schema: Mapping[str, Any] = field(default_factory=dict, compare=False, hash=False)


@dataclass
class _Token:
    value: str
    refresh_at: float  # on the client's monotonic clock

    def __repr__(self) -> str:  # never show the token itself
        return f"_Token(refresh_at={self.refresh_at})"


# -- client -----------------------------------------------------------------------------------


class KindeManagementClient:
    """Thread-safe Kinde Management API client (one per process, shared by worker threads)."""

    def __init__(
        self,
        domain: str,
        client_id: str,
        client_secret: str,
        *,
        timeout: float = 5.0,
        session: requests.Session | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._domain = domain.rstrip("/")
        self._client_id = client_id
        self._client_secret = client_secret
        # Connecting should be quick everywhere; a slow connect means Kinde is unreachable.
        self._timeout = (min(timeout, 3.05), timeout)
        # Shared across threads: urllib3's connection pool is thread-safe, and we use no
        # cookies or other per-session state that concurrent requests could race on.
        self._session = session if session is not None else requests.Session()
        self._clock = clock
        self._token_lock = threading.Lock()
        self._token: _Token | None = None

    def __repr__(self) -> str:
        return f"KindeManagementClient(domain={self._domain!r}, client_id={self._client_id!r})"

    @property
    def domain(self) -> str:
        return self._domain

    # -- billing ------------------------------------------------------------------------------

    def record_meter_usage(
        self,
        customer_agreement_id: str,
        billing_feature_code: str,
        meter_value: int,
        *,
        meter_type_code: MeterTypeCode = "absolute",
        meter_usage_timestamp: datetime | None = None,
    ) -> None:
        """Report usage of a metered feature on an agreement.

        `absolute` sets the current period's total; `delta` adds to it. Kinde has no idempotency
        key, so a resent `delta` after `KindeUnavailable(outcome_unknown=True)` may count twice.
        """
        if isinstance(meter_value, bool) or not isinstance(meter_value, int):
            raise TypeError("meter_value must be an int")
        if meter_type_code not in ("absolute", "delta"):
            raise ValueError(f"meter_type_code must be 'absolute' or 'delta': {meter_type_code!r}")
        body: dict[str, Any] = {
            "customer_agreement_id": customer_agreement_id,
            "billing_feature_code": billing_feature_code,
            # The spec types meter_value as a string, even though it is a number.
            "meter_value": str(meter_value),
            # Always explicit: the spec doesn't say which type Kinde assumes when it's absent.
            "meter_type_code": meter_type_code,
        }
        if meter_usage_timestamp is not None:
            body["meter_usage_timestamp"] = _format_timestamp(meter_usage_timestamp)
        self._call("POST", "/api/v1/billing/meter_usage", json=body)

    def list_agreements(self, customer_id: str) -> list[Agreement]:
        """All of a billing customer's agreements (every page)."""
        items = self._get_all_pages(
            "/api/v1/billing/agreements", {"customer_id": customer_id}, "agreements"
        )
        return [_parse_agreement(a) for a in items]

    def get_entitlements(self, customer_id: str) -> Entitlements:
        """The features and plans a billing customer currently has."""
        # Plans are only included with expand=plans (the spec's only allowed expand value).
        plans: list[str] = []
        items: list[Entitlement] = []
        for page in self._iter_pages(
            "/api/v1/billing/entitlements",
            {"customer_id": customer_id, "expand": "plans"},
            "entitlements",
        ):
            for raw in _list_of_dicts(page.get("entitlements")):
                code = raw.get("feature_code")
                if not isinstance(code, str):
                    continue
                items.append(
                    Entitlement(
                        id=_opt_str(raw.get("id")),
                        feature_code=code,
                        feature_name=_opt_str(raw.get("feature_name")),
                        unit_amount=_opt_int(raw.get("unit_amount")),
                        entitlement_limit_max=_opt_int(raw.get("entitlement_limit_max")),
                        entitlement_limit_min=_opt_int(raw.get("entitlement_limit_min")),
                    )
                )
            for plan in _list_of_dicts(page.get("plans")):
                plan_code = plan.get("code")
                if isinstance(plan_code, str):
                    plans.append(plan_code)
        return Entitlements(
            feature_codes=_unique(e.feature_code for e in items),
            plan_codes=_unique(plans),
            items=tuple(items),
        )

    # -- users and organizations --------------------------------------------------------------

    def get_user(self, user_id: str) -> KindeUser:
        data = self._call("GET", "/api/v1/user", params={"id": user_id, "expand": "billing"})
        billing = data.get("billing")
        customer_id = billing.get("customer_id") if isinstance(billing, dict) else None
        # The spec's `user` schema has `preferred_email`; REFERENCE.md (webhook payloads) says
        # `email`. Prefer the spec's field and fall back to the other.
        email = data.get("preferred_email") or data.get("email")
        return KindeUser(
            id=_opt_str(data.get("id")) or user_id,
            email=_opt_str(email),
            customer_id=_opt_str(customer_id) or None,
        )

    def get_org_billing(self, org_code: str) -> OrgBilling:
        data = self._call(
            "GET", "/api/v1/organization", params={"code": org_code, "expand": "billing"}
        )
        billing = data.get("billing")
        if not isinstance(billing, dict):
            return OrgBilling(org_code=org_code, customer_id=None, agreements=())
        agreements = tuple(
            OrgAgreement(agreement_id=a["agreement_id"], plan_code=_opt_str(a.get("plan_code")))
            for a in _list_of_dicts(billing.get("agreements"))
            if isinstance(a.get("agreement_id"), str)
        )
        return OrgBilling(
            org_code=org_code,
            customer_id=_opt_str(billing.get("billing_customer_id")) or None,
            agreements=agreements,
        )

    # -- webhooks and events ------------------------------------------------------------------

    def list_webhooks(self) -> list[WebhookSubscription]:
        # The spec defines no pagination for GET /api/v1/webhooks.
        data = self._call("GET", "/api/v1/webhooks")
        return [
            WebhookSubscription(
                id=w["id"],
                name=_opt_str(w.get("name")),
                endpoint=_opt_str(w.get("endpoint")),
                event_types=tuple(t for t in w.get("event_types") or () if isinstance(t, str)),
                description=_opt_str(w.get("description")),
                created_on=_opt_str(w.get("created_on")),
            )
            for w in _list_of_dicts(data.get("webhooks"))
            if isinstance(w.get("id"), str)
        ]

    def create_webhook(
        self,
        endpoint: str,
        event_types: Sequence[str],
        name: str,
        description: str | None = None,
    ) -> str:
        """Subscribe `endpoint` to `event_types`; returns the new webhook's id."""
        body: dict[str, Any] = {
            "endpoint": endpoint,
            "event_types": list(event_types),
            "name": name,
        }
        if description is not None:
            body["description"] = description
        data = self._call("POST", "/api/v1/webhooks", json=body)
        webhook = data.get("webhook")
        webhook_id = webhook.get("id") if isinstance(webhook, dict) else None
        if not isinstance(webhook_id, str):
            raise KindeApiError(200, "INVALID_RESPONSE", "create webhook answer has no webhook.id")
        return webhook_id

    def update_webhook(
        self,
        webhook_id: str,
        *,
        event_types: Sequence[str],
        name: str,
        description: str | None = None,
    ) -> None:
        """Change a subscription's event types, name and description.

        The spec's PATCH body accepts only `event_types`, `name` and `description`: the endpoint
        URL cannot be changed. To move a subscription, create a new one and delete the old.
        """
        body: dict[str, Any] = {"event_types": list(event_types), "name": name}
        if description is not None:
            body["description"] = description
        self._call("PATCH", f"/api/v1/webhooks/{_segment(webhook_id)}", json=body)

    def list_event_types(self) -> list[EventType]:
        data = self._call("GET", "/api/v1/event_types")
        result = []
        for raw in _list_of_dicts(data.get("event_types")):
            code = raw.get("code")
            if not isinstance(code, str):
                continue
            schema = raw.get("schema")
            result.append(
                EventType(
                    code=code,
                    name=_opt_str(raw.get("name")),
                    origin=_opt_str(raw.get("origin")),
                    id=_opt_str(raw.get("id")),
                    schema=schema if isinstance(schema, dict) else {},
                )
            )
        return result

    # -- token --------------------------------------------------------------------------------

    def _get_token(self) -> _Token:
        # One lock for read and fetch: when the token runs out, one thread fetches and the
        # others wait for it instead of stampeding the token endpoint.
        with self._token_lock:
            token = self._token
            if token is not None and self._clock() < token.refresh_at:
                return token
            token = self._fetch_token()
            self._token = token
            return token

    def _drop_token(self, token: _Token) -> None:
        # Only drop the token this call used; another thread may already have replaced it.
        with self._token_lock:
            if self._token is token:
                self._token = None

    def _fetch_token(self) -> _Token:
        url = f"{self._domain}/oauth2/token"
        data = {
            "grant_type": "client_credentials",
            "client_id": self._client_id,
            "client_secret": self._client_secret,
            "audience": f"{self._domain}/api",
        }
        started = self._clock()
        response = self._send("POST", url, data=data, headers={"Accept": "application/json"})
        if response.status_code != 200:
            error = _error_from_response(response)
            if response.status_code in (400, 401, 403):
                raise KindeAuthError(response.status_code, error.code, error.message)
            raise error
        body = _json_body(response)
        access_token = body.get("access_token")
        if not isinstance(access_token, str) or not access_token:
            raise KindeApiError(200, "INVALID_TOKEN_RESPONSE", "token answer has no access_token")
        expires_in = _opt_float(body.get("expires_in"))
        if expires_in is None or expires_in <= 0:
            expires_in = 60.0  # unknown lifetime: treat as short rather than trust it forever
        margin = min(TOKEN_REFRESH_MARGIN_SECONDS, expires_in * 0.1)
        log.debug("fetched Kinde M2M token (expires_in=%s)", expires_in)
        # Count from when we asked, not when the answer arrived: errs on the early side.
        return _Token(value=access_token, refresh_at=started + expires_in - margin)

    # -- plumbing -----------------------------------------------------------------------------

    def _call(
        self,
        method: str,
        path: str,
        *,
        params: Mapping[str, str | int] | None = None,
        json: Any = None,
    ) -> dict[str, Any]:
        url = f"{self._domain}{path}"
        token = self._get_token()
        response = self._send_authorized(method, url, token, params=params, json=json)
        if response.status_code == 401:
            # The token was revoked or expired early: a 401 means the call was not applied, so
            # resending it (even a delta meter usage) is safe. Once only.
            self._drop_token(token)
            token = self._get_token()
            response = self._send_authorized(method, url, token, params=params, json=json)
        if 200 <= response.status_code < 300:
            if not response.content:
                return {}
            return _json_body(response)
        raise _error_from_response(response)

    def _send_authorized(
        self,
        method: str,
        url: str,
        token: _Token,
        *,
        params: Mapping[str, str | int] | None,
        json: Any,
    ) -> requests.Response:
        headers = {"Authorization": f"Bearer {token.value}", "Accept": "application/json"}
        return self._send(method, url, params=params, json=json, headers=headers)

    def _send(
        self,
        method: str,
        url: str,
        *,
        params: Mapping[str, str | int] | None = None,
        json: Any = None,
        data: Mapping[str, str] | None = None,
        headers: Mapping[str, str],
    ) -> requests.Response:
        try:
            return self._session.request(
                method,
                url,
                params=params,
                json=json,
                data=data,
                headers=dict(headers),
                timeout=self._timeout,
                allow_redirects=False,
            )
        except requests.ConnectTimeout as exc:
            # Never connected, so nothing was sent.
            raise KindeUnavailable(
                None, "CONNECT_TIMEOUT", _describe(exc), outcome_unknown=False
            ) from None
        except requests.ReadTimeout as exc:
            raise KindeUnavailable(None, "TIMEOUT", _describe(exc), outcome_unknown=True) from None
        except requests.ConnectionError as exc:
            raise KindeUnavailable(
                None, "CONNECTION_ERROR", _describe(exc), outcome_unknown=not _never_sent(exc)
            ) from None
        except _BROKEN_ANSWER as exc:
            # The answer broke off mid-body: Kinde got the request and answered something.
            raise KindeUnavailable(
                None, "BROKEN_ANSWER", _describe(exc), outcome_unknown=True
            ) from None

    def _iter_pages(
        self, path: str, params: Mapping[str, str], list_key: str
    ) -> Iterable[dict[str, Any]]:
        """Follow `has_more` with `starting_after` = the id of the last item of the page."""
        cursor: str | None = None
        for _ in range(MAX_PAGES):
            query: dict[str, str | int] = {**params, "page_size": PAGE_SIZE}
            if cursor is not None:
                query["starting_after"] = cursor
            page = self._call("GET", path, params=query)
            yield page
            items = _list_of_dicts(page.get(list_key))
            if not page.get("has_more") or not items:
                return
            last_id = items[-1].get("id")
            if not isinstance(last_id, str) or last_id == cursor:
                raise KindeApiError(200, "INVALID_RESPONSE", f"cannot paginate {path}")
            cursor = last_id
        raise KindeApiError(200, "INVALID_RESPONSE", f"more than {MAX_PAGES} pages from {path}")

    def _get_all_pages(
        self, path: str, params: Mapping[str, str], list_key: str
    ) -> list[dict[str, Any]]:
        result: list[dict[str, Any]] = []
        for page in self._iter_pages(path, params, list_key):
            result.extend(_list_of_dicts(page.get(list_key)))
        return result


# -- helpers ----------------------------------------------------------------------------------


def _format_timestamp(value: datetime) -> str:
    """RFC 3339 in UTC, as the spec's `format: date-time` requires.

    The spec's example, '2024-11-18T13:32:03+11', is not valid RFC 3339 (its offset lacks
    minutes), so we send 'YYYY-MM-DDTHH:MM:SSZ' instead of copying the example.
    """
    if value.tzinfo is None or value.utcoffset() is None:
        raise ValueError("meter_usage_timestamp must be timezone-aware")
    return value.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _parse_datetime(value: Any) -> datetime | None:
    if value is None or value == "":
        return None
    if not isinstance(value, str):
        raise KindeApiError(200, "INVALID_RESPONSE", f"not a date-time: {value!r}")
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError:
        raise KindeApiError(200, "INVALID_RESPONSE", f"not a date-time: {value!r}") from None
    return parsed if parsed.tzinfo is not None else parsed.replace(tzinfo=UTC)


def _parse_agreement(raw: Mapping[str, Any]) -> Agreement:
    agreement_id = raw.get("id")
    if not isinstance(agreement_id, str):
        raise KindeApiError(200, "INVALID_RESPONSE", "agreement without id")
    return Agreement(
        id=agreement_id,
        plan_code=_opt_str(raw.get("plan_code")),
        current_period_start=_parse_datetime(raw.get("current_period_start")),
        current_period_end=_parse_datetime(raw.get("current_period_end")),
        expires_on=_parse_datetime(raw.get("expires_on")),
        feature_codes=_unique(
            e["feature_code"]
            for e in _list_of_dicts(raw.get("entitlements"))
            if isinstance(e.get("feature_code"), str)
        ),
        billing_group_id=_opt_str(raw.get("billing_group_id")),
    )


def _json_body(response: requests.Response) -> dict[str, Any]:
    try:
        body = response.json()
    except ValueError:
        raise KindeApiError(
            response.status_code, "INVALID_RESPONSE", f"not JSON: {_snippet(response)}"
        ) from None
    if not isinstance(body, dict):
        raise KindeApiError(response.status_code, "INVALID_RESPONSE", "JSON answer not an object")
    return body


def _error_from_response(response: requests.Response) -> KindeApiError:
    """Map a non-2xx answer to the matching exception (without raising it)."""
    status = response.status_code
    code, message = _error_details(response)
    if status == 429:
        return KindeRateLimited(
            code, message, retry_after_seconds=_retry_after(response.headers.get("RateLimit-Reset"))
        )
    if status >= 500:
        # 503 says "not processed"; any other 5xx may come after Kinde applied the request.
        return KindeUnavailable(status, code, message, outcome_unknown=status != 503)
    if status == 404:
        return KindeNotFound(status, code, message)
    if status in (401, 403):
        return KindeAuthError(status, code, message)
    if 400 <= status < 500:
        return KindeRequestRejected(status, code, message)
    # 1xx/3xx (redirects are not followed: a redirect means a wrong domain or path).
    return KindeApiError(status, code, message)


def _error_details(response: requests.Response) -> tuple[str, str]:
    default_code = f"HTTP_{response.status_code}"
    try:
        body = response.json()
    except ValueError:
        return default_code, _snippet(response) or response.reason or default_code
    if isinstance(body, dict):
        errors = body.get("errors")
        # error_response has a list of errors; the spec's not_found_response has one object.
        first = errors[0] if isinstance(errors, list) and errors else errors
        if isinstance(first, dict):
            return (
                str(first.get("code") or default_code),
                str(first.get("message") or first.get("code") or default_code),
            )
        # The OAuth token endpoint answers errors in RFC 6749 form.
        if isinstance(body.get("error"), str):
            return body["error"], str(body.get("error_description") or body["error"])
    return default_code, _snippet(response) or default_code


def _retry_after(header: str | None) -> float:
    if header is None:
        return DEFAULT_RETRY_AFTER_SECONDS
    try:
        seconds = float(header.strip())
    except ValueError:
        return DEFAULT_RETRY_AFTER_SECONDS
    if not math.isfinite(seconds) or seconds < 0:
        return DEFAULT_RETRY_AFTER_SECONDS
    return seconds


def _never_sent(exc: requests.ConnectionError) -> bool:
    """True when the connection failed before the request could be sent (refused, DNS, TLS)."""
    if isinstance(exc, requests.exceptions.SSLError):
        return True
    reason = exc.args[0] if exc.args else None
    reason = getattr(reason, "reason", reason)  # urllib3 MaxRetryError wraps the cause
    return isinstance(reason, NewConnectionError)


def _describe(exc: BaseException) -> str:
    # Exception texts from requests name the URL, never headers or body, so no secret leaks.
    return f"{type(exc).__name__}: {exc}"[:_MAX_ERROR_TEXT]


def _snippet(response: requests.Response) -> str:
    try:
        text = response.text
    except Exception:  # a broken charset must not hide the status
        return ""
    return " ".join(text.split())[:_MAX_ERROR_TEXT]


def _segment(value: str) -> str:
    return quote(value, safe="")


def _list_of_dicts(value: Any) -> list[dict[str, Any]]:
    if not isinstance(value, list):
        return []
    return [item for item in value if isinstance(item, dict)]


def _unique(values: Iterable[str]) -> tuple[str, ...]:
    return tuple(dict.fromkeys(values))


def _opt_str(value: Any) -> str | None:
    return value if isinstance(value, str) else None


def _opt_int(value: Any) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def _opt_float(value: Any) -> float | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, int | float):
        return float(value)
    if isinstance(value, str):
        try:
            return float(value)
        except ValueError:
            return None
    return None
