"""Command-line options with a format are parsed at the edge: a bad value is a usage error
that names the option and exits with code 2, never a traceback from deep inside a job."""

from __future__ import annotations

import pytest
from typer.testing import CliRunner

from aftersale.cli import app, parse_instant


@pytest.fixture
def runner(tmp_path, monkeypatch) -> CliRunner:
    monkeypatch.setenv("AFTERSALE_DATA_DIR", str(tmp_path / "data"))
    return CliRunner()


@pytest.mark.parametrize(
    ("args", "named"),
    [
        (["score", "--as-of", "garbage"], "--as-of"),
        (["score", "--as-of", "2025-13-45"], "--as-of"),
        (["validate", "/no/such/folder"], "'folder'"),
        (["simulate", "--out", "x", "--until", "2025-02-30"], "--until"),
        (["simulate", "--out", "x", "--day", "yesterday"], "--day"),
        (["simulate", "--out", "x", "--until", "2025-01-01", "--day", "2025-01-02"], "--day"),
        (["simulate", "--out", "x", "--customers", "5", "--day", "2023-01-01"], "period"),
        (["ingest", "--source", "nope"], "--source"),
        (["ingest", "--source", "folder", "--path", "/no/such/folder"], "--path"),
        (["train", "--data", "/no/such/dataset"], "--data"),
        (["train", "--test-fraction", "1.5"], "--test-fraction"),
        (["train", "--model", "contact_reason", "--model", "churn"], "--model"),
        (["nightly", "--through", "someday"], "--through"),
    ],
)
def test_a_malformed_option_is_a_named_usage_error(runner, args, named) -> None:
    result = runner.invoke(app, args)
    assert result.exit_code == 2, result.output
    assert named in result.output
    assert "Traceback" not in result.output
    assert result.exception is None or isinstance(result.exception, SystemExit)


def test_instants_read_naive_as_given_and_keep_their_offset() -> None:
    assert parse_instant("2025-12-31").isoformat() == "2025-12-31T00:00:00"
    assert parse_instant("2025-12-31T23:00:00Z").utcoffset().total_seconds() == 0
    assert parse_instant("2025-12-31T23:00:00+02:00").utcoffset().total_seconds() == 7200


@pytest.mark.parametrize(
    ("variable", "value", "named"),
    [
        ("AFTERSALE_CUSTOMERS", "many", "AFTERSALE_CUSTOMERS: Input should be a valid integer"),
        ("AFTERSALE_NIGHTLY_AT", "25:00", "AFTERSALE_NIGHTLY_AT: String should match"),
        ("AFTERSALE_RETRAIN_AT", "sunday", "AFTERSALE_RETRAIN_AT: String should match"),
        ("AFTERSALE_SCHEDULE_TIMEZONE", "Mars/Olympus", "'Mars/Olympus' is not an IANA"),
        ("AFTERSALE_OUTREACH_CAPACITY", "-1", "AFTERSALE_OUTREACH_CAPACITY"),
        ("AFTERSALE_CORS_ORIGINS", "shop.example", "AFTERSALE_CORS_ORIGINS: Value error"),
    ],
)
def test_a_bad_setting_is_named_before_any_command_runs(
    runner, monkeypatch, variable, value, named
) -> None:
    monkeypatch.setenv(variable, value)
    result = runner.invoke(app, ["nightly", "--through", "2025-01-01"])
    assert result.exit_code == 2, result.output
    assert named in result.output
    assert "Traceback" not in result.output
    assert result.exception is None or isinstance(result.exception, SystemExit)
