"""The real Feast store over the simulated business: point-in-time retrieval returns exactly
one correct row per label event, and the online store serves the latest offline row."""

from __future__ import annotations

from datetime import timedelta
from itertools import pairwise
from pathlib import Path

import ibis
import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pytest

from aftersale.settings import Settings
from features.build.tables import build_feature_tables, publish_tables
from features.contract.subset import customer_ids, of_customers, owned_keys
from features.instants import watermark
from features.store import duckdb_offline
from features.store.config import feature_store
from features.store.duckdb_offline import entities_only
from features.store.local_redis import throwaway_redis
from features.store.retrieval import (
    historical_features,
    historical_features_of,
    release_offline_memory,
)
from features.store.sync import apply_definitions, materialize

CHURN_FEATURES = [
    "orders_total",
    "monetary_total",
    "contacts_total",
    "last_contact_reason",
    "late_deliveries_total",
    "consent_marketing",
]


@pytest.fixture(scope="module")
def built(sim_tables, tmp_path_factory):
    """Feature tables published, applied and materialised into a fresh local store."""
    settings = Settings(data_dir=tmp_path_factory.mktemp("store"))
    tables = build_feature_tables(sim_tables)
    publish_tables(tables, settings.features_dir)
    store = feature_store(settings)
    apply_definitions(store)
    end = watermark(sim_tables).to_pydatetime()
    runs = materialize(store, end)
    return settings, store, tables, runs


def offline_as_of(
    table: pa.Table, key: str | list[str], entity_df: pd.DataFrame, columns
) -> pd.DataFrame:
    """Independent as-of join: latest row with event_ts <= the label time, per label row."""
    keys = [key] if isinstance(key, str) else key
    offline = table.to_pandas().sort_values("event_ts")
    offline["event_ts"] = offline["event_ts"].astype("datetime64[ns, UTC]")
    labels = entity_df.reset_index().sort_values("event_timestamp")
    labels["event_timestamp"] = labels["event_timestamp"].astype("datetime64[ns, UTC]")
    joined = pd.merge_asof(
        labels,
        offline[[*keys, "event_ts", *columns]],
        left_on="event_timestamp",
        right_on="event_ts",
        by=keys,
        direction="backward",
    )
    return joined.sort_values("index").set_index("index")


def as_missing(frame: pd.DataFrame) -> pd.DataFrame:
    """Missing strings are None from one store and NaN from the other: compare as missing."""
    return frame.astype(object).where(frame.notna(), None)


def test_materialize_runs_once_per_view_then_is_incremental(built) -> None:
    _, store, tables, runs = built
    assert {r.view for r in runs} == set(tables)
    assert not any(r.incremental for r in runs)
    # Nothing new up to the same end: no view is rewritten.
    assert materialize(store, runs[0].end) == []


def test_feature_rows_have_unique_entity_and_timestamp(built) -> None:
    _, _, tables, _ = built
    keys = {
        "customer_snapshots": ["customer_id"],
        "shipment_events": ["shipment_id"],
        "customer_category": ["customer_id", "category"],
        "order_contents": ["order_id"],
    }
    for name, table in tables.items():
        frame = table.select([*keys[name], "event_ts"]).to_pandas()
        assert not frame.duplicated().any(), name


