"""Model cards and drivers read back from a real registry: delay risk and churn trained on
the small simulated business into a data folder's default SQLite store, then the report
page written through `aftersale report`."""

from __future__ import annotations

import re

import mlflow
import pandas as pd
import pytest
from typer.testing import CliRunner

from aftersale.cli import app
from features.report.page import MODEL_CARDS
from models import MODELS
from models.churn import SPEC as CHURN
from models.delay_risk import SPEC as DELAY
from models.served.registry import CHAMPION
from training.model_cards import (
    DRIVER_COLUMNS,
    SHAP_IMPORTANCE,
    TOP_DRIVERS,
    model_cards,
    model_drivers,
)

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def registry(trained_registry):
    """A data folder with published raw data and champions of delay risk and churn; its
    settings (the session's `trained_registry`)."""
    return trained_registry


@pytest.fixture
def client(registry) -> mlflow.MlflowClient:
    uri = registry.tracking_uri
    return mlflow.MlflowClient(tracking_uri=uri, registry_uri=uri)


def test_cards_are_the_champions_with_their_logged_metrics(registry, client) -> None:
    cards = model_cards(registry.tracking_uri)
    # Only the trained models have a champion; the others are skipped.
    assert cards["model"].tolist() == [DELAY.name, CHURN.name]
    for card in cards.itertuples():
        version = client.get_model_version_by_alias(card.model, CHAMPION)
        assert card.version == str(version.version)
        run = client.get_run(version.run_id)
        metric = MODELS[card.model].primary_metric
        assert card.test == run.data.metrics[f"test_{metric}"]
        assert card.baseline == run.data.metrics[f"test_baseline_{metric}"]
        assert pd.isna(card.oracle)
        assert card.train_first_ts == pd.Timestamp(run.data.params["split_train_start"])
        assert card.test_last_ts == pd.Timestamp(run.data.params["split_test_end"])
        assert card.train_first_ts < card.train_last_ts < card.test_first_ts
        assert card.data_version == run.data.params["data_version"]
        assert card.calibration_png.startswith(b"\x89PNG")
        assert card.shap_summary_png.startswith(b"\x89PNG")


def test_drivers_are_the_runs_shap_importance_in_words(registry, client, tmp_path) -> None:
    table = model_drivers(registry.tracking_uri)
    assert table.columns.tolist() == DRIVER_COLUMNS
    for spec in (DELAY, CHURN):
        rows = table[table["model"] == spec.name]
        assert len(rows) == TOP_DRIVERS
        assert rows["mean_abs_shap"].is_monotonic_decreasing
        assert rows["rank"].tolist() == list(range(1, TOP_DRIVERS + 1))
        assert rows["description"].str.len().gt(0).all()
        version = client.get_model_version_by_alias(spec.name, CHAMPION)
        assert set(rows["version"]) == {str(version.version)}
        local = client.download_artifacts(version.run_id, SHAP_IMPORTANCE, str(tmp_path))
        logged = pd.read_csv(local).nlargest(TOP_DRIVERS, "mean_abs_contribution")
        assert rows["feature"].tolist() == logged["feature"].tolist()
        assert rows["mean_abs_shap"].tolist() == pytest.approx(
            logged["mean_abs_contribution"].tolist()
        )


def test_no_named_champion_gives_empty_frames(registry) -> None:
    uri = registry.tracking_uri
    assert model_cards(uri, ["delivery_estimate"]).empty
    assert model_drivers(uri, ["next_best_offer"]).empty


def test_report_page_holds_the_cards_and_drivers(registry, tmp_path, monkeypatch) -> None:
    monkeypatch.setenv("AFTERSALE_DATA_DIR", str(registry.data_dir))
    monkeypatch.delenv("AFTERSALE_MLFLOW_TRACKING_URI", raising=False)
    out = tmp_path / "out"
    result = CliRunner().invoke(app, ["report", "--out", str(out)])
    assert result.exit_code == 0, result.output
    page = (out / "report.html").read_text(encoding="utf-8")
    assert MODEL_CARDS in page
    cards = model_cards(registry.tracking_uri)
    for card in cards.itertuples():
        assert f"{card.model}, version {card.version}" in page
        assert f"{card.test:.3f}" in page
    assert "Drivers" in page
    assert "mean |SHAP|" in page
    # Two charts of the figures, then a reliability plot and a SHAP summary per model.
    images = re.findall(r'src="data:image/png;base64,[A-Za-z0-9+/=]+"', page)
    assert len(images) == 2 + 2 * len(cards)
    assert 'alt="delay_risk: SHAP summary' in page
    assert not re.search(r"https?://", page)
