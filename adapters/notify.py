"""Outgoing notification channels: signed webhooks, e-mail and the log.

A channel delivers one `Notification` per call and either returns (delivered) or raises
`DeliveryFailed` saying whether trying again could help. Retrying, backoff and dead-lettering
are the outbox worker's job (DESIGN.md, "Calls to the outside"); channels never retry on their
own, so one attempt here is one attempt in the outbox's books.

The notification id is fixed when the outbox row is written and reused on every attempt: it is
the Standard Webhooks `webhook-id` and the e-mail Message-ID, which is what lets receivers
recognise a resend after a crash or a timeout as the same message.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import logging
import math
import re
import smtplib
import ssl
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from email.message import EmailMessage
from email.utils import format_datetime, parseaddr, parsedate_to_datetime
from urllib.parse import urlparse

import requests
from standardwebhooks import Webhook

from app.domain.hosts import is_loopback
from app.services.ports import DeliveryFailed, Notification, NotificationChannel

__all__ = [
    "DeliveryFailed",
    "EmailChannel",
    "LogChannel",
    "Notification",
    "NotificationChannel",
    "NotifyConfigError",
    "WebhookChannel",
    "build_channels",
]

_SECRET_PREFIX = "whsec_"
_MAX_ERROR_TEXT = 300
# Characters allowed in the left part of a Message-ID (RFC 5322 dot-atom-text).
_MSGID_SAFE = re.compile(r"^[A-Za-z0-9!#$%&'*+/=?^_`{|}~.-]+$")


class NotifyConfigError(ValueError):
    """A notification channel is misconfigured; the message names the variable. The
    composition root reports it as a bad setting (app.settings.SettingsError)."""


def _utc_iso(ts: datetime) -> str:
    return ts.astimezone(UTC).isoformat().replace("+00:00", "Z")


def _truncate(text: str) -> str:
    text = " ".join(text.split())
    return text if len(text) <= _MAX_ERROR_TEXT else text[: _MAX_ERROR_TEXT - 3] + "..."


# --- webhook -------------------------------------------------------------------------------


def validate_webhook_secret(secret: str, name: str = "NOTIFY_WEBHOOK_SECRET") -> bytes:
    """Decode a `whsec_<base64>` secret, or raise NotifyConfigError naming `name`.

    The standardwebhooks library decodes leniently (junk characters are dropped), so a typo
    would silently give a different key and every receiver would reject us; check strictly.
    The secret itself never appears in an error message.
    """
    if not isinstance(secret, str) or not secret.startswith(_SECRET_PREFIX):
        raise NotifyConfigError(f"{name} must start with {_SECRET_PREFIX}")
    encoded = secret[len(_SECRET_PREFIX) :].strip()
    try:
        key = base64.b64decode(encoded + "=" * (-len(encoded) % 4), validate=True)
    except (binascii.Error, ValueError):
        raise NotifyConfigError(
            f"{name} must be {_SECRET_PREFIX} followed by base64 (as issued by a Standard "
            "Webhooks receiver)"
        ) from None
    if not key:
        raise NotifyConfigError(f"{name} has an empty key after {_SECRET_PREFIX}")
    return key


def _retry_after_seconds(header: str | None, now: datetime) -> float | None:
    """`Retry-After` is either delta-seconds or an HTTP date (RFC 9110 10.2.3)."""
    if not header:
        return None
    header = header.strip()
    try:
        seconds = float(header)
    except ValueError:
        try:
            when = parsedate_to_datetime(header)
        except (TypeError, ValueError):
            return None
        if when.tzinfo is None:
            when = when.replace(tzinfo=UTC)
        seconds = (when - now).total_seconds()
    if not math.isfinite(seconds):
        return None
    return max(seconds, 0.0)


class WebhookChannel:
    """POSTs `{"type", "timestamp", "data"}` signed per the Standard Webhooks spec."""

    name = "webhook"

    def __init__(
        self,
        url: str,
        secret: str,
        timeout: float = 5.0,
        session: requests.Session | None = None,
        *,
        clock: Callable[[], datetime] | None = None,
    ) -> None:
        parsed = urlparse(url)
        if parsed.scheme not in ("http", "https") or not parsed.hostname:
            raise NotifyConfigError(f"NOTIFY_WEBHOOK_URL must be an http(s) URL, got {url!r}")
        validate_webhook_secret(secret)
        self.url = url
        self.timeout = timeout
        self._webhook = Webhook(secret)
        self._session = session or requests.Session()
        self._clock = clock or (lambda: datetime.now(UTC))

    def __repr__(self) -> str:  # keep the secret out of logs and tracebacks
        return f"WebhookChannel(url={self.url!r})"

    def body(self, notification: Notification) -> str:
        """The exact JSON text that is signed and sent."""
        payload = {
            "type": notification.type,
            "timestamp": _utc_iso(notification.timestamp),
            "data": notification.data,
        }
        # ASCII-only so the signed text and the sent bytes cannot differ by encoding.
        return json.dumps(payload, separators=(",", ":"), ensure_ascii=True)

    def headers(self, notification: Notification, body: str) -> dict[str, str]:
        # Signed with the time of this attempt, not of the event: receivers refuse timestamps
        # older than a few minutes, and a retry may come hours later. The library reads the
        # datetime's wall clock as UTC, so it must be a UTC datetime.
        attempt_at = self._clock().astimezone(UTC)
        signature = self._webhook.sign(notification.id, attempt_at, body)
        return {
            "webhook-id": notification.id,
            "webhook-timestamp": str(math.floor(attempt_at.timestamp())),
            "webhook-signature": signature,
            "content-type": "application/json",
            "user-agent": "kinde-credits-notify/1",
        }

    def send(self, notification: Notification) -> None:
        body = self.body(notification)
        headers = self.headers(notification, body)
        try:
            # Redirects are not followed: requests would turn the POST into a GET on 301/302,
            # and a signed delivery should go where the operator configured it, nowhere else.
            response = self._session.post(
                self.url,
                data=body.encode("ascii"),
                headers=headers,
                timeout=self.timeout,
                allow_redirects=False,
            )
        except requests.Timeout as exc:
            raise DeliveryFailed(True, f"webhook timed out: {type(exc).__name__}") from exc
        except (requests.exceptions.InvalidURL, requests.exceptions.MissingSchema,
                requests.exceptions.InvalidSchema) as exc:
            raise DeliveryFailed(False, f"webhook URL is invalid: {exc}") from exc
        except requests.RequestException as exc:
            # Connection refused, reset, DNS, TLS handshake: the receiver may be back later.
            raise DeliveryFailed(
                True, _truncate(f"webhook unreachable: {type(exc).__name__}: {exc}")
            ) from exc
        self._check(response)

    def _check(self, response: requests.Response) -> None:
        status = response.status_code
        if 200 <= status < 300:
            return
        retry_after = _retry_after_seconds(response.headers.get("Retry-After"), self._clock())
        snippet = _truncate(response.text or "")
        text = f"webhook answered {status}" + (f": {snippet}" if snippet else "")
        if 300 <= status < 400:
            location = response.headers.get("Location", "")
            raise DeliveryFailed(False, f"webhook answered {status} redirect to {location!r}; "
                                        "set NOTIFY_WEBHOOK_URL to the final URL")
        retryable = status >= 500 or status in (408, 429)
        raise DeliveryFailed(retryable, text, retry_after=retry_after)


# --- e-mail --------------------------------------------------------------------------------


class EmailChannel:
    """Sends the notification as a plain-text e-mail over SMTP."""

    name = "email"

    def __init__(
        self,
        host: str,
        port: int,
        username: str | None = None,
        password: str | None = None,
        *,
        sender: str,
        starttls: bool = True,
        timeout: float = 10.0,
    ) -> None:
        if not host:
            raise NotifyConfigError("SMTP_HOST must not be empty")
        if not sender or "@" not in parseaddr(sender)[1]:
            raise NotifyConfigError(f"SMTP_FROM must be an e-mail address, got {sender!r}")
        if bool(username) != bool(password):
            raise NotifyConfigError("set both SMTP_USERNAME and SMTP_PASSWORD, or neither")
        # Port 465 speaks TLS from the first byte (RFC 8314); everything else starts plain.
        self.implicit_tls = port == 465
        if username and not (starttls or self.implicit_tls) and not is_loopback(host):
            # smtplib would send the password in clear text over the network.
            raise NotifyConfigError(
                "SMTP_USERNAME/SMTP_PASSWORD need SMTP_STARTTLS=true (or port 465) "
                "unless SMTP_HOST is a loopback address"
            )
        self.host = host
        self.port = port
        self.username = username
        self._password = password  # private, and left out of __repr__
        self.sender = sender
        self.starttls = starttls
        self.timeout = timeout
        self._domain = parseaddr(sender)[1].rpartition("@")[2] or "kinde-credits.invalid"

    def __repr__(self) -> str:
        return (
            f"EmailChannel(host={self.host!r}, port={self.port}, username={self.username!r}, "
            f"sender={self.sender!r}, starttls={self.starttls})"
        )

    def message_id(self, notification: Notification) -> str:
        """`<id@sender-domain>`: the same for every attempt at the same notification."""
        left = notification.id
        if not _MSGID_SAFE.match(left) or left.startswith(".") or left.endswith(".") \
                or ".." in left:
            left = "h" + hashlib.sha256(left.encode()).hexdigest()[:32]
        return f"<{left}@{self._domain}>"

    def build_message(self, notification: Notification) -> EmailMessage:
        if not notification.recipient_email:
            raise DeliveryFailed(False, "no recipient e-mail")
        msg = EmailMessage()
        try:
            # Headers cannot carry line breaks; a subject built from data must not inject any.
            msg["Subject"] = " ".join(notification.subject.split())
            msg["From"] = self.sender
            msg["To"] = notification.recipient_email
            msg["Message-ID"] = self.message_id(notification)
            # The event's time, not the attempt's, so a resend is the identical message.
            msg["Date"] = format_datetime(notification.timestamp.astimezone(UTC))
            # RFC 3834: tells auto-responders (vacation replies) not to answer.
            msg["Auto-Submitted"] = "auto-generated"
            msg["X-Kinde-Credits-Event"] = notification.type
            msg.set_content(notification.text)
        except (ValueError, TypeError) as exc:
            raise DeliveryFailed(False, _truncate(f"cannot build e-mail: {exc}")) from exc
        return msg

    def _connect(self) -> smtplib.SMTP:
        context = ssl.create_default_context()
        if self.implicit_tls:
            return smtplib.SMTP_SSL(self.host, self.port, timeout=self.timeout, context=context)
        smtp = smtplib.SMTP(self.host, self.port, timeout=self.timeout)
        try:
            smtp.ehlo()
            if self.starttls:
                smtp.starttls(context=context)
                smtp.ehlo()
        except BaseException:
            smtp.close()
            raise
        return smtp

    def send(self, notification: Notification) -> None:
        msg = self.build_message(notification)
        try:
            with self._connect() as smtp:
                if self.username and self._password:
                    smtp.login(self.username, self._password)
                smtp.send_message(msg)
        except smtplib.SMTPRecipientsRefused as exc:
            codes = [code for code, _ in exc.recipients.values()]
            retryable = bool(codes) and all(400 <= c < 500 for c in codes)
            raise DeliveryFailed(
                retryable, _truncate(f"SMTP refused the recipient: {_smtp_detail(exc)}")
            ) from exc
        except smtplib.SMTPNotSupportedError as exc:
            raise DeliveryFailed(False, f"SMTP server does not support it: {exc}") from exc
        except smtplib.SMTPResponseException as exc:
            # 4xx: try again later (greylisting, mailbox busy); 5xx: it will not change.
            # Authentication failures are 535 and land here as permanent; their text is the
            # server's answer, which never echoes the password.
            retryable = 400 <= exc.smtp_code < 500
            raise DeliveryFailed(
                retryable, _truncate(f"SMTP {exc.smtp_code}: {_decode(exc.smtp_error)}")
            ) from exc
        except ssl.SSLCertVerificationError as exc:
            raise DeliveryFailed(False, _truncate(f"SMTP TLS certificate rejected: {exc}")) \
                from exc
        except (smtplib.SMTPException, OSError) as exc:
            # Disconnects, refused connections, timeouts, DNS failures: transient.
            raise DeliveryFailed(
                True, _truncate(f"SMTP unavailable: {type(exc).__name__}: {exc}")
            ) from exc


def _decode(value: bytes | str) -> str:
    return value.decode("utf-8", "replace") if isinstance(value, bytes) else str(value)


def _smtp_detail(exc: smtplib.SMTPRecipientsRefused) -> str:
    return "; ".join(f"{addr}: {code} {_decode(text)}" for addr, (code, text)
                     in exc.recipients.items())


# --- log -----------------------------------------------------------------------------------


@dataclass
class LogChannel:
    """Writes each notification as one INFO line: always on, so alerts are visible somewhere
    even before webhooks or e-mail are configured."""

    logger_name: str = "kinde_credits.notifications"
    name: str = field(default="log", init=False)

    def send(self, notification: Notification) -> None:
        logger = logging.getLogger(self.logger_name)
        # json.dumps quotes and escapes, so a text with newlines still makes one line.
        logger.info(
            "notification id=%s type=%s wallet_id=%s text=%s",
            notification.id,
            notification.type,
            notification.data.get("wallet_id"),
            json.dumps(notification.text, ensure_ascii=False),
            extra={
                "notification_id": notification.id,
                "notification_type": notification.type,
                "wallet_id": notification.data.get("wallet_id"),
            },
        )


# --- composition ---------------------------------------------------------------------------


def _flag(name: str, value: str | None, default: bool) -> bool:
    if value is None:
        return default
    lowered = value.strip().lower()
    if lowered in ("1", "true", "yes", "on"):
        return True
    if lowered in ("0", "false", "no", "off"):
        return False
    raise NotifyConfigError(f"{name} must be true or false, got {value!r}")


def build_channels(settings_like: Mapping[str, str]) -> list[NotificationChannel]:
    """Channels from environment-style keys (see Settings.as_env()); empty values count as
    unset. The log channel is always included. Raises NotifyConfigError naming the variable
    when a channel is only half configured."""
    env = {k: v.strip() for k, v in settings_like.items() if v is not None and v.strip()}
    channels: list[NotificationChannel] = []

    url, secret = env.get("NOTIFY_WEBHOOK_URL"), env.get("NOTIFY_WEBHOOK_SECRET")
    if url and not secret:
        raise NotifyConfigError("NOTIFY_WEBHOOK_URL is set but NOTIFY_WEBHOOK_SECRET is not")
    if secret and not url:
        raise NotifyConfigError("NOTIFY_WEBHOOK_SECRET is set but NOTIFY_WEBHOOK_URL is not")
    if url and secret:
        channels.append(WebhookChannel(url, secret))

    host = env.get("SMTP_HOST")
    if host:
        sender = env.get("SMTP_FROM")
        if not sender:
            raise NotifyConfigError("SMTP_HOST is set but SMTP_FROM is not")
        raw_port = env.get("SMTP_PORT", "587")
        try:
            port = int(raw_port)
        except ValueError:
            raise NotifyConfigError(f"SMTP_PORT must be a whole number, got {raw_port!r}") \
                from None
        if not 0 < port < 65536:
            raise NotifyConfigError(f"SMTP_PORT must be between 1 and 65535, got {port}")
        channels.append(
            EmailChannel(
                host,
                port,
                env.get("SMTP_USERNAME"),
                env.get("SMTP_PASSWORD"),
                sender=sender,
                starttls=_flag("SMTP_STARTTLS", env.get("SMTP_STARTTLS"), True),
            )
        )
    else:
        # SMTP_PORT and SMTP_STARTTLS always have defaults in Settings.as_env(); only the
        # values that show intent to send mail count as half-configured.
        stray = [k for k in ("SMTP_FROM", "SMTP_USERNAME", "SMTP_PASSWORD") if k in env]
        if stray:
            raise NotifyConfigError(f"{stray[0]} is set but SMTP_HOST is not")

    channels.append(LogChannel())
    return channels
