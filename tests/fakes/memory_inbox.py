"""The in-memory store as the webhook service's unit tests use it: `MemoryStore` (which offers
the inbox, meter readings and agreement cache on its unit of work) with the names those tests
read the committed state by.
"""

from __future__ import annotations

from datetime import datetime

from app.services.ports import AgreementInfo, InboxEvent
from tests.fakes.memory_store import MemoryStore


class MemoryWebhookStore(MemoryStore):
    """Callable like SqlStore; the properties read (and let tests set) the committed state."""

    @property
    def ledger_store(self) -> MemoryStore:
        return self

    @property
    def events(self) -> dict[str, InboxEvent]:
        return self.state.events

    @property
    def raw(self) -> dict[str, str]:
        return self.state.raw

    @property
    def readings(self) -> dict[tuple[str, str, str], int]:
        return self.state.readings

    @property
    def raised(self) -> dict[tuple[str, str, str], datetime]:
        return self.state.raised

    @property
    def agreements(self) -> dict[str, AgreementInfo]:
        return self.state.agreements
