"""Nightly updates of the delivery window's adaptive offsets: the same ACI as one replay, no
outcome used before it is known, reruns that change nothing, and the service serving them."""

from __future__ import annotations

import json
import math
from dataclasses import replace

import lightgbm as lgb
import numpy as np
import pandas as pd
import pytest

from aftersale.settings import Settings
from models.delivery_estimate import DELIVERED, PROMISED, SETTLED_AFTER, TIMEZONE
from models.served.encoding import FeatureLayout
from models.served.window import (
    ALL_ROWS,
    OFFSETS_FOLDER,
    ConformalOffsets,
    WindowModel,
    published_offsets_path,
)
from models.spec import EVENT_TIME, LABEL, LABEL_KNOWN
from serving.queue import QueueCache
from serving.runtime import Runtime, WindowOffsetsCache
from serving.scoring import ServedWindow
from training.conformal import adaptive_offsets
from training.delivery import outcome_known, row_scores
from training.window_offsets import advance, publish, read_state

COVERAGE = 0.9
START = pd.Timestamp("2025-11-01", tz="UTC")
DAY = pd.Timedelta(days=1)


def _decisions(days: int = 40, seed: int = 3) -> pd.DataFrame:
    """Parcels dispatched over `days` days by two carriers; one in twenty never arrives;
    carrier B slows down half-way (the drift ACI follows)."""
    rng = np.random.default_rng(seed)
    n = days * 12
    shipped = START + pd.to_timedelta(np.sort(rng.uniform(0, days * 24, n)), unit="h")
    carrier = rng.choice(["A", "B"], n)
    slow = (carrier == "B") & (shipped > START + days / 2 * DAY)
    hours = rng.lognormal(np.log(60), 0.35, n) * np.where(slow, 1.8, 1.0)
    delivered = pd.Series(shipped + pd.to_timedelta(hours, unit="h"))
    delivered[rng.uniform(size=n) < 0.05] = pd.NaT
    promised = pd.Series(shipped + pd.Timedelta(hours=72))
    settles = promised + SETTLED_AFTER
    return pd.DataFrame(
        {
            "shipment_id": [f"s{i:04d}" for i in range(n)],
            EVENT_TIME: shipped,
            "x": rng.normal(size=n),
            "carrier": carrier,
            "stage": "dispatch",
            DELIVERED: delivered,
            PROMISED: promised,
            TIMEZONE: "Europe/Berlin",
            LABEL_KNOWN: delivered.where(delivered > settles, settles),
            LABEL: np.log(hours),
        }
    )


def _model() -> WindowModel:
    """Quantile boosters fitted on a tiny frame: a real model whose windows miss often."""
    rng = np.random.default_rng(0)
    x = rng.normal(size=(400, 1))
    y = np.log(48) + 0.1 * x[:, 0] + rng.normal(scale=0.2, size=400)
    boosters = tuple(
        lgb.train(
            {"objective": "quantile", "alpha": level, "verbose": -1, "min_data_in_leaf": 20},
            lgb.Dataset(x, y),
            num_boost_round=10,
        )
        for level in (0.05, 0.5, 0.95)
    )
    registered = {"coverage": COVERAGE, "offsets": {ALL_ROWS: 0.0}, "method": "adaptive"}
    return WindowModel(
        "delivery_estimate",
        boosters,
        (10, 10, 10),
        (0.05, 0.5, 0.95),
        FeatureLayout(("x",), {}),
        ConformalOffsets.from_dict(registered),
        ("carrier", "stage"),
    )


def _registered(model: WindowModel, rows: pd.DataFrame, end: pd.Timestamp):
    """What training registers: ACI replayed over the decisions settled by `end`."""
    settled = rows[(rows[PROMISED] + SETTLED_AFTER <= end)].reset_index(drop=True)
    return adaptive_offsets(
        row_scores(model, settled),
        settled[EVENT_TIME],
        outcome_known(settled),
        COVERAGE,
        settled["carrier"] + "|" + settled["stage"],
        recent_rows=60,
        min_rows=30,
    ).state


