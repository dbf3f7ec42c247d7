"""A fake Kinde (token endpoint + the Management API calls we make), as a real HTTP server.

Runs on 127.0.0.1 at an ephemeral port in daemon threads. Every API request is validated against
Kinde's official OpenAPI spec (`/work/shared/kinde/kinde-management-api.yaml`) with openapi-core,
strictly: undeclared body properties and undeclared query parameters count as violations too,
so a client can't drift from the real API by sending something Kinde would ignore or reject.
A violating request gets a 400 in Kinde's error format and is recorded in `spec_violations`.

    with FakeKinde() as kinde:
        kinde.add_customer("customer_1", user_id="kp_1", email="a@example.com")
        kinde.add_agreement("customer_1", "agreement_1", "pro", ["credits"], start, end)
        client = KindeManagementClient(kinde.url, kinde.client_id, kinde.client_secret)
        client.record_meter_usage("agreement_1", "credits", 5)
        assert kinde.usage_total("agreement_1", "credits") == 5
        assert kinde.spec_violations == []

Faults (thread-safe, each consumed by the next matching requests; by default they match API
calls only, not the token endpoint): `fail_next`, `stall_next`, `hold_next` (until
`release_held`), `rate_limit_next`,
`lose_answer_next` (applies the request, then drops the connection unanswered), and `outage`.

Behaviour the spec doesn't pin down (unknown ids, token errors) is modelled on Kinde's documented
error format and marked UNCONFIRMED where it matters.
"""

from __future__ import annotations

import json
import re
import secrets
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

from openapi_core import Config, OpenAPI
from openapi_core.contrib.werkzeug import WerkzeugOpenAPIRequest
from werkzeug.test import EnvironBuilder
from werkzeug.wrappers import Request

from tests.fakes.loopback import FakeServer

SPEC_PATH = Path("/work/shared/kinde/kinde-management-api.yaml")
# The spec's only server is https://{subdomain}.kinde.com; requests are matched as if sent there.
_SPEC_HOST_URL = "https://fake.kinde.com/"

_spec_lock = threading.RLock()
_spec: OpenAPI | None = None


def load_spec() -> OpenAPI:
    """The parsed spec, loaded once per process (it's 470 KB of YAML)."""
    global _spec
    with _spec_lock:
        if _spec is None:
            # "forbid": a body property the spec doesn't declare is a violation, as it would
            # be silently ignored (or rejected) by Kinde - e.g. `endpoint` in a webhook PATCH.
            config = Config(additional_properties_default_policy="forbid")
            _spec = OpenAPI.from_file_path(str(SPEC_PATH), config=config)
        return _spec


class _SpecRequest(WerkzeugOpenAPIRequest):
    @property
    def host_url(self) -> str:
        return _SPEC_HOST_URL


@dataclass(frozen=True)
class SpecViolation:
    method: str
    path: str
    errors: tuple[str, ...]


@dataclass(frozen=True)
class MeterCall:
    customer_agreement_id: str
    billing_feature_code: str
    meter_value: int
    meter_type_code: str
    meter_usage_timestamp: str | None
    period_start: datetime | None


@dataclass
class _Agreement:
    id: str
    customer_id: str
    plan_code: str
    feature_codes: list[str]
    period_start: datetime | None
    period_end: datetime | None
    expires_on: datetime | None = None
    subscribed_on: datetime = field(default_factory=lambda: datetime.now(UTC))


@dataclass
class _Customer:
    id: str
    user_id: str | None
    org_code: str | None
    email: str | None


@dataclass
class _Fault:
    kind: str  # "fail" | "stall" | "hold" | "rate_limit" | "lose_answer"
    remaining: int
    path_prefix: str
    status: int = 500
    seconds: float = 0.0


@dataclass
class _Answer:
    status: int
    body: Any
    headers: dict[str, str] = field(default_factory=dict)


class _Violation(Exception):
    def __init__(self, errors: list[str]) -> None:
        super().__init__("; ".join(errors))
        self.errors = errors


