"""Notification channels against real local servers: an SMTP server (aiosmtpd) and an HTTP
receiver that verifies signatures with the reference `standardwebhooks` library.

Nothing is patched: a delivery counts as correct only if an independent verifier accepts it,
and the rejection tests show that the same verifier does refuse a wrong secret or body.
"""

from __future__ import annotations

import base64
import logging
import socket
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import pytest
import requests

from adapters.notify import (
    DeliveryFailed,
    EmailChannel,
    LogChannel,
    Notification,
    NotificationChannel,
    NotifyConfigError,
    WebhookChannel,
    build_channels,
)
from tests.fakes.smtp_server import SmtpServer
from tests.fakes.webhook_receiver import WebhookReceiver

SECRET = "whsec_" + base64.b64encode(b"kinde-credits-test-secret-32byte").decode()
OTHER_SECRET = "whsec_" + base64.b64encode(b"a-completely-different-secret!!!").decode()
SENDER = "Credits <credits@example.com>"


def make_notification(**overrides: object) -> Notification:
    fields: dict[str, object] = {
        "id": "ntf_01JD0000000000000000000001",
        "type": "credits.balance_low",
        "timestamp": datetime(2026, 11, 24, 12, 0, tzinfo=UTC),
        "data": {
            "wallet_id": "kp_ada",
            "balance": 2500,
            "threshold_percent": 25,
            "reference_balance": 10000,
            "message": "2,500 credits left, about 50 reports.",
        },
        "recipient_email": "ada@example.com",
        "subject": "Low credit balance: 2,500 credits left",
        "text": "2,500 credits left, about 50 reports.\nTop up: https://app.example.com/billing",
    }
    fields.update(overrides)
    return Notification(**fields)  # type: ignore[arg-type]


