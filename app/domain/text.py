"""The one rule for which characters text from outside may hold: ids, keys, codes, names.

Refused: NUL (PostgreSQL's text columns refuse it), the other C0 controls, DEL and the C1
controls (category Cc: a terminal acts on ESC or CSI sequences), the invisible format and
bidirectional controls (Cf: U+202E RIGHT-TO-LEFT OVERRIDE, U+2066-2069 isolates, U+200E/F
marks, U+061C, zero-width characters, the BOM), line and paragraph separators (Zl, Zp) and
unpaired surrogates (Cs, not valid Unicode). Any of them lets a value look like another one
when it is shown: `event_<U+202E>gnirts` prints as `event_string` reversed, in a terminal,
a log viewer or a browser. `escaped()` shows such a value without acting on them.

Pure standard library; every place that checks or shows such text calls this module.
"""

from __future__ import annotations

import unicodedata

# Unicode general categories refused in ids and codes (see the module docstring).
UNSAFE_CATEGORIES = frozenset({"Cc", "Cf", "Cs", "Zl", "Zp"})


def unsafe_char(ch: str) -> bool:
    """Is this one character refused in ids (a control, format, bidi or separator one)?"""
    code = ord(ch)
    if code < 0x80:
        return code < 0x20 or code == 0x7F
    return unicodedata.category(ch) in UNSAFE_CATEGORIES


def text_problem(value: str) -> str | None:
    """Why a text cannot be stored or shown as it is, or None. The wording names the kind of
    character and, beyond NUL, its code point (never the raw character)."""
    if "\x00" in value:
        return "contains a NUL character"
    if value.isascii():  # the common case, without a per-character category look-up
        for ch in value:
            if ord(ch) < 0x20 or ord(ch) == 0x7F:
                return f"contains a control character (U+{ord(ch):04X})"
        return None
    for ch in value:
        if not unsafe_char(ch):
            continue
        category = unicodedata.category(ch)
        if category == "Cc":
            return f"contains a control character (U+{ord(ch):04X})"
        if category == "Cs":
            return "contains an unpaired surrogate (not valid Unicode)"
        return f"contains an invisible formatting or bidi control character (U+{ord(ch):04X})"
    return None


def spreadsheet_safe(value: str) -> str:
    """Text a spreadsheet would run as a formula, prefixed with a quote (OWASP CSV injection):
    every CSV this service writes passes its free text through here."""
    return "'" + value if value[:1] in ("=", "+", "-", "@", "\t", "\r") else value


def escaped(value: str) -> str:
    """`value` with every refused character written as a visible escape (`\\u202e`,
    `\\x1b`), for showing text stored before the rule, or text a rule refused."""
    if not any(unsafe_char(ch) for ch in value):
        return value
    out: list[str] = []
    for ch in value:
        if not unsafe_char(ch):
            out.append(ch)
        elif ord(ch) < 0x100:
            out.append(f"\\x{ord(ch):02x}")
        else:
            out.append(f"\\u{ord(ch):04x}")
    return "".join(out)
