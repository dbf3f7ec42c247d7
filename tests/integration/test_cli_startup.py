"""Start-up refuses a bad catalog or bad settings with a message naming the problem."""

from __future__ import annotations

from pathlib import Path

from click.testing import CliRunner

from app.cli import main


def test_bad_catalog_stops_with_file_key_and_problem(tmp_path: Path) -> None:
    bad = tmp_path / "credits.toml"
    bad.write_text('[features.api_call]\nunit = "call"\ncredits_per_unit = -1\n'
                   'kinde_feature_code = "api_calls"\n')
    env = {"CREDITS_CATALOG": str(bad), "KINDE_CREDITS_VAR_DIR": str(tmp_path)}
    for command in (["serve", "--port", "1"], ["verify"], ["worker", "--once"]):
        result = CliRunner().invoke(main, command, env=env)
        assert result.exit_code == 1, (command, result.output)
        assert str(bad) in result.output
        assert "[features.api_call.credits_per_unit]" in result.output
        assert "at least 1" in result.output


def test_bad_setting_names_the_variable(tmp_path: Path) -> None:
    env = {"KINDE_DOMAIN": "https://acme.kinde.com", "KINDE_CREDITS_VAR_DIR": str(tmp_path)}
    result = CliRunner().invoke(main, ["verify"], env=env)
    assert result.exit_code == 1 and "KINDE_API_AUDIENCE" in result.output
    env = {"KINDE_DOMAIN": "http://kinde.example.com", "KINDE_API_AUDIENCE": "x",
           "KINDE_CREDITS_VAR_DIR": str(tmp_path)}
    result = CliRunner().invoke(main, ["verify"], env=env)
    assert result.exit_code == 1 and "loopback" in result.output


def test_verify_on_a_fresh_database_is_ok(tmp_path: Path) -> None:
    env = {"KINDE_CREDITS_VAR_DIR": str(tmp_path)}
    assert CliRunner().invoke(main, ["db", "upgrade"], env=env).exit_code == 0
    result = CliRunner().invoke(main, ["verify"], env=env)
    assert result.exit_code == 0 and "OK" in result.output


def test_db_upgrade_creates_the_database_folder(tmp_path: Path) -> None:
    """A fresh checkout has no ./var: `db upgrade` (run by scripts/serve) must create it."""
    var = tmp_path / "not" / "there" / "yet"
    result = CliRunner().invoke(main, ["db", "upgrade"], env={"KINDE_CREDITS_VAR_DIR": str(var)})
    assert result.exit_code == 0, result.output
    assert (var / "credits.db").exists()
