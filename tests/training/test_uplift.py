"""The uplift trainer recovers a planted effect through the real path (ingest, features,
`train_dataset` and the command line, the registry's champion), refuses data without a
holdout, and a rejected outreach batch leaves the published data alone; the served
`UpliftModel` survives a save and load, and its contributions add up to its predictions."""

from __future__ import annotations

import shutil
from dataclasses import replace
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from typer.testing import CliRunner

from aftersale.cli import app
from aftersale.settings import get_settings
from features.contract.schema import CONTRACT, OUTREACH
from features.contract.validate import load_folder
from features.datasets import data_dir_set_to
from features.ingest import ContractError, latest_raw
from features.sources.simulator import simulate
from features.store.config import feature_store
from flows.ingest import ingest
from flows.train_dataset import DatasetRun, train_dataset
from models.outreach_uplift import SPEC, label_events
from models.served.registry import load_champion, tracking
from models.served.uplift import UpliftModel, best_actions
from models.spec import SplitError
from training.data import load_raw_tables, training_data
from training.fit import layout_from_train
from training.trainer import TrainOptions
from training.uplift import (
    LEARNERS,
    WEIGHT,
    OutcomeModels,
    action_effects,
    intervals_from,
    learn,
    train_uplift,
)
from training.uplift_metrics import arm_weights

# The planted effects: sending A makes a non-buyer buy with probability LIFT; holding B
# out does the same (sending B hurts); C does nothing.
A, B, C = "winback_offer", "onboarding_followup", "satisfaction_check"
CUSTOMERS = 1_500
SEED = 3
LIFT = 0.6
DAY = pd.Timedelta(days=1)
HORIZON = np.timedelta64(90, "D")


def plant_effects(root: Path, customers: int = CUSTOMERS, seed: int = SEED) -> Path:
    """A contract folder of a simulated business whose outreach table is replaced by
    randomised decisions with known effects.

    Each customer gets up to three decisions, the first two days after their first order,
    the next 100–130 days later (their 90-day windows never overlap), each an action of
    A, B, C at random and held out with probability 1/2. A decision's outcome is whether
    the customer orders within 90 days after it; the effect is planted by adding one order
    in the window of a decision without one: for sent A rows and held-out B rows, each with
    probability LIFT. Added orders fall before the customer's next decision, and every
    decision's subject (B, C: the latest order before it; A: none) is an original order.
    """
    base = root / "simulated"
    simulate(base, customers=customers, seed=seed)
    folder = root / "planted"
    folder.mkdir()
    for name in CONTRACT:
        if name not in ("orders", "outreach") and (base / f"{name}.parquet").is_file():
            shutil.copyfile(base / f"{name}.parquet", folder / f"{name}.parquet")
    orders_table = pq.read_table(base / "orders.parquet")
    orders = orders_table.to_pandas().sort_values("order_ts", kind="stable")
    end = orders["order_ts"].max() - DAY
    rng = np.random.default_rng(seed)
    decisions = []
    for customer, own in orders.groupby("customer_id", sort=True):
        ts = (own["order_ts"].iloc[0] + DAY * (2 + rng.random())).floor("s")
        times = own["order_ts"].to_numpy(dtype="datetime64[us]")
        ids = own["order_id"].to_numpy(dtype=object)
        for _ in range(3):
            if ts + 90 * DAY > end:
                break
            at = ts.to_datetime64().astype("datetime64[us]")
            bought = bool(((times > at) & (times <= at + HORIZON)).any())
            latest = ids[np.searchsorted(times, at, side="left") - 1]
            decisions.append((customer, ts, latest, bought))
            ts = (ts + DAY * (100 + 30 * rng.random())).floor("s")
    rows = pd.DataFrame(decisions, columns=["customer_id", "ts", "latest", "bought"])
    n = len(rows)
    rows["action"] = rng.choice([A, B, C], size=n)
    rows["holdout"] = rng.random(n) < 0.5
    held_out = rows["holdout"].to_numpy()
    moved = np.where(rows["action"] == A, ~held_out, (rows["action"] == B) & held_out)
    moved &= rng.random(n) < LIFT
    gets = moved & ~rows["bought"].to_numpy()
    added = rows[gets].reset_index(drop=True)
    offset = pd.to_timedelta(1 + 79 * rng.random(len(added)), unit="D")
    new_orders = pd.DataFrame(
        {
            "order_id": [f"planted{i}" for i in range(len(added))],
            "customer_id": added["customer_id"],
            "order_ts": (added["ts"] + offset).dt.floor("s"),
            "amount": 40.0,
            "payment_method": "card",
        }
    )
    all_orders = pd.concat([orders, new_orders], ignore_index=True)
    pq.write_table(
        pa.Table.from_pandas(all_orders, schema=orders_table.schema, preserve_index=False),
        folder / "orders.parquet",
    )
    outreach = pd.DataFrame(
        {
            "outreach_id": [f"pl{i}" for i in range(n)],
            "customer_id": rows["customer_id"],
            "ts": rows["ts"],
            "action": rows["action"],
            "channel": "email",
            "subject_id": np.where(rows["action"] == A, None, rows["latest"].astype(object)),
            # One of three actions, then sent or held out at even odds.
            "propensity": 1 / 6,
            "holdout": rows["holdout"],
        }
    )
    pq.write_table(
        pa.Table.from_pandas(outreach, schema=OUTREACH.arrow_schema, preserve_index=False),
        folder / "outreach.parquet",
    )
    return folder


