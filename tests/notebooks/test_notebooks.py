"""The analysts' notebooks, executed on the small simulated business with its delay-risk and
churn champions: each runs without error, and what it shows holds against the raw tables
and the models."""

from __future__ import annotations

import json
import math
import os
from pathlib import Path

import jupytext
import nbformat
import pandas as pd
import pytest
from nbclient import NotebookClient

from features.contract.schema import CONTACT_REASONS
from features.report.outcomes import NOT_CONTACTED
from training.reason_drivers import TOP_REASON_DRIVERS

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[2]
NOTEBOOKS = ROOT / "notebooks"
CELL_TIMEOUT_S = 300
# Printed by a cell the test appends, after the notebook's own cells have run.
MARK = "NOTEBOOK-STATE:"


def execute(name: str, settings, monkeypatch, state: str) -> nbformat.NotebookNode:
    """Run a notebook (its jupytext source) in a fresh kernel on `settings`' data folder,
    then one appended cell printing the JSON expression `state`; the executed notebook."""
    monkeypatch.setenv("AFTERSALE_DATA_DIR", str(settings.data_dir))
    monkeypatch.delenv("AFTERSALE_MLFLOW_TRACKING_URI", raising=False)
    # The kernel imports this checkout's packages, and draws with matplotlib's inline
    # backend, which renders through Agg: every figure comes back as a PNG output.
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]))
    monkeypatch.delenv("MPLBACKEND", raising=False)
    monkeypatch.setenv("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    notebook = jupytext.read(NOTEBOOKS / name)
    notebook.cells.append(nbformat.v4.new_code_cell(f"import json\nprint({MARK!r}, {state})"))
    client = NotebookClient(
        notebook,
        timeout=CELL_TIMEOUT_S,
        kernel_name="python3",
        resources={"metadata": {"path": str(ROOT)}},
    )
    client.execute()
    return notebook


def printed_state(notebook: nbformat.NotebookNode) -> dict:
    """The JSON the appended cell printed."""
    text = "".join(
        output.get("text", "")
        for output in notebook.cells[-1].outputs
        if output.output_type == "stream"
    )
    return json.loads(text.split(MARK, 1)[1])


def images(cell) -> int:
    """PNG images among a cell's outputs."""
    return sum("image/png" in output.get("data", {}) for output in cell.get("outputs", []))


def cells_calling(notebook: nbformat.NotebookNode, call: str) -> list:
    return [cell for cell in notebook.cells if cell.cell_type == "code" and call in cell.source]


def test_notebooks_are_jupytext_sources_without_outputs() -> None:
    sources = sorted(path.name for path in NOTEBOOKS.iterdir() if path.suffix == ".py")
    assert sources == ["churn_by_contact_reason.py", "explain_one_score.py"]
    assert not list(NOTEBOOKS.glob("*.ipynb"))
    for name in sources:
        notebook = jupytext.read(NOTEBOOKS / name)
        assert notebook.cells[0].cell_type == "markdown"
        assert all(not cell.get("outputs") for cell in notebook.cells)


def churn_after_contacts(
    orders: pd.DataFrame, contacts: pd.DataFrame, data_end: pd.Timestamp, days: int = 90
) -> pd.Series:
    """Per reason, the share of contacts whose window ended by `data_end` and after which the
    customer placed no order within `days` days: a plain loop over the raw rows."""
    span = pd.Timedelta(days=days)
    order_times: dict[str, list[pd.Timestamp]] = {}
    for customer_id, ts in zip(orders["customer_id"], orders["order_ts"], strict=True):
        order_times.setdefault(customer_id, []).append(pd.Timestamp(ts).tz_convert("UTC"))
    outcomes: dict[str, list[bool]] = {}
    for customer_id, ts, reason in zip(
        contacts["customer_id"], contacts["ts"], contacts["reason"], strict=True
    ):
        start = pd.Timestamp(ts).tz_convert("UTC")
        if start + span > data_end:
            continue
        ordered = any(start < t <= start + span for t in order_times.get(customer_id, []))
        outcomes.setdefault(reason, []).append(not ordered)
    return pd.Series({reason: sum(o) / len(o) for reason, o in outcomes.items()}).sort_index()


def test_churn_by_contact_reason(trained_registry, sim_tables, monkeypatch) -> None:
    state = (
        'json.dumps({"data_end": data_end.isoformat(), '
        '"churn": churn_rates[["reason", "contacts", "churn_rate"]].to_dict("records"), '
        '"drivers": drivers_by_reason.drop(columns="as_of_ts").to_dict("records")})'
    )
    notebook = execute("churn_by_contact_reason.py", trained_registry, monkeypatch, state)
    result = printed_state(notebook)
    data_end = pd.Timestamp(result["data_end"])
    orders = sim_tables["orders"].to_pandas()
    contacts = sim_tables["contacts"].to_pandas()
    assert data_end >= pd.to_datetime(contacts["ts"], utc=True).max()

    churn = pd.DataFrame(result["churn"]).set_index("reason")
    expected = churn_after_contacts(orders, contacts, data_end)
    assert len(expected) >= 5
    shown = churn.drop(index="all")["churn_rate"].sort_index()
    assert shown.index.tolist() == expected.index.tolist()
    assert shown.to_numpy() == pytest.approx(expected.to_numpy())
    counted = churn.drop(index="all")["contacts"]
    assert churn.loc["all", "contacts"] == counted.sum()
    assert churn["churn_rate"].is_monotonic_decreasing
    [chart] = cells_calling(notebook, "axes.barh")
    assert images(chart) == 1

    drivers = pd.DataFrame(result["drivers"])
    assert set(drivers["reason"]) <= {*CONTACT_REASONS, NOT_CONTACTED}
    # Every customer who ordered by the data's end is scored once, in one reason's group.
    ordered = orders.loc[pd.to_datetime(orders["order_ts"], utc=True) <= data_end, "customer_id"]
    groups = drivers.drop_duplicates("reason")
    assert groups["customers"].sum() == ordered.nunique()
    assert groups["mean_churn_score"].between(0, 1).all()
    for _, rows in drivers.groupby("reason"):
        assert rows["rank"].tolist() == list(range(1, len(rows) + 1))
        assert len(rows) == TOP_REASON_DRIVERS
        assert rows["mean_abs_shap"].is_monotonic_decreasing
        assert (rows["mean_abs_shap"] >= 0).all()
        assert rows["description"].str.len().gt(0).all()


def test_explaining_one_customer_and_one_shipment(trained_registry, monkeypatch) -> None:
    state = (
        "json.dumps({"
        '"summary": summary.drop(columns="version").to_dict("records"), '
        '"raw": [float(churn_model.raw_score(customer)[0]), '
        "float(delay_model.raw_score(shipment)[0])], "
        '"highest": [float(churn_model.predict_proba(customers).max()), '
        "float(delay_model.predict_proba(parcels).max())], "
        '"customer_values": customer_explanation.values.tolist(), '
        '"customer_contributions": customer_contrib.drop(columns="bias").iloc[0].tolist()})'
    )
    notebook = execute("explain_one_score.py", trained_registry, monkeypatch, state)
    result = printed_state(notebook)
    summary = pd.DataFrame(result["summary"]).set_index("model")
    assert summary.index.tolist() == ["churn", "delay_risk"]
    for model, raw, highest in zip(summary.index, result["raw"], result["highest"], strict=True):
        row = summary.loc[model]
        # With no id set, the notebook explains the highest risk.
        assert row["score"] == pytest.approx(highest)
        # The waterfall's bars add up from the base value to the booster's own log-odds.
        assert row["base_value"] + row["contributions"] == pytest.approx(row["log_odds"])
        assert row["log_odds"] == pytest.approx(math.log(raw / (1 - raw)), abs=1e-6)
        assert 0 < row["score"] < 1
    assert result["customer_values"] == pytest.approx(result["customer_contributions"])
    waterfalls = cells_calling(notebook, "shap.plots.waterfall")
    assert len(waterfalls) == 2
    assert [images(cell) for cell in waterfalls] == [1, 1]
