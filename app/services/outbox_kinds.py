"""The kinds of outgoing work the outbox carries, and how a stored row's kind is read.

- `meter_usage`: report a wallet's app-source usage of one feature to Kinde (usage_reporting);
- `pack_invoice`: invoice the credit packs a wallet bought on one Kinde code (usage_reporting,
  with its own dead-letter reaction in recharge.DeadInvoiceHandler);
- `notify_<channel>`: one notification on one channel (notifications).

Rows written before pack invoices had their own kind are `meter_usage` rows whose payload
names a bundle; `kind_of` reads them as `pack_invoice`, so no handler needs to know.
"""

from __future__ import annotations

from app.services.ports import OutboxMessage

METER_USAGE = "meter_usage"
PACK_INVOICE = "pack_invoice"
NOTIFY_PREFIX = "notify_"


def meter_topic(wallet_id: str, meter: str) -> str:
    """One pending row per wallet and meter (feature key, or a pack's invoice meter)."""
    return f"meter:{wallet_id}:{meter}"


def kind_of(message: OutboxMessage) -> str:
    """The row's kind, mapping the legacy form of a pack invoice to its own kind."""
    if message.kind == METER_USAGE and "bundle" in message.payload:
        return PACK_INVOICE
    return message.kind
