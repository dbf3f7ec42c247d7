"""CLI for Kinde webhooks: `simulate` (sign and send a Kinde-shaped event in local mode) and
`events` (the inbox: list, filter by wallet/type/parked, retry parked events).

`register(main)` adds both commands to the `kinde-credits` group (see COMMAND_MODULES).
"""

from __future__ import annotations

import json
import sys
import uuid
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

import click

from app.domain.text import escaped

if TYPE_CHECKING:
    from app.bootstrap import Container

DEFAULT_URL = "http://127.0.0.1:8000/webhooks/kinde"
AGREEMENT_EVENTS = ("customer.agreement_created", "customer.plan_assigned",
                    "customer.plan_changed")


def _iso_z(when: datetime) -> str:
    return when.astimezone(UTC).isoformat().replace("+00:00", "Z")


def _container() -> Container:
    # Imported late: app.cli imports this module while it is still being initialised.
    from app.cli import _container as build

    return build()


def build_payload(
    event_type: str,
    *,
    user: str | None = None,
    org: str | None = None,
    email: str | None = None,
    customer: str | None = None,
    agreement: str | None = None,
    plan: str | None = None,
    feature: str | None = None,
    value: str | None = None,
    absolute: bool = False,
    period_start: str | None = None,
    period_end: str | None = None,
    event_id: str | None = None,
    now: datetime | None = None,
) -> dict[str, Any]:
    """A payload shaped like Kinde's (type, event_id, source, timestamp, data).

    Agreement and plan events state the agreement's current period (by default the calendar
    month of `now`: a simulated agreement needs one), so that absolute meter values without a
    period of their own can be applied, as with Kinde.
    """
    now = now or datetime.now(UTC)
    data: dict[str, Any]
    if event_type == "user.created":
        if not user:
            raise click.UsageError("user.created needs --user kp_...")
        data = {
            "user": {
                "id": user,
                "email": email,
                "first_name": None,
                "last_name": None,
                "username": None,
                "phone": None,
                "is_suspended": False,
                "is_password_reset_requested": False,
                "organizations": [{"code": org, "roles": None, "permissions": None}]
                if org
                else [],
            }
        }
    elif event_type == "organization.created":
        if not org:
            raise click.UsageError("organization.created needs --org org_...")
        data = {"organization": {"code": org, "name": org, "handle": None}}
    else:
        data = {}
        if customer:
            data["customer_id"] = customer
        if agreement:
            data["agreement_id"] = agreement
        if plan:
            data["plan_code"] = plan
        if user:
            data["user_id"] = user
        if org:
            data["org_code"] = org
        if event_type in AGREEMENT_EVENTS:
            month = now.replace(day=1, hour=0, minute=0, second=0, microsecond=0)
            following = (month + timedelta(days=32)).replace(day=1)
            data["current_period_start"] = period_start or _iso_z(month)
            data["current_period_end"] = period_end or _iso_z(following)
        if event_type == "customer.meter_usage_updated":
            if not feature or value is None:
                raise click.UsageError("customer.meter_usage_updated needs --feature and --value")
            data["feature_code"] = feature
            data["meter_value"] = str(value)  # Kinde's API carries meter values as strings
            data["meter_type_code"] = "absolute" if absolute else "delta"
            data["meter_usage_timestamp"] = now.isoformat().replace("+00:00", "Z")
            if period_start:
                data["period_start"] = period_start
    return {
        "type": event_type,
        "event_id": event_id or f"event_{uuid.uuid4().hex}",
        "source": "api",
        "timestamp": now.isoformat(),
        "data": data,
    }


@click.command()
@click.argument("event_type")
@click.option("--user", help="Kinde user id (kp_...)")
@click.option("--org", help="Kinde organization code (org_...)")
@click.option("--email", help="user's e-mail (user.created)")
@click.option("--customer", help="Kinde billing customer id")
@click.option("--agreement", help="billing agreement id")
@click.option("--plan", help="plan code")
@click.option("--feature", help="billing feature code (meter usage)")
@click.option("--value", help="meter value (units)")
@click.option("--absolute", is_flag=True, help="the value is the period's running total")
@click.option("--period-start",
              help="billing period start (absolute values; agreement events: default the "
              "start of this month)")
@click.option("--period-end", help="billing period end (agreement events; default the start "
              "of next month)")
