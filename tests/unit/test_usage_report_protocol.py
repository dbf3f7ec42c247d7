"""The usage-report protocol's decisions, as pure functions."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from app.services.ports import AgreementInfo, UsageReportState
from app.services.usage_reporting import (
    LATE_RECHECK_WINDOW,
    baseline,
    confirmation_due,
    landed_late,
    must_send,
    recheck_late,
)

T0 = datetime(2026, 11, 1, tzinfo=UTC)


def _agreement(agreement_id: str, start: datetime) -> AgreementInfo:
    return AgreementInfo(agreement_id, "customer_1", None, start, start + timedelta(days=30),
                         (), T0)


def _state(agreement_id: str | None, start: datetime | None, base: int, sent: int) -> (
        UsageReportState):
    return UsageReportState("kp_a", "api_call", agreement_id, start, base, sent, None)


def test_same_period_keeps_what_kinde_acknowledged() -> None:
    assert baseline(_state("agr_1", T0, 10, 7), _agreement("agr_1", T0)) == (10, 7)


def test_a_new_period_or_agreement_moves_the_acknowledged_total_into_the_base() -> None:
    later = T0 + timedelta(days=30)
    assert baseline(_state("agr_1", T0, 10, 7), _agreement("agr_1", later)) == (17, None)
    assert baseline(_state("agr_1", T0, 10, 7), _agreement("agr_2", T0)) == (17, None)
    assert baseline(_state(None, None, 0, 0), _agreement("agr_1", T0)) == (0, None)


def test_send_only_what_kinde_may_not_have_unless_confirming() -> None:
    assert must_send(5, None, confirming=False)
    assert must_send(6, 5, confirming=False)
    assert not must_send(5, 5, confirming=False)
    assert must_send(5, 5, confirming=True)


def test_a_total_sent_after_the_period_end_landed_late() -> None:
    end = T0 + timedelta(days=30)
    assert not landed_late(None, end)
    assert not landed_late(end, end - timedelta(seconds=1))
    assert landed_late(end, end)
    assert recheck_late(end, end + LATE_RECHECK_WINDOW - timedelta(seconds=1))
    assert not recheck_late(end, end + LATE_RECHECK_WINDOW)


def test_confirmation_follows_every_uncertain_outcome() -> None:
    quiet = dict(late=False, recently_dead=False, confirm_left=None, confirm_after=300.0)
    assert confirmation_due(attempts=1, **quiet) is None
    assert confirmation_due(attempts=2, **quiet) == 300.0
    assert confirmation_due(attempts=1, **{**quiet, "late": True}) == 300.0
    assert confirmation_due(attempts=1, **{**quiet, "recently_dead": True}) == 300.0
    # Sent early because of new usage: the pending confirmation's wait is kept.
    assert confirmation_due(attempts=1, **{**quiet, "confirm_left": 42.0}) == 42.0
    assert confirmation_due(attempts=1, **{**quiet, "confirm_left": -1.0}) is None
