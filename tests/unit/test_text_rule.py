"""The one character rule for ids, keys and codes (app.domain.text): control characters (C0,
DEL, C1), invisible format and bidi controls, line/paragraph separators and unpaired
surrogates are refused; `escaped` shows them without acting on them."""

from __future__ import annotations

import pytest

from app.domain import kinde_events
from app.domain.text import escaped, text_problem, unsafe_char

REFUSED = ["\x00", "\x01", "\t", "\n", "\r", "\x1b", "\x7f", "\x80", "\x85", "\x9b", "\x9f",
           "\u061c", "\u200b", "\u200c", "\u200d", "\u200e", "\u200f", "\u202a", "\u202b",
           "\u202c", "\u202d", "\u202e", "\u2028", "\u2029", "\u2060", "\u2066", "\u2067",
           "\u2068", "\u2069", "\ufeff", "\ud800", "\udfff", "\U000e0001"]
ALLOWED = ["", "event_018f331a3178f7fef284b95fe6770384", "kp_65b2", "org_590d7f1a86a",
           "Zoë", "日本語", "ключ", "a b", "\u00a0", "emoji 👍", "עברית", "العربية"]


@pytest.mark.parametrize("ch", REFUSED, ids=[f"U+{ord(c):04X}" for c in REFUSED])
def test_refused_characters(ch: str) -> None:
    assert unsafe_char(ch)
    for text in (ch, f"id_{ch}", f"{ch}id", f"a{ch}b"):
        why = text_problem(text)
        assert why is not None
        assert ch not in why  # the reason never carries the character itself
    shown = escaped(f"id_{ch}_x")
    assert ch not in shown and shown.startswith("id_\\") and shown.endswith("_x")


@pytest.mark.parametrize("text", ALLOWED)
def test_allowed_text(text: str) -> None:
    assert text_problem(text) is None
    assert escaped(text) == text


def test_reason_names_the_kind_and_code_point() -> None:
    assert text_problem("a\x00") == "contains a NUL character"
    assert text_problem("a\x1b") == "contains a control character (U+001B)"
    assert text_problem("a\x85") == "contains a control character (U+0085)"
    assert text_problem("a\u202e") == (
        "contains an invisible formatting or bidi control character (U+202E)")
    assert text_problem("a\ud800") == "contains an unpaired surrogate (not valid Unicode)"


def test_kinde_events_uses_the_same_rule() -> None:
    # One rule: the webhook parser's text_problem is this module's, not a copy.
    assert kinde_events.text_problem is text_problem


def test_escaped_is_linear_on_long_input() -> None:
    value = ("a\u202e" * 50_000)
    assert escaped(value).count("\\u202e") == 50_000
    assert text_problem("x" * 1_000_000) is None