@click.option("--event-id", help="reuse an event id (to try a redelivery)")
@click.option("--url", default=DEFAULT_URL, show_default=True)
def simulate(
    event_type: str,
    user: str | None,
    org: str | None,
    email: str | None,
    customer: str | None,
    agreement: str | None,
    plan: str | None,
    feature: str | None,
    value: str | None,
    absolute: bool,
    period_start: str | None,
    period_end: str | None,
    event_id: str | None,
    url: str,
) -> None:
    """Sign a Kinde-style EVENT_TYPE with the local key and POST it to the running service.

    \b
    kinde-credits simulate user.created --user kp_x --email x@example.com
    kinde-credits simulate organization.created --org org_x
    kinde-credits simulate customer.agreement_created --customer c_1 --agreement a_1 --org org_x \\
        --plan basic --period-start 2026-11-01T00:00:00Z --period-end 2026-12-01T00:00:00Z
    kinde-credits simulate customer.meter_usage_updated --customer c_1 --feature storage_gb \\
        --value 3 [--absolute]
    """
    import requests

    from app.cli import _settings
    from app.settings import Settings

    settings: Settings = _settings()
    if not settings.local_mode:
        raise click.ClickException(
            "simulate signs events with the local key and only works in local mode; "
            f"KINDE_DOMAIN is set ({settings.kinde_domain}), so real events come from Kinde. "
            "Unset KINDE_DOMAIN to try things locally."
        )
    if event_type in ("user.created", "organization.created") and (
        customer or agreement or feature
    ):
        click.echo("note: --customer/--agreement/--feature are not part of this event", err=True)
    payload = build_payload(
        event_type, user=user, org=org, email=email, customer=customer, agreement=agreement,
        plan=plan, feature=feature, value=value, absolute=absolute, period_start=period_start,
        period_end=period_end, event_id=event_id,
    )
    # The same key the server uses in local mode (whichever of the two creates it first).
    container = _container()
    keyring = container.keyring
    container.close()
    if keyring is None:
        raise click.ClickException("local mode has no local signing key")
    token = keyring.sign_webhook(payload)
    try:
        response = requests.post(
            url,
            data=token.encode(),
            headers={
                "Content-Type": "application/jwt",
                "webhook-id": f"msg_{uuid.uuid4().hex}",
            },
            timeout=10,
        )
    except requests.RequestException as exc:
        raise click.ClickException(
            f"could not reach {url} ({type(exc).__name__}); is `kinde-credits serve` running?"
        ) from None
    click.echo(f"{payload['type']} {payload['event_id']} -> HTTP {response.status_code}", err=True)
    click.echo(response.text.strip())
    if response.status_code != 200:
        sys.exit(1)


def _event_json(event: Any) -> dict[str, Any]:
    from app.services.views import iso

    return {
        "event_id": event.event_id,
        "webhook_id": event.webhook_id,
        "type": event.type,
        "status": event.status,
        "reason": event.park_reason,
        "wallet_id": event.wallet_id,
        "customer_id": event.customer_id,
        "attempts": event.attempts,
        "received_at": iso(event.received_at),
        "processed_at": iso(event.processed_at),
        "payload": event.payload,
    }


@click.command()
@click.option("--parked", is_flag=True, help="only events waiting to be applied")
@click.option("--status", type=click.Choice(["processed", "ignored", "parked"]))
@click.option("--wallet", help="only this wallet's history")
@click.option("--type", "event_type", help="only this event type")
@click.option("--limit", default=100, show_default=True, type=click.IntRange(1, 10000))
@click.option("--retry", is_flag=True, help="retry every parked event now")
@click.option("--json", "as_json", is_flag=True, help="machine-readable output")
def events(
    parked: bool,
    status: str | None,
    wallet: str | None,
    event_type: str | None,
    limit: int,
    retry: bool,
    as_json: bool,
) -> None:
    """The Kinde webhook inbox (oldest first): what arrived, what it did, what is parked."""

    container = _container()
    try:
        service = container.webhooks
        if retry:
            applied = service.retry_parked(force=True, limit=limit)
            still = container.operations.parked_webhook_count()
            if as_json:
                click.echo(json.dumps({"applied": applied, "still_parked": still}))
            else:
                click.echo(f"applied {applied} parked event(s); {still} still parked")
            return
        rows = service.events(
            status="parked" if parked else status,
            wallet_id=wallet,
            event_type=event_type,
            limit=limit,
        )
    finally:
        container.close()
    if as_json:
        click.echo(json.dumps({"events": [_event_json(e) for e in rows]}, indent=2))
        return
    for e in rows:
        # Rows stored before ids were checked may hold control or bidi characters, which a
        # terminal would act on: every stored text is shown escaped.
        line = (
            f"{e.received_at:%Y-%m-%d %H:%M:%S} {escaped(e.event_id)} {escaped(e.type):<30} "
            f"{escaped(e.status):<9} {escaped(e.wallet_id or '-')}"
        )
        if e.park_reason:
            line += f"  ({escaped(e.park_reason)})"
        click.echo(line)
    click.echo(f"{len(rows)} event(s)", err=True)


def register(main: click.Group) -> None:
    main.add_command(simulate)
    main.add_command(events)
