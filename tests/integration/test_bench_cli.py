"""`kinde-credits bench` keeps its machine-readable shape, and every figure of issue 11 is there
with its baseline and ratio. Timing is never asserted: the numbers only have to exist."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from app.bench import as_markdown, make_figure, postgres_url, run_bench
from app.bench_http import own_environment
from app.cli import main
from app.domain.catalog import load_catalog
from app.settings import SETTING_NAMES

SQLITE_FIGURES = {
    "store_debits_sqlite",
    "http_usage_one_wallet_sqlite",
    "http_usage_16_wallets_sqlite",
    "webhook_usage_sqlite",
    "batch_usage_1000_sqlite",
    "http_wallet_read_sqlite",
    "balance_read_1m_entries_sqlite",
    "worker_peak_rss_sqlite",
}
POSTGRES_FIGURES = {
    "store_debits_postgres",
    "http_usage_one_wallet_postgres",
    "http_usage_16_wallets_postgres",
}
HTTP_FIGURES = {name for name in SQLITE_FIGURES | POSTGRES_FIGURES
                if name.startswith(("http_", "webhook_"))}
CONTRACT = {"name", "value", "unit", "baseline", "ratio", "goal"}


def _report(output: str) -> dict[str, Any]:
    report: dict[str, Any] = json.loads(output[output.index("{"):])
    return report


@pytest.mark.slow
def test_every_figure_has_a_baseline_and_a_ratio() -> None:
    result = CliRunner().invoke(main, ["bench", "--json", "--quick", "--seconds", "1"])
    assert result.exit_code == 0, result.output
    report = _report(result.output)
    figures = {fig["name"]: fig for fig in report["figures"]}
    skipped = {item["name"]: item["reason"] for item in report["skipped"]}
    assert report["failed"] == []

    expected = SQLITE_FIGURES | (POSTGRES_FIGURES if postgres_url() else set())
    assert expected <= set(figures), (set(figures), skipped)
    # Without PostgreSQL its figures are listed as skipped, with the reason, never dropped.
    assert set(figures) | set(skipped) == SQLITE_FIGURES | POSTGRES_FIGURES
    for name, fig in figures.items():
        assert set(fig) >= CONTRACT, name
        assert set(fig["baseline"]) == {"name", "value"}, name
        assert fig["baseline"]["name"] and fig["unit"], name
        assert fig["value"] > 0 and fig["baseline"]["value"] > 0, name
        assert fig["ratio"] == pytest.approx(fig["value"] / fig["baseline"]["value"],
                                             rel=0.02, abs=0.002), name
        assert fig["better"] in ("higher", "lower"), name
    for name in HTTP_FIGURES & set(figures):
        fig = figures[name]
        for field in ("p50_ms", "p99_ms", "baseline_p50_ms", "baseline_p99_ms"):
            assert fig[field] > 0, (name, field)
        assert fig["p50_ms"] <= fig["p99_ms"], name
    assert figures["balance_read_1m_entries_sqlite"]["better"] == "lower"
    assert figures["worker_peak_rss_sqlite"]["goal"] is None
    assert report["machine"]["cpus"] >= 1


def test_runs_report_the_median_and_markdown_renders_it(monkeypatch: pytest.MonkeyPatch) -> None:
    """--runs N keeps one figure per name, each number the median of the runs."""
    from app import bench

    values = iter([(10.0, 20.0), (30.0, 20.0), (20.0, 40.0)])

    def fake(ctx: bench.BenchContext) -> bench.Figure:
        ours, base = next(values)
        return make_figure("fake", ours, "things/s", "least work", base, 0.5, p99_ms=float(ours))

    monkeypatch.setattr(bench, "FIGURES", {"fake": fake})
    monkeypatch.setattr(bench, "FIGURE_MODULES", ())
    report = run_bench(only={"fake"}, runs=3, progress=False)
    [fig] = report["figures"]
    assert fig["value"] == 20.0 and fig["baseline"]["value"] == 20.0
    assert fig["ratio"] == 0.5  # the median of 0.5, 1.5 and 0.5
    assert fig["p99_ms"] == 20.0 and fig["runs"] == 3 and fig["goal_met"] is True
    markdown = as_markdown(report)
    assert "| `fake` | 20.0 things/s |" in markdown
    assert "kinde-credits bench --runs 3 --markdown > docs/benchmarks.md" in markdown


def test_a_broken_figure_is_reported_and_fails_the_command(
        monkeypatch: pytest.MonkeyPatch) -> None:
    from app import bench

    def good(ctx: bench.BenchContext) -> bench.Figure:
        return make_figure("good", 2.0, "things/s", "least work", 4.0, 0.5)

    def broken(ctx: bench.BenchContext) -> bench.Figure:
        raise RuntimeError("server did not start")

    monkeypatch.setattr(bench, "FIGURES", {"broken": broken, "good": good})
    monkeypatch.setattr(bench, "FIGURE_MODULES", ())
    result = CliRunner().invoke(main, ["bench", "--json"])
    assert result.exit_code == 1
    report = _report(result.output)
    assert [fig["name"] for fig in report["figures"]] == ["good"]
    [failed] = report["failed"]
    assert failed["name"] == "broken" and "server did not start" in failed["reason"]


def test_unknown_figure_is_refused() -> None:
    result = CliRunner().invoke(main, ["bench", "--only", "nope"])
    assert result.exit_code != 0 and "unknown figure" in result.output


def test_json_and_markdown_exclude_each_other() -> None:
    result = CliRunner().invoke(main, ["bench", "--json", "--markdown", "--only", "nope"])
    assert result.exit_code == 2 and "--json" in result.output


MINIMAL_CATALOG = """\
[features.report]
label = "Report"
unit = "report"
credits_per_unit = 7
kinde_feature_code = "reports_elsewhere"
source = "app"
"""


@pytest.mark.slow
def test_the_bench_brings_its_own_catalog_and_databases(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The operator's settings name a catalog without the bench's feature codes (`api_call`,
    # `storage_gb`) and a database of their own, in the environment and in a `.env` file in
    # the working directory. The bench's figures must neither park nor fail on them, and
    # must leave that database alone.
    catalog = tmp_path / "minimal.toml"
    catalog.write_text(MINIMAL_CATALOG)
    load_catalog(catalog)  # a valid catalog: only the bench's feature codes are missing
    theirs = tmp_path / "theirs.db"
    monkeypatch.chdir(tmp_path)
    (tmp_path / ".env").write_text(f"CREDITS_CATALOG={catalog}\nSMTP_PORT=not-a-number\n")
    monkeypatch.setenv("CREDITS_CATALOG", str(catalog))
    monkeypatch.setenv("DATABASE_URL", f"sqlite:///{theirs}")
    monkeypatch.setenv("OUTBOX_MAX_ATTEMPTS", "0")  # a bad setting: refused if it got through
    result = CliRunner().invoke(main, ["bench", "--json", "--quick", "--seconds", "1",
                                       "--only", "webhook_usage_sqlite",
                                       "--only", "batch_usage_1000_sqlite"])
    assert result.exit_code == 0, result.output
    report = _report(result.output)
    assert report["failed"] == [] and report["skipped"] == [], report
    figures = {fig["name"]: fig for fig in report["figures"]}
    assert set(figures) == {"webhook_usage_sqlite", "batch_usage_1000_sqlite"}
    for fig in figures.values():
        assert fig["value"] > 0 and fig["baseline"]["value"] > 0, fig
        assert fig.get("errors", 0) == 0, fig
    assert not theirs.exists()


def test_the_bench_servers_inherit_no_service_setting(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in SETTING_NAMES:
        monkeypatch.setenv(name, "operator's")
    monkeypatch.setenv("KINDE_SOMETHING_NEW", "operator's")
    monkeypatch.setenv("BENCH_KEEP_ME", "yes")
    env = own_environment()
    assert {name: env[name] for name in SETTING_NAMES} == dict.fromkeys(SETTING_NAMES, "")
    assert "KINDE_SOMETHING_NEW" not in env
    assert env["BENCH_KEEP_ME"] == "yes"
