"""`kinde-credits bench --json` keeps its machine-readable shape (no timing is asserted)."""

from __future__ import annotations

import json

import pytest
from click.testing import CliRunner

from app.cli import main


@pytest.mark.slow
def test_bench_json_shape() -> None:
    result = CliRunner().invoke(
        main, ["bench", "--json", "--quick", "--only", "store_debits_sqlite"]
    )
    assert result.exit_code == 0, result.output
    report = json.loads(result.output[result.output.index("{"):])
    [fig] = report["figures"]
    assert set(fig) == {"name", "value", "unit", "baseline", "ratio", "goal"}
    assert fig["name"] == "store_debits_sqlite" and fig["unit"] == "debits/s"
    assert set(fig["baseline"]) == {"name", "value"}
    assert fig["value"] > 0 and fig["baseline"]["value"] > 0
    assert fig["ratio"] == pytest.approx(fig["value"] / fig["baseline"]["value"], rel=0.01)


def test_unknown_figure_is_refused() -> None:
    result = CliRunner().invoke(main, ["bench", "--only", "nope"])
    assert result.exit_code != 0 and "unknown figure" in result.output
