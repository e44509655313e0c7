"""The training loop end to end: Feast point-in-time features, LightGBM, calibration, a real
MLflow SQLite tracking store and registry, and the champion gate."""

from __future__ import annotations

import dataclasses
import json
import shutil
from datetime import date

import mlflow
import numpy as np
import pandas as pd
import pytest
from sklearn.metrics import roc_auc_score

from aftersale.settings import Settings
from features import versioned
from features.build.tables import build_feature_tables, publish_tables
from features.store.config import feature_store
from features.store.retrieval import feature_names
from features.store.sync import apply_definitions
from models import MODELS
from models.delay_risk import SPEC as DELAY
from models.served.registry import CHALLENGER, CHAMPION, tracking
from training.binary import train
from training.data import load_raw_tables, training_data
from training.fit import fit_lightgbm, layout_from_train
from training.model_cards import model_cards
from training.trainer import TrainOptions

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def built(sim_tables, tmp_path_factory):
    """A Feast store over the small simulated business, and a tracking URI in tmp."""
    settings = Settings(data_dir=tmp_path_factory.mktemp("training"))
    publish_tables(build_feature_tables(sim_tables), settings.features_dir)
    store = feature_store(settings)
    apply_definitions(store)
    uri = f"sqlite:///{settings.data_dir / 'tracking' / 'mlflow.db'}"
    (settings.data_dir / "tracking").mkdir()
    return settings, store, uri


def _worse(spec, store):
    """The same model cut down to one stump on one feature: a deliberately worse challenger,
    judged on the same rows and labels as the champion."""
    service = store.get_feature_service(spec.feature_service)
    keep = "distance_km"
    dropped = tuple(f for f in feature_names(store, service) if f != keep)
    return dataclasses.replace(
        spec,
        exclude=dropped,
        derived=(),
        categorical=(),
        num_boost_round=1,
        early_stopping_rounds=0,
        params={"num_leaves": 2},
    )


def test_champion_gate_promotes_only_a_better_model(built, sim_tables) -> None:
    settings, store, uri = built
    worse = _worse(DELAY, store)
    before = mlflow.get_tracking_uri()

    first = train(
        worse, store, settings, TrainOptions(tables=sim_tables, tracking_uri=uri, explain_rows=200)
    )
    assert first.promotion.promoted
    assert first.promotion.reason == "no champion yet"
    good = train(
        DELAY, store, settings, TrainOptions(tables=sim_tables, tracking_uri=uri, explain_rows=200)
    )
    assert good.promotion.promoted, good.promotion.reason
    assert good.promotion.champion_version == first.version
    again = train(
        worse, store, settings, TrainOptions(tables=sim_tables, tracking_uri=uri, explain_rows=200)
    )
    assert not again.promotion.promoted, again.promotion.reason
    # The champion was scored on the challenger's own test rows, not taken from its run.
    assert again.promotion.champion_value == pytest.approx(good.metrics["roc_auc"])
    assert again.metrics["roc_auc"] < good.metrics["roc_auc"]
    assert again.features == ["distance_km"]
    assert mlflow.get_tracking_uri() == before

    client = mlflow.MlflowClient(tracking_uri=uri, registry_uri=uri)
    assert str(client.get_model_version_by_alias("delay_risk", CHAMPION).version) == good.version
    assert str(client.get_model_version_by_alias("delay_risk", CHALLENGER).version) == again.version
    assert [first.version, good.version, again.version] == ["1", "2", "3"]
    assert good.data_version == again.data_version

    run = client.get_run(good.run_id)
    assert run.data.params["data_version"] == good.data_version
    assert run.data.params["features"].split(",") == good.features
    assert run.data.metrics["test_roc_auc"] == pytest.approx(good.metrics["roc_auc"])
    assert "test_baseline_roc_auc" in run.data.metrics
    assert any(k.startswith("test_segment.carrier.") for k in run.data.metrics)
    assert client.get_run(again.run_id).data.tags["promoted"] == "false"
    artifacts = {
        f.path
        for folder in ("explain", "evaluation", "data")
        for f in client.list_artifacts(good.run_id, folder)
    }
    assert {
        "explain/shap_summary.png",
        "explain/reason_codes.csv",
        "evaluation/segment_metrics.csv",
        "evaluation/reliability.png",
        "data/features.json",
    } <= artifacts

    with tracking(uri):
        loaded = mlflow.pyfunc.load_model(f"models:/delay_risk@{CHAMPION}")
    assert loaded.metadata.signature is not None
    inputs = loaded.metadata.get_input_schema().input_names()
    assert inputs == good.features


