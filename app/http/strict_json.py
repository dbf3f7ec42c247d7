"""The one JSON reader of request bodies: Flask's own, except that an object naming a key twice
(at any depth) is refused.

Python's `json` keeps the last of two equal keys, while other readers of the same bytes (a
proxy, a log, a WAF) may keep the first: `{"feature": "api_call", "feature": "report"}` would
be checked as one thing and debited as another. `StrictJSONProvider` is installed as the app's
JSON provider (`app.json`) and the `/v1` argument parser reads bodies through it, so every
route gets the rule from here; the HTTP layer answers `DuplicateKey` with 400
`invalid_request`.
"""

from __future__ import annotations

from typing import Any

from flask.json.provider import DefaultJSONProvider


class DuplicateKey(ValueError):
    """A JSON object holds `key` more than once."""

    def __init__(self, key: str) -> None:
        shown = repr(key[:40]) + ("..." if len(key) > 40 else "")
        super().__init__(f"request body names the key {shown} more than once in one object")
        self.key = key


def _unique_pairs(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    obj: dict[str, Any] = {}
    for key, value in pairs:
        if key in obj:
            raise DuplicateKey(key)
        obj[key] = value
    return obj


class StrictJSONProvider(DefaultJSONProvider):
    """Flask's JSON provider, refusing duplicate keys (`DuplicateKey`) when loading."""

    def loads(self, s: str | bytes, **kwargs: Any) -> Any:
        kwargs.setdefault("object_pairs_hook", _unique_pairs)
        return super().loads(s, **kwargs)
