"""Ids with control characters (C0, DEL, C1) or invisible Unicode format / bidi characters
(U+202E, U+2066-2069, U+200E/F, U+061C, ...) are refused wherever they enter (issue 18,
finding 13): a Kinde event id is parked under a stand-in id, never stored raw and never shown
raw by `kinde-credits events`; on the API, wallet, hold and member ids, idempotency keys and
feature names are refused and nothing is written. `kinde-credits events` escapes such
characters in rows stored before this rule.

The rule itself is `app.domain.text.text_problem` (unit-tested in tests/unit/test_text_rule.py).
"""

from __future__ import annotations

from typing import Any
from urllib.parse import quote

import pytest
from flask.testing import FlaskClient

from tests.http_fixtures import *  # noqa: F403
from tests.http_fixtures import Tokens, bearer, table_counts

# Each one alone can reorder or hide what a terminal, a log viewer or a browser shows.
BAD_CHARS: list[tuple[str, str]] = [
    ("RLO U+202E", "\u202e"), ("LRI U+2066", "\u2066"), ("PDI U+2069", "\u2069"),
    ("LRM U+200E", "\u200e"), ("RLM U+200F", "\u200f"), ("ALM U+061C", "\u061c"),
    ("ZWSP U+200B", "\u200b"), ("BOM U+FEFF", "\ufeff"), ("LS U+2028", "\u2028"),
    ("NEL U+0085", "\x85"), ("CSI U+009B", "\x9b"), ("DEL", "\x7f"), ("ESC", "\x1b"),
    ("TAB", "\t"), ("CR", "\r"),
]
CHAR_IDS = [name for name, _ in BAD_CHARS]
CHARS = [char for _, char in BAD_CHARS]


def _latin1(text: str) -> str:
    """A header value as the WSGI server hands it over: UTF-8 bytes read as Latin-1."""
    return text.encode("utf-8").decode("latin-1")


# -- the API ---------------------------------------------------------------------------------


def _api_cases(raw: str) -> list[tuple[str, str, dict[str, Any] | None, dict[str, str]]]:
    usage = {"feature": "api_call", "quantity": 1}
    ch = quote(raw, safe="")  # in a URL, as a client sends it (the server decodes it)
    body_ch = raw
    return [
        ("post", f"/v1/wallets/kp_id{ch}x/usage", usage, {}),
        ("post", "/v1/wallets/kp_id/usage", {"feature": f"api_call{body_ch}", "quantity": 1}, {}),
        ("post", "/v1/wallets/kp_id/usage", usage, {"Idempotency-Key": _latin1(f"k{body_ch}1")}),
        ("post", "/v1/wallets/org_id/usage", {**usage, "member": f"kp_m{body_ch}"}, {}),
        ("post", "/v1/wallets/org_id/holds", {"credits": 1, "member": f"kp_m{body_ch}"}, {}),
        ("post", "/v1/wallets/kp_id/holds", {"feature": f"api_call{body_ch}"}, {}),
        ("post", f"/v1/holds/hold_{ch}x/capture", {}, {}),
        ("post", f"/v1/holds/hold_{ch}x/release", {}, {}),
        ("put", f"/v1/wallets/org_id/members/kp_m{ch}/budget", {"credits_per_day": 5}, {}),
        ("get", f"/v1/wallets/kp_id/check?feature=api_call{ch}&quantity=1", None, {}),
        ("get", f"/v1/wallets/org_id/check?feature=api_call&quantity=1&member=kp_m{ch}",
         None, {}),
        ("post", "/v1/usage/batch", {"records": [{"wallet_id": f"kp_id{body_ch}", **usage}]}, {}),
        ("post", "/v1/usage/batch",
         {"records": [{"wallet_id": "kp_id", **usage, "idempotency_key": f"r{body_ch}1"}]}, {}),
        ("post", "/v1/usage/batch",
         {"records": [{"wallet_id": "org_id", **usage, "member": f"kp_m{body_ch}"}]}, {}),
        ("post", "/v1/usage/batch",
         {"records": [{"wallet_id": "kp_id", **usage}]},
         {"Idempotency-Key": _latin1(f"b{body_ch}1")}),
        ("post", "/v1/wallets/kp_id/top-ups", {"credits": 5, "reason": "x"},
         {"Idempotency-Key": _latin1(f"t{body_ch}")}),
    ]


@pytest.mark.parametrize("ch", CHARS, ids=CHAR_IDS)
def test_api_refuses_ids_with_control_or_bidi_characters(
    client: FlaskClient, tokens: Tokens, db_url: str, ch: str
) -> None:
    admin = bearer(tokens.m2m("credits:admin"))
    for wallet in ("kp_id", "org_id"):
        seeded = client.post(f"/v1/wallets/{wallet}/top-ups",
                             json={"credits": 100, "reason": "seed"}, headers=admin)
        assert seeded.status_code == 201
    hold = client.post("/v1/wallets/kp_id/holds", json={"credits": 1}, headers=admin)
    assert hold.status_code == 201
    before = table_counts(db_url)
    for method, path, body, headers in _api_cases(ch):
        if ch in "\r\n" and headers:
            continue  # no HTTP server hands a header value with a line break to the app
        kwargs: dict[str, Any] = {"json": body} if body is not None else {}
        answer = getattr(client, method)(path, headers={**admin, **headers}, **kwargs)
        where = f"{method.upper()} {path!r} {body!r} {headers!r}"
        text = answer.get_data(as_text=True)
        if path == "/v1/usage/batch" and answer.status_code == 200:
            # Records fail one by one; a refused record writes nothing.
            results = answer.json["results"]
            assert all(r["status"] >= 400 for r in results), (where, text)
        else:
            assert answer.status_code in (400, 404, 422), (where, answer.status_code, text)
        assert ch not in text, (where, text)  # never echoed raw
        assert table_counts(db_url) == before, where




@pytest.mark.parametrize("key", ["ключ-1", "clé-1", "鍵-1", "kp_a:b/c=d+e", "caf\xe9-latin1"])
def test_printable_non_ascii_idempotency_keys_still_work(client: FlaskClient, tokens: Tokens,
                                                         key: str) -> None:
    """Keys sent as UTF-8 (or as plain Latin-1) without control or bidi characters are keys
    like any other: the same key replays the first answer."""
    admin = bearer(tokens.m2m("credits:admin"))
    sent = key if key.endswith("latin1") else _latin1(key)
    headers = {**admin, "Idempotency-Key": sent}
    first = client.post("/v1/wallets/kp_key/top-ups", json={"credits": 5, "reason": "k"},
                        headers=headers)
    assert first.status_code == 201, first.get_data(as_text=True)
    again = client.post("/v1/wallets/kp_key/top-ups", json={"credits": 5, "reason": "k"},
                        headers=headers)
    assert again.status_code == 201 and again.headers.get("Idempotent-Replayed") == "true"
    assert again.json["balance"] == 5