def test_logged_model_scores_like_the_trained_one(built, sim_tables) -> None:
    settings, store, uri = built
    unregistered = train(DELAY, store, settings, TrainOptions(tables=sim_tables, register=False))
    assert unregistered.run_id is None
    assert unregistered.version is None
    result = train(
        DELAY, store, settings, TrainOptions(tables=sim_tables, tracking_uri=uri, explain_rows=50)
    )
    data = training_data(DELAY, store, sim_tables)
    rows = data.frame.head(50)
    with tracking(uri):
        loaded = mlflow.pyfunc.load_model(f"models:/delay_risk/{result.version}")
    # Through MLflow's own pyfunc interface, from the signature's columns alone.
    scored = loaded.predict(result.model.input_frame(rows))
    trained = result.model.predict_proba(rows)
    np.testing.assert_allclose(np.asarray(scored, dtype=np.float64), trained, rtol=0, atol=1e-12)
    # The same data and seed train the same model, registered or not.
    np.testing.assert_allclose(unregistered.model.predict_proba(rows), trained, atol=1e-12)
    reasons = result.model.reasons(rows, k=3)
    assert len(reasons) == 50


def test_churn_reports_per_contact_reason(built, sim_tables) -> None:
    settings, store, uri = built
    result = train(
        MODELS["churn"], store, settings, TrainOptions(tables=sim_tables, tracking_uri=uri)
    )
    assert result.promotion.promoted
    client = mlflow.MlflowClient(tracking_uri=uri, registry_uri=uri)
    names = {f.path for f in client.list_artifacts(result.run_id, "evaluation")}
    assert "evaluation/churn_by_contact_reason.csv" in names
    metrics = client.get_run(result.run_id).data.metrics
    assert any(k.startswith("test_segment.last_contact_reason.") for k in metrics)
    assert 0.5 < result.metrics["roc_auc"] <= 1.0
    assert "last_contact_reason" in result.scores


@pytest.mark.parametrize(
    ("name", "instants", "strictly_before"),
    [
        ("delay_risk", ["shipped_epoch", "last_scan_epoch"], False),
        ("churn", ["first_order_epoch", "last_order_epoch", "last_contact_epoch"], True),
    ],
)
def test_features_are_known_at_the_decision(built, sim_tables, name, instants, strictly_before):
    _, store, _ = built
    spec = MODELS[name]
    data = training_data(spec, store, sim_tables)
    events = spec.label_events(dict(sim_tables))
    assert len(data.frame) == len(events)
    t = data.frame["event_timestamp"].astype("datetime64[us, UTC]").astype(np.int64) / 1e6
    for column in instants:
        known = data.frame[column].notna()
        assert known.any(), column
        seen = data.frame.loc[known, column]
        if strictly_before:
            # A snapshot at midnight sees only what happened strictly before it.
            assert (seen < t[known]).all(), column
        else:
            assert (seen <= t[known]).all(), column
    # No absolute instant reaches the model.
    assert not set(instants) & set(data.features)


