"""Delivery estimate: label events, the window's form, no leakage, and a full training run
with a real Feast store and MLflow registry."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pyarrow as pa
import pytest

from models import delivery_estimate as de
from models.served.decisions import DecisionMemo
from models.served.window import (
    ALL_ROWS,
    ConformalOffsets,
    WindowModel,
    anchor_log_hours,
    day_start,
    day_starts,
    hours_as_nanoseconds,
    local_date,
    local_dates,
)
from models.spec import EVENT_TIME, LABEL, LABEL_KNOWN
from training.delivery import train_window
from training.oracle import ORACLES
from training.trainer import TrainOptions
from training.window import outcome_bucket, window_metrics

UTC = pd.Timestamp("2024-03-01", tz="UTC")


def _ts(hours: float | None) -> pd.Timestamp | None:
    return None if hours is None else UTC + pd.Timedelta(hours=hours)


def _tables() -> dict[str, pa.Table]:
    """Three parcels: delivered, lost (promise long past), and one not yet settled."""
    shipments = pd.DataFrame(
        {
            "shipment_id": ["s1", "s2", "s3"],
            "order_id": ["o1", "o2", "o3"],
            "shipped_ts": [_ts(0), _ts(10), _ts(900)],
            "promised_ts": [_ts(48), _ts(58), _ts(948)],
            "delivered_ts": [_ts(30), None, None],
        }
    )
    events = pd.DataFrame(
        {
            "shipment_id": ["s1", "s1", "s1", "s2", "s2"],
            "event_type": [
                "in_transit",
                "out_for_delivery",
                "delivered",
                "in_transit",
                "exception",
            ],
            "event_ts": [_ts(8), _ts(27), _ts(30), _ts(20), _ts(94)],
        }
    )
    orders = pd.DataFrame({"order_id": ["o1", "o2", "o3"], "customer_id": ["c1", "c2", "c2"]})
    customers = pd.DataFrame(
        {"customer_id": ["c1", "c2"], "timezone": ["Europe/Berlin", "America/Sao_Paulo"]}
    )
    return {
        "shipments": pa.Table.from_pandas(shipments, preserve_index=False),
        "tracking_events": pa.Table.from_pandas(events, preserve_index=False),
        "orders": pa.Table.from_pandas(orders, preserve_index=False),
        "customers": pa.Table.from_pandas(customers, preserve_index=False),
    }


def test_label_events() -> None:
    rows = de.label_events(_tables())
    # s3's promise is not settled before the data's end (the s2 exception at 94 h... and
    # s3's own dispatch at 900 h): left out whatever its outcome.
    assert set(rows["shipment_id"]) == {"s1", "s2"}
    s1 = rows[rows["shipment_id"] == "s1"]
    # At dispatch and after each scan before delivery; never at or after delivery.
    assert list((s1[EVENT_TIME] - UTC) / pd.Timedelta(hours=1)) == [0, 8, 27]
    np.testing.assert_allclose(np.exp(s1[LABEL]), [30, 22, 3])
    assert (s1["timezone"] == "Europe/Berlin").all()
    # Settled 14 days after its promise at the latest: the purge does not see the outcome.
    assert (s1[LABEL_KNOWN] == _ts(48) + de.SETTLED_AFTER).all()
    s2 = rows[rows["shipment_id"] == "s2"]
    assert s2[LABEL].isna().all()  # lost: no delivery to learn from
    assert len(s2) == 3
    assert (s2["timezone"] == "America/Sao_Paulo").all()


ODD_ZONES = [
    "UTC",
    "Europe/Berlin",
    "America/Sao_Paulo",
    "America/Havana",
    "Asia/Kathmandu",
    "Australia/Lord_Howe",
    "Pacific/Chatham",
    "Africa/Casablanca",
    "America/St_Johns",
    "Pacific/Kiritimati",
]


@pytest.mark.parametrize("zone", ODD_ZONES)
def test_a_requests_local_date_is_the_one_pandas_gives(zone) -> None:
    """`local_date` of an instant equals `tz_convert(zone).date()`, around every local
    midnight and clock change of 1960-2030 in zones with odd offsets and moving rules."""
    rng = np.random.default_rng(len(zone))
    days = pd.date_range("1960-01-01", "2030-12-31", freq="D")
    starts = days.tz_localize(zone, ambiguous=np.ones(len(days), bool), nonexistent="shift_forward")
    midnights = starts.tz_convert("UTC").asi8
    near = midnights[rng.integers(0, len(midnights), 3_000)]
    offsets = rng.choice([-1, 0, 1, -999_999_999, 10**9, -(10**9), 3600 * 10**9], len(near))
    instants = np.concatenate([near + offsets, rng.integers(-3 * 10**17, 2 * 10**18, 3_000)])
    for ns in instants:
        t = pd.Timestamp(int(ns), tz="UTC")
        assert local_date(t, zone) == t.tz_convert(zone).date(), (t, zone)


def test_hours_become_the_nanoseconds_pandas_gives() -> None:
    rng = np.random.default_rng(4)
    hours = np.concatenate(
        [
            np.exp(rng.normal(3, 1.5, 300_000)),
            rng.random(100_000) * 10,
            -rng.random(10_000) * 500,
            np.arange(0, 200, 0.25),
            [0.0, 1e-13, 0.5e-12, 999_999.999, 2e6, np.nan],
        ]
    )
    expected = pd.to_timedelta(hours, unit="h").asi8
    assert (hours_as_nanoseconds(hours) == expected).all()
    assert (hours_as_nanoseconds(hours[:3]) == expected[:3]).all()


def test_dates_are_local_and_day_starts_survive_a_skipped_midnight() -> None:
    instants = pd.Series([pd.Timestamp("2024-03-01 23:30", tz="UTC")] * 2)
    dates = local_dates(instants, ["Europe/Berlin", "America/Sao_Paulo"])
    assert list(dates.astype(str)) == ["2024-03-02", "2024-03-01"]
    # São Paulo skipped 2017-10-15 00:00–00:59: that day begins at 01:00 local (03:00 UTC).
    starts = day_starts(np.array(["2017-10-15"], dtype="datetime64[D]"), "America/Sao_Paulo")
    assert starts.iloc[0] == pd.Timestamp("2017-10-15 03:00", tz="UTC")
    # One date at a time (a request's window) begins at the same instants, a repeated
    # midnight (Havana, 2016-11-06: clocks went back at 01:00 to 00:00) included.
    for day, zone in [
        ("2017-10-15", "America/Sao_Paulo"),
        ("2016-11-06", "America/Havana"),
        ("2024-03-31", "Europe/Berlin"),
        ("2024-03-01", "UTC"),
    ]:
        vector = day_starts(np.array([day], dtype="datetime64[D]"), zone).iloc[0]
        assert day_start(pd.Timestamp(day).date(), zone) == vector
    low, high = outcome_bucket(
        [pd.Timestamp("2017-10-14 12:00", tz="UTC")],
        [pd.Timestamp("2017-10-15 10:00", tz="UTC")],
        "America/Sao_Paulo",
    )
    np.testing.assert_allclose(np.exp([low[0], high[0]]), [15.0, 38.0])
    low, high = outcome_bucket([UTC], [None], "UTC")
    assert np.isposinf(low[0])


def test_window_metrics_count_lost_parcels_as_misses() -> None:
    day = np.datetime64("2024-03-05", "D")
    actual = np.array([day, day + 2, np.datetime64("NaT")], dtype="datetime64[D]")
    estimate = np.array([day, day + 1, day], dtype="datetime64[D]")
    got = window_metrics(actual, estimate, estimate - 1, estimate + 1)
    assert got["mae_days"] == 0.5
    assert got["exact_share"] == 0.5
    assert got["within_1d_share"] == 1.0
    assert got["coverage"] == pytest.approx(2 / 3)
    assert got["median_width_days"] == 2.0


@pytest.mark.slow
def test_no_feature_reads_what_happens_after_the_decision(sim_tables) -> None:
    """Features at a decision are the same when everything after it is erased."""
    from features.build.shipments import shipment_features

    shipments = sim_tables["shipments"].to_pandas()
    cut = pd.to_datetime(shipments["shipped_ts"], utc=True).quantile(0.6)
    truncated = _known_at(sim_tables, cut)
    full = shipment_features(dict(sim_tables)).to_pandas()
    early = shipment_features(truncated).to_pandas()
    key = ["shipment_id", "event_ts"]
    full = full[pd.to_datetime(full["event_ts"], utc=True) <= cut]
    early = early[pd.to_datetime(early["event_ts"], utc=True) <= cut]
    joined = full.merge(early, on=key, suffixes=("", "_known"), validate="one_to_one")
    assert len(joined) == len(full) == len(early) > 100
    for column in [c for c in full.columns if c not in key and c != "created_ts"]:
        pd.testing.assert_series_equal(
            joined[column], joined[f"{column}_known"], check_names=False, obj=column
        )


def _known_at(tables: dict[str, pa.Table], cut: pd.Timestamp) -> dict[str, pa.Table]:
    """The raw tables as they were at `cut`: later rows gone, later outcomes still open."""
    out = {}
    frames = {name: t.to_pandas() for name, t in tables.items()}
    ts = {
        "orders": "order_ts",
        "shipments": "shipped_ts",
        "tracking_events": "event_ts",
        "contacts": "ts",
        "returns": "requested_ts",
        "offers": "ts",
        "customers": "signup_ts",
    }
    for name, frame in frames.items():
        if name in ts:
            frame = frame[pd.to_datetime(frame[ts[name]], utc=True) <= cut]
        out[name] = frame
    ships = out["shipments"].copy()
    ships["delivered_ts"] = ships["delivered_ts"].where(
        pd.to_datetime(ships["delivered_ts"], utc=True) <= cut
    )
    out["shipments"] = ships
    kept = set(out["orders"]["order_id"])
    out["order_items"] = frames["order_items"][frames["order_items"]["order_id"].isin(kept)]
    return {
        name: pa.Table.from_pandas(frame, schema=tables[name].schema, preserve_index=False)
        for name, frame in out.items()
    }


@pytest.fixture(scope="module")
def built(sim_tables, tmp_path_factory):
    """A Feast store over the small simulated business, and a tracking URI in tmp."""
    from aftersale.settings import Settings
    from features.build.tables import build_feature_tables, publish_tables
    from features.store.config import feature_store
    from features.store.sync import apply_definitions

    settings = Settings(data_dir=tmp_path_factory.mktemp("delivery"))
    publish_tables(build_feature_tables(sim_tables), settings.features_dir)
    store = feature_store(settings)
    apply_definitions(store)
    (settings.data_dir / "tracking").mkdir()
    uri = f"sqlite:///{settings.data_dir / 'tracking' / 'mlflow.db'}"
    return settings, store, uri


@pytest.mark.slow
def _anchored_model(anchor: tuple[str, ...]) -> WindowModel:
    """Quantile boosters on log hours above an anchor, fitted on a tiny frame."""
    import lightgbm as lgb

    from models.served.encoding import FeatureLayout

    rng = np.random.default_rng(0)
    # The level columns are constant in this training frame: the trees only read x.
    x = np.column_stack([rng.normal(size=400), np.zeros(400), np.zeros(400)])
    above = 0.1 * x[:, 0] + rng.normal(scale=0.2, size=400)
    boosters = tuple(
        lgb.train(
            {"objective": "quantile", "alpha": level, "verbose": -1, "min_data_in_leaf": 20},
            lgb.Dataset(x, above),
            num_boost_round=10,
        )
        for level in (0.05, 0.5, 0.95)
    )
    offsets = ConformalOffsets.from_dict(
        {"coverage": 0.9, "offsets": {ALL_ROWS: 0.0}, "method": "adaptive"}
    )
    return WindowModel(
        "delivery_estimate",
        boosters,
        (10, 10, 10),
        (0.05, 0.5, 0.95),
        FeatureLayout(("x", "recent", "yearly"), {}),
        offsets,
        anchor=anchor,
        anchor_default=np.log(48.0),
    )


def test_the_window_moves_with_its_anchor(tmp_path) -> None:
    """A transit level twice as long doubles every hour of the window, whatever the trees
    saw in training; a row without a recent level falls back to the next, then the default."""
    model = _anchored_model(("recent", "yearly"))
    rows = pd.DataFrame(
        {
            "x": [0.3, 0.3, 0.3, 0.3],
            "recent": [np.log(40.0), np.log(80.0), np.nan, np.nan],
            "yearly": [np.log(10.0), np.log(10.0), np.log(80.0), np.nan],
        }
    )
    np.testing.assert_allclose(
        anchor_log_hours(rows, model.anchor, model.anchor_default),
        np.log([40.0, 80.0, 80.0, 48.0]),
    )
    hours = model.predict_hours(rows).to_numpy()
    np.testing.assert_allclose(hours[1], 2 * hours[0])
    np.testing.assert_allclose(hours[2], hours[1])
    np.testing.assert_allclose(hours[3], 48 / 40 * hours[0])
    # The explanation adds up to the estimate: the anchor sits in the bias.
    contributions = model.contributions(rows)
    np.testing.assert_allclose(contributions.sum(axis=1), np.log(hours[:, 0]))
    # Saved and loaded, the model keeps its anchor.
    loaded = WindowModel.load(model.save(tmp_path / "model"))
    assert loaded.anchor == model.anchor
    np.testing.assert_allclose(loaded.predict_hours(rows).to_numpy(), hours)


def test_an_anchor_must_be_one_of_the_inputs() -> None:
    with pytest.raises(ValueError, match="anchor columns"):
        _anchored_model(("absent",))


def test_the_delivery_estimate_is_anchored_on_served_features() -> None:
    """The anchor columns reach the model at serving: they are features of its service."""
    from features.repo.services import delivery_estimate_v1

    served = {f.name for p in delivery_estimate_v1.feature_view_projections for f in p.features}
    anchor = de.SPEC.options["anchor"]
    assert anchor[0] == "destination_log_transit_90d"
    assert set(anchor) <= served
    assert not set(anchor) & set(de.SPEC.exclude)


def test_trains_a_well_formed_calibrated_window(built, sim_tables, sim_dir) -> None:
    import mlflow

    from models.served.registry import CHALLENGER, CHAMPION, tracking
    from training.register import score_version

    settings, store, uri = built
    first = train_window(
        de.SPEC,
        store,
        settings,
        TrainOptions(tables=sim_tables, tracking_uri=uri, explain_rows=100),
    )
    assert first.promotion.promoted
    assert first.version == "1"
    m, promise = first.metrics, first.baseline_metrics
    assert m["mae_days"] < promise["mae_days"]
    assert 0.8 < m["coverage"] < 0.98
    assert first.calibration["offsets"]

    # The window each customer sees: earliest ≤ most likely ≤ latest, in their zone.
    model = first.model
    rows = store_rows(store, sim_tables).head(300)
    window = model.predict_window(rows, rows[EVENT_TIME], rows["timezone"])
    for kind in ("ts", "date"):
        assert (window[f"earliest_{kind}"] <= window[f"most_likely_{kind}"]).all()
        assert (window[f"most_likely_{kind}"] <= window[f"latest_{kind}"]).all()
    assert (window["earliest_ts"] > pd.to_datetime(rows[EVENT_TIME], utc=True)).all()
    for kind in ("most_likely", "earliest", "latest"):
        local = [
            t.tz_convert(z).date()
            for t, z in zip(window[f"{kind}_ts"], rows["timezone"], strict=True)
        ]
        assert list(pd.to_datetime(window[f"{kind}_date"]).dt.date) == local
    assert window.index.equals(rows.index)
    # A request's rows, given as dicts, get the same window at one decision instant.
    instant = pd.Timestamp(rows[EVENT_TIME].max()).tz_convert("UTC")
    zones = [z if isinstance(z, str) else "UTC" for z in rows["timezone"]]
    frame = model.predict_window(rows, instant, zones)
    expected = [
        (
            *(getattr(r, f"{k}_ts") for k in ("most_likely", "earliest", "latest")),
            *(
                pd.Timestamp(getattr(r, f"{k}_date")).date()
                for k in ("most_likely", "earliest", "latest")
            ),
            r.coverage,
            r.calibration,
        )
        for r in frame.itertuples(index=False)
    ]
    fast = model.window_rows(rows.to_dict("records"), instant, zones, num_threads=1)
    assert [tuple(r) for r in fast] == expected
    assert len({r.earliest_date for r in fast}) > 1
    # The same rows through a memo of the boosters' outputs, one by one and then again.
    memo = DecisionMemo(model.decision_key(), size=1_000)
    records = rows.to_dict("records")
    for _ in range(2):
        remembered = [
            model.window_rows([record], instant, [zone], num_threads=1, memo=memo)[0]
            for record, zone in zip(records, zones, strict=True)
        ]
        assert [tuple(r) for r in remembered] == expected
    assert memo.hits >= len(records)

    # The oracle comparison on dispatch rows.
    compared = ORACLES[de.NAME](first, sim_dir / "_truth")
    assert compared.rows > 0
    assert compared.oracle <= compared.baseline

    # A second run is judged against the champion on the same rows, through the registry.
    second = train_window(
        de.SPEC,
        store,
        settings,
        TrainOptions(tables=sim_tables, tracking_uri=uri, explain_rows=100),
    )
    assert second.promotion.champion_value == pytest.approx(first.metrics["mae_days"])
    assert not second.promotion.promoted  # the same data and seed: not strictly better
    client = mlflow.MlflowClient(tracking_uri=uri, registry_uri=uri)
    assert str(client.get_model_version_by_alias(de.NAME, CHAMPION).version) == "1"
    assert str(client.get_model_version_by_alias(de.NAME, CHALLENGER).version) == "2"
    with tracking(uri):
        flat = score_version(de.NAME, "2", model.input_frame(rows))
    np.testing.assert_allclose(flat.reshape(len(rows), 3), model.predict_hours(rows).to_numpy())


def store_rows(store, tables) -> pd.DataFrame:
    """Decision rows with their point-in-time features, as serving would assemble them."""
    from training.data import training_data

    return training_data(de.SPEC, store, tables).frame


@pytest.mark.slow
def test_the_boosters_learn_from_one_sample_of_whole_shipments(
    built, sim_tables, monkeypatch
) -> None:
    """Past `fit_rows` training rows, the three boosters fit on one seeded sample of whole
    shipments; below it on every row; the window keeps its coverage."""
    import dataclasses

    import training.delivery as delivery

    settings, store, uri = built
    seen: list[pd.DataFrame] = []
    real_fit = delivery.fit_lightgbm

    def recording_fit(train, *args, **kwargs):
        seen.append(train[list(de.SPEC.entity)].copy())
        return real_fit(train, *args, **kwargs)

    monkeypatch.setattr(delivery, "fit_lightgbm", recording_fit)
    options = TrainOptions(tables=sim_tables, tracking_uri=uri, explain_rows=50, register=False)
    train_window(de.SPEC, store, settings, options)
    every = seen[1]
    assert de.FIT_ROWS > len(every) > 3 * 1_000
    seen.clear()
    spec = dataclasses.replace(de.SPEC, options={**de.SPEC.options, "fit_rows": 1_000})
    run = train_window(spec, store, settings, options)
    lower, middle, upper = seen
    key = list(de.SPEC.entity)
    assert 0.5 * 1_000 < len(middle) < 1.5 * 1_000
    # Whole shipments: each kept shipment has all its training rows.
    kept = middle.drop_duplicates()
    counts = middle.value_counts(key)
    full = every.merge(kept, on=key).value_counts(key)
    assert counts.sort_index().equals(full.sort_index())
    # The same seeded sample for every booster.
    pd.testing.assert_frame_equal(lower, middle)
    pd.testing.assert_frame_equal(upper, middle)
    assert 0.8 < run.metrics["coverage"] < 0.98
