"""Ledger rules as plain Python: wallets, credit blocks, holds and append-only entries.

A `Wallet` is the aggregate: it is loaded with its live blocks, changed only through its
methods (which enforce the rules), and remembers what changed (`new_entries`, `new_blocks`,
`touched_blocks`, `new_holds`, `touched_holds`) so a repository can persist exactly that in one
transaction. Nothing here knows about SQL, HTTP or Flask.

Invariants every method keeps:
- balance == sum of all entry amounts == sum of block remainders - arrears;
- no block remainder below zero or above its original amount;
- refusable usage never takes available (balance - held) below -overdraft_limit;
- usage that already happened (non-refusable) is never refused: the shortfall becomes arrears,
  and the next credit pays arrears first.
Hold and release entries move no credits (amount 0): a hold only lowers `available`.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal
from typing import Any, Literal

from app.domain.usage_terms import describe_expiry, describe_unused_expiry

CREDIT_KINDS = frozenset({"grant", "purchase", "allotment", "adjustment"})
OwnerType = Literal["user", "org"]
HoldStatus = Literal["open", "captured", "released", "expired"]


class LedgerError(Exception):
    """A request the ledger rules refuse; `code` is the stable API error code."""

    code = "invalid_request"

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class InvalidRequest(LedgerError):
    """A request whose values break a rule (answered 422 invalid_request)."""


class InvalidWalletId(InvalidRequest):
    """A wallet id that is not a Kinde user or org id of the stored shape."""


class InsufficientCredits(LedgerError):
    code = "insufficient_credits"

    def __init__(self, needed: int, available: int) -> None:
        super().__init__(
            f"This needs {needed:,} credits but only {max(available, 0):,} are available."
        )
        self.needed = needed
        self.available = available


class HoldNotOpen(LedgerError):
    """The hold was already captured, released or expired (answered 409)."""

    code = "hold_not_open"


class CaptureExceedsHold(LedgerError):
    """A capture asks for more than its hold reserved: refused, nothing changes."""

    code = "capture_exceeds_hold"

    def __init__(self, hold_id: str, held: int, asked: int) -> None:
        super().__init__(
            f"hold {hold_id} holds {held:,} credits: capture at most {held:,}, not {asked:,} "
            f"(record the rest as usage, or hold more next time)"
        )
        self.held = held
        self.asked = asked


def owner_type_of(wallet_id: str) -> OwnerType:
    """Wallet ids are Kinde owner ids: `kp_...` for users, `org_...` for organizations."""
    if wallet_id.startswith("kp_") and len(wallet_id) > 3:
        kind: OwnerType = "user"
    elif wallet_id.startswith("org_") and len(wallet_id) > 4:
        kind = "org"
    else:
        raise InvalidWalletId(
            f"wallet id {wallet_id[:64]!r} is not a Kinde user (kp_...) or organization (org_...)"
        )
    if len(wallet_id) > 64 or not all(c.isalnum() or c in "_-" for c in wallet_id):
        raise InvalidWalletId("wallet id may only hold letters, digits, _ and - (64 at most)")
    return kind


def new_id(prefix: str) -> str:
    return f"{prefix}_{uuid.uuid4().hex}"


@dataclass
class Block:
    """Credits from one grant, purchase or allotment, with their own expiry and cost basis."""

    id: str
    wallet_id: str
    kind: str
    original: int
    remaining: int
    expires_at: datetime | None
    created_at: datetime
    reason: str
    cost_amount: Decimal | None = None
    currency: str | None = None

    def consumption_order(self) -> tuple[bool, datetime, datetime, str]:
        # Soonest-expiring first; blocks that never expire go last; ties by age.
        return (
            self.expires_at is None,
            self.expires_at or self.created_at,
            self.created_at,
            self.id,
        )


@dataclass(frozen=True, kw_only=True)
class EntryFields:
    """What every ledger entry says, appended or read back. Entries are immutable once
    written: corrections are new entries."""

    kind: str
    amount: int
    balance_after: int
    reason: str
    description: str
    created_at: datetime
    feature: str | None = None
    quantity: int | None = None
    hold_id: str | None = None
    occurred_at: datetime | None = None
    # The block a credit entry created (grants, purchases, allotments, adjustments): a refund
    # names the purchase by its entry and takes back that block's unused credits.
    block_id: str | None = None


@dataclass(frozen=True, kw_only=True)
class NewEntry(EntryFields):
    """An entry to append (its id and wallet come from the store when it is saved)."""

    # Which blocks this entry took credits from: ((block id, credits), ...). Usage, captures
    # and expiries draw from blocks; a credit that pays arrears draws from its own new block.
    # Stored as block draws, so revenue can be recognised exactly for any past period.
    draws: tuple[tuple[str, int], ...] = ()


@dataclass
class Hold:
    """Credits reserved for a long job; captured or released at most once, expires by itself."""

    id: str
    wallet_id: str
    amount: int
    status: HoldStatus
    expires_at: datetime
    created_at: datetime
    description: str
    feature: str | None = None
    captured_amount: int | None = None
    settled_at: datetime | None = None


@dataclass
class Wallet:
    id: str
    owner_type: OwnerType
    balance: int = 0
    held: int = 0
    arrears: int = 0
    overdraft_limit: int = 0
    reference_balance: int = 0
    next_expiry_at: datetime | None = None
    next_hold_expiry_at: datetime | None = None
    # The next plan period end not yet applied (kept by app.services.plans): a read past it
    # sweeps, so a period end is never shown late.
    next_period_end_at: datetime | None = None
    # Alert and auto-recharge state travel with the wallet: they change under its lock.
    alert_settings: Any = None  # AlertSettings, or None for the catalog's defaults
    alerts_fired: frozenset[str] = frozenset()
    auto_recharge: Any = None  # AutoRecharge, or None when never configured
    blocks: list[Block] = field(default_factory=list)
    new_entries: list[NewEntry] = field(default_factory=list)
    new_blocks: list[Block] = field(default_factory=list)
    touched_blocks: dict[str, Block] = field(default_factory=dict)
    new_holds: list[Hold] = field(default_factory=list)
    touched_holds: dict[str, Hold] = field(default_factory=dict)
    # The open holds' (placed at, amount) by id, when known (the writer loads them for a
    # wallet with holds open; a wallet that never had one knows them all): expiry keeps back
    # only what holds placed before a block expired reserve. None: not loaded.
    open_holds: dict[str, tuple[datetime, int]] | None = None
    new_alerts: list[Any] = field(default_factory=list)
    reference_at_load: int = field(default=0, init=False)

    def __post_init__(self) -> None:
        self.reference_at_load = self.reference_balance

    @property
    def available(self) -> int:
        return self.balance - self.held

    def has_pending_changes(self) -> bool:
        return bool(self.new_entries or self.touched_holds or self.new_holds)

    # -- expiry ---------------------------------------------------------------------------

    def needs_sweep(self, now: datetime) -> bool:
        return any(at is not None and at <= now for at in (
            self.next_expiry_at, self.next_hold_expiry_at, self.next_period_end_at))

    def expire_blocks(self, now: datetime, *, at_settlement: bool = False) -> list[NewEntry]:
        """Move the remainder of every block past its expiry out with an expiry entry.

        Credits under an open hold do not expire while the hold is open. A hold reserves the
        credits a capture would draw, the soonest-expiring ones: so of the blocks past their
        expiry, up to what the holds placed before each one expired reserve (`open_holds`;
        all of `held` when they are not loaded) is kept back, in consumption order. A capture
        draws them
        first, and whatever is left of them expires as soon as the holds are captured,
        released or expire (both call this again, `at_settlement`).

        The entry is dated at the block's expiry, not when the sweep ran: a service that was
        down across an expiry books it when it happened (and revenue breakage in that period).
        Credits kept back for a hold expire when it settles, dated then.
        """
        due = sorted(
            (b for b in self.blocks
             if b.remaining > 0 and b.expires_at is not None and b.expires_at <= now),
            key=Block.consumption_order,
        )
        out: list[NewEntry] = []
        keep = max(self.held, 0)
        kept_so_far = 0
        for block in due:
            assert block.expires_at is not None
            if self.open_holds is not None:
                # Only holds placed before the block expired could reserve its credits.
                reservable = sum(amount for placed, amount in self.open_holds.values()
                                 if placed < block.expires_at)
                keep = max(min(reservable, self.held) - kept_so_far, 0)
            kept = min(block.remaining, keep)
            keep -= kept
            kept_so_far += kept
            amount = block.remaining - kept
            if amount == 0:
                continue
            out.append(
                self.expire_part(
                    block,
                    amount,
                    description=expiry_description(block, amount),
                    now=now if at_settlement else block.expires_at,
                )
            )
        self._recompute_next_expiry(now)
        return out

    def expire_part(
        self, block: Block, amount: int, *, description: str, now: datetime
    ) -> NewEntry:
        """Expire `amount` unused credits of one live block (all of it, or a part: a cap)."""
        return self._take_out("expiry", block, amount, description=description, now=now)

    def void_part(
        self, block: Block, amount: int, *, description: str, now: datetime
    ) -> NewEntry:
        """Take `amount` unused credits of one live block back (a `void` entry): credits that
        should not have been given, such as a renewal Kinde did not make."""
        return self._take_out("void", block, amount, description=description, now=now)

    def move_expiry(self, block_id: str, expires_at: datetime | None, now: datetime) -> None:
        """A live block's credits now expire at `expires_at` (its plan period was extended)."""
        for block in self.blocks:
            if block.id == block_id and block.expires_at != expires_at:
                block.expires_at = expires_at
                self.touched_blocks[block.id] = block
        self._recompute_next_expiry(now)

    def _take_out(
        self, kind: str, block: Block, amount: int, *, description: str, now: datetime
    ) -> NewEntry:
        _require_positive(amount)
        if not any(b is block for b in self.blocks) or amount > block.remaining:
            raise InvalidRequest(f"block {block.id} has fewer than {amount:,} credits left")
        block.remaining -= amount
        self.touched_blocks[block.id] = block
        self.balance -= amount
        self.blocks = [b for b in self.blocks if b.remaining > 0]
        self._recompute_next_expiry(now)
        return self._append(
            kind, -amount, reason=block.id, description=description, now=now,
            draws=((block.id, amount),),
        )

    def _recompute_next_expiry(self, now: datetime) -> None:
        # Blocks kept back past their expiry for open holds are not "due" for a sweep: they
        # expire when the holds settle, and the hold expiry already schedules that sweep.
        dates = [
            b.expires_at for b in self.blocks
            if b.remaining > 0 and b.expires_at is not None and b.expires_at > now
        ]
        self.next_expiry_at = min(dates) if dates else None

    # -- credits --------------------------------------------------------------------------

    def credit(
        self,
        amount: int,
        *,
        kind: str,
        reason: str,
        description: str,
        now: datetime,
        expires_at: datetime | None = None,
        cost_amount: Decimal | None = None,
        currency: str | None = None,
    ) -> NewEntry:
        """Add credits as a new block; arrears are paid from it first."""
        if kind not in CREDIT_KINDS:
            raise InvalidRequest(f"{kind!r} is not a kind of credit")
        _require_positive(amount)
        if expires_at is not None and expires_at <= now:
            raise InvalidRequest("credits must expire in the future")
        self.expire_blocks(now)
        paid = min(self.arrears, amount)
        self.arrears -= paid
        block = Block(
            id=new_id("blk"),
            wallet_id=self.id,
            kind=kind,
            original=amount,
            remaining=amount - paid,
            expires_at=expires_at,
            created_at=now,
            reason=reason,
            cost_amount=cost_amount,
            currency=currency,
        )
        self.new_blocks.append(block)
        if block.remaining > 0:
            self.blocks.append(block)
        self.balance += amount
        # Percent alerts are measured against the balance right after the latest credit.
        self.reference_balance = self.balance
        self._recompute_next_expiry(now)
        # Paying arrears uses the new block's credits at once: a draw like usage.
        return self._append(kind, amount, reason=reason, description=description, now=now,
                            draws=((block.id, paid),) if paid else (), block_id=block.id)

    # -- debits ---------------------------------------------------------------------------

    def debit(
        self,
        amount: int,
        *,
        kind: str = "usage",
        reason: str,
        description: str,
        now: datetime,
        refusable: bool = True,
        feature: str | None = None,
        quantity: int | None = None,
        hold_id: str | None = None,
        occurred_at: datetime | None = None,
        reserved: int = 0,
        hold_placed_at: datetime | None = None,
    ) -> NewEntry:
        """Take credits from the soonest-expiring blocks.

        `refusable` usage (asked for through the API) is refused with InsufficientCredits when
        available credits plus `reserved` (a hold being captured) and the overdraft limit do
        not cover it. Non-refusable usage (already happened, reported by Kinde) always goes
        through; what the blocks can't cover becomes arrears.
        """
        _require_positive(amount)
        self.expire_blocks(now)
        if refusable:
            spendable = self.available + reserved + self.overdraft_limit
            if amount > spendable:
                raise InsufficientCredits(amount, self.available + reserved)
        left = amount
        draws: list[tuple[str, int]] = []
        # Credits past their expiry are still here only because open holds reserve them
        # (expire_blocks): a capture of a hold placed before they expired draws them first;
        # any other debit (usage, or a hold placed after they expired, which could not
        # reserve them) draws them last, or spending during a hold and then releasing it
        # would keep expired credits for good.
        def order(block: Block) -> tuple[bool, tuple[bool, datetime, datetime, str]]:
            kept = block.expires_at is not None and block.expires_at <= now
            reserved_by_this = hold_placed_at is not None and (
                block.expires_at is not None and hold_placed_at < block.expires_at)
            return (kept and not reserved_by_this, block.consumption_order())

        for block in sorted(self.blocks, key=order):
            if left == 0:
                break
            take = min(block.remaining, left)
            if take:
                block.remaining -= take
                left -= take
                self.touched_blocks[block.id] = block
                draws.append((block.id, take))
        self.arrears += left
        self.blocks = [b for b in self.blocks if b.remaining > 0]
        self._recompute_next_expiry(now)
        self.balance -= amount
        return self._append(
            kind,
            -amount,
            reason=reason,
            description=description,
            now=now,
            feature=feature,
            quantity=quantity,
            hold_id=hold_id,
            occurred_at=occurred_at,
            draws=tuple(draws),
        )

    # -- holds ----------------------------------------------------------------------------

    def place_hold(
        self,
        amount: int,
        *,
        expires_at: datetime,
        description: str,
        now: datetime,
        feature: str | None = None,
    ) -> Hold:
        _require_positive(amount)
        if expires_at <= now:
            raise InvalidRequest("a hold must expire in the future")
        self.expire_blocks(now)
        if amount > self.available + self.overdraft_limit:
            raise InsufficientCredits(amount, self.available)
        hold = Hold(
            id=new_id("hold"),
            wallet_id=self.id,
            amount=amount,
            status="open",
            expires_at=expires_at,
            created_at=now,
            description=description,
            feature=feature,
        )
        if self.open_holds is None and self.held == 0:
            self.open_holds = {}
        self.held += amount
        if self.open_holds is not None:
            self.open_holds[hold.id] = (now, amount)
        self.new_holds.append(hold)
        self._note_hold_expiry(expires_at)
        self._append("hold", 0, reason=hold.id, description=description, now=now, hold_id=hold.id)
        return hold

    def capture_hold(
        self,
        hold: Hold,
        amount: int,
        *,
        description: str,
        now: datetime,
        quantity: int | None = None,
    ) -> NewEntry:
        """Settle a hold with the real amount, at most what it holds; the rest is freed."""
        self._require_open(hold, now)
        _require_positive(amount)
        if amount > hold.amount:
            raise CaptureExceedsHold(hold.id, hold.amount, amount)
        entry = self.debit(
            amount,
            kind="capture",
            reason=hold.id,
            description=description,
            now=now,
            feature=hold.feature,
            quantity=quantity,
            hold_id=hold.id,
            reserved=hold.amount,
            hold_placed_at=hold.created_at,
            # The held credits were promised: capture never fails, even if usage Kinde
            # reported meanwhile pushed the wallet into arrears.
            refusable=False,
        )
        self.held -= hold.amount
        self._forget_hold(hold)
        hold.status = "captured"
        hold.captured_amount = amount
        hold.settled_at = now
        self.touched_holds[hold.id] = hold
        # Credits kept past their expiry for this hold and not captured expire now.
        self.expire_blocks(now, at_settlement=True)
        return entry

    def release_hold(
        self, hold: Hold, *, description: str, now: datetime, expired: bool = False
    ) -> NewEntry:
        if not expired:
            self._require_open(hold, now)
        elif hold.status != "open":
            raise HoldNotOpen(f"hold {hold.id} is already {hold.status}")
        self.held -= hold.amount
        self._forget_hold(hold)
        hold.status = "expired" if expired else "released"
        hold.settled_at = now
        self.touched_holds[hold.id] = hold
        entry = self._append(
            "release", 0, reason=hold.id, description=description, now=now, hold_id=hold.id
        )
        # Credits kept past their expiry for this hold expire now that it no longer needs them.
        self.expire_blocks(now, at_settlement=True)
        return entry

    def know_open_holds(self, open_holds: list[Hold]) -> None:
        """The wallet's open holds as stored (the writer loads them when some are open)."""
        self.open_holds = {h.id: (h.created_at, h.amount) for h in open_holds
                           if h.status == "open"}

    def _forget_hold(self, hold: Hold) -> None:
        if self.open_holds is not None:
            self.open_holds.pop(hold.id, None)

    def set_hold_expiry(self, open_holds: list[Hold]) -> None:
        dates = [h.expires_at for h in open_holds if h.status == "open"]
        self.next_hold_expiry_at = min(dates) if dates else None

    def _note_hold_expiry(self, expires_at: datetime) -> None:
        if self.next_hold_expiry_at is None or expires_at < self.next_hold_expiry_at:
            self.next_hold_expiry_at = expires_at

    @staticmethod
    def _require_open(hold: Hold, now: datetime) -> None:
        if hold.status != "open":
            raise HoldNotOpen(f"hold {hold.id} is already {hold.status}")
        if hold.expires_at <= now:
            raise HoldNotOpen(f"hold {hold.id} expired at {hold.expires_at.isoformat()}")

    # -- internals ------------------------------------------------------------------------

    def _append(
        self,
        kind: str,
        amount: int,
        *,
        reason: str,
        description: str,
        now: datetime,
        feature: str | None = None,
        quantity: int | None = None,
        hold_id: str | None = None,
        occurred_at: datetime | None = None,
        draws: tuple[tuple[str, int], ...] = (),
        block_id: str | None = None,
    ) -> NewEntry:
        entry = NewEntry(
            kind=kind,
            amount=amount,
            balance_after=self.balance,
            reason=reason,
            description=description,
            created_at=now,
            feature=feature,
            quantity=quantity,
            hold_id=hold_id,
            occurred_at=occurred_at,
            draws=draws,
            block_id=block_id,
        )
        self.new_entries.append(entry)
        return entry


# A block reason "<what> | <when>" (plan allotments, see app.domain.plans) reads as
# "-700 credits: unused Basic plan credits for Nov 2026 expired at period end".
REASON_WHEN_SEPARATOR = " | "


def expiry_description(block: Block, amount: int) -> str:
    what, sep, when = block.reason.partition(REASON_WHEN_SEPARATOR)
    if sep:
        return describe_unused_expiry(amount, what, when)
    return describe_expiry(amount, block.reason)


def _require_positive(amount: int) -> None:
    if isinstance(amount, bool) or not isinstance(amount, int) or amount <= 0:
        raise InvalidRequest(f"credits must be a positive whole number, got {amount!r}")