def free_port() -> int:
    """A port nothing listens on (bound, then released)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture
def smtp() -> Iterator[SmtpServer]:
    with SmtpServer() as server:
        yield server


@pytest.fixture
def receiver() -> Iterator[WebhookReceiver]:
    with WebhookReceiver(SECRET) as server:
        yield server


def email_channel(smtp: SmtpServer, **kwargs: object) -> EmailChannel:
    options: dict[str, object] = {"sender": SENDER, "starttls": False, "timeout": 5.0}
    options.update(kwargs)
    return EmailChannel(smtp.host, smtp.port, **options)  # type: ignore[arg-type]


# -- e-mail ---------------------------------------------------------------------------------


def test_email_arrives_with_headers_and_body(smtp: SmtpServer) -> None:
    notification = make_notification()
    email_channel(smtp).send(notification)

    [message] = smtp.messages
    assert message["To"] == "ada@example.com"
    assert message["From"] == SENDER
    assert message["Subject"] == "Low credit balance: 2,500 credits left"
    assert message["Message-ID"] == "<ntf_01JD0000000000000000000001@example.com>"
    assert message["Auto-Submitted"] == "auto-generated"
    assert message["Date"] == "Tue, 24 Nov 2026 12:00:00 +0000"
    body = message.get_content()
    assert "2,500 credits left, about 50 reports." in body
    assert "Top up: https://app.example.com/billing" in body
    assert smtp.envelopes == [("credits@example.com", ["ada@example.com"])]


def test_retried_email_keeps_its_message_id(smtp: SmtpServer) -> None:
    channel = email_channel(smtp)
    notification = make_notification()
    channel.send(notification)
    channel.send(notification)  # e.g. the worker crashed before marking the row sent

    first, second = smtp.messages
    assert first["Message-ID"] == second["Message-ID"]
    assert first["Date"] == second["Date"]
    other = make_notification(id="ntf_other")
    channel.send(other)
    assert smtp.messages[2]["Message-ID"] != first["Message-ID"]


def test_unsafe_id_gives_a_stable_valid_message_id(smtp: SmtpServer) -> None:
    channel = email_channel(smtp)
    notification = make_notification(id="ntf 42 <weird>")
    channel.send(notification)
    channel.send(notification)
    ids = [m["Message-ID"] for m in smtp.messages]
    assert ids[0] == ids[1]
    assert ids[0].startswith("<h") and ids[0].endswith("@example.com>") and " " not in ids[0]


def test_smtp_down_is_retryable() -> None:
    channel = EmailChannel("127.0.0.1", free_port(), sender=SENDER, starttls=False, timeout=2)
    with pytest.raises(DeliveryFailed) as caught:
        channel.send(make_notification())
    assert caught.value.retryable is True


def test_smtp_4xx_is_retryable_then_succeeds(smtp: SmtpServer) -> None:
    smtp.fail_next_data("451 4.3.0 Try again later")
    channel = email_channel(smtp)
    with pytest.raises(DeliveryFailed) as caught:
        channel.send(make_notification())
    assert caught.value.retryable is True
    assert "451" in caught.value.message
    channel.send(make_notification())
    assert len(smtp.messages) == 1


def test_smtp_5xx_is_permanent(smtp: SmtpServer) -> None:
    smtp.fail_next_data("554 5.7.1 Message rejected")
    with pytest.raises(DeliveryFailed) as caught:
        email_channel(smtp).send(make_notification())
    assert caught.value.retryable is False
    assert "554" in caught.value.message


@pytest.mark.parametrize(("reply", "retryable"), [
    ("550 5.1.1 No such user", False),
    ("450 4.2.1 Mailbox busy", True),
])
def test_refused_recipient(smtp: SmtpServer, reply: str, retryable: bool) -> None:
    smtp.fail_next_rcpt(reply)
    with pytest.raises(DeliveryFailed) as caught:
        email_channel(smtp).send(make_notification())
    assert caught.value.retryable is retryable
    assert smtp.messages == []


def test_no_recipient_is_skipped_permanently(smtp: SmtpServer) -> None:
    with pytest.raises(DeliveryFailed) as caught:
        email_channel(smtp).send(make_notification(recipient_email=None))
    assert caught.value.retryable is False
    assert caught.value.message == "no recipient e-mail"
    assert smtp.messages == []


def test_starttls_against_a_plain_server_is_permanent(smtp: SmtpServer) -> None:
    with pytest.raises(DeliveryFailed) as caught:
        email_channel(smtp, starttls=True).send(make_notification())
    assert caught.value.retryable is False


def test_password_never_shows(smtp: SmtpServer, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    # The test server offers no AUTH, so login fails: the error must not carry the password.
    channel = email_channel(smtp, username="mailer", password="hunter2-s3cret")
    assert "hunter2" not in repr(channel)
    with pytest.raises(DeliveryFailed) as caught:
        channel.send(make_notification())
    assert caught.value.retryable is False
    assert "hunter2" not in str(caught.value)
    assert "hunter2" not in caplog.text


def test_header_injection_in_subject_is_neutralised(smtp: SmtpServer) -> None:
    email_channel(smtp).send(make_notification(subject="Low\r\nBcc: evil@example.com"))
    [message] = smtp.messages
    assert message["Bcc"] is None
    assert message["Subject"] == "Low Bcc: evil@example.com"
    assert smtp.envelopes[0][1] == ["ada@example.com"]


def test_credentials_in_clear_to_a_remote_host_are_refused() -> None:
    with pytest.raises(NotifyConfigError, match="SMTP_STARTTLS"):
        EmailChannel("smtp.example.com", 25, "u", "p", sender=SENDER, starttls=False)


# -- webhooks -------------------------------------------------------------------------------


def test_webhook_arrives_and_verifies(receiver: WebhookReceiver) -> None:
    notification = make_notification()
    WebhookChannel(receiver.url, SECRET).send(notification)

    assert receiver.rejections == []
    [delivery] = receiver.deliveries
    assert delivery.payload == {
        "type": "credits.balance_low",
        "timestamp": "2026-11-24T12:00:00Z",
        "data": notification.data,
    }
    assert delivery.headers["webhook-id"] == notification.id
    assert delivery.headers["content-type"] == "application/json"
    assert delivery.headers["webhook-signature"].startswith("v1,")


def test_retry_keeps_the_id_and_signs_with_the_attempt_time(receiver: WebhookReceiver) -> None:
    now = [datetime.now(UTC) - timedelta(minutes=2)]
    channel = WebhookChannel(receiver.url, SECRET, clock=lambda: now[0])
    notification = make_notification()  # its own timestamp is long past: not what is signed
    channel.send(notification)
    now[0] += timedelta(seconds=90)
    channel.send(notification)

    first, second = receiver.deliveries
    assert first.headers["webhook-id"] == second.headers["webhook-id"] == notification.id
    assert int(second.headers["webhook-timestamp"]) - int(first.headers["webhook-timestamp"]) == 90
    assert first.body == second.body


def test_receiver_with_another_secret_rejects() -> None:
    with WebhookReceiver(OTHER_SECRET) as other:
        with pytest.raises(DeliveryFailed) as caught:
            WebhookChannel(other.url, SECRET).send(make_notification())
        assert other.deliveries == []
        [rejection] = other.rejections
        assert "signature" in rejection.reason.lower()
    assert caught.value.retryable is False  # 401: resending the same thing will not help


def test_tampered_body_is_rejected(receiver: WebhookReceiver) -> None:
    channel = WebhookChannel(receiver.url, SECRET)
    notification = make_notification()
    body = channel.body(notification)
    headers = channel.headers(notification, body)
    tampered = body.replace("2500", "250000")
    assert tampered != body

    answer = requests.post(receiver.url, data=tampered.encode(), headers=headers, timeout=5)
    assert answer.status_code == 401
    assert receiver.deliveries == []
    assert len(receiver.rejections) == 1

    # The untouched body with the same headers does verify: the check is on the content.
    assert requests.post(receiver.url, data=body.encode(), headers=headers, timeout=5).ok
    assert len(receiver.deliveries) == 1


def test_stale_signature_timestamp_is_rejected(receiver: WebhookReceiver) -> None:
    stale = datetime.now(UTC) - timedelta(minutes=10)
    with pytest.raises(DeliveryFailed):
        WebhookChannel(receiver.url, SECRET, clock=lambda: stale).send(make_notification())
    assert "too old" in receiver.rejections[0].reason


def test_5xx_is_retryable(receiver: WebhookReceiver) -> None:
    receiver.respond_next(500)
    channel = WebhookChannel(receiver.url, SECRET)
    with pytest.raises(DeliveryFailed) as caught:
        channel.send(make_notification())
    assert caught.value.retryable is True
    assert "500" in caught.value.message
    channel.send(make_notification())  # the receiver recovered
    assert len(receiver.deliveries) == 2


def test_400_is_permanent(receiver: WebhookReceiver) -> None:
    receiver.respond_next(400)
    with pytest.raises(DeliveryFailed) as caught:
        WebhookChannel(receiver.url, SECRET).send(make_notification())
    assert caught.value.retryable is False


@pytest.mark.parametrize(("status", "headers", "retry_after"), [
    (429, {"Retry-After": "7"}, 7.0),
    (503, {"Retry-After": "120"}, 120.0),
    (408, {}, None),
    (503, {"Retry-After": "soon"}, None),
])
def test_retryable_statuses_and_retry_after(
    receiver: WebhookReceiver, status: int, headers: dict[str, str], retry_after: float | None
) -> None:
    receiver.respond_next(status, headers)
    with pytest.raises(DeliveryFailed) as caught:
        WebhookChannel(receiver.url, SECRET).send(make_notification())
    assert caught.value.retryable is True
    assert caught.value.retry_after == retry_after


def test_retry_after_as_http_date(receiver: WebhookReceiver) -> None:
    # Retry-After may also be an HTTP date; the channel turns it into seconds from now.
    when = (datetime.now(UTC) + timedelta(seconds=60)).strftime("%a, %d %b %Y %H:%M:%S GMT")
    receiver.respond_next(429, {"Retry-After": when})
    with pytest.raises(DeliveryFailed) as caught:
        WebhookChannel(receiver.url, SECRET).send(make_notification())
    assert caught.value.retry_after is not None
    assert 55 <= caught.value.retry_after <= 60


def test_redirect_is_not_followed(receiver: WebhookReceiver) -> None:
    receiver.respond_next(301, {"Location": "https://elsewhere.example.com/"})
    with pytest.raises(DeliveryFailed) as caught:
        WebhookChannel(receiver.url, SECRET).send(make_notification())
    assert caught.value.retryable is False
    assert "NOTIFY_WEBHOOK_URL" in caught.value.message


def test_receiver_down_is_retryable() -> None:
    channel = WebhookChannel(f"http://127.0.0.1:{free_port()}/hook", SECRET, timeout=2)
    with pytest.raises(DeliveryFailed) as caught:
        channel.send(make_notification())
    assert caught.value.retryable is True


def test_timeout_is_retryable(receiver: WebhookReceiver) -> None:
    receiver.set_delay(2)
    with pytest.raises(DeliveryFailed) as caught:
        WebhookChannel(receiver.url, SECRET, timeout=0.2).send(make_notification())
    assert caught.value.retryable is True


@pytest.mark.parametrize(("secret", "fragment"), [
    ("not-a-secret", "must start with whsec_"),
    ("whsec_", "empty"),
    ("whsec_!!!not*base64", "base64"),
])
def test_bad_secret_is_refused_at_construction(secret: str, fragment: str) -> None:
    with pytest.raises(NotifyConfigError, match=fragment) as caught:
        WebhookChannel("https://hooks.example.com/x", secret)
    assert "NOTIFY_WEBHOOK_SECRET" in str(caught.value)
    assert "!!!" not in str(caught.value)  # the secret itself is never echoed


def test_webhook_repr_hides_the_secret() -> None:
    assert SECRET[6:] not in repr(WebhookChannel("https://hooks.example.com/x", SECRET))


# -- log and composition ---------------------------------------------------------------------


def test_log_channel_writes_one_line(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="kinde_credits.notifications")
    LogChannel().send(make_notification())
    [record] = caplog.records
    assert record.levelno == logging.INFO
    line = record.getMessage()
    assert "\n" not in line
    assert "type=credits.balance_low" in line and "wallet_id=kp_ada" in line
    assert "2,500 credits left" in line


def test_build_channels_log_only_by_default() -> None:
    channels = build_channels({"SMTP_PORT": "587", "SMTP_STARTTLS": "true"})
    assert [c.name for c in channels] == ["log"]
    assert all(isinstance(c, NotificationChannel) for c in channels)


def test_build_channels_all() -> None:
    channels = build_channels({
        "NOTIFY_WEBHOOK_URL": "https://hooks.example.com/credits",
        "NOTIFY_WEBHOOK_SECRET": SECRET,
        "SMTP_HOST": "smtp.example.com",
        "SMTP_PORT": "2525",
        "SMTP_USERNAME": "mailer",
        "SMTP_PASSWORD": "pw",
        "SMTP_FROM": SENDER,
        "SMTP_STARTTLS": "true",
    })
    assert [c.name for c in channels] == ["webhook", "email", "log"]
    email = channels[1]
    assert isinstance(email, EmailChannel) and email.port == 2525 and email.starttls


@pytest.mark.parametrize(("env", "variable"), [
    ({"NOTIFY_WEBHOOK_URL": "https://hooks.example.com/x"}, "NOTIFY_WEBHOOK_SECRET"),
    ({"NOTIFY_WEBHOOK_URL": "https://hooks.example.com/x", "NOTIFY_WEBHOOK_SECRET": ""},
     "NOTIFY_WEBHOOK_SECRET"),
    ({"NOTIFY_WEBHOOK_SECRET": SECRET}, "NOTIFY_WEBHOOK_URL"),
    ({"NOTIFY_WEBHOOK_URL": "https://h.example.com", "NOTIFY_WEBHOOK_SECRET": "abc"},
     "NOTIFY_WEBHOOK_SECRET"),
    ({"NOTIFY_WEBHOOK_URL": "ftp://h.example.com", "NOTIFY_WEBHOOK_SECRET": SECRET},
     "NOTIFY_WEBHOOK_URL"),
    ({"SMTP_HOST": "smtp.example.com"}, "SMTP_FROM"),
    ({"SMTP_HOST": "smtp.example.com", "SMTP_FROM": SENDER, "SMTP_PORT": "x"}, "SMTP_PORT"),
    ({"SMTP_HOST": "smtp.example.com", "SMTP_FROM": SENDER, "SMTP_USERNAME": "u"},
     "SMTP_PASSWORD"),
    ({"SMTP_HOST": "smtp.example.com", "SMTP_FROM": SENDER, "SMTP_STARTTLS": "maybe"},
     "SMTP_STARTTLS"),
    ({"SMTP_FROM": SENDER}, "SMTP_HOST"),
])
def test_half_configured_channels_name_the_variable(env: dict[str, str], variable: str) -> None:
    with pytest.raises(NotifyConfigError, match=variable):
        build_channels(env)


def test_build_channels_sends_through_real_servers(
    smtp: SmtpServer, receiver: WebhookReceiver
) -> None:
    channels = build_channels({
        "NOTIFY_WEBHOOK_URL": receiver.url,
        "NOTIFY_WEBHOOK_SECRET": SECRET,
        "SMTP_HOST": smtp.host,
        "SMTP_PORT": str(smtp.port),
        "SMTP_FROM": SENDER,
        "SMTP_STARTTLS": "false",
    })
    for channel in channels:
        channel.send(make_notification())
    assert len(receiver.deliveries) == 1 and len(smtp.messages) == 1
