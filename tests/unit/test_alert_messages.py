"""Alert messages speak in use terms (issue 13): a depleted wallet is told what is paused."""

from __future__ import annotations

from app.domain.alerts import Alert, Threshold
from app.domain.catalog import Catalog
from app.services.notifications import alert_notice, paused_features


def test_depleted_by_an_app_feature_names_that_feature(catalog: Catalog) -> None:
    assert paused_features(catalog, "report_generation") == ["reports"]


def test_depleted_by_kinde_metered_usage_names_everything_now_paused(catalog: Catalog) -> None:
    # Storage is metered by Kinde and never refused; what stops is every app-source feature.
    assert paused_features(catalog, "storage") == ["file conversions", "API calls", "reports"]
    assert paused_features(catalog, None) == ["file conversions", "API calls", "reports"]


def test_depleted_notice_message(catalog: Catalog) -> None:
    alert = Alert("credits.depleted", 0, 1000, Threshold("zero", 0))
    notice = alert_notice(alert, "kp_a", ("GB", 100), None, "https://app.example.com/top-up",
                          paused=paused_features(catalog, "storage"))
    assert notice.data["message"] == (
        "Your credits are used up: file conversions, API calls and reports are paused until "
        "you top up. Top up: https://app.example.com/top-up")


def test_low_balance_notice_names_what_the_credits_buy(catalog: Catalog) -> None:
    alert = Alert("credits.balance_low", 120, 1000, Threshold("p25", 250, percent=25))
    notice = alert_notice(alert, "kp_a", ("report", 50), None, None)
    assert notice.data["message"] == "120 credits left, about 2 reports."
