"""`aftersale monitor` on the session's trained registry: one drift table per champion,
recorded in MLflow with its HTML report and appended to the monitoring table."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest
from typer.testing import CliRunner

from aftersale.cli import app

pytestmark = pytest.mark.slow


def test_monitor_records_each_champions_drift_and_marks(trained_registry, prefect_harness) -> None:
    """One run of the command: the drift tables, the realised quality, the MLflow runs, and,
    with a threshold any drift crosses, the retrain marks in the log, on the service's
    `/v1/models` answer and on its gauge."""
    import logging

    import mlflow

    from flows.monitor import DRIFT_FILE, EXPERIMENT
    from models.served.registry import tracking
    from models.served.retrain import clear, read_marks
    from serving.metrics import domain_metrics
    from serving.runtime import Runtime

    settings = trained_registry
    for name in read_marks(settings.monitoring_dir):
        clear(settings.monitoring_dir, name)
    table_path = settings.monitoring_dir / DRIFT_FILE
    before = len(pq.read_table(table_path)) if table_path.exists() else 0
    logger = logging.getLogger("flows.monitor")
    records: list[logging.LogRecord] = []
    handler = logging.Handler(logging.WARNING)
    handler.emit = records.append
    logger.addHandler(handler)
    try:
        with pytest.MonkeyPatch.context() as patch:
            patch.setenv("AFTERSALE_DATA_DIR", str(settings.data_dir))
            # Any drift at all marks a model.
            patch.setenv("AFTERSALE_RETRAIN_DRIFT_SHARE", "0.0001")
            result = CliRunner().invoke(app, ["monitor", "--days", "28"])
    finally:
        logger.removeHandler(handler)
    assert result.exit_code == 0, result.output
    try:
        marks = read_marks(settings.monitoring_dir)
        assert set(marks) == {"delay_risk", "churn"}
        assert all("features drifted" in mark["reason"] for mark in marks.values())
        assert "retrain due churn:" in result.output
        warned = [r.getMessage() for r in records]
        assert any("churn v" in m and "marked for retraining" in m for m in warned), warned
        info = Runtime.start(settings).models_info()
        assert set(info.retrain_due) == {"delay_risk", "churn"}
        gauge = domain_metrics().retrain_due
        assert gauge.labels("churn")._value.get() == 1
        clear(settings.monitoring_dir, "churn")
        assert set(Runtime.start(settings).models_info().retrain_due) == {"delay_risk"}
        assert gauge.labels("churn")._value.get() == 0
    finally:
        for name in read_marks(settings.monitoring_dir):
            clear(settings.monitoring_dir, name)
    for name in ("delay_risk", "churn"):
        assert f"Drift of {name} v" in result.output
    table = pq.read_table(table_path).to_pandas()
    # This run's rows (a rerun of the same window replaces earlier ones).
    added = table[table["monitored_ts"] >= table["monitored_ts"].max() - pd.Timedelta(minutes=30)]
    assert len(table) >= before
    assert set(added["model"]) == {"delay_risk", "churn"}
    for name, rows in added.groupby("model"):
        whole = rows[rows["segment"] == "all"]
        assert (whole["kind"] == "prediction").sum() == 1, name
        assert (whole["kind"] == "feature").sum() >= 10, name
        assert whole["value"].notna().all()
        assert (rows["current_rows"] > 0).all()
    assert "Realised quality on the newest labelled window" in result.output
    quality = pq.read_table(settings.monitoring_dir / "quality.parquet").to_pandas()
    assert {"delay_risk", "churn"} <= set(quality["model"])
    assert quality["roc_auc"].between(0, 1).all()
    assert (quality["rows"] > 0).all()
    with tracking(settings.tracking_uri):
        experiment = mlflow.get_experiment_by_name(EXPERIMENT)
        runs = mlflow.search_runs([experiment.experiment_id], output_format="list")
        latest = {r.data.tags["model"]: r for r in sorted(runs, key=lambda r: r.info.start_time)}
        for name, run in latest.items():
            assert 0 <= run.data.metrics["drifted_feature_share"] <= 1
            files = [
                a.path for a in mlflow.MlflowClient().list_artifacts(run.info.run_id, "monitor")
            ]
            assert files == [f"monitor/drift_{name}.html"], files
    assert set(latest) == {"delay_risk", "churn"}


def test_monitor_names_an_unknown_model(trained_registry, prefect_harness) -> None:
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("AFTERSALE_DATA_DIR", str(trained_registry.data_dir))
        result = CliRunner().invoke(app, ["monitor", "--model", "nobody"])
    assert result.exit_code == 1
    assert "not monitored" in result.output
    assert "Traceback" not in result.output


def test_both_churn_windows_are_bounded_samples(trained_registry, prefect_harness) -> None:
    """With a bound below the business's size, churn compares that many customers of its
    training window with that many customers at the data's end, the same ones each run."""
    from flows.monitor import monitor
    from models.served.retrain import clear

    runs = []
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("AFTERSALE_DATA_DIR", str(trained_registry.data_dir))
        patch.setenv("AFTERSALE_MONITOR_REFERENCE_ROWS", "150")
        try:
            for _ in range(2):
                (result,) = monitor(models=["churn"])
                runs.append(result.table)
        finally:
            # The session's registry serves other tests: no mark is left behind.
            clear(trained_registry.monitoring_dir, "churn")
    for table in runs:
        whole = table[table["segment"] == "all"]
        assert (whole["reference_rows"] == 150).all()
        assert (whole["current_rows"] == 150).all()
    pd.testing.assert_frame_equal(runs[0], runs[1])


