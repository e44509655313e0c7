"""Churn drivers within each contact reason, held against the same figures computed another
way on the small simulated business: the feature rows picked with pandas, the served
model's own contributions averaged by hand; then the section of `aftersale report`."""

from __future__ import annotations

import re

import pandas as pd
import pytest
from typer.testing import CliRunner

from aftersale.cli import app
from features.build.derived import add_time_features
from features.build.parallel import watermark_of
from features.ingest import latest_raw
from features.report.outcomes import NOT_CONTACTED
from features.report.page import OUTCOMES, REASON_DRIVERS
from models import churn
from models.served.registry import load_champion
from training.reason_drivers import (
    REASON_DRIVER_COLUMNS,
    TOP_REASON_DRIVERS,
    churn_drivers_by_reason,
)

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def registry(trained_registry):
    """A data folder with published raw data, feature tables and a churn champion; its
    settings (the session's `trained_registry`)."""
    return trained_registry


@pytest.fixture(scope="module")
def data_end(registry) -> pd.Timestamp:
    return watermark_of(latest_raw(registry.raw_root), happened=True)


def customers_as_of(registry, as_of: pd.Timestamp) -> pd.DataFrame:
    """Each customer's newest feature row at or before `as_of` (the last one written when
    a row was restated), read with pandas; those who have ordered."""
    folder = registry.features_dir / "current" / "customer_snapshots"
    rows = pd.concat([pd.read_parquet(path) for path in sorted(folder.glob("*.parquet"))])
    rows = rows[pd.to_datetime(rows["event_ts"], utc=True) <= as_of]
    rows = rows.sort_values(["customer_id", "event_ts", "created_ts"], kind="stable")
    newest = rows.drop_duplicates("customer_id", keep="last")
    newest = newest[newest["orders_total"].fillna(0) > 0]
    return newest.drop(columns=["event_ts", "created_ts"]).reset_index(drop=True)


def test_drivers_are_the_mean_absolute_contributions_of_each_reasons_customers(
    registry, data_end
) -> None:
    table = churn_drivers_by_reason(registry.tracking_uri, registry.features_dir, data_end)
    assert table.columns.tolist() == REASON_DRIVER_COLUMNS
    version, model = load_champion(churn.NAME, registry.tracking_uri)
    assert set(table["version"]) == {str(version.version)}
    assert (table["as_of_ts"] == data_end).all()

    customers = customers_as_of(registry, data_end)
    reasons = customers["last_contact_reason"].fillna(NOT_CONTACTED)
    counts = reasons.value_counts().sort_index()
    groups = table.drop_duplicates("reason").set_index("reason")
    assert groups.index.tolist() == counts.index.tolist()
    assert groups["customers"].tolist() == counts.tolist()
    assert NOT_CONTACTED in groups.index

    # The reason with the most customers, scored by the served model itself.
    reason = counts.idxmax()
    own = add_time_features(customers[reasons == reason].reset_index(drop=True), data_end)
    means = model.contributions(own).drop(columns="bias").abs().mean()
    expected = means.sort_values(ascending=False).head(TOP_REASON_DRIVERS)
    rows = table[table["reason"] == reason]
    assert rows["rank"].tolist() == list(range(1, TOP_REASON_DRIVERS + 1))
    assert rows["feature"].tolist() == expected.index.tolist()
    assert rows["mean_abs_shap"].to_numpy() == pytest.approx(expected.to_numpy())
    assert groups.loc[reason, "mean_churn_score"] == pytest.approx(model.predict_proba(own).mean())
    assert rows["description"].str.len().gt(0).all()
    assert (rows["description"] != rows["feature"]).all()


def test_no_churn_champion_or_feature_table_gives_an_empty_frame(registry, data_end, tmp_path):
    missing_store = f"sqlite:///{tmp_path / 'mlflow.db'}"
    assert churn_drivers_by_reason(missing_store, registry.features_dir, data_end).empty
    assert not (tmp_path / "mlflow.db").exists()
    assert churn_drivers_by_reason(registry.tracking_uri, tmp_path, data_end).empty


def test_report_shows_the_drivers_of_each_reason(registry, data_end, tmp_path, monkeypatch):
    monkeypatch.setenv("AFTERSALE_DATA_DIR", str(registry.data_dir))
    monkeypatch.delenv("AFTERSALE_MLFLOW_TRACKING_URI", raising=False)
    out = tmp_path / "out"
    result = CliRunner().invoke(app, ["report", "--out", str(out)])
    assert result.exit_code == 0, result.output
    page = (out / "report.html").read_text(encoding="utf-8")
    assert page.index(OUTCOMES) < page.index(REASON_DRIVERS)
    section = page[page.index(REASON_DRIVERS) :].split("<h2>", 1)[0]
    assert f"scored with their features as of that instant by {churn.NAME} version" in section
    assert f"{data_end:%Y-%m-%d %H:%M} UTC" in section
    table = churn_drivers_by_reason(registry.tracking_uri, registry.features_dir, data_end)
    for reason, rows in table.groupby("reason"):
        assert f"<h3>{reason}: {rows['customers'].iloc[0]:,} customers" in section
    # The last cell of each row is its mean |SHAP|.
    shown = re.findall(r'<td class="number">([^<]+)</td></tr>', section)
    assert len(shown) == len(table)
    assert any(float(value) > 0 for value in shown)
