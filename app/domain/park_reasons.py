"""Why a webhook event is parked, as a typed value: a kind (what it waits for) and a detail.

The kind decides when a parked event is worth retrying (app.services.webhooks looks it up);
the detail is for people. Stored in the inbox as readable text, "<kind>: <detail>", e.g.
"no wallet: unknown customer customer_x: no wallet is mapped to it yet (...)".

Rows stored before the kinds were written down carry the detail alone (except "failed: " and
"period unknown: ", which were prefixes already); `ParkReason.parse` reads them by the handler
messages of that time, once, when the row is loaded.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum


class ParkKind(Enum):
    """What a parked event waits for. The value is its label in the stored text."""

    # Its contents cannot be applied as they are; only a person (`events --retry`) helps.
    MALFORMED = "malformed"
    # Its feature code is not in the catalog (which changes with a restart).
    UNKNOWN_FEATURE = "unknown feature"
    # No wallet is mapped to its customer yet, or it contradicts the mapping there is.
    NO_WALLET = "no wallet"
    # An absolute meter value whose billing period is not known yet: the worker asks Kinde.
    PERIOD_UNKNOWN = "period unknown"
    # An absolute meter value from before the period we know of: never debited on a guess.
    PERIOD_PAST = "period past"
    # Applying it failed unexpectedly: retried with growing delays.
    FAILED = "failed"


_SEPARATOR = ": "
_BY_LABEL = {kind.value: kind for kind in ParkKind}
# The detail texts of rows stored before the kinds were: how each began, and its kind.
_LEGACY_OPENINGS: tuple[tuple[str, ParkKind], ...] = (
    ("malformed ", ParkKind.MALFORMED),
    ("no feature code", ParkKind.MALFORMED),
    ("no meter value", ParkKind.MALFORMED),
    ("meter value", ParkKind.MALFORMED),
    ("unknown feature code", ParkKind.UNKNOWN_FEATURE),
    ("unknown customer", ParkKind.NO_WALLET),
    ("no customer id", ParkKind.NO_WALLET),
    ("no wallet", ParkKind.NO_WALLET),
    ("customer ", ParkKind.NO_WALLET),
    ("wallet ", ParkKind.NO_WALLET),
    ("absolute meter value for ", ParkKind.PERIOD_PAST),
)


@dataclass(frozen=True)
class ParkReason:
    kind: ParkKind
    detail: str

    @property
    def text(self) -> str:
        """The stored and answered form."""
        return f"{self.kind.value}{_SEPARATOR}{self.detail}"

    @classmethod
    def parse(cls, text: str | None) -> ParkReason:
        """Read a stored reason, including those of rows stored before kinds were written."""
        text = text or ""
        label, sep, detail = text.partition(_SEPARATOR)
        if sep and label in _BY_LABEL:
            return cls(_BY_LABEL[label], detail)
        for opening, kind in _LEGACY_OPENINGS:
            if text.startswith(opening):
                return cls(kind, text)
        # Anything else an older version wrote (a sign-up without a usable id, say) cannot
        # fix itself: a person retries it.
        return cls(ParkKind.MALFORMED, text)
