"""The `kinde-credits` command line: serve, worker, db, verify, bench and operator tools.

Commands print human text by default; operator commands take `--json` where machines read them.
Exit codes: 0 fine, 1 something is wrong (e.g. `verify` found a broken wallet), 2 bad usage.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from types import ModuleType
from typing import TYPE_CHECKING, Any

import click

from app.settings import Settings, SettingsError

if TYPE_CHECKING:
    from app.bootstrap import Container


def _settings() -> Settings:
    try:
        return Settings.from_env()
    except SettingsError as exc:
        raise click.ClickException(f"bad setting: {exc}") from None


def _container(pool_size: int = 4) -> Container:
    from app.bootstrap import build_container
    from app.domain.catalog import CatalogError

    try:
        return build_container(_settings(), pool_size=pool_size)
    except CatalogError as exc:
        raise click.ClickException(f"bad credits catalog: {exc}") from None
    except SettingsError as exc:  # a notification channel only half configured
        raise click.ClickException(f"bad setting: {exc}") from None


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
def main() -> None:
    """kinde-credits: prepaid credits for SaaS products that bill with Kinde."""


# -- database ------------------------------------------------------------------------------


@main.group()
def db() -> None:
    """Database schema (Alembic migrations)."""


@db.command("upgrade")
@click.option("--revision", default="head", show_default=True)
def db_upgrade(revision: str) -> None:
    """Create or migrate the schema to the latest revision."""
    from app.bootstrap import schema_revision, upgrade_schema

    settings = _settings()
    upgrade_schema(settings.database_url, revision)
    click.echo(f"database at revision {schema_revision(settings.database_url)}", err=True)


# -- serving -------------------------------------------------------------------------------


@main.command()
@click.option("--host", default="127.0.0.1", show_default=True)
@click.option("--port", default=8000, show_default=True, type=int)
@click.option("--workers", default=None, type=int,
              help="web processes (default: per database, see app/wsgi_server.py; 2 today)")
@click.option("--threads", default=None, type=int,
              help="threads per process (default: per database; 8 today)")
@click.option("--no-worker", is_flag=True, help="do not start the background worker")
def serve(host: str, port: int, workers: int | None, threads: int | None,
          no_worker: bool) -> None:
    """Run the web service under gunicorn, plus the background worker."""
    from app.bootstrap import schema_revision, upgrade_schema

    settings = _settings()
    container = _container()  # fail fast on a bad catalog or database before forking
    container.close()
    if schema_revision(settings.database_url) is None:
        if settings.database_url.startswith("sqlite"):
            upgrade_schema(settings.database_url)
        else:
            raise click.ClickException("database has no schema: run `kinde-credits db upgrade`")

    worker: subprocess.Popen[bytes] | None = None
    if settings.run_worker and not no_worker:
        worker = subprocess.Popen([sys.executable, "-m", "app.cli", "worker"])

    from app.wsgi_server import run_gunicorn, server_defaults

    defaults = server_defaults(settings.database_url)
    workers, threads = workers or defaults.workers, threads or defaults.threads
    mode = "local mode (no KINDE_DOMAIN)" if settings.local_mode else settings.kinde_domain
    click.echo(f"kinde-credits on http://{host}:{port} - {mode}", err=True)
    try:
        run_gunicorn(host=host, port=port, workers=workers, threads=threads)
    finally:
        if worker is not None and worker.poll() is None:
            worker.send_signal(signal.SIGTERM)
            try:
                worker.wait(timeout=15)
            except subprocess.TimeoutExpired:
                worker.kill()


@main.command()
@click.option("--once", is_flag=True, help="run one pass and exit")
@click.option("--interval", default=1.0, show_default=True, type=float)
def worker(once: bool, interval: float) -> None:
    """Background work: expire blocks and holds (and deliver the outbox)."""
    from app.worker import run_worker

    container = _container()
    stop = {"flag": False}

    def _stop(*_: Any) -> None:
        stop["flag"] = True

    signal.signal(signal.SIGTERM, _stop)
    signal.signal(signal.SIGINT, _stop)
    run_worker(container, once=once, interval=interval, should_stop=lambda: stop["flag"])


# -- operations ----------------------------------------------------------------------------


@main.command()
@click.option("--json", "as_json", is_flag=True)
def verify(as_json: bool) -> None:
    """Check every wallet: balance = entries = blocks - arrears, nothing below its limit."""
    from app.services.ledger import verify_ledger

    container = _container()
    started = time.perf_counter()
    broken = verify_ledger(container.store)
    took = time.perf_counter() - started
    if as_json:
        click.echo(json.dumps({"ok": not broken, "problems": broken}, indent=2))
    else:
        for wallet_id, found in broken.items():
            for problem in found:
                click.echo(f"{wallet_id}: {problem}")
        click.echo(
            f"{'FAILED' if broken else 'OK'}: {len(broken)} wallet(s) with problems "
            f"(checked in {took:.2f}s)",
            err=True,
        )
    if broken:
        sys.exit(1)


@main.command("setup-kinde")
@click.option("--url", "endpoint", required=True,
              help="public URL of this service's webhook, e.g. https://credits.acme.com/webhooks/kinde")
@click.option("--customer", "customers", multiple=True,
              help="billing customer id(s) whose plans to check the catalog against")
@click.option("--dry-run", is_flag=True, help="show what would change, change nothing")
@click.option("--json", "as_json", is_flag=True)
def setup_kinde(endpoint: str, customers: tuple[str, ...], dry_run: bool, as_json: bool) -> None:
    """Register (or update) the Kinde webhook and check catalog features against Kinde."""
    from urllib.parse import urlparse

    from app.services.kinde_setup import SetupReport, check_features, register_webhook

    parsed = urlparse(endpoint)
    if parsed.scheme != "https" or not parsed.hostname:
        raise click.BadParameter("Kinde delivers webhooks over https: give an https:// URL",
                                 param_hint="--url")
    container = _container()
    if container.kinde is None:
        raise click.ClickException(
            "setup-kinde talks to Kinde's Management API: set KINDE_DOMAIN, "
            "KINDE_M2M_CLIENT_ID and KINDE_M2M_CLIENT_SECRET (an M2M app with the scopes "
            "read:webhooks, create:webhooks, update:webhooks, read:event_types, "
            "read:billing_entitlements and read:billing_agreements; the worker also needs "
            "create:meter_usage, read:users and read:organizations)"
        )
    if not customers:
        customers = container.operations.billing_customer_ids(5)
    report = SetupReport(dry_run=dry_run)
    try:
        register_webhook(container.kinde, endpoint, report)
        check_features(container.kinde, container.catalog, customers, report)
    except Exception as exc:  # the client's typed errors carry Kinde's own message
        raise click.ClickException(f"Kinde said: {exc}") from None
    if as_json:
        click.echo(json.dumps(report.as_dict(), indent=2))
    else:
        click.echo(("DRY RUN: nothing changed\n" if dry_run else "") + "Webhook:")
        for action in report.actions:
            click.echo(f"  - {action}")
        click.echo("Catalog features in Kinde:")
        for code, where in report.features_found.items():
            click.echo(f"  ok       {code}  ({'; '.join(where)})")
        for item in report.features_missing:
            click.echo(f"  MISSING  {item}: create this metered feature in Kinde's dashboard "
                       f"and add it to your plans")
        for item in report.features_unchecked:
            click.echo(f"  ?        {item}")
        for warning in report.warnings:
            click.echo(f"Warning: {warning}")
    if not report.ok:
        sys.exit(1)


@main.group()
def report() -> None:
    """Reports over the ledger."""


@report.command("revenue")
@click.option("--since", default=None,
              help="start, inclusive: 2026-11-01 or an ISO date-time (default: first of "
                   "this month, UTC)")
@click.option("--until", default=None, help="end, exclusive (default: now)")
@click.option("--json", "as_json", is_flag=True)
@click.option("--csv", "as_csv", is_flag=True)
def report_revenue(since: str | None, until: str | None, as_json: bool, as_csv: bool) -> None:
    """Revenue roll-forward per currency: opening deferred + sales - refunds - recognised -
    breakage = closing deferred, to the cent, for [since, until)."""
    from app.services import revenue

    _print_report(lambda ops: ops.revenue_report(since, until), revenue, as_json, as_csv)


@report.command("refunds")
@click.option("--since", default=None,
              help="start, inclusive: 2026-11-01 or an ISO date-time (default: first of "
                   "this month, UTC)")
@click.option("--until", default=None, help="end, exclusive (default: now)")
@click.option("--json", "as_json", is_flag=True)
@click.option("--csv", "as_csv", is_flag=True)
def report_refunds(since: str | None, until: str | None, as_json: bool, as_csv: bool) -> None:
    """Refunds made in [since, until): the credit notes to issue in Kinde
    (`credit_note_due`), and the packs taken off Kinde's count before it invoiced them."""
    from app.services import refund_report

    _print_report(lambda ops: ops.refunds_report(since, until), refund_report, as_json,
                  as_csv)


