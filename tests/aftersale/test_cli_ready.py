"""A command run before the step it needs ends at once with one line naming that step and
exit code 1, never a traceback from deep inside a flow or a server restarting forever."""

from __future__ import annotations

import pytest
from typer.testing import CliRunner

from aftersale import cli
from aftersale.cli import app

EVERY = [
    ["features", "build"],
    ["features", "materialize"],
    ["train"],
    ["score"],
    ["monitor"],
]


@pytest.fixture
def runner(monkeypatch) -> CliRunner:
    def started(*args) -> None:
        raise AssertionError(f"the server was started: {args}")

    # A check that wrongly passed would turn this process into the server.
    monkeypatch.setattr(cli.os, "execv", started)
    return CliRunner()


def _refused(runner: CliRunner, args: list[str], step: str) -> None:
    result = runner.invoke(app, args)
    assert result.exit_code == 1, result.output
    assert f"run `aftersale {step}` first" in result.output
    assert "Traceback" not in result.output
    assert result.exception is None or isinstance(result.exception, SystemExit)


@pytest.fixture
def raw_only(sim_dir, tmp_path, monkeypatch):
    """A data folder holding the small business's published raw tables, nothing more."""
    from aftersale.settings import get_settings
    from features import versioned
    from features.ingest import check, stage
    from features.sources.base import FolderSource

    monkeypatch.setenv("AFTERSALE_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.delenv("AFTERSALE_MLFLOW_TRACKING_URI", raising=False)
    settings = get_settings()
    staging = stage(FolderSource(sim_dir), settings.raw_root)
    check(staging)
    versioned.publish(staging)
    return settings


@pytest.mark.parametrize("args", EVERY, ids=" ".join)
def test_before_any_data_every_command_asks_for_an_ingest(
    runner, args, tmp_path, monkeypatch
) -> None:
    monkeypatch.setenv("AFTERSALE_DATA_DIR", str(tmp_path / "data"))
    _refused(runner, args, "ingest")


@pytest.mark.parametrize("args", EVERY[1:], ids=" ".join)
def test_before_the_features_every_later_command_asks_for_them(runner, raw_only, args) -> None:
    _refused(runner, args, "features build")


@pytest.mark.slow
def test_without_champions_scoring_and_serving_ask_for_a_training(
    runner, raw_only, sim_tables
) -> None:
    from features.build.tables import build_feature_tables, publish_tables
    from features.store.config import feature_store
    from features.store.sync import apply_definitions

    _refused(runner, ["serve"], "train")
    publish_tables(build_feature_tables(sim_tables), raw_only.features_dir)
    apply_definitions(feature_store(raw_only))
    for args in (["score"], ["serve"]):
        result = runner.invoke(app, args)
        assert "no champion version of 'delay_risk'" in result.output
        _refused(runner, args, "train")
