"""Settings from the environment (and an optional `.env` file), validated once at start.

Names are part of the contract in DESIGN.md. With no `KINDE_DOMAIN` the service runs in local
mode: its own RSA key, its own JWKS, tokens and webhooks signed by the CLI.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlparse

from app.domain.hosts import is_loopback

PROJECT_ROOT = Path(__file__).resolve().parent.parent
DEFAULT_CATALOG = PROJECT_ROOT / "config" / "credits.toml"
MAX_TOKEN_LIFETIME = 366 * 86400


# Every variable `Settings.from_env` reads (tests/unit check the list against it). A process
# that must not inherit the operator's configuration, such as the bench's own servers, blanks
# them all and sets only its own.
SETTING_NAMES: tuple[str, ...] = (
    "CREDITS_CATALOG", "DASHBOARD_AUTO_RECHARGE", "DASHBOARD_BASE_URL", "DASHBOARD_SECRET",
    "DASHBOARD_UNBILLED_PURCHASES", "DATABASE_URL", "KINDE_API_AUDIENCE",
    "KINDE_CREDITS_VAR_DIR", "KINDE_DOMAIN", "KINDE_JWKS_URL", "KINDE_M2M_CLIENT_ID",
    "KINDE_M2M_CLIENT_SECRET", "METRICS_TOKEN", "NOTIFY_WEBHOOK_SECRET", "NOTIFY_WEBHOOK_URL",
    "OUTBOX_CONFIRM_SECONDS", "OUTBOX_LEASE_SECONDS", "OUTBOX_MAX_ATTEMPTS", "PUBLIC_URL",
    "RUN_WORKER", "SALES_PAID_ELSEWHERE", "SMTP_FROM", "SMTP_HOST", "SMTP_PASSWORD",
    "SMTP_PORT", "SMTP_STARTTLS", "SMTP_USERNAME", "TOKEN_MAX_LIFETIME_SECONDS", "TOP_UP_URL",
)


class SettingsError(ValueError):
    """A bad setting; the message names the variable."""


def _check_url(name: str, value: str) -> str:
    parsed = urlparse(value)
    if parsed.scheme not in ("http", "https") or not parsed.hostname:
        raise SettingsError(f"{name} must be an https:// URL, got {value!r}")
    if parsed.scheme == "http" and not is_loopback(parsed.hostname):
        raise SettingsError(f"{name} may use plain http:// only for loopback addresses: {value!r}")
    return value.rstrip("/")


def _flag(value: str | None, default: bool) -> bool:
    if value is None or value == "":
        return default
    return value.strip().lower() in ("1", "true", "yes", "on")


@dataclass(frozen=True)
class Settings:
    database_url: str
    catalog_path: Path
    var_dir: Path
    kinde_domain: str | None = None
    kinde_jwks_url: str | None = None
    kinde_api_audience: str | None = None
    kinde_m2m_client_id: str | None = None
    kinde_m2m_client_secret: str | None = None
    public_url: str = "http://127.0.0.1:8000"
    top_up_url: str | None = None
    notify_webhook_url: str | None = None
    notify_webhook_secret: str | None = None
    smtp_host: str | None = None
    smtp_port: int = 587
    smtp_username: str | None = None
    smtp_password: str | None = None
    smtp_from: str | None = None
    smtp_starttls: bool = True
    outbox_max_attempts: int = 12
    outbox_lease_seconds: int = 60
    outbox_confirm_seconds: int = 300
    run_worker: bool = True
    # POST /top-ups {bundle} without a payment gateway gives credits away, unless the product
    # collects payment itself first. Default: only in local mode (nothing to bill with).
    sales_paid_elsewhere: bool = False
    # The customer dashboard (app.http.dashboard): the key that signs its links and sessions
    # (unset: a random one persisted under var_dir), the base URL its links start with
    # (unset: the URL the link was asked for on), whether its buy buttons may sell packs that
    # are not invoiced (SALES_PAID_ELSEWHERE or no Kinde billing), and whether customers may
    # change auto-recharge there.
    dashboard_secret: str | None = None
    dashboard_base_url: str | None = None
    dashboard_unbilled_purchases: bool = False
    dashboard_auto_recharge: bool = True
    # Access tokens valid for longer than this (exp - iat, or exp - now) are refused. Kinde
    # issues tokens for a day unless the application's token settings say otherwise.
    token_max_lifetime_seconds: int = 86400
    # `GET /metrics` answers only `Authorization: Bearer <metrics_token>` when set, and only
    # loopback clients when not.
    metrics_token: str | None = None

    @property
    def local_mode(self) -> bool:
        return self.kinde_domain is None

    @property
    def issuer(self) -> str:
        """Who signs tokens: the Kinde domain, or this service itself in local mode."""
        return self.kinde_domain or self.public_url

    @property
    def jwks_url(self) -> str | None:
        if self.kinde_jwks_url:
            return self.kinde_jwks_url
        if self.kinde_domain:
            return f"{self.kinde_domain}/.well-known/jwks.json"
        return None

    @property
    def local_key_path(self) -> Path:
        return self.var_dir / "local-signing-key.pem"

    @property
    def dashboard_secret_path(self) -> Path:
        return self.var_dir / "dashboard-secret"

    def as_env(self) -> dict[str, str]:
        """Environment-style view for adapters that read settings by their variable names."""
        pairs = {
            "NOTIFY_WEBHOOK_URL": self.notify_webhook_url,
            "NOTIFY_WEBHOOK_SECRET": self.notify_webhook_secret,
            "SMTP_HOST": self.smtp_host,
            "SMTP_PORT": str(self.smtp_port),
            "SMTP_USERNAME": self.smtp_username,
            "SMTP_PASSWORD": self.smtp_password,
            "SMTP_FROM": self.smtp_from,
            "SMTP_STARTTLS": "true" if self.smtp_starttls else "false",
        }
        return {k: v for k, v in pairs.items() if v is not None}

    @classmethod
    def from_env(
        cls, environ: Mapping[str, str] | None = None, *, load_dotenv: bool = True
    ) -> Settings:
        if environ is None:
            if load_dotenv:
                from dotenv import load_dotenv as _load

                _load(Path.cwd() / ".env", override=False)
            environ = os.environ
        env = {k: v for k, v in environ.items() if v != ""}

        var_dir = Path(env.get("KINDE_CREDITS_VAR_DIR", str(Path.cwd() / "var")))
        database_url = env.get("DATABASE_URL", f"sqlite:///{var_dir / 'credits.db'}")
        if database_url.startswith("postgres://"):
            database_url = "postgresql://" + database_url[len("postgres://") :]

        kinde_domain = env.get("KINDE_DOMAIN")
        if kinde_domain:
            if "://" not in kinde_domain:
                kinde_domain = "https://" + kinde_domain
            kinde_domain = _check_url("KINDE_DOMAIN", kinde_domain)
        jwks_url = env.get("KINDE_JWKS_URL")
        if jwks_url:
            jwks_url = _check_url("KINDE_JWKS_URL", jwks_url)

        webhook_url = env.get("NOTIFY_WEBHOOK_URL")
        webhook_secret = env.get("NOTIFY_WEBHOOK_SECRET")
        if webhook_url:
            webhook_url = _check_url("NOTIFY_WEBHOOK_URL", webhook_url)
            if not webhook_secret:
                raise SettingsError("NOTIFY_WEBHOOK_URL is set but NOTIFY_WEBHOOK_SECRET is not")
        if webhook_secret and not webhook_secret.startswith("whsec_"):
            raise SettingsError("NOTIFY_WEBHOOK_SECRET must start with whsec_")

        if kinde_domain and not env.get("KINDE_API_AUDIENCE"):
            # Without an audience any token Kinde issued for another API would be accepted.
            raise SettingsError("KINDE_DOMAIN is set: KINDE_API_AUDIENCE must be set too")

        client_id = env.get("KINDE_M2M_CLIENT_ID")
        client_secret = env.get("KINDE_M2M_CLIENT_SECRET")
        if bool(client_id) != bool(client_secret):
            raise SettingsError("set both KINDE_M2M_CLIENT_ID and KINDE_M2M_CLIENT_SECRET")

        def integer(name: str, default: int, minimum: int = 1) -> int:
            raw = env.get(name)
            if raw is None:
                return default
            try:
                value = int(raw)
            except ValueError:
                raise SettingsError(f"{name} must be a whole number, got {raw!r}") from None
            if value < minimum:
                raise SettingsError(f"{name} must be at least {minimum}")
            return value

        dashboard_secret = env.get("DASHBOARD_SECRET")
        if dashboard_secret is not None and len(dashboard_secret) < 32:
            # Links grant access to a wallet's dashboard: a short key could be guessed offline.
            raise SettingsError("DASHBOARD_SECRET must be at least 32 characters")
        dashboard_base_url = env.get("DASHBOARD_BASE_URL")
        if dashboard_base_url:
            dashboard_base_url = _check_url("DASHBOARD_BASE_URL", dashboard_base_url)

        token_max_lifetime = integer("TOKEN_MAX_LIFETIME_SECONDS", 86400, minimum=60)
        if token_max_lifetime > MAX_TOKEN_LIFETIME:
            raise SettingsError(
                f"TOKEN_MAX_LIFETIME_SECONDS must be at most {MAX_TOKEN_LIFETIME} (a year)"
            )
        metrics_token = env.get("METRICS_TOKEN")
        if metrics_token is not None and (
            len(metrics_token) < 16 or not metrics_token.isascii()
            or not metrics_token.isprintable() or " " in metrics_token
        ):
            raise SettingsError(
                "METRICS_TOKEN must be at least 16 printable ASCII characters without spaces"
            )

        public_url = _check_url(
            "PUBLIC_URL", env.get("PUBLIC_URL", "http://127.0.0.1:8000")
        )
        return cls(
            database_url=database_url,
            catalog_path=Path(env.get("CREDITS_CATALOG", str(DEFAULT_CATALOG))),
            var_dir=var_dir,
            kinde_domain=kinde_domain,
            kinde_jwks_url=jwks_url,
            kinde_api_audience=env.get("KINDE_API_AUDIENCE"),
            kinde_m2m_client_id=client_id,
            kinde_m2m_client_secret=client_secret,
            public_url=public_url,
            top_up_url=env.get("TOP_UP_URL"),
            notify_webhook_url=webhook_url,
            notify_webhook_secret=webhook_secret,
            smtp_host=env.get("SMTP_HOST"),
            smtp_port=integer("SMTP_PORT", 587),
            smtp_username=env.get("SMTP_USERNAME"),
            smtp_password=env.get("SMTP_PASSWORD"),
            smtp_from=env.get("SMTP_FROM"),
            smtp_starttls=_flag(env.get("SMTP_STARTTLS"), True),
            outbox_max_attempts=integer("OUTBOX_MAX_ATTEMPTS", 12),
            outbox_lease_seconds=integer("OUTBOX_LEASE_SECONDS", 60),
            outbox_confirm_seconds=integer("OUTBOX_CONFIRM_SECONDS", 300),
            run_worker=_flag(env.get("RUN_WORKER"), True),
            sales_paid_elsewhere=_flag(env.get("SALES_PAID_ELSEWHERE"), not kinde_domain),
            dashboard_secret=dashboard_secret,
            dashboard_base_url=dashboard_base_url,
            dashboard_unbilled_purchases=_flag(env.get("DASHBOARD_UNBILLED_PURCHASES"), False),
            dashboard_auto_recharge=_flag(env.get("DASHBOARD_AUTO_RECHARGE"), True),
            token_max_lifetime_seconds=token_max_lifetime,
            metrics_token=metrics_token,
        )