def _print_report(fetch: Callable[[Any], dict[str, Any]], fmt: ModuleType, as_json: bool,
                  as_csv: bool) -> None:
    """One report from the operations service, printed as JSON, CSV (`fmt.as_csv`) or text
    (`fmt.as_text`); a bad --since/--until is a usage error."""
    from app.domain.ledger import LedgerError

    if as_json and as_csv:
        raise click.UsageError("choose one of --json and --csv")
    try:
        data = fetch(_container().operations)
    except LedgerError as exc:
        raise click.BadParameter(exc.message) from None
    if as_json:
        click.echo(json.dumps(data, indent=2))
    elif as_csv:
        click.echo(fmt.as_csv(data), nl=False)
    else:
        click.echo(fmt.as_text(data))


@main.command()
@click.option("--status", type=click.Choice(["pending", "sent", "dead"]), default=None)
@click.option("--limit", default=20, show_default=True, type=int)
@click.option("--requeue-dead", is_flag=True, help="send dead-lettered rows again")
@click.option("--json", "as_json", is_flag=True)
def outbox(status: str | None, limit: int, requeue_dead: bool, as_json: bool) -> None:
    """What waits to reach Kinde or a person: counts, dead letters, and requeueing."""
    operations = _container().operations
    if requeue_dead:
        count = operations.requeue_dead_outbox()
        click.echo(f"requeued {count} dead row(s)", err=True)
    summary = operations.outbox_status()
    rows = operations.outbox_rows(status, limit)
    if as_json:
        summary["rows"] = [
            {"id": r.id, "kind": r.kind, "topic": r.topic, "status": r.status,
             "attempts": r.attempts, "last_error": r.last_error,
             "created_at": r.created_at.isoformat()}
            for r in rows
        ]
        click.echo(json.dumps(summary, indent=2))
        return
    counts = summary["counts"]
    click.echo(
        f"pending {counts['pending']}  sent {counts['sent']}  dead {counts['dead']}  "
        f"oldest pending {summary['oldest_pending_seconds']}s"
    )
    for r in rows:
        click.echo(f"#{r.id} {r.status:<7} {r.kind:<14} {r.topic}  attempts={r.attempts}"
                   + (f"  error: {r.last_error}" if r.last_error else ""))


