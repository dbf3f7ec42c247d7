"""Kinde event ids with control or bidi characters (issue 18, finding 13): parked under a
stand-in id, never stored raw, never shown raw by `kinde-credits events`, which also escapes
such characters in rows stored before the rule. The API side is in test_id_characters.py.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path

import pytest
from click.testing import CliRunner
from sqlalchemy import create_engine, insert, select

from adapters.sql import schema as t
from app.cli import main
from tests.integration.test_id_characters import CHAR_IDS, CHARS, _latin1
from tests.webhook_fixtures import WebhookEnv, event

# Fixtures: jwks, signing_key, other_key, webhook_env.
pytest_plugins = ["tests.webhook_fixtures"]


@pytest.mark.parametrize("ch", CHARS, ids=CHAR_IDS)
def test_event_id_with_control_or_bidi_character_is_parked_not_stored_raw(
    webhook_env: WebhookEnv, ch: str, tmp_path: Path
) -> None:
    raw_id = f"event_{ch}gnirts"
    payload = event("user.created", {"user": {"id": "kp_evil", "email": "e@example.com"}},
                    event_id=raw_id)
    first = webhook_env.deliver(payload)
    assert first.status_code == 200, first.get_data(as_text=True)
    body = first.get_json()
    assert body["status"] == "parked", body
    assert body["event_id"] != raw_id and ch not in body["event_id"]
    assert "event_id" in body["reason"] and ch not in body["reason"]
    again = webhook_env.deliver(payload)
    assert again.get_json()["status"] == "duplicate"
    assert webhook_env.counts()["entries"] == 0
    engine = webhook_env.container.store.engine
    with engine.connect() as conn:
        stored = [tuple(r) for r in conn.execute(select(
            t.webhook_events.c.event_id, t.webhook_events.c.type,
            t.webhook_events.c.park_reason, t.webhook_events.c.webhook_id))]
    assert len(stored) == 1
    assert all(ch not in (value or "") for value in stored[0]), stored
    listing = _events_cli(webhook_env, tmp_path)
    assert ch not in listing and body["event_id"] in listing


def test_event_id_with_bidi_in_the_webhook_id_header_is_dropped(webhook_env: WebhookEnv) -> None:
    payload = event("user.created", {"user": {"id": "kp_hdr"}})
    answer = webhook_env.deliver(payload, webhook_id=_latin1("msg_\u202e1"))
    assert answer.get_json()["status"] == "processed"
    assert webhook_env.inbox_row(payload["event_id"]).webhook_id is None


def _events_cli(env: WebhookEnv, tmp_path: Path, *args: str) -> str:
    result = CliRunner().invoke(main, ["events", *args], env={
        "DATABASE_URL": env.container.settings.database_url,
        "KINDE_CREDITS_VAR_DIR": str(tmp_path / "cli"), "KINDE_DOMAIN": "",
        "KINDE_API_AUDIENCE": ""}, catch_exceptions=False)
    assert result.exit_code == 0, result.output
    return str(result.output)


def test_events_command_escapes_legacy_rows(webhook_env: WebhookEnv, tmp_path: Path) -> None:
    """Rows stored before the rule may hold such characters: the listing shows them escaped,
    so `evil\u202e` cannot reorder the rest of the line in a terminal."""
    engine = create_engine(webhook_env.container.settings.database_url)
    with engine.begin() as conn:
        conn.execute(insert(t.webhook_events).values(
            event_id="event_\u202egnirts\u2066", type="user.created\x1b[2J",
            status="parked", payload="{}", raw_body="x",
            park_reason="wallet kp_\u202eevil\x85 \u061c", attempts=1,
            received_at=datetime(2026, 1, 1, tzinfo=UTC), wallet_id="kp_a"))
    engine.dispose()
    listing = _events_cli(webhook_env, tmp_path)
    for ch in ("\u202e", "\u2066", "\x1b", "\x85", "\u061c"):
        assert ch not in listing
    assert "event_\\u202egnirts\\u2066" in listing and "\\x1b[2J" in listing
    as_json = json.loads(_events_cli(webhook_env, tmp_path, "--json"))
    # JSON keeps the stored value (escaped by the JSON encoding itself).
    assert as_json["events"][0]["event_id"] == "event_\u202egnirts\u2066"