def test_a_business_beyond_the_bound_is_monitored_on_a_draw_of_its_customers(
    trained_registry, prefect_harness
) -> None:
    """With fewer customers allowed than the business has, the monitor reads the rows of a
    seeded draw of them: its windows end where the whole business's do, its realised quality
    counts the newest labelled decisions of the drawn customers only, and a rerun draws the
    same customers."""
    from features.contract.io import read_validated
    from features.ingest import latest_raw
    from features.instants import watermark
    from flows.monitor import _data, monitor, monitored_tables
    from models import delay_risk
    from models.served.retrain import clear
    from models.spec import LABEL_KNOWN
    from training.monitor import MonitoredData

    settings = trained_registry
    runs = []
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("AFTERSALE_DATA_DIR", str(settings.data_dir))
        patch.setenv("AFTERSALE_MONITOR_CUSTOMERS", "120")
        try:
            data = _data(monitored_tables(["delay_risk"]))
            for _ in range(2):
                (result,) = monitor(models=["delay_risk"])
                runs.append(result)
        finally:
            clear(settings.monitoring_dir, "delay_risk")
    whole = read_validated(latest_raw(settings.raw_root), tables=["shipments", "tracking_events"])
    customers = set(data.tables["customers"].column("customer_id").to_pylist())
    assert 120 <= data.customers == len(customers) < data.business_customers
    # Its feature requests are about the drawn customers' entities (`entities_only`); a
    # business read whole names none.
    drawn = data.drawn_entities()
    assert set(drawn["customer_id"].to_pylist()) == customers
    assert set(drawn["order_id"].to_pylist()) == set(data.tables["orders"]["order_id"].to_pylist())
    assert MonitoredData(data.tables, data.customers, data.customers).drawn_entities() == {}
    # Independently: the whole business's label events, those of the drawn customers' parcels.
    events = delay_risk.label_events(dict(whole))
    orders = data.tables["orders"].to_pandas()
    drawn_orders = set(orders[orders["customer_id"].isin(customers)]["order_id"])
    ships = whole["shipments"].to_pandas()
    drawn_ships = set(ships[ships["order_id"].isin(drawn_orders)]["shipment_id"])
    end = watermark(dict(whole), happened=True)

    def window_rows(rows: pd.DataFrame) -> int:
        known = rows[pd.to_datetime(rows[LABEL_KNOWN], utc=True) <= end]
        times = pd.to_datetime(known["event_timestamp"], utc=True)
        return int((times > times.max() - pd.Timedelta(days=28)).sum())

    drawn_events = events[events["shipment_id"].isin(drawn_ships)]
    assert runs[0].quality["rows"] == window_rows(drawn_events) < window_rows(events)
    newest = pd.to_datetime(events["event_timestamp"], utc=True).max()
    assert runs[0].current_span[1] <= newest
    assert runs[0].current_span[1] > newest - pd.Timedelta(days=1)
    pd.testing.assert_frame_equal(runs[0].table, runs[1].table)


