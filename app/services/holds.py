"""Holds: reserve credits now, then capture the real amount or release them, once.

A hold placed with a user's token records that user (`placed_by`); a settle on behalf of a user
(`user=`) finds only the holds that user placed, so a member of an org cannot capture or release
another member's hold (DESIGN.md, "Who may spend the customer's money")."""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime, timedelta
from typing import Any

from app.domain.ledger import Hold, InsufficientCredits, InvalidRequest, NewEntry, Wallet
from app.domain.limits import (
    DEFAULT_HOLD_SECONDS,
    MAX_HOLD_SECONDS,
    require_credits,
    usage_credits,
)
from app.domain.usage_terms import describe_capture, describe_hold, describe_release
from app.services import budgets as member_budgets
from app.services import views
from app.services.errors import NotFound
from app.services.features import app_feature
from app.services.idempotency import Outcome, run_write
from app.services.ports import UnitOfWork
from app.services.wallet_writer import WalletWriter


class HoldService:
    def __init__(self, writer: WalletWriter) -> None:
        self.writer = writer

    def place_hold(
        self,
        wallet_id: str,
        *,
        credits: int | None = None,
        feature_key: str | None = None,
        quantity: int | None = None,
        expires_in_seconds: int = DEFAULT_HOLD_SECONDS,
        idempotency_key: str | None = None,
        member: str | None = None,
        placed_by: str | None = None,
    ) -> Outcome:
        feature = app_feature(self.writer, feature_key) if feature_key else None
        member = member_budgets.member_for(wallet_id, member)
        if feature is not None:
            amount = usage_credits(feature, quantity if quantity is not None else 1)
        elif credits is not None:
            amount = require_credits(credits)
        else:
            raise InvalidRequest("a hold needs either credits or a feature (and quantity)")
        description = describe_hold(amount, feature.label if feature else None)
        if not (0 < expires_in_seconds <= MAX_HOLD_SECONDS):
            raise InvalidRequest(f"expires_in_seconds must be from 1 to {MAX_HOLD_SECONDS}")

        def action(uow: UnitOfWork, now: datetime) -> tuple[int, dict[str, Any]]:
            def hold(wallet: Wallet) -> Hold:
                if member is not None:  # a hold reserves the member's budget too
                    member_budgets.admit_debit(uow, wallet, member, amount, now)
                return wallet.place_hold(
                    amount,
                    expires_at=now + timedelta(seconds=expires_in_seconds),
                    description=description,
                    now=now,
                    feature=feature.key if feature else None,
                )

            written = self.writer.write(uow, wallet_id, now, hold,
                                        missing=lambda: InsufficientCredits(amount, 0))
            assert written is not None
            if member is not None:  # after the save: the hold row exists
                member_budgets.note_hold(uow, written.result.id, wallet_id, member)
            if placed_by is not None:
                uow.hold_placers.note(written.result.id, placed_by)
            return 201, {**views.hold_view(written.result), "balance": written.wallet.balance,
                         "available": written.wallet.available,
                         **({"member": member} if member is not None else {})}

        request = {"op": "hold", "credits": credits, "feature": feature_key,
                   "quantity": quantity, "expires_in_seconds": expires_in_seconds}
        if member is not None:
            request["member"] = member
        return run_write(self.writer.runner, self.writer.clock, f"wallet:{wallet_id}",
                         idempotency_key, request, action)

    def capture_hold(
        self,
        hold_id: str,
        credits: int | None = None,
        *,
        idempotency_key: str | None = None,
        allowed_wallet: Callable[[str], bool] | None = None,
        user: str | None = None,
    ) -> Outcome:
        if credits is not None:
            require_credits(credits)
        return self._settle(hold_id, "capture", credits, idempotency_key, allowed_wallet, user)

    def release_hold(
        self,
        hold_id: str,
        *,
        idempotency_key: str | None = None,
        allowed_wallet: Callable[[str], bool] | None = None,
        user: str | None = None,
    ) -> Outcome:
        return self._settle(hold_id, "release", None, idempotency_key, allowed_wallet, user)

    def _settle(
        self,
        hold_id: str,
        op: str,
        credits: int | None,
        idempotency_key: str | None,
        allowed_wallet: Callable[[str], bool] | None,
        user: str | None = None,
    ) -> Outcome:
        with self.writer.uow(False) as uow:
            found = uow.wallets.get_hold(hold_id)
            placer = uow.hold_placers.placed_by(hold_id) if user is not None else None
        if found is None or (allowed_wallet is not None and not allowed_wallet(found.wallet_id)):
            raise NotFound(f"no hold {hold_id[:64]!r}")
        if user is not None and placer != user:
            # Another member's (or the backend's) hold looks like no hold at all.
            raise NotFound(f"no hold {hold_id[:64]!r}")
        wallet_id = found.wallet_id
        catalog = self.writer.catalog

        def action(uow: UnitOfWork, now: datetime) -> tuple[int, dict[str, Any]]:
            current = None

            def settle(wallet: Wallet) -> NewEntry:
                nonlocal current
                current = uow.wallets.get_hold(hold_id)
                assert current is not None
                feature = catalog.features.get(current.feature or "")
                if op == "capture":
                    member = member_budgets.hold_member(uow, hold_id)
                    amount = current.amount if credits is None else credits
                    entry = wallet.capture_hold(
                        current,
                        amount,
                        description=describe_capture(amount, feature.label if feature else None),
                        now=now,
                        # Units used, for reporting to Kinde: a started unit counts as one.
                        quantity=-(-amount // feature.credits_per_unit) if feature else None,
                    )
                    if member is not None:
                        # A capture is at most the hold, whose reservation it replaces: it
                        # always fits the member's budget, and the captured amount is spend.
                        member_budgets.record_spend(uow, wallet_id, member, current.feature,
                                                    amount, entry.quantity, now)
                else:
                    entry = wallet.release_hold(
                        current, description=describe_release(current.amount), now=now
                    )
                # Keep the wallet's next hold expiry exact, so sweeps visit only what is due.
                wallet.set_hold_expiry(
                    [h for h in uow.wallets.open_holds(wallet_id) if h.id != hold_id]
                )
                return entry

            written = self.writer.write(
                uow, wallet_id, now, settle,
                missing=lambda: NotFound(f"wallet {wallet_id} has no credits yet"))
            assert written is not None and current is not None
            return 200, {**views.hold_view(current), "entry_kind": written.result.kind,
                         "balance": written.wallet.balance,
                         "available": written.wallet.available}

        request = {"op": op, "hold_id": hold_id, "credits": credits}
        return run_write(self.writer.runner, self.writer.clock, f"wallet:{wallet_id}",
                         idempotency_key, request, action)