@pytest.fixture(scope="module")
def planted(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return plant_effects(tmp_path_factory.mktemp("uplift"))


@pytest.fixture(scope="module")
def trained(planted: Path, prefect_harness, tmp_path_factory: pytest.TempPathFactory):
    """`train_dataset` on the planted folder, in a data folder of its own (set for the
    module's tests)."""
    data = tmp_path_factory.mktemp("uplift-data")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("AFTERSALE_DATA_DIR", str(data))
        yield train_dataset(planted, models=["outreach_uplift"])


def _tracking_uri(run: DatasetRun) -> str:
    db = run.data_dir / "mlflow" / "mlflow.db"
    assert db.is_file()
    return f"sqlite:///{db}"


def _observed(events: pd.DataFrame) -> dict[str, float]:
    """Per action, the sent rows' repurchase rate less the held-out rows'."""
    rates = events.groupby(["action", "treated"])["label"].mean().unstack()
    return (rates[True] - rates[False]).to_dict()


def test_the_planted_folder_is_valid_and_holds_its_effects(planted: Path) -> None:
    tables, report = load_folder(planted)
    assert report.ok, [str(v) for v in report.violations]
    events = label_events(tables)
    assert len(events) > 3_000
    assert set(events["action"]) == {A, B, C}
    # About half held out in each action.
    held_out = 1 - events.groupby("action")["treated"].mean()
    assert held_out.between(0.45, 0.55).all(), held_out
    # A non-buyer is moved with probability 0.6: about ±0.6 × (1 − 0.4) = ±0.36.
    effect = _observed(events)
    assert effect[A] > 0.25
    assert effect[B] < -0.25
    assert abs(effect[C]) < 0.1


@pytest.mark.slow
def test_train_dataset_recovers_the_planted_effects(trained: DatasetRun) -> None:
    (summary,) = trained.models
    assert summary.name == "outreach_uplift"
    assert trained.skipped == {}
    assert summary.promoted
    assert summary.version == "1"
    assert summary.champion == "1"
    # Ranking A first and B last moves the test window's Qini well above 0, and above
    # today's ranking, which knows A comes first but ties B with C.
    assert summary.value > 0.04
    assert summary.value > summary.baseline
    assert summary.test_rows > 500

    version, model = load_champion("outreach_uplift", _tracking_uri(trained))
    assert str(version.version) == "1"
    assert isinstance(model, UpliftModel)
    assert model.learner in LEARNERS
    assert model.actions == tuple(sorted((A, B, C)))
    assert model.intervals is not None

    # The champion's predictions on every decision, with the features as trained.
    with data_dir_set_to(trained.data_dir):
        settings = get_settings()
        tables = load_raw_tables(settings, SPEC.raw_tables, SPEC.optional_tables)
        data = training_data(SPEC, feature_store(settings), tables)
    frame = data.frame
    uplift = model.predict(frame)
    assert np.isfinite(uplift).all()
    mean = pd.Series(uplift).groupby(frame["action"].to_numpy()).mean()
    assert mean[A] > mean[C] > mean[B], mean
    assert mean[A] > 0.15, mean
    assert mean[B] < -0.15, mean
    assert abs(mean[C]) < 0.1, mean
    # Close to the observed effects of all decisions.
    observed = _observed(frame)
    for action in (A, B, C):
        assert mean[action] == pytest.approx(observed[action], abs=0.12), (action, mean)
    # The best action of every decision is A, the only one that helps.
    best, value = best_actions(model, frame.head(200), [A, B, C])
    assert set(best) == {A}
    assert (value > 0).all()
    low, high = model.interval(uplift)
    assert (low <= high).all()


def test_features_are_retrieved_only_for_the_windows_rows_and_are_as_for_every_row(
    trained: DatasetRun, monkeypatch
) -> None:
    """The rows the time split purges from every window get no features; the others get
    what a retrieval of every decision gives them."""
    import training.uplift as uplift

    every: list[pd.DataFrame] = []
    asked: list[int] = []
    real_decisions, real_features = uplift.decisions, uplift.decision_features

    def decisions(*args, **kwargs):
        every.append(real_decisions(*args, **kwargs))
        return every[-1]

    def decision_features(spec, store, events):
        asked.append(len(events))
        return real_features(spec, store, events)

    monkeypatch.setattr(uplift, "decisions", decisions)
    monkeypatch.setattr(uplift, "decision_features", decision_features)
    with data_dir_set_to(trained.data_dir):
        settings = get_settings()
        store = feature_store(settings)
        rows = uplift.prepare_rows(SPEC, store, settings)
        full = real_features(SPEC, store, every[0]).frame
    windows = rows.split.windows()
    purged = sum(w.purged for w in windows)
    assert purged > 0
    assert asked == [len(every[0]) - purged] == [sum(w.rows for w in windows)]
    for kept, window in zip((rows.train, rows.valid, rows.test), windows, strict=True):
        assert len(kept) > 0
        assert set(kept.index) <= set(window.index)
        expected = full.loc[kept.index].assign(treated=lambda f: f["treated"].astype(bool))
        pd.testing.assert_frame_equal(kept[list(full.columns)], expected)


@pytest.mark.slow
def test_the_command_line_trains_it_as_a_second_version(trained: DatasetRun, planted: Path) -> None:
    result = CliRunner().invoke(
        app, ["train", "--model", "outreach_uplift", "--data", str(planted)]
    )
    assert result.exit_code == 0, result.output
    assert "outreach_uplift" in result.output
    assert f"dataset {planted.name}" in result.output
    import mlflow

    with tracking(_tracking_uri(trained)):
        versions = mlflow.MlflowClient().search_model_versions("name = 'outreach_uplift'")
    assert sorted(str(v.version) for v in versions) == ["1", "2"]
    _, model = load_champion("outreach_uplift", _tracking_uri(trained))
    assert model.actions == tuple(sorted((A, B, C)))


@pytest.mark.slow
def test_outreach_without_a_holdout_cannot_train(trained: DatasetRun) -> None:
    with data_dir_set_to(trained.data_dir):
        settings = get_settings()
        tables = dict(load_raw_tables(settings, SPEC.raw_tables, SPEC.optional_tables))
        outreach = tables["outreach"]
        column = outreach.schema.get_field_index("holdout")
        tables["outreach"] = outreach.set_column(
            column, "holdout", pa.array(np.zeros(outreach.num_rows, dtype=bool))
        )
        with pytest.raises(SplitError) as caught:
            train_uplift(
                SPEC,
                feature_store(settings),
                settings,
                TrainOptions(tables=tables, register=False),
            )
    message = str(caught.value)
    assert message.startswith("outreach_uplift: no action has 30 sent and 30 held-out rows")
    assert "these data cannot train it" in message
    # Every action is named with its counts: all sent, none held out.
    for action in (A, B, C):
        assert f"'{action}': {{'sum': " in message
        assert "'held_out': 0" in message


def test_a_rejected_outreach_batch_leaves_the_published_raw_data(
    sim_dir: Path, prefect_harness, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("AFTERSALE_DATA_DIR", str(tmp_path / "data"))
    first = ingest(source="folder", path=sim_dir)
    raw_root = get_settings().raw_root
    assert latest_raw(raw_root) == first
    published = {p.name: p.read_bytes() for p in first.iterdir()}
    # Copied byte for byte from the source.
    assert published["outreach.parquet"] == (sim_dir / "outreach.parquet").read_bytes()

    bad = tmp_path / "bad"
    bad.mkdir()
    for path in sim_dir.glob("*.parquet"):
        shutil.copyfile(path, bad / path.name)
    outreach = pq.read_table(sim_dir / "outreach.parquet")
    ids = outreach.column("outreach_id").to_pylist()
    propensity = outreach.column("propensity").to_pylist()
    action = outreach.column("action").to_pylist()
    propensity[0] = 0.0
    action[1] = "carrier_pigeon"
    outreach = outreach.set_column(
        outreach.schema.get_field_index("propensity"), "propensity", pa.array(propensity)
    )
    outreach = outreach.set_column(
        outreach.schema.get_field_index("action"), "action", pa.array(action)
    )
    pq.write_table(outreach, bad / "outreach.parquet")

    with pytest.raises(ContractError) as caught:
        ingest(source="folder", path=bad)
    message = str(caught.value)
    assert f"outreach.propensity: 1 row is below 1e-09 (outreach_id {ids[0]}" in message
    assert "outreach.action: 1 row has a value outside {delay_notice" in message
    assert f"outreach_id {ids[1]}" in message
    assert len(caught.value.report.violations) == 2

    # The first version is still current, byte for byte, and the rejected staging folder
    # is gone.
    assert latest_raw(raw_root) == first
    assert {p.name: p.read_bytes() for p in first.iterdir()} == published
    assert sorted(p.name for p in raw_root.iterdir()) == sorted(["current", first.name])


# The small trial's trees: a few, small and quick.
SMALL_TREES = replace(
    SPEC,
    params={"num_leaves": 7, "learning_rate": 0.1, "min_data_in_leaf": 50},
    num_boost_round=60,
    early_stopping_rounds=10,
)


# A small randomised trial for the served model: A's effect grows with x1, B's is −0.2.
@pytest.fixture(scope="module")
def fitted() -> tuple[dict[str, UpliftModel], pd.DataFrame, pd.DataFrame]:
    rng = np.random.default_rng(0)
    n = 4_000
    x1, x2 = rng.random(n), rng.normal(size=n)
    action = rng.choice([A, B], n)
    treated = rng.random(n) < 0.5
    p = 0.3 + 0.1 * x2.clip(-1, 1) + treated * np.where(action == A, 0.4 * x1, -0.2)
    frame = pd.DataFrame(
        {
            "customer_id": [f"c{i % 997}" for i in range(n)],
            "event_timestamp": pd.date_range("2024-01-01", periods=n, freq="h", tz="UTC"),
            "x1": x1,
            "x2": x2,
            "action": action,
            "treated": treated,
            "label": (rng.random(n) < p).astype(np.int64),
        }
    )
    frame[WEIGHT] = arm_weights(treated, action)
    train, valid = frame.iloc[:3_000], frame.iloc[3_000:]
    layout = layout_from_train(train, ["x1", "x2", "action"], ["action"])
    spec = SMALL_TREES
    share = train.groupby("action")["treated"].mean().to_dict()
    words = {"x1": "First feature", "x2": "Second feature"}
    models = {
        learner: learn(learner, train, valid, layout, spec, share, words, (B, A))
        for learner in LEARNERS
    }
    return models, train, valid


@pytest.mark.parametrize("learner", LEARNERS)
def test_a_saved_uplift_model_loads_and_predicts_the_same(learner, fitted, tmp_path) -> None:
    models, _, valid = fitted
    model = models[learner]
    predicted = model.predict(valid)
    model = replace(model, intervals=intervals_from(predicted, valid, bins=4, level=0.9))
    loaded = UpliftModel.load(model.save(tmp_path / learner))
    np.testing.assert_array_equal(loaded.predict(valid), predicted)
    assert (loaded.learner, loaded.actions, loaded.layout) == (learner, (B, A), model.layout)
    assert loaded.offsets == model.offsets
    assert loaded.treated_share == model.treated_share
    for field in ("edges", "low", "high", "observed"):
        np.testing.assert_array_equal(
            getattr(loaded.intervals, field), getattr(model.intervals, field)
        )
    assert loaded.intervals.level == model.intervals.level
    for got, want in zip(loaded.interval(predicted), model.interval(predicted), strict=True):
        np.testing.assert_array_equal(got, want)
    # An action it never learned has no uplift.
    assert np.isnan(loaded.predict(valid.head(3).assign(action=C))).all()


@pytest.mark.parametrize("learner", LEARNERS)
def test_contributions_add_up_to_the_prediction(learner, fitted) -> None:
    models, _, valid = fitted
    model = models[learner]
    contributions = model.contributions(valid)
    assert list(contributions.columns) == [*model.features, "bias"]
    np.testing.assert_allclose(
        contributions.sum(axis=1).to_numpy(), model.predict(valid), rtol=0, atol=1e-9
    )


def test_the_learners_find_each_actions_effect(fitted) -> None:
    models, train, valid = fitted
    # The true average effects: A 0.4 × E[x1] = 0.2, B −0.2.
    offsets = action_effects(train)
    assert offsets[A] == pytest.approx(0.2, abs=0.07)
    assert offsets[B] == pytest.approx(-0.2, abs=0.07)
    for learner, model in models.items():
        mean = pd.Series(model.predict(valid)).groupby(valid["action"].to_numpy()).mean()
        assert mean[A] > 0.08, (learner, mean.to_dict())
        assert mean[B] < -0.08, (learner, mean.to_dict())
    # Within A, the learners with boosters rank by x1: more uplift above x1 = 0.5.
    for learner in ("t_learner", "x_learner"):
        rows = valid[valid["action"] == A]
        uplift = models[learner].predict(rows)
        high = rows["x1"].to_numpy() > 0.5
        assert uplift[high].mean() > uplift[~high].mean(), learner


def test_learners_sharing_outcome_models_predict_as_when_each_fits_its_own(fitted) -> None:
    models, train, valid = fitted
    layout = models["t_learner"].layout
    spec = SMALL_TREES
    share = train.groupby("action")["treated"].mean().to_dict()
    outcomes = OutcomeModels(train, valid, layout, spec)
    for learner in ("t_learner", "x_learner", "dr_learner"):
        shared = learn(learner, train, valid, layout, spec, share, {}, (B, A), outcomes=outcomes)
        # The fixture fitted each learner's own outcome models.
        np.testing.assert_array_equal(shared.predict(valid), models[learner].predict(valid))
    # One pair of outcome models served the three learners.
    f1, f0 = outcomes()
    assert models["t_learner"].terms[0].booster is not f1.booster
    t_shared = learn("t_learner", train, valid, layout, spec, share, {}, (B, A), outcomes=outcomes)
    assert t_shared.terms[0].booster is f1.booster
    assert t_shared.terms[1].booster is f0.booster


def test_paired_wins_counts_the_resamples_ranked_afresh() -> None:
    from models.outreach_uplift import TREATED
    from models.spec import LABEL
    from training.uplift import RANDOM_SEED, WEIGHT, paired_wins
    from training.uplift_metrics import arm_weights, uplift_metrics

    rng = np.random.default_rng(4)
    n = 1_500
    effect = rng.random(n)
    treated = rng.random(n) < 0.7
    rows = pd.DataFrame(
        {
            LABEL: (rng.random(n) < 0.2 + 0.2 * treated * effect).astype(float),
            TREATED: treated,
            WEIGHT: arm_weights(treated),
        }
    )
    better, base = np.round(effect, 1), rng.random(n)
    # The old way: each resample's rows drawn and ranked afresh.
    draws = np.random.default_rng(RANDOM_SEED)
    arms = [np.flatnonzero(treated), np.flatnonzero(~treated)]
    y, weight = rows[LABEL].to_numpy(), rows[WEIGHT].to_numpy()
    wins = 0
    for _ in range(30):
        picked = np.concatenate([draws.choice(a, size=len(a), replace=True) for a in arms])
        args = (y[picked], treated[picked], weight[picked], 0.2)
        wins += (
            uplift_metrics(better[picked], *args)["qini"]
            > uplift_metrics(base[picked], *args)["qini"]
        )
    assert paired_wins(better, base, rows, resamples=30) == wins / 30