def test_churns_customers_at_the_end_are_read_along_with_their_latest_features(
    trained_registry,
) -> None:
    """The customers churn is watched on at the data's end, read in the same request as the
    decisions compared: a draw of those signed up by then, each with the latest features
    batch scoring reads for them, and the decisions as a request of their own gives them."""
    from features.instants import utc_times, watermark
    from features.store.config import feature_store
    from flows.monitor import _data, monitored_tables
    from models import churn
    from models.served.registry import load_champion
    from training.monitor import SCORE, customers_as_of, customers_at, monitored_frame

    settings = trained_registry
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("AFTERSALE_DATA_DIR", str(settings.data_dir))
        tables = _data(monitored_tables(["churn"])).of(churn.SPEC)
    store = feature_store(settings)
    end = watermark(dict(tables), happened=True)
    _, model = load_champion("churn", settings.tracking_uri)
    raw = tables["customers"].to_pandas()
    signed = set(raw.loc[(utc_times(raw["signup_ts"]) <= end).to_numpy(), "customer_id"])
    at_end = customers_at(tables, end, 150)
    assert len(at_end) == min(150, len(signed))
    assert set(at_end["customer_id"]) <= signed
    assert (at_end["event_timestamp"] == end).all()
    pd.testing.assert_frame_equal(at_end, customers_at(tables, end, 150))

    events = churn.SPEC.label_events(dict(tables)).iloc[::20].reset_index(drop=True)
    frame, features, current = monitored_frame(
        churn.SPEC, store, tables, model, events, current=at_end
    )
    alone = monitored_frame(churn.SPEC, store, tables, model, events).frame
    pd.testing.assert_frame_equal(frame, alone)
    # A champion trained before its last two features were added is watched on the others.
    older = SimpleNamespace(features=model.features[:-2], predict_proba=model.predict_proba)
    watched = monitored_frame(churn.SPEC, store, tables, older, events).features
    assert set(features) - set(watched) == set(model.features[-2:])
    assert watched == [f for f in features if f in older.features]
    # Independently: the latest stored rows of the drawn customers who have ordered.
    latest = customers_as_of(settings.features_dir, end)
    latest = latest[latest["customer_id"].isin(at_end["customer_id"])]
    assert 0 < len(current) == len(latest)
    current = current.sort_values("customer_id").reset_index(drop=True)
    latest = latest.sort_values("customer_id").reset_index(drop=True)
    numeric = [f for f in features if f not in churn.SPEC.categorical]
    np.testing.assert_allclose(
        current[numeric].to_numpy(np.float64), latest[numeric].to_numpy(np.float64), rtol=1e-9
    )
    for column in [f for f in features if f in churn.SPEC.categorical]:
        assert current[column].astype(str).tolist() == latest[column].astype(str).tolist()
    np.testing.assert_allclose(current[SCORE], model.predict_proba(latest), rtol=1e-9)


def test_the_report_writer_waits_for_every_report_and_raises_the_first_failure(
    monkeypatch, tmp_path
) -> None:
    """Reports are written in the order given, one at a time; closing waits for all of
    them, counts those written and raises the first error (only logs it when asked not to
    raise)."""
    import flows.monitor as flow_module

    written = []

    def report(result, folder, name, uri, run_id):
        if name == "broken":
            raise OSError("disk full")
        path = folder / f"{name}.html"
        path.write_text(str(result))
        written.append(name)
        return path

    monkeypatch.setattr(flow_module, "_report", report)
    writer = flow_module.ReportWriter()
    for name in ("a", "b"):
        writer.submit(name, tmp_path, name, "uri", "run")
    assert writer.close() == 2
    assert written == ["a", "b"]
    assert (tmp_path / "b.html").read_text() == "b"
    failing = flow_module.ReportWriter()
    for name in ("c", "broken", "d"):
        failing.submit(name, tmp_path, name, "uri", "run")
    with pytest.raises(OSError, match="disk full"):
        failing.close()
    assert written == ["a", "b", "c", "d"]
    quiet = flow_module.ReportWriter()
    quiet.submit("broken", tmp_path, "broken", "uri", "run")
    assert quiet.close(raise_errors=False) == 0