def _reference(model, registered, rows: pd.DataFrame, cut: pd.Timestamp) -> dict:
    """ACI written out apart: each group's scores and miss rate, decisions after the
    registered state take the offset of what was known strictly before them, outcomes known
    after it and by `cut` learn, in time."""
    saved = registered.to_dict()
    since = registered.consumed_until
    target, step = 1 - COVERAGE, saved["step"]
    groups = {k: [v["alpha"], [float(s) for s in v["scores"]]] for k, v in saved["states"].items()}

    def offset(key):
        alpha, scores = groups[key]
        values = sorted(scores)
        finite = [v for v in values if math.isfinite(v)]
        rank = math.ceil((len(values) + 1) * (1 - alpha))
        if rank < 1:
            return values[0] if finite else 0.0
        if rank > len(values) or not math.isfinite(values[rank - 1]):
            return finite[-1] if finite else math.inf
        return values[rank - 1]

    delivered = rows[DELIVERED].where(rows[DELIVERED] <= cut)
    lost_at = rows[PROMISED] + SETTLED_AFTER
    known_at = delivered.fillna(lost_at)
    scored = rows.assign(**{DELIVERED: delivered})
    scores = row_scores(model, scored)
    events = []
    for i, row in rows.iterrows():
        if since < row[EVENT_TIME] <= cut:
            events.append((row[EVENT_TIME], 0, i))
        if since < known_at[i] <= cut:
            events.append((known_at[i], 1, i))
    given = {}
    for _, kind, i in sorted(events):
        key = f"{rows.at[i, 'carrier']}|{rows.at[i, 'stage']}"
        groups.setdefault(key, [target, []])
        if kind == 0:
            own = offset(key) if groups[key][1] else None
            given[i] = (own, offset(ALL_ROWS))
            continue
        for name, was in ((key, given.get(i, (None, None))[0]), (ALL_ROWS, None)):
            was = given.get(i, (None, None))[1] if name == ALL_ROWS else was
            alpha, scores_kept = groups[name]
            scores_kept.append(float(scores[i]))
            del scores_kept[: max(0, len(scores_kept) - saved["recent_rows"])]
            if was is not None:
                alpha = max(alpha + step * (target - float(scores[i] > was)), -step)
            groups[name][0] = alpha
    return {
        key: offset(key)
        for key, (_, kept) in groups.items()
        if key == ALL_ROWS or len(kept) >= saved["min_rows"]
    }


@pytest.fixture(scope="module")
def setup():
    model, rows = _model(), _decisions()
    registered = _registered(model, rows, START + 26 * DAY)
    return model, rows, registered


def test_nightly_updates_equal_one_replay_from_the_registered_state(setup) -> None:
    model, rows, registered = setup
    night = registered
    for day in (27, 30, 31, 38):
        night = advance(model, night, rows, START + day * DAY)
    assert night.consumed_until == START + 38 * DAY
    at_once = advance(model, registered, rows, START + 38 * DAY)
    assert night.to_dict() == at_once.to_dict()
    expected = _reference(model, registered, rows, START + 38 * DAY)
    got = night.offsets().offsets
    assert got.keys() == expected.keys()
    assert got == pytest.approx(expected)
    # The slowdown of carrier B's parcels moved its offsets and miss rate.
    assert got != registered.offsets().offsets
    assert night.states["B|dispatch"].alpha != registered.states["B|dispatch"].alpha


def test_outcomes_known_after_the_cut_never_move_the_offsets(setup) -> None:
    model, rows, registered = setup
    cut = START + 32 * DAY
    honest = advance(model, registered, rows, cut)
    # Rewrite every outcome after the cut: later deliveries, and some parcels lost instead.
    future = rows[DELIVERED] > cut
    rewritten = rows.copy()
    rewritten.loc[future, DELIVERED] = rows.loc[future, DELIVERED] + pd.Timedelta(hours=90)
    rewritten.loc[future & (rows.index % 3 == 0), DELIVERED] = pd.NaT
    assert advance(model, registered, rewritten, cut).to_dict() == honest.to_dict()
    # Decisions after the cut are not taken either.
    later = rows[rows[EVENT_TIME] <= cut]
    assert advance(model, registered, later, cut).to_dict() == honest.to_dict()