def test_historical_retrieval_is_one_row_per_label_event(built, sim_tables) -> None:
    settings, store, tables, _ = built
    rng = np.random.default_rng(5)
    customers = sim_tables["customers"].column("customer_id").to_pylist()
    start = pc.min(sim_tables["orders"].column("order_ts")).as_py()
    span_s = (pc.max(sim_tables["orders"].column("order_ts")).as_py() - start).total_seconds()
    entity_df = pd.DataFrame(
        {
            "customer_id": rng.choice(customers, 300),
            "event_timestamp": [
                start + timedelta(seconds=float(s)) for s in rng.uniform(0, span_s, 300)
            ],
        }
    )
    # Two identical label events, an unknown customer, and a label years after the last
    # snapshot (a TTL would silently null it).
    entity_df = pd.concat(
        [
            entity_df,
            entity_df.iloc[[0]],
            pd.DataFrame({"customer_id": ["nobody"], "event_timestamp": [entity_df.iloc[1, 1]]}),
            pd.DataFrame(
                {
                    "customer_id": [customers[0]],
                    "event_timestamp": [pd.Timestamp("2031-01-01", tz="UTC")],
                }
            ),
        ],
        ignore_index=True,
    )
    features = [f"customer_snapshots:{c}" for c in CHURN_FEATURES]
    raw = store.get_historical_features(entity_df=entity_df, features=features).to_df()
    # The DuckDB store keeps every label event; Feast's file store drops those that found
    # no feature row, and the wrapper restores them.
    assert len(raw) == len(entity_df)
    file_store = feature_store(settings, offline_store={"type": "file"})
    raw_file = file_store.get_historical_features(entity_df=entity_df, features=features)
    assert len(raw_file.to_df()) < len(entity_df)
    got = historical_features(store, entity_df, features)
    from_file = historical_features(file_store, entity_df, features)
    pd.testing.assert_frame_equal(as_missing(got), as_missing(from_file))
    pd.testing.assert_frame_equal(
        historical_features(store, entity_df, features, chunk_rows=7), got
    )
    assert len(got) == len(entity_df)
    assert got.index.equals(entity_df.index)
    assert got["customer_id"].tolist() == entity_df["customer_id"].tolist()
    expected = offline_as_of(tables["customer_snapshots"], "customer_id", entity_df, CHURN_FEATURES)
    for column in CHURN_FEATURES:
        left = got[column].astype(object).where(got[column].notna(), None)
        right = expected.loc[got.index, column].astype(object)
        right = right.where(right.notna(), None)
        assert left.tolist() == right.tolist(), column
    # Both copies of the repeated label event keep their values.
    repeated = len(entity_df) - 3
    assert got.loc[0, CHURN_FEATURES].tolist() == got.loc[repeated, CHURN_FEATURES].tolist()
    assert got.loc[0, "orders_total"] == expected.loc[0, "orders_total"]
    far = got[got["event_timestamp"] == pd.Timestamp("2031-01-01", tz="UTC")]
    assert far["orders_total"].notna().all()
    nobody = got[got["customer_id"] == "nobody"]
    assert nobody["orders_total"].isna().all()

    # Offer decisions read three views at once. Each view answers for itself: the candidate
    # offers of one decision share the customer and the instant, and a category first bought
    # after the decision has no row yet; neither may cost the customer's or the order's
    # values (Feast's file store dropped such events from every view).
    offers = offer_decisions(tables)
    service = store.get_feature_service("next_best_offer_v1")
    got = historical_features(store, offers, service)
    from_file = historical_features(file_store, offers, service)
    pd.testing.assert_frame_equal(as_missing(got), as_missing(from_file))
    # Asked in chunks of a few (entity, time) pairs, each store gives the same answer.
    pd.testing.assert_frame_equal(historical_features(store, offers, service, chunk_rows=7), got)
    pd.testing.assert_frame_equal(
        historical_features(file_store, offers, service, chunk_rows=7), from_file
    )
    views = {
        "customer_snapshots": ("customer_id", ["orders_total", "returns_total"]),
        "customer_category": (["customer_id", "category"], ["category_returns_total"]),
        "order_contents": ("order_id", ["order_total", "order_promised_epoch"]),
    }
    for view, (key, columns) in views.items():
        expected = offline_as_of(tables[view], key, offers, columns)
        assert_frame_equal_as_missing(got[columns], expected.loc[got.index, columns])
    assert got["orders_total"].notna().all()
    assert got["category_returns_total"].isna().any()