def _error(status: int, code: str, message: str, **headers: str) -> _Answer:
    return _Answer(status, {"errors": [{"code": code, "message": message}]}, dict(headers))


def _ok(**extra: Any) -> _Answer:
    return _Answer(200, {"code": "OK", "message": "Success", **extra})


def _iso(value: datetime | None) -> str | None:
    return value.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ") if value is not None else None


DEFAULT_EVENT_TYPES: list[dict[str, Any]] = [
    {"id": f"event_type_{i}", "code": code, "name": code, "origin": "kinde", "schema": {}}
    for i, code in enumerate(
        [
            "user.created",
            "user.updated",
            "user.deleted",
            "organization.created",
            "organization.updated",
            "customer.agreement_created",
            "customer.agreement_cancelled",
            "customer.meter_usage_updated",
            "customer.plan_assigned",
            "customer.plan_changed",
            "customer.payment_failed",
            "customer.payment_succeeded",
        ]
    )
]

# (method, spec path template, handler). `{...}` segments are passed to the handler as item_id.
_ROUTE_TABLE = [
    ("POST", "/api/v1/billing/meter_usage", "_api_meter_usage"),
    ("GET", "/api/v1/billing/agreements", "_api_agreements"),
    ("GET", "/api/v1/billing/entitlements", "_api_entitlements"),
    ("GET", "/api/v1/user", "_api_get_user"),
    ("GET", "/api/v1/organization", "_api_get_org"),
    ("GET", "/api/v1/webhooks", "_api_list_webhooks"),
    ("POST", "/api/v1/webhooks", "_api_create_webhook"),
    ("PATCH", "/api/v1/webhooks/{webhook_id}", "_api_patch_webhook"),
    ("DELETE", "/api/v1/webhooks/{webhook_id}", "_api_delete_webhook"),
    ("GET", "/api/v1/event_types", "_api_event_types"),
    ("GET", "/api/v1/events/{event_id}", "_api_get_event"),
]
_ROUTES = [
    (method, re.compile(re.sub(r"\{\w+\}", "(?P<item_id>[^/]+)", template)), template, handler)
    for method, template, handler in _ROUTE_TABLE
]


