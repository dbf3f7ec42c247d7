"""The who-may-spend repositories (uow.link_sessions, uow.payment_standing, uow.hold_placers)
behave the same on the in-memory fake and on SQLite and PostgreSQL (migration 0014)."""

from __future__ import annotations

from datetime import timedelta

from app.services.ports import LinkSession, UnitOfWorkFactory
from tests.integration.test_store_parity import NOW, store  # noqa: F401 - the fixture


def test_a_link_opens_one_session_and_sign_out_ends_it(store: UnitOfWorkFactory) -> None:  # noqa: F811
    session = LinkSession("link_1", "kp_a", NOW, NOW + timedelta(hours=1), None)
    with store(True) as uow:
        assert uow.link_sessions.open(session) is True
        assert uow.link_sessions.open(session) is False  # the same link again
        uow.commit()
    with store(True) as uow:
        assert uow.link_sessions.open(replace_wallet(session)) is False
        uow.link_sessions.end("link_1", NOW + timedelta(minutes=5))
        uow.link_sessions.end("link_1", NOW + timedelta(minutes=9))  # keeps the first end
        uow.commit()
    with store(False) as uow:
        found = uow.link_sessions.get("link_1")
        assert found is not None and found.wallet_id == "kp_a"
        assert found.ended_at == NOW + timedelta(minutes=5)
        assert found.expires_at == NOW + timedelta(hours=1)
        assert uow.link_sessions.get("link_2") is None


def replace_wallet(session: LinkSession) -> LinkSession:
    return LinkSession(session.link_id, "kp_b", session.opened_at, session.expires_at, None)


def test_payment_standing_follows_the_newest_event(store: UnitOfWorkFactory) -> None:  # noqa: F811
    with store(True) as uow:
        assert uow.payment_standing.overdue("kp_a") is False
        assert uow.payment_standing.record("kp_a", True, NOW, NOW) is True
        # An older success arriving late changes nothing; a newer one does.
        assert uow.payment_standing.record("kp_a", False, NOW - timedelta(hours=1), NOW) \
            is False
        assert uow.payment_standing.overdue("kp_a") is True
        assert uow.payment_standing.record("kp_a", False, NOW + timedelta(hours=1), NOW) \
            is True
        assert uow.payment_standing.overdue("kp_a") is False
        assert uow.payment_standing.overdue("kp_b") is False
        uow.commit()


def test_hold_placers(store: UnitOfWorkFactory) -> None:  # noqa: F811
    with store(True) as uow:
        wallet = uow.wallets.lock_or_create("org_x", NOW)
        wallet.credit(100, kind="grant", reason="r", description="+100", now=NOW)
        hold = wallet.place_hold(10, expires_at=NOW + timedelta(hours=1), description="hold",
                                 now=NOW)
        uow.wallets.save(wallet, NOW)
        uow.hold_placers.note(hold.id, "kp_alice")
        uow.commit()
    with store(False) as uow:
        assert uow.hold_placers.placed_by(hold.id) == "kp_alice"
        assert uow.hold_placers.placed_by("hold_other") is None