def test_run_parameters_name_the_split_and_features(built) -> None:
    settings, _, uri = built
    client = mlflow.MlflowClient(tracking_uri=uri, registry_uri=uri)
    experiment = client.get_experiment_by_name("delay_risk")
    assert experiment.artifact_location.startswith(
        (settings.data_dir / "mlflow").resolve().as_uri()
    )
    runs = client.search_runs([experiment.experiment_id])
    params = runs[0].data.params
    assert int(params["split_test_rows"]) > 0
    window = pd.Timestamp(params["split_test_start"])
    assert window > pd.Timestamp(params["split_train_start"])
    assert json.loads(json.dumps(params))["feature_service"] == "delay_risk_v1"


def test_raw_tables_default_to_the_published_version(built, sim_dir, sim_tables) -> None:
    settings, _, _ = built
    staging = versioned.staging_dir(settings.raw_root)
    for name in ("shipments", "orders"):
        shutil.copy(sim_dir / f"{name}.parquet", staging / f"{name}.parquet")
    versioned.publish(staging)
    tables = load_raw_tables(settings, ("shipments", "orders"))
    assert tables["shipments"].equals(sim_tables["shipments"])
    with pytest.raises(FileNotFoundError, match="contacts"):
        load_raw_tables(settings, ("contacts",))


def test_a_refit_serves_the_recipe_fitted_through_the_newest_labels(
    built, sim_tables, tmp_path
) -> None:
    settings, store, _ = built
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    plain = train(DELAY, store, settings, TrainOptions(tables=sim_tables, register=False))
    refit = train(
        DELAY,
        store,
        settings,
        TrainOptions(tables=sim_tables, tracking_uri=uri, refit=True, explain_rows=50),
    )
    # The test figures, and so the gate's, are the time split's model's.
    assert refit.metrics == pytest.approx(plain.metrics, nan_ok=True)
    pd.testing.assert_frame_equal(refit.scores, plain.scores)
    # What each served model saw: the time split's through its validation window; the
    # refit's every labelled decision.
    frame = training_data(DELAY, store, sim_tables).frame
    times = pd.to_datetime(frame["event_timestamp"], utc=True)
    start = pd.Timestamp(plain.split["split_test_start"])
    # (Decisions whose label was not known when the test window starts are purged.)
    known = pd.to_datetime(frame["label_ts"], utc=True)
    seen = times[(times < start) & (known < start)].max()
    assert pd.Timestamp(plain.split["served_seen_end"]) == seen
    assert plain.split["served_train_end"] == plain.split["split_train_end"]
    assert pd.Timestamp(refit.split["served_seen_end"]) == times.max()
    assert pd.Timestamp(refit.split["served_train_start"]) == times.min()
    assert refit.split["served_train_rows"] == len(frame)
    # The served model: the recipe fitted on all of them with the time split's trees and
    # calibration, and it is what the registry holds.
    tested = frame[times >= pd.Timestamp(refit.split["split_test_start"])]
    layout = layout_from_train(frame, refit.features, list(DELAY.categorical))
    params = {**DELAY.params, **DELAY.params_rule(frame["label"])}
    trees = plain.model.best_iteration
    fitted = fit_lightgbm(frame, tested, layout, "label", params, trees, early_stopping_rounds=0)
    assert fitted.best_iteration == trees
    expected = plain.model.calibrator(fitted.raw_score(tested))
    np.testing.assert_allclose(refit.model.predict_proba(tested), expected, atol=1e-12)
    assert not np.allclose(plain.model.predict_proba(tested), expected)
    with tracking(uri):
        loaded = mlflow.pyfunc.load_model(f"models:/delay_risk/{refit.version}")
        params = mlflow.MlflowClient().get_run(refit.run_id).data.params
    scored = np.asarray(loaded.predict(refit.model.input_frame(tested)), dtype=np.float64)
    np.testing.assert_allclose(scored, expected, atol=1e-12)
    assert params["refit"] == "True"
    assert params["served_seen_end"] == refit.split["served_seen_end"]
    # Its card says what it learned from.
    card = model_cards(uri, ["delay_risk"]).iloc[0]
    assert card["version"] == refit.version
    assert (card["train_first_ts"], card["train_last_ts"]) == (times.min(), times.max())
    assert card["train_rows"] == len(frame)
    # A champion that saw every test row of the next run cannot be judged on them: it stays.
    again = train(
        DELAY, store, settings, TrainOptions(tables=sim_tables, tracking_uri=uri, explain_rows=50)
    )
    assert not again.promotion.promoted
    assert "too few rows are new to it (0 of" in again.promotion.reason
    assert again.promotion.champion_value is None