@main.command()
@click.option("--json", "as_json", is_flag=True, help="machine-readable output")
@click.option("--markdown", is_flag=True, help="print docs/benchmarks.md (table, machine, recipe)")
@click.option("--quick", is_flag=True, help="keep the whole run under a minute")
@click.option("--only", multiple=True, help="run only the named figure(s)")
@click.option("--runs", default=1, show_default=True, type=click.IntRange(min=1),
              help="repeat the run; report each figure's median")
@click.option("--seconds", type=click.FloatRange(min=1), default=None,
              help="load duration per measurement (default 1 with --quick, else 5)")
@click.option("--workers", type=click.IntRange(min=1), default=None,
              help="gunicorn workers for the HTTP figures (default: what serve uses)")
@click.option("--threads", type=click.IntRange(min=1), default=None,
              help="threads per worker for the HTTP figures (default: what serve uses)")
def bench(as_json: bool, markdown: bool, quick: bool, only: tuple[str, ...], runs: int,
          seconds: float | None, workers: int | None, threads: int | None) -> None:
    """Measure the service, each figure beside its least-work baseline from the same run."""
    from app.bench import as_markdown, as_text, run_bench

    if as_json and markdown:
        raise click.UsageError("choose one of --json and --markdown")
    report = run_bench(quick=quick, only=set(only), runs=runs, seconds=seconds,
                       workers=workers, threads=threads, progress=not (as_json or markdown))
    if as_json:
        click.echo(json.dumps(report, indent=2))
    elif markdown:
        click.echo(as_markdown(report))
    else:
        click.echo(as_text(report))
    if report["failed"]:
        sys.exit(1)


# Modules that add commands: each exposes `register(main: click.Group)`.
COMMAND_MODULES: list[str] = ["app.cli_api", "app.cli_webhooks"]
for _module in COMMAND_MODULES:
    __import__(_module, fromlist=["register"]).register(main)


if __name__ == "__main__":  # `python -m app.cli`, used to start the worker child process
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    main()