def test_a_rerun_of_the_same_night_changes_nothing(setup, tmp_path) -> None:
    model, rows, registered = setup
    cut = START + 34 * DAY
    first = publish(tmp_path, "7", advance(model, registered, rows, cut))
    files = {p.name: p.read_bytes() for p in tmp_path.iterdir()}
    state = read_state(tmp_path, "7")
    assert state.to_dict() == advance(model, registered, rows, cut).to_dict()
    again = publish(tmp_path, "7", advance(model, state, rows, cut))
    assert again == first
    assert {p.name: p.read_bytes() for p in tmp_path.iterdir()} == files
    assert sorted(files) == ["7.json", "7.state.json"]
    assert first.calibration == "adaptive, updated 2025-12-05"


def _runtime(tmp_path, model: WindowModel, version: str) -> Runtime:
    settings = Settings(data_dir=tmp_path)
    return Runtime(
        settings,
        {},
        {},
        QueueCache(settings.serving_dir),
        window=ServedWindow("delivery_estimate", version, ["champion"], model),
        window_offsets=WindowOffsetsCache(settings.serving_dir / OFFSETS_FOLDER),
    )


def test_the_service_serves_the_newest_offsets_of_its_version(setup, tmp_path) -> None:
    model, rows, registered = setup
    registered_model = replace(model, offsets=registered.offsets())
    runtime = _runtime(tmp_path, registered_model, "7")
    folder = runtime.settings.serving_dir / OFFSETS_FOLDER
    assert runtime.window_model().offsets == registered.offsets()
    assert runtime.window_calibration() == "adaptive, as registered"
    assert runtime.models_info().window_calibration == "adaptive, as registered"

    updated = publish(folder, "7", advance(model, registered, rows, START + 34 * DAY))
    assert runtime.window_model().offsets == updated.offsets
    assert runtime.models_info().window_calibration == "adaptive, updated 2025-12-05"
    answer = runtime.window_model().predict_window(rows.head(3), rows[EVENT_TIME].head(3))
    served = replace(model, offsets=updated.offsets)
    expected = served.predict_window(rows.head(3), rows[EVENT_TIME].head(3))
    pd.testing.assert_frame_equal(answer, expected)

    # Re-read when the file changes: a later night's offsets serve without a reload.
    later = publish(folder, "7", advance(model, read_state(folder, "7"), rows, START + 38 * DAY))
    assert later.offsets != updated.offsets
    assert runtime.window_model().offsets == later.offsets

    # A file naming another version is ignored: the registered offsets serve.
    path = published_offsets_path(folder, "7")
    path.write_text(json.dumps(later.to_dict() | {"version": "8"}))
    assert runtime.window_model().offsets == registered.offsets()
    assert runtime.window_calibration() == "adaptive, as registered"


@pytest.mark.parametrize("share", [0.3, 0.8, 0.97])
def test_an_update_reads_only_the_parcels_open_at_the_last_one(sim_tables, share) -> None:
    """The raw tables cut to the parcels not delivered or settled by the last update give
    the same decisions to replay as the whole history, and fewer parcels are read."""
    from features.instants import watermark
    from models.delivery_estimate import decision_outcomes
    from training.conformal import AciState
    from training.window_offsets import open_since, rows_to_replay

    tables = dict(sim_tables)
    rows = decision_outcomes(tables)
    since = pd.to_datetime(rows[EVENT_TIME], utc=True).quantile(share)
    cut = watermark(tables, happened=True)
    state = AciState(COVERAGE, {}, consumed_until=since)
    whole = rows_to_replay(rows, state, cut)
    opened = open_since(tables, since)
    assert opened["shipments"].num_rows < tables["shipments"].num_rows
    assert opened["tracking_events"].num_rows < tables["tracking_events"].num_rows
    got = rows_to_replay(decision_outcomes(opened), state, cut)
    assert len(got) > 0
    pd.testing.assert_frame_equal(got, whole)
    # With no update before, nothing is cut.
    assert open_since(tables, None)["shipments"].num_rows == tables["shipments"].num_rows