def test_chunks_ask_for_ranges_of_entities(built, sim_tables, monkeypatch) -> None:
    """Label events in time order are asked of the store in chunks of neighbouring
    entities, each chunk a range of keys of its own, so that the store reads only the row
    groups holding them; the answer is the one asked at once."""
    _, store, _, _ = built
    snapshots = sim_tables["orders"].select(["customer_id", "order_ts"]).to_pandas()
    entity_df = (
        snapshots.rename(columns={"order_ts": "event_timestamp"})
        .sort_values("event_timestamp", kind="stable")
        .reset_index(drop=True)
    )
    features = [f"customer_snapshots:{c}" for c in CHURN_FEATURES]
    whole = historical_features(store, entity_df, features)
    asked: list[pd.DataFrame] = []
    ask = store.get_historical_features

    def recorded(entity_df, features):
        asked.append(entity_df)
        return ask(entity_df=entity_df, features=features)

    monkeypatch.setattr(store, "get_historical_features", recorded)
    chunk_rows = max(len(entity_df) // 5, 1)
    pd.testing.assert_frame_equal(
        historical_features(store, entity_df, features, chunk_rows=chunk_rows), whole
    )
    assert len(asked) >= 5
    ranges = [(chunk["customer_id"].min(), chunk["customer_id"].max()) for chunk in asked]
    # (A customer's events may straddle two chunks.)
    assert all(high <= low for (_, high), (low, _) in pairwise(ranges))


def test_frames_asked_together_get_what_each_gets_alone(built) -> None:
    """Offer decisions and their candidates read at once: each frame, with its own extra
    columns and index, equals its answer asked alone."""
    _, store, tables, _ = built
    service = store.get_feature_service("next_best_offer_v1")
    offers = offer_decisions(tables)
    # A frame of logged decisions: its own index, a label column, its instants naive of
    # zone (they are read as UTC) and one decision shared with the candidates.
    logged = offers.iloc[[0, len(offers) - 1]].assign(label=[1, 0])
    logged.index = [70, 3]
    logged["event_timestamp"] = logged["event_timestamp"].dt.tz_localize(None)
    candidates = offers.iloc[1:]
    given = (logged.copy(), candidates.copy())
    together = historical_features_of(store, [logged, candidates], service)
    # The frames given are left as they were.
    pd.testing.assert_frame_equal(logged, given[0])
    pd.testing.assert_frame_equal(candidates, given[1])
    apart = [historical_features(store, frame, service) for frame in (logged, candidates)]
    assert len(together) == 2
    for got, alone in zip(together, apart, strict=True):
        assert got.index.equals(alone.index)
        assert list(got.columns) == list(alone.columns)
        assert_frame_equal_as_missing(got, alone)
    assert together[0]["label"].tolist() == [1, 0]
    assert historical_features_of(store, [], service) == []
    with pytest.raises(ValueError, match="lack columns"):
        historical_features_of(store, [offers, offers.drop(columns="order_id")], service)


def assert_frame_equal_as_missing(left: pd.DataFrame, right: pd.DataFrame) -> None:
    """Equal values, missing ones compared as missing and numbers whatever their dtype."""
    for column in left.columns:
        assert as_missing(left[[column]])[column].tolist() == (
            as_missing(right[[column]])[column].tolist()
        ), column


def offer_decisions(tables: dict[str, pa.Table]) -> pd.DataFrame:
    """Offer decisions as training and its valuation ask for them: every category as a
    candidate of one decision (one instant, one customer, one tracked order), and a
    decision taken a day before the customer first bought its category."""
    orders = tables["order_contents"].to_pandas().sort_values(["event_ts", "order_id"])
    order = orders.drop_duplicates("order_customer_id").iloc[len(orders) // 20]
    categories = sorted(tables["customer_category"].column("category").unique().to_pylist())
    at = order["event_ts"] + pd.Timedelta(hours=1)
    candidates = pd.DataFrame(
        {
            "customer_id": order["order_customer_id"],
            "category": categories,
            "order_id": order["order_id"],
            "event_timestamp": at,
        }
    )
    bought = tables["customer_category"].to_pandas().sort_values("event_ts")
    first = bought.drop_duplicates(["customer_id", "category"]).iloc[len(bought) // 3]
    before = pd.DataFrame(
        {
            "customer_id": [first["customer_id"]],
            "category": [first["category"]],
            "order_id": ["(none)"],
            "event_timestamp": [first["event_ts"] - pd.Timedelta(days=1)],
        }
    )
    frame = pd.concat([candidates, before], ignore_index=True)
    frame["event_timestamp"] = pd.to_datetime(frame["event_timestamp"], utc=True)
    return frame


def duckdb_tables() -> set[str]:
    """The tables of the connection the offline store's queries run on."""
    found = ibis.get_backend().raw_sql("SELECT table_name FROM information_schema.tables")
    return {row[0] for row in found.fetchall()}


def test_requests_about_a_draw_read_each_view_once_and_answer_as_the_whole(
    built, sim_tables
) -> None:
    """Within `entities_only`, each view that a request asks about drawn entities alone is
    cut once to their rows; a request naming any other entity reads the whole view; the
    answers are the whole store's either way, and the cuts are dropped on exit."""
    _, store, tables, _ = built
    service = store.get_feature_service("next_best_offer_v1")
    offers = offer_decisions(tables)
    everyone = customer_ids(sim_tables)
    drawn = pa.array(
        sorted(set(offers["customer_id"]) | set(everyone.to_pylist()[: len(everyone) // 3]))
    )
    outsider = next(c for c in everyone.to_pylist() if c not in set(drawn.to_pylist()))
    ids = owned_keys(of_customers(sim_tables, drawn))
    assert set(ids) >= {"customer_id", "order_id", "shipment_id"}
    shipments = pd.DataFrame(
        {"shipment_id": ids["shipment_id"].to_pylist()[:40], "event_timestamp": offers.iloc[0, 3]}
    )
    churn = pd.DataFrame(
        {"customer_id": [*drawn.to_pylist()[:30], outsider], "event_timestamp": offers.iloc[0, 3]}
    )
    shipment_features = ["shipment_events:carrier", "shipment_events:promised_transit_days"]
    churn_features = [f"customer_snapshots:{c}" for c in CHURN_FEATURES]
    asked = [(offers, service), (shipments, shipment_features), (churn, churn_features)]
    whole = [historical_features(store, frame, features) for frame, features in asked]
    tables_before = duckdb_tables()
    with entities_only(ids):
        scope = duckdb_offline._SCOPE.get()
        for _ in range(2):  # the second time from the cuts
            for (frame, features), expected in zip(asked, whole, strict=True):
                assert_frame_equal_as_missing(historical_features(store, frame, features), expected)
        # The offers' "(none)" order and the churn request's outsider are not drawn: the
        # order view and the customer view of churn's request were read whole.
        assert {view for view, _, _ in scope.views} == {
            "customer_snapshots",
            "customer_category",
            "shipment_events",
        }
        assert len({t for t in duckdb_tables() - tables_before if "scope" in t}) == 3
    assert {t for t in duckdb_tables() - tables_before if "scope" in t} == set()
    assert duckdb_offline._SCOPE.get() is None


def test_label_at_a_snapshot_instant_sees_that_snapshot(built) -> None:
    _, store, tables, _ = built
    frame = tables["customer_snapshots"].to_pandas()
    row = frame[frame["orders_total"] > 1].iloc[0]
    entity_df = pd.DataFrame(
        {
            "customer_id": [row["customer_id"]] * 2,
            "event_timestamp": [row["event_ts"], row["event_ts"] - pd.Timedelta(microseconds=1)],
        }
    )
    got = (
        store.get_historical_features(
            entity_df=entity_df, features=["customer_snapshots:orders_total"]
        )
        .to_df()
        .sort_values("event_timestamp")
    )
    at, before = got["orders_total"].iloc[1], got["orders_total"].iloc[0]
    assert at == row["orders_total"]
    assert before < at


def test_later_created_row_wins_a_timestamp_tie(built, tmp_path) -> None:
    """A rebuild over newer data stamps rows with a later created_ts; where it restates a
    row at the same event_ts, Feast must serve the restated one."""
    _, _, tables, _ = built
    table = tables["order_contents"]
    first = table.slice(0, 1)
    restated = first.set_column(
        first.schema.get_field_index("order_total"), "order_total", pa.array([123456.0])
    )
    later = pc.add(first.column("created_ts"), pa.scalar(timedelta(days=1)))
    restated = restated.set_column(
        restated.schema.get_field_index("created_ts"), "created_ts", later
    )
    tie_settings = Settings(data_dir=tmp_path)
    both = pa.concat_tables([restated, table])  # restated first: order must not matter
    publish_tables({**tables, "order_contents": both}, tie_settings.features_dir)
    store = feature_store(tie_settings)
    apply_definitions(store)
    entity_df = pd.DataFrame(
        {
            "order_id": [first.column("order_id")[0].as_py()],
            "event_timestamp": [first.column("event_ts")[0].as_py() + timedelta(hours=1)],
        }
    )
    got = historical_features(store, entity_df, ["order_contents:order_total"])
    assert got["order_total"].tolist() == [123456.0]


def test_ttl_hides_rows_older_than_the_view_ttl(built) -> None:
    """shipment_events has a 60-day TTL: a label past it sees nothing, one inside it does."""
    _, store, tables, _ = built
    frame = tables["shipment_events"].to_pandas()
    last = frame.sort_values("event_ts").drop_duplicates("shipment_id", keep="last").iloc[0]
    ttl = store.get_feature_view("shipment_events").ttl
    entity_df = pd.DataFrame(
        {
            "shipment_id": [last["shipment_id"]] * 2,
            "event_timestamp": [
                last["event_ts"] + ttl - pd.Timedelta(hours=1),
                last["event_ts"] + ttl + pd.Timedelta(hours=1),
            ],
        }
    )
    column = next(c for c in frame.columns if c not in ("shipment_id", "event_ts", "created_ts"))
    got = historical_features(store, entity_df, [f"shipment_events:{column}"])
    assert got[column].iloc[0] == last[column]
    assert pd.isna(got[column].iloc[1])


def test_republished_tables_are_read_whatever_the_working_directory(
    built, tmp_path, monkeypatch
) -> None:
    """Source paths are relative to the `current` version, not to the process's directory,
    and a store keeps following `current` when a new version is published."""
    _, _, tables, _ = built
    settings = Settings(data_dir=tmp_path / "data")
    publish_tables(tables, settings.features_dir)
    store = feature_store(settings)
    apply_definitions(store)
    monkeypatch.chdir(tmp_path)
    table = tables["order_contents"]
    order_id = table.column("order_id")[0].as_py()
    entity_df = pd.DataFrame(
        {
            "order_id": [order_id],
            "event_timestamp": [table.column("event_ts")[0].as_py() + timedelta(hours=1)],
        }
    )
    before = historical_features(store, entity_df, ["order_contents:order_total"])
    assert before["order_total"].tolist() == [table.column("order_total")[0].as_py()]
    restated = table.set_column(
        table.schema.get_field_index("order_total"),
        "order_total",
        pa.array([-1.0] * table.num_rows),
    )
    publish_tables({**tables, "order_contents": restated}, settings.features_dir)
    after = historical_features(store, entity_df, ["order_contents:order_total"])
    assert after["order_total"].tolist() == [-1.0]


def online_matches_latest_offline(store, tables, sample: int = 50) -> None:
    frame = tables["customer_snapshots"].to_pandas()
    latest = frame.sort_values("event_ts").drop_duplicates("customer_id", keep="last")
    latest = latest.sample(sample, random_state=1).set_index("customer_id")
    ids = [*latest.index, "nobody"]
    online = store.get_online_features(
        features=[f"customer_snapshots:{c}" for c in CHURN_FEATURES],
        entity_rows=[{"customer_id": c} for c in ids],
    ).to_df()
    online = online.set_index("customer_id")
    for column in CHURN_FEATURES:
        expected = latest[column].astype(object).where(latest[column].notna(), None)
        got = (
            online.loc[latest.index, column]
            .astype(object)
            .where(online.loc[latest.index, column].notna(), None)
        )
        assert got.tolist() == expected.tolist(), column
    assert online.loc["nobody"].isna().all()


def test_online_equals_latest_offline_sqlite(built) -> None:
    _, store, tables, _ = built
    online_matches_latest_offline(store, tables)


@pytest.fixture(scope="module")
def redis_connection():
    """A redis-server on a free loopback port, for the life of the module."""
    with throwaway_redis() as address:
        if address is None:
            pytest.skip("redis-server is not installed (.ci/run installs it)")
        yield f"{address},db=0"


def test_online_equals_latest_offline_redis(built, redis_connection, tmp_path) -> None:
    _, _, tables, _ = built
    redis_settings = Settings(
        data_dir=tmp_path, feature_store="redis", redis_connection=redis_connection
    )
    # The redis environment shares the offline tables; it has its own registry.
    publish_tables(tables, redis_settings.features_dir)
    store = feature_store(redis_settings)
    apply_definitions(store)
    materialize(
        store,
        pd.Timestamp(
            pc.max(tables["customer_snapshots"].column("event_ts")).as_py()
        ).to_pydatetime(),
    )
    online_matches_latest_offline(store, tables)


def test_unknown_environment_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="AFTERSALE_FEATURE_STORE='cassandra'"):
        feature_store(Settings(data_dir=tmp_path, feature_store="cassandra"))


def _latest_churn_request(sim_tables) -> tuple[pd.DataFrame, list[str]]:
    """Fifty customers' churn features at the data's end."""
    entity_df = pd.DataFrame(
        {
            "customer_id": sim_tables["customers"].column("customer_id").to_pylist()[:50],
            "event_timestamp": pd.Timestamp(watermark(sim_tables)),
        }
    )
    return entity_df, [f"customer_snapshots:{c}" for c in CHURN_FEATURES]


def _duckdb_memory_limit() -> str:
    import ibis

    return ibis.get_backend().raw_sql("SELECT current_setting('memory_limit')").fetchall()[0][0]


def test_offline_store_holds_duckdb_to_the_configured_memory_limit(built, sim_tables) -> None:
    settings, store, _, _ = built
    limited = feature_store(settings.model_copy(update={"duckdb_memory_limit": "700MiB"}))
    entity_df, features = _latest_churn_request(sim_tables)
    before = _duckdb_memory_limit()
    try:
        got = historical_features(limited, entity_df, features)
        assert _duckdb_memory_limit() == "700.0 MiB"
    finally:
        import ibis

        ibis.get_backend().raw_sql(f"SET memory_limit = '{before}'").fetchall()
    # The limit changes where DuckDB may spill, never the answer.
    pd.testing.assert_frame_equal(got, historical_features(store, entity_df, features))
    assert _duckdb_memory_limit() != "700.0 MiB"


def test_released_memory_closes_the_connection_and_answers_stay(built, sim_tables) -> None:
    """After a retrieval, the offline store's DuckDB connection is closed and replaced: what
    it held is given back, the next request answers the same on the new one, prepared
    with the configured limit; inside `entities_only`, whose cuts live on the
    connection, nothing is closed."""
    import duckdb
    import ibis

    settings, store, _, _ = built
    limited = feature_store(settings.model_copy(update={"duckdb_memory_limit": "700MiB"}))
    entity_df, features = _latest_churn_request(sim_tables)
    before = historical_features(limited, entity_df, features)
    held = ibis.get_backend()
    held_memory = held.raw_sql("SELECT sum(memory_usage_bytes) FROM duckdb_memory()")
    assert held_memory.fetchall()[0][0] > 0
    assert release_offline_memory(limited)
    fresh = ibis.get_backend()
    assert fresh is not held
    with pytest.raises(duckdb.ConnectionException, match="closed"):
        held.raw_sql("SELECT 1").fetchall()
    pd.testing.assert_frame_equal(historical_features(limited, entity_df, features), before)
    assert _duckdb_memory_limit() == "700.0 MiB"
    with entities_only({"customer_id": pa.array(entity_df["customer_id"])}):
        assert not release_offline_memory(limited)
        assert ibis.get_backend() is fresh
    # The next tests' connection: the store's own limit again.
    historical_features(store, entity_df, features)
