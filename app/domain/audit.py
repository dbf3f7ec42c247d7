"""Ledger invariants as a pure check over per-wallet totals (used by `kinde-credits verify`)."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class WalletAudit:
    wallet_id: str
    balance: int
    held: int
    arrears: int
    overdraft_limit: int
    sum_entries: int
    sum_remaining: int
    sum_open_holds: int
    negative_blocks: int
    overfull_blocks: int
    broken_chain_entries: int
    last_balance_after: int | None
    has_unrefusable_usage: bool


def problems(a: WalletAudit) -> list[str]:
    """Everything wrong with one wallet, as sentences an operator can act on."""
    out: list[str] = []
    if a.balance != a.sum_entries:
        out.append(f"balance {a.balance} != sum of entries {a.sum_entries}")
    if a.balance != a.sum_remaining - a.arrears:
        out.append(
            f"balance {a.balance} != block remainders {a.sum_remaining} - arrears {a.arrears}"
        )
    if a.last_balance_after is not None and a.last_balance_after != a.balance:
        out.append(f"latest entry says balance {a.last_balance_after}, wallet says {a.balance}")
    if a.broken_chain_entries:
        out.append(f"{a.broken_chain_entries} entries whose balance_after does not follow")
    if a.negative_blocks:
        out.append(f"{a.negative_blocks} blocks below zero")
    if a.overfull_blocks:
        out.append(f"{a.overfull_blocks} blocks hold more than they were given")
    if a.held != a.sum_open_holds:
        out.append(f"held {a.held} != open holds {a.sum_open_holds}")
    if a.held < 0 or a.arrears < 0:
        out.append("held or arrears below zero")
    # Only usage Kinde reported (already happened) may go past the overdraft limit.
    if a.balance < -a.overdraft_limit and not a.has_unrefusable_usage:
        out.append(f"balance {a.balance} is below the overdraft limit -{a.overdraft_limit}")
    return out