def test_a_refit_champion_is_judged_on_the_test_rows_new_to_it(built, sim_tables, tmp_path) -> None:
    """The champion learned from a history up to a day; the challenger's test window reaches
    past it. Both are judged on the test rows after the champion's last seen decision."""
    from features.contract.validate import load_folder
    from features.sources.simulator import simulate_until
    from tests.conftest import SIM_CUSTOMERS, SIM_SEED

    settings, store, _ = built
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    simulate_until(tmp_path / "raw", date(2025, 10, 15), SIM_CUSTOMERS, SIM_SEED)
    earlier, report = load_folder(tmp_path / "raw")
    assert report.ok
    champion = train(
        DELAY,
        store,
        settings,
        TrainOptions(tables=earlier, tracking_uri=uri, refit=True, explain_rows=50),
    )
    assert champion.promotion.promoted
    challenger = train(
        DELAY, store, settings, TrainOptions(tables=sim_tables, tracking_uri=uri, explain_rows=50)
    )
    seen = pd.Timestamp(champion.split["served_seen_end"])
    scores = challenger.scores
    new = pd.to_datetime(scores["event_timestamp"], utc=True) > seen
    assert 0 < new.sum() < len(scores)
    # Independently: each model's AUC on the challenger's test rows after `seen`.
    frame = training_data(DELAY, store, sim_tables).frame
    times = pd.to_datetime(frame["event_timestamp"], utc=True)
    rows = frame[times > seen].sort_values(["shipment_id", "event_timestamp"])
    kept = scores[new].sort_values(["shipment_id", "event_timestamp"])
    assert len(rows) == len(kept)
    champion_auc = roc_auc_score(rows["label"], champion.model.predict_proba(rows))
    challenger_auc = roc_auc_score(kept["label"], kept["score"])
    promotion = challenger.promotion
    assert promotion.champion_value == pytest.approx(champion_auc)
    assert promotion.challenger_value == pytest.approx(challenger_auc)
    assert promotion.promoted == (challenger_auc > champion_auc)


def test_a_margin_promotes_a_retrain_unless_it_falls_further_behind(
    built, sim_tables, tmp_path
) -> None:
    """A marked model's retrain passes the gate within the margin of the champion."""
    settings, store, _ = built
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    worse = _worse(DELAY, store)

    def options(margin: float) -> TrainOptions:
        return TrainOptions(
            tables=sim_tables, tracking_uri=uri, explain_rows=50, gate_margin=margin
        )

    good = train(DELAY, store, settings, options(0.0))
    gap = good.metrics["roc_auc"] - train(DELAY, store, settings, options(0.0)).metrics["roc_auc"]
    assert gap == 0  # the same model again: it does not beat the champion, nor fall behind
    behind = (
        good.metrics["roc_auc"] - train(worse, store, settings, options(0.0)).metrics["roc_auc"]
    )
    assert behind > 0.01
    short = train(worse, store, settings, options(behind / 2))
    assert not short.promotion.promoted
    assert f"falls more than {behind / 2:g} below champion v{good.version}" in (
        short.promotion.reason
    )
    within = train(worse, store, settings, options(behind * 2))
    assert within.promotion.promoted
    assert f"is within {behind * 2:g} of champion v{good.version}" in within.promotion.reason
    assert within.promotion.champion_value == pytest.approx(good.metrics["roc_auc"])
    with tracking(uri):
        params = mlflow.MlflowClient().get_run(within.run_id).data.params
    assert float(params["gate_margin"]) == behind * 2