class FakeKinde(FakeServer):
    """Fake Kinde business at `self.url` (e.g. http://127.0.0.1:54321)."""

    def __init__(
        self,
        client_id: str = "test-m2m-client",
        client_secret: str = "test-m2m-secret",
        *,
        token_ttl: int = 86400,
        validate: bool = True,
    ) -> None:
        self.client_id = client_id
        self.client_secret = client_secret
        self.token_ttl = token_ttl
        self.validate = validate
        self._lock = threading.RLock()
        self._stopping = threading.Event()
        # state
        self._customers: dict[str, _Customer] = {}
        self._agreements: dict[str, _Agreement] = {}
        # agreement_id -> the (start, end) GET still shows while a renewal lags
        self._listed_period: dict[str, tuple[datetime | None, datetime | None]] = {}
        # (agreement_id, feature_code, period_start) -> total
        self._usage: dict[tuple[str, str, datetime | None], int] = {}
        self._webhooks: dict[str, dict[str, Any]] = {}
        self._events: dict[str, dict[str, Any]] = {}
        self.event_types: list[dict[str, Any]] = [dict(t) for t in DEFAULT_EVENT_TYPES]
        self._tokens: dict[str, float] = {}  # token -> expiry (monotonic)
        self._faults: list[_Fault] = []
        self._outage = False
        self._held = threading.Event()  # set: requests held by `hold_next` go on
        # observations
        self.token_requests = 0
        self.spec_violations: list[SpecViolation] = []
        self.meter_calls: list[MeterCall] = []
        self.api_requests: list[tuple[str, str]] = []  # (method, path) of every API request
        self._httpd = ThreadingHTTPServer(("127.0.0.1", 0), self._handler_class())
        self._httpd.daemon_threads = True
        # A short poll interval makes stop() quick; tests start and stop a fake each.
        self._thread = threading.Thread(target=self._httpd.serve_forever, args=(0.01,), daemon=True)

    # -- lifecycle ------------------------------------------------------------------------------

    @property
    def url(self) -> str:
        host, port = self._httpd.server_address[:2]
        return f"http://{host!s}:{port}"

    def start(self) -> FakeKinde:
        if self.validate:
            load_spec()  # load before the first request, so no request pays for it
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stopping.set()  # cuts pending stalls short
        self._held.set()
        if self._thread.is_alive():  # shutdown() would wait forever on a server never started
            self._httpd.shutdown()
            self._thread.join(timeout=5)
        self._httpd.server_close()

    # -- seeding and inspection -----------------------------------------------------------------

    def add_customer(
        self,
        customer_id: str,
        user_id: str | None = None,
        org_code: str | None = None,
        email: str | None = None,
    ) -> None:
        with self._lock:
            self._customers[customer_id] = _Customer(customer_id, user_id, org_code, email)

    def add_agreement(
        self,
        customer_id: str,
        agreement_id: str,
        plan_code: str,
        feature_codes: Iterable[str],
        period_start: datetime | None,
        period_end: datetime | None,
        *,
        expires_on: datetime | None = None,
    ) -> None:
        with self._lock:
            if customer_id not in self._customers:
                self._customers[customer_id] = _Customer(customer_id, None, None, None)
            self._agreements[agreement_id] = _Agreement(
                agreement_id,
                customer_id,
                plan_code,
                list(feature_codes),
                period_start,
                period_end,
                expires_on,
            )

    def roll_period(
        self, agreement_id: str, period_start: datetime, period_end: datetime, *,
        listed: bool = True,
    ) -> None:
        """Start a new billing cycle: usage recorded from now on counts in the new period.

        `listed=False` models Kinde's agreements lagging a renewal: usage already counts in
        the new cycle while GET /billing/agreements still shows the old period, until
        `list_new_period`."""
        with self._lock:
            agreement = self._agreements[agreement_id]
            if not listed:
                self._listed_period[agreement_id] = (agreement.period_start, agreement.period_end)
            else:
                self._listed_period.pop(agreement_id, None)
            agreement.period_start, agreement.period_end = period_start, period_end

    def list_new_period(self, agreement_id: str) -> None:
        """End the lag of `roll_period(..., listed=False)`."""
        with self._lock:
            self._listed_period.pop(agreement_id, None)

    def usage_total(
        self, agreement_id: str, feature_code: str, period_start: datetime | None = None
    ) -> int:
        """Usage in the given period (default: the agreement's current period)."""
        with self._lock:
            if period_start is None:
                period_start = self._agreements[agreement_id].period_start
            return self._usage.get((agreement_id, feature_code, period_start), 0)

    def add_event(self, event: dict[str, Any]) -> None:
        with self._lock:
            self._events[event["event_id"]] = event

    def webhooks(self) -> list[dict[str, Any]]:
        with self._lock:
            return [dict(w) for w in self._webhooks.values()]

    def revoke_tokens(self) -> None:
        """Invalidate every issued token: the next API call gets a 401."""
        with self._lock:
            self._tokens.clear()

    # -- fault injection ------------------------------------------------------------------------

    def fail_next(self, n: int, status: int = 500, *, path_prefix: str = "/api/") -> None:
        self._add_fault(_Fault("fail", n, path_prefix, status=status))

    def stall_next(self, n: int, seconds: float, *, path_prefix: str = "/api/") -> None:
        """Sleep before handling: the request is still applied, but answered late."""
        self._add_fault(_Fault("stall", n, path_prefix, seconds=seconds))

    def hold_next(self, n: int, *, path_prefix: str = "/api/") -> None:
        """Hold the next matching requests until `release_held()`, then apply and answer them:
        a request that lands at Kinde whenever the test decides (e.g. after later ones)."""
        self._held.clear()
        self._add_fault(_Fault("hold", n, path_prefix))

    def release_held(self) -> None:
        self._held.set()

    def rate_limit_next(self, n: int, reset_seconds: int, *, path_prefix: str = "/api/") -> None:
        self._add_fault(_Fault("rate_limit", n, path_prefix, status=429, seconds=reset_seconds))

    def lose_answer_next(self, n: int, *, path_prefix: str = "/api/") -> None:
        """Apply the request to state, then close the connection without answering."""
        self._add_fault(_Fault("lose_answer", n, path_prefix))

    def outage(self, on: bool) -> None:
        """While on, every request (token endpoint included) gets a 503."""
        with self._lock:
            self._outage = on

    def _add_fault(self, fault: _Fault) -> None:
        with self._lock:
            self._faults.append(fault)

    def _take_faults(self, path: str) -> list[_Fault]:
        """Consume at most one fault of each kind matching this path."""
        taken: list[_Fault] = []
        with self._lock:
            kinds: set[str] = set()
            for fault in self._faults:
                if (
                    fault.remaining > 0
                    and fault.kind not in kinds
                    and path.startswith(fault.path_prefix)
                ):
                    fault.remaining -= 1
                    kinds.add(fault.kind)
                    taken.append(fault)
            self._faults = [f for f in self._faults if f.remaining > 0]
        return taken

    # -- request handling -----------------------------------------------------------------------

    def _handle(
        self, method: str, raw_path: str, headers: dict[str, str], body: bytes
    ) -> _Answer | None:
        """Answer one request; None means "drop the connection without answering"."""
        split = urlsplit(raw_path)
        path, query = split.path, split.query
        faults = self._take_faults(path)
        with self._lock:
            outage = self._outage
        if outage:
            return _error(503, "SERVICE_UNAVAILABLE", "Kinde is unavailable (fake outage)")
        for fault in faults:
            if fault.kind == "stall" and self._stopping.wait(fault.seconds):
                return None
            if fault.kind == "hold":
                self._held.wait()
                if self._stopping.is_set():
                    return None
        for fault in faults:
            if fault.kind == "fail":
                return _error(fault.status, f"FAKE_{fault.status}", "injected failure")
            if fault.kind == "rate_limit":
                return _error(
                    429,
                    "TOO_MANY_REQUESTS",
                    "Request was throttled",
                    **{"RateLimit-Reset": str(int(fault.seconds))},
                )
        if path.startswith("/.well-known/"):
            answer = self._well_known(path)
        elif path == "/oauth2/token":
            answer = self._token(method, headers, body)
        else:
            answer = self._api(method, path, query, headers, body)
        if any(f.kind == "lose_answer" for f in faults):
            return None
        return answer

    def _well_known(self, path: str) -> _Answer:
        if path == "/.well-known/openid-configuration":
            return _Answer(
                200,
                {
                    "issuer": self.url,
                    "token_endpoint": f"{self.url}/oauth2/token",
                    "jwks_uri": f"{self.url}/.well-known/jwks.json",
                },
            )
        if path == "/.well-known/jwks.json":
            return _Answer(200, {"keys": []})
        return _error(404, "ROUTE_NOT_FOUND", "The requested route does not exist")

    def _token(self, method: str, headers: dict[str, str], body: bytes) -> _Answer:
        # UNCONFIRMED: the exact error answers of Kinde's token endpoint; RFC 6749 form is used.
        if method != "POST":
            return _Answer(405, {"error": "invalid_request"})
        ctype = headers.get("content-type", "")
        if not ctype.startswith("application/x-www-form-urlencoded"):
            return _Answer(400, {"error": "invalid_request", "error_description": "form only"})
        form = {k: v[0] for k, v in parse_qs(body.decode(), keep_blank_values=True).items()}
        if form.get("grant_type") != "client_credentials":
            return _Answer(400, {"error": "unsupported_grant_type"})
        if form.get("client_id") != self.client_id or not secrets.compare_digest(
            form.get("client_secret", ""), self.client_secret
        ):
            return _Answer(401, {"error": "invalid_client", "error_description": "bad client"})
        if form.get("audience") != f"{self.url}/api":
            return _Answer(400, {"error": "invalid_request", "error_description": "bad audience"})
        token = secrets.token_urlsafe(24)
        with self._lock:
            self._tokens[token] = time.monotonic() + self.token_ttl
            self.token_requests += 1
        return _Answer(
            200,
            {
                "access_token": token,
                "token_type": "Bearer",
                "expires_in": self.token_ttl,
                "scope": "",
            },
        )

    def _api(
        self, method: str, path: str, query: str, headers: dict[str, str], body: bytes
    ) -> _Answer:
        with self._lock:
            self.api_requests.append((method, path))
        route = _match_route(method, path)
        if self.validate:
            errors = self._spec_errors(method, path, query, headers, body, route)
            if errors:
                with self._lock:
                    self.spec_violations.append(SpecViolation(method, path, tuple(errors)))
                return _error(400, "INVALID_REQUEST", "; ".join(errors)[:500])
        if route is None:
            # The spec's not_found_response has `errors` as one object, not a list. (A route the
            # spec has but the fake doesn't implement lands here too, unrecorded.)
            return _Answer(
                404,
                {"errors": {"code": "ROUTE_NOT_FOUND", "message": "No such route in the fake"}},
            )
        if not self._authorized(headers):
            return _error(401, "TOKEN_INVALID", "Invalid or expired access token")
        _tpl, handler_name, match = route
        params = {k: v[0] for k, v in parse_qs(query, keep_blank_values=True).items()}
        handler: Callable[..., _Answer] = getattr(self, handler_name)
        payload: Any = json.loads(body) if body else None
        with self._lock:
            return handler(params=params, body=payload, **match.groupdict())

    def _authorized(self, headers: dict[str, str]) -> bool:
        auth = headers.get("authorization", "")
        if not auth.startswith("Bearer "):
            return False
        with self._lock:
            expiry = self._tokens.get(auth[len("Bearer ") :])
        return expiry is not None and time.monotonic() < expiry

    def _spec_errors(
        self,
        method: str,
        path: str,
        query: str,
        headers: dict[str, str],
        body: bytes,
        route: tuple[str, str, re.Match[str]] | None,
    ) -> list[str]:
        spec = load_spec()
        request = Request(
            EnvironBuilder(
                method=method,
                path=path,
                query_string=query,
                headers=list(headers.items()),
                data=body,
            ).get_environ()
        )
        with _spec_lock:  # openapi-core's caches are not documented as thread-safe
            found = list(spec.iter_request_errors(_SpecRequest(request)))
        errors = [_describe_error(e) for e in found]
        if route is not None:
            # openapi-core ignores undeclared query parameters; Kinde may not.
            declared = _declared_query_params(route[0], method.lower())
            extra = sorted(set(parse_qs(query, keep_blank_values=True)) - declared)
            errors += [f"undeclared query parameter {name!r}" for name in extra]
        return errors

    # -- API handlers (called with self._lock held) ---------------------------------------------

    def _api_meter_usage(self, params: dict[str, str], body: dict[str, Any]) -> _Answer:
        agreement = self._agreements.get(body.get("customer_agreement_id", ""))
        if agreement is None:
            return _error(400, "AGREEMENT_INVALID", "No such agreement")  # UNCONFIRMED code
        feature = body.get("billing_feature_code", "")
        if feature not in agreement.feature_codes:
            return _error(400, "FEATURE_INVALID", "Feature not part of the agreement")
        try:
            value = int(body["meter_value"])
        except (KeyError, TypeError, ValueError):
            return _error(400, "METER_VALUE_INVALID", "meter_value must be a whole number")
        # UNCONFIRMED default when meter_type_code is absent; the client always sends it.
        mtype = body.get("meter_type_code", "delta")
        key = (agreement.id, feature, agreement.period_start)
        self._usage[key] = value if mtype == "absolute" else self._usage.get(key, 0) + value
        self.meter_calls.append(
            MeterCall(
                agreement.id,
                feature,
                value,
                mtype,
                body.get("meter_usage_timestamp"),
                agreement.period_start,
            )
        )
        return _ok()

    def _agreements_json(self, agreement: _Agreement) -> dict[str, Any]:
        start, end = self._listed_period.get(
            agreement.id, (agreement.period_start, agreement.period_end)
        )
        return {
            "id": agreement.id,
            "plan_code": agreement.plan_code,
            "expires_on": _iso(agreement.expires_on),
            "billing_group_id": None,
            "current_period_start": _iso(start),
            "current_period_end": _iso(end),
            "entitlements": [
                {"feature_code": code, "entitlement_id": f"entitlement_{agreement.id}_{code}"}
                for code in agreement.feature_codes
            ],
        }

    def _page(self, items: list[dict[str, Any]], params: dict[str, str], key: str) -> _Answer:
        size = int(params.get("page_size") or 10)  # the spec's documented default
        after = params.get("starting_after")
        if after:
            ids = [i["id"] for i in items]
            items = items[ids.index(after) + 1 :] if after in ids else []
        return _ok(**{key: items[:size], "has_more": len(items) > size})

    def _customer_agreements(self, customer_id: str) -> list[_Agreement]:
        return [a for a in self._agreements.values() if a.customer_id == customer_id]

    def _api_agreements(self, params: dict[str, str], body: Any) -> _Answer:
        # UNCONFIRMED: an unknown customer_id gets an empty list here.
        found = self._customer_agreements(params["customer_id"])
        feature = params.get("feature_code")
        if feature:
            found = [a for a in found if feature in a.feature_codes]
        return self._page([self._agreements_json(a) for a in found], params, "agreements")

    def _api_entitlements(self, params: dict[str, str], body: Any) -> _Answer:
        agreements = self._customer_agreements(params["customer_id"])
        items = [
            {
                "id": f"entitlement_{a.id}_{code}",
                "feature_code": code,
                "feature_name": code.replace("_", " ").title(),
                "price_name": code,
                "unit_amount": 1,
            }
            for a in agreements
            for code in a.feature_codes
        ]
        answer = self._page(items, params, "entitlements")
        if params.get("expand") == "plans":
            answer.body["plans"] = [
                {"code": a.plan_code, "subscribed_on": _iso(a.subscribed_on)} for a in agreements
            ]
        return answer

    def _api_get_user(self, params: dict[str, str], body: Any) -> _Answer:
        customer = next((c for c in self._customers.values() if c.user_id == params["id"]), None)
        if customer is None:
            # UNCONFIRMED: the spec lists no 404 for GET /user; Kinde's real answer may be 400.
            return _error(404, "USER_NOT_FOUND", "No such user")
        user: dict[str, Any] = {"id": customer.user_id}
        if customer.email is not None:
            user["preferred_email"] = customer.email
        if "billing" in params.get("expand", "").split(","):
            user["billing"] = {"customer_id": customer.id}
        return _Answer(200, user)

    def _api_get_org(self, params: dict[str, str], body: Any) -> _Answer:
        customer = next((c for c in self._customers.values() if c.org_code == params["code"]), None)
        if customer is None:
            return _error(404, "ORGANIZATION_NOT_FOUND", "No such organization")
        org: dict[str, Any] = {"code": customer.org_code, "name": customer.org_code}
        if params.get("expand") == "billing":
            org["billing"] = {
                "billing_customer_id": customer.id,
                "agreements": [
                    {"plan_code": a.plan_code, "agreement_id": a.id}
                    for a in self._customer_agreements(customer.id)
                ],
            }
        return _Answer(200, org)

    def _api_list_webhooks(self, params: dict[str, str], body: Any) -> _Answer:
        return _ok(webhooks=[dict(w) for w in self._webhooks.values()])

    def _api_create_webhook(self, params: dict[str, str], body: dict[str, Any]) -> _Answer:
        webhook_id = f"webhook_{secrets.token_hex(8)}"
        self._webhooks[webhook_id] = {
            "id": webhook_id,
            "name": body["name"],
            "endpoint": body["endpoint"],
            "description": body.get("description") or "",
            "event_types": list(body["event_types"]),
            "created_on": _iso(datetime.now(UTC)),
        }
        return _ok(webhook={"id": webhook_id, "endpoint": body["endpoint"]})

    def _api_patch_webhook(
        self, params: dict[str, str], body: dict[str, Any], item_id: str
    ) -> _Answer:
        webhook = self._webhooks.get(item_id)
        if webhook is None:
            return _error(404, "WEBHOOK_NOT_FOUND", "No such webhook")
        for key in ("name", "description", "event_types"):
            if key in body:
                webhook[key] = body[key] if body[key] is not None else ""
        return _ok(webhook={"id": item_id})

    def _api_delete_webhook(self, params: dict[str, str], body: Any, item_id: str) -> _Answer:
        if self._webhooks.pop(item_id, None) is None:
            return _error(404, "WEBHOOK_NOT_FOUND", "No such webhook")
        return _ok()

    def _api_event_types(self, params: dict[str, str], body: Any) -> _Answer:
        return _ok(event_types=[dict(t) for t in self.event_types])

    def _api_get_event(self, params: dict[str, str], body: Any, item_id: str) -> _Answer:
        event = self._events.get(item_id)
        if event is None:
            return _error(404, "EVENT_NOT_FOUND", "No such event")
        return _ok(event=event)

    # -- HTTP plumbing --------------------------------------------------------------------------

    def _handler_class(self) -> type[BaseHTTPRequestHandler]:
        fake = self

        class Handler(BaseHTTPRequestHandler):
            # Keep-alive like the real thing, so lost answers hit pooled connections too.
            protocol_version = "HTTP/1.1"
            # Headers and body go out in separate writes; without this, Nagle plus delayed
            # ACKs add ~40 ms to every answer on a kept-alive connection.
            disable_nagle_algorithm = True

            def _serve(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else b""
                headers = {k.lower(): v for k, v in self.headers.items()}
                try:
                    answer = fake._handle(self.command, self.path, headers, body)
                except Exception as exc:  # a bug in the fake must show up as a 500, not a hang
                    answer = _error(500, "FAKE_BUG", f"{type(exc).__name__}: {exc}")
                if answer is None:
                    # Lost answer: close without a byte, so the client sees the connection drop.
                    self.close_connection = True
                    return
                data = json.dumps(answer.body).encode()
                try:
                    self.send_response(answer.status)
                    self.send_header("Content-Type", "application/json; charset=utf-8")
                    self.send_header("Content-Length", str(len(data)))
                    for name, value in answer.headers.items():
                        self.send_header(name, value)
                    self.end_headers()
                    self.wfile.write(data)
                except OSError:
                    self.close_connection = True  # client gave up (e.g. timed out on a stall)

            do_GET = do_POST = do_PATCH = do_DELETE = do_PUT = _serve

            def log_message(self, format: str, *args: Any) -> None:
                pass  # keep test output quiet

        return Handler


def _match_route(method: str, path: str) -> tuple[str, str, re.Match[str]] | None:
    """(spec template, handler name, match) of the fake's route for this request, if any."""
    for route_method, regex, template, handler in _ROUTES:
        match = regex.fullmatch(path)
        if route_method == method and match:
            return template, handler, match
    return None


def _describe_error(exc: Exception) -> str:
    text = f"{type(exc).__name__}: {exc}"
    # openapi-core hides the jsonschema details in the cause.
    details = getattr(exc.__cause__, "schema_errors", None) or ()
    messages = [getattr(d, "message", str(d)) for d in details]
    return f"{text} ({'; '.join(messages)})" if messages else text


_declared_cache: dict[tuple[str, str], set[str]] = {}


def _declared_query_params(template: str, method: str) -> set[str]:
    key = (template, method)
    with _spec_lock:
        if key not in _declared_cache:
            path_item = load_spec().spec / "paths" / template
            names: set[str] = set()
            for item in (path_item, path_item / method):
                if "parameters" in item:
                    for param in item / "parameters":
                        if param["in"] == "query":
                            names.add(str(param["name"]))
            _declared_cache[key] = names
        return _declared_cache[key]
