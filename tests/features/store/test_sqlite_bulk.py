"""BulkSqliteOnlineStore and BulkProvider: Feast's own API reads back the latest offline row.

One small Feast repo per module (apply is slow): materialised through `BulkProvider`, then
checked against a pandas as-of computation and against the same data in Feast's stock SQLite
store. The encoders are checked byte for byte against Feast's own serialization.
"""

from __future__ import annotations

import math
import sqlite3
from contextlib import closing
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pytest
from feast import Entity, FeatureService, FeatureStore, FeatureView, Field, FileSource, RepoConfig
from feast.infra.key_encoding_utils import serialize_entity_key
from feast.protos.feast.types.EntityKey_pb2 import EntityKey as EntityKeyProto
from feast.protos.feast.types.Value_pb2 import RepeatedValue
from feast.protos.feast.types.Value_pb2 import Value as ValueProto
from feast.type_map import python_values_to_proto_values
from feast.types import Bool, Float32, Float64, Int32, Int64, String
from feast.value_type import ValueType

from features.store import bulk_encoding
from features.store.bulk_encoding import encode_entity_keys, encode_values
from features.store.provider import BulkProvider
from features.store.sqlite_bulk import STORE_TYPE, BulkSqliteOnlineStore, string_entity_key

T0 = datetime(2024, 6, 1, tzinfo=UTC)
FIRST_START = T0 - timedelta(days=10)
INCREMENTAL_END = T0 + timedelta(days=2)
FEATURES = ["spend", "ratio", "orders", "tier", "active", "visits"]


# --- encoders, byte for byte against Feast --------------------------------------------------


def _feast_bytes(columns: list[pa.Array], types: list[ValueType]) -> list[bytes]:
    """What Feast would store: its converter per column, one RepeatedValue per row."""
    protos = [
        # Integers go through to_pylist: Feast's to_numpy() path turns an int column with
        # nulls into float64 and loses precision above 2**53 (a stock quirk, not ours).
        python_values_to_proto_values(
            column.to_pylist()
            if value_type in (ValueType.INT64, ValueType.INT32)
            else column.to_numpy(zero_copy_only=False),
            value_type,
        )
        for column, value_type in zip(columns, types, strict=True)
    ]
    return [RepeatedValue(val=list(row)).SerializeToString() for row in zip(*protos, strict=True)]


def _typed_columns(n: int, seed: int = 1) -> tuple[list[pa.Array], list[ValueType]]:
    rng = np.random.default_rng(seed)

    def holes(values: Any, frac: float = 0.2) -> pa.Array:
        return pa.array(values, mask=rng.random(n) < frac)

    doubles = rng.normal(size=n) * 1e6
    doubles[:3] = [np.nan, np.inf, -0.0]
    columns = [
        holes(doubles),
        holes(rng.normal(size=n).astype(np.float32)),
        holes(rng.integers(-(2**63), 2**63 - 1, n, dtype=np.int64)),
        holes(rng.integers(-300, 300, n)),
        holes(rng.integers(-(2**31), 2**31 - 1, n).astype(np.int32)),
        holes(rng.random(n) < 0.5),
        pa.array([None if i % 7 == 0 else "é" * (i % 150) for i in range(n)]),
        pa.array([None if i % 5 == 0 else bytes(range(i % 200)) for i in range(n)]),
        pa.array([[1.5, float(i)] for i in range(n)]),  # not a fast type: Feast's converter
    ]
    types = [
        ValueType.DOUBLE,
        ValueType.FLOAT,
        ValueType.INT64,
        ValueType.INT64,
        ValueType.INT32,
        ValueType.BOOL,
        ValueType.STRING,
        ValueType.BYTES,
        ValueType.DOUBLE_LIST,
    ]
    return columns, types


def test_encode_values_matches_feast_serialization() -> None:
    columns, types = _typed_columns(2_000)
    assert encode_values(columns, types).to_pylist() == _feast_bytes(columns, types)


def test_encode_values_across_chunks_and_slices(monkeypatch: pytest.MonkeyPatch) -> None:
    columns, types = _typed_columns(3_000, seed=2)
    expected = _feast_bytes(columns, types)
    monkeypatch.setattr(bulk_encoding, "_BLOCK_BUDGET", 1)  # 1,024-row chunks
    assert encode_values(columns, types).to_pylist() == expected
    sliced = [column.slice(1_000, 1_500) for column in columns]
    assert encode_values(sliced, types).to_pylist() == expected[1_000:2_500]


@pytest.mark.parametrize(
    ("values", "value_type"),
    [
        ([0.0, -0.0, 1e308, None], ValueType.DOUBLE),
        ([0, -1, 2**63 - 1, -(2**63), 127, 128, None], ValueType.INT64),
        ([0, -1, 2**31 - 1, -(2**31), None], ValueType.INT32),
        (["", "a", "ü" * 200, None], ValueType.STRING),
        ([True, False, None], ValueType.BOOL),
        ([None, None], ValueType.DOUBLE),
    ],
)
def test_encode_values_edge_values(values: list[Any], value_type: ValueType) -> None:
    column = pa.array(values)
    if value_type == ValueType.INT32:
        column = column.cast(pa.int32())
    assert encode_values([column], [value_type]).to_pylist() == _feast_bytes([column], [value_type])


def test_encode_values_casts_mismatched_arrow_types() -> None:
    # An int column declared Float64, an int column declared String.
    ints = pa.array([1, None, 3])
    assert encode_values([ints], [ValueType.DOUBLE]).to_pylist() == [
        RepeatedValue(val=[v]).SerializeToString()
        for v in [ValueProto(double_val=1.0), ValueProto(), ValueProto(double_val=3.0)]
    ]
    assert encode_values([ints], [ValueType.STRING]).to_pylist()[2] == (
        RepeatedValue(val=[ValueProto(string_val="3")]).SerializeToString()
    )


def test_encode_entity_keys_matches_serialize_entity_key() -> None:
    ids = pa.array([f"C{i:05d}" + "ß" * (i % 3) for i in range(500)])
    numbers = pa.array(np.arange(-250, 250) * 10**12)
    keys = encode_entity_keys(
        {"zone": numbers, "customer_id": ids},
        {"zone": ValueType.INT64, "customer_id": ValueType.STRING},
    ).to_pylist()
    for i, key in enumerate(keys):
        proto = EntityKeyProto(
            join_keys=["zone", "customer_id"],
            entity_values=[
                ValueProto(int64_val=numbers[i].as_py()),
                ValueProto(string_val=ids[i].as_py()),
            ],
        )
        assert key == serialize_entity_key(proto, entity_key_serialization_version=3)


def test_encode_entity_keys_rejects_missing_join_key() -> None:
    with pytest.raises(ValueError, match="missing values"):
        encode_entity_keys(
            {"customer_id": pa.array(["a", None])}, {"customer_id": ValueType.STRING}
        )


# --- the store on its own -------------------------------------------------------------------


def _bare_config(folder: Path) -> RepoConfig:
    return RepoConfig(
        project="unit",
        provider="features.store.provider.BulkProvider",
        registry=str(folder / "registry.db"),
        online_store={"type": STORE_TYPE, "path": str(folder / "online.db")},
        offline_store={"type": "file"},
        entity_key_serialization_version=3,
        repo_path=str(folder),
    )


def _bare_view() -> FeatureView:
    customer = Entity(name="customer", join_keys=["customer_id"], value_type=ValueType.STRING)
    source = FileSource(
        path="unused.parquet", timestamp_field="event_ts", created_timestamp_column="created_ts"
    )
    return FeatureView(
        name="unit_view",
        entities=[customer],
        source=source,
        schema=[
            Field(name="customer_id", dtype=String),
            Field(name="score", dtype=Float64),
        ],
    )


def _rows(*rows: tuple[str, float, datetime, datetime | None]) -> pa.Table:
    ts = pa.timestamp("us", tz="UTC")
    return pa.table(
        {
            "customer_id": [r[0] for r in rows],
            "score": [r[1] for r in rows],
            "event_ts": pa.array([r[2] for r in rows], ts),
            "created_ts": pa.array([r[3] for r in rows], ts),
        }
    )


def _score(store: BulkSqliteOnlineStore, config: RepoConfig, view: FeatureView, key: str) -> Any:
    entity = EntityKeyProto(join_keys=["customer_id"], entity_values=[ValueProto(string_val=key)])
    [(_, values)] = store.online_read(config, view, [entity])
    return None if values is None else values["score"].double_val


@pytest.mark.parametrize(
    ("join_keys", "values"),
    [
        (["customer_id"], ["c1"]),
        (["customer_id", "category"], ["c1", "books"]),
        (["category", "customer_id"], ["Bücher", "c-ü-2"]),
        (["order_id"], [""]),
    ],
)
def test_string_entity_key_is_feasts(join_keys: list[str], values: list[str]) -> None:
    proto = EntityKeyProto(
        join_keys=join_keys, entity_values=[ValueProto(string_val=v) for v in values]
    )
    expected = serialize_entity_key(proto, entity_key_serialization_version=3)
    assert string_entity_key(join_keys, values) == expected


def test_read_values_agree_with_online_read(tmp_path: Path) -> None:
    config, view, store = _bare_config(tmp_path), _bare_view(), BulkSqliteOnlineStore()
    rows = _rows(("a", 1.5, T0, None), ("b", math.nan, T0 + timedelta(seconds=1), None))
    assert store.write_arrow(config, view, rows) == 2
    found = store.read_values(config, view, ["customer_id"], [["b"], ["x"], ["a"]], ["score"])
    protos = store.online_read(
        config,
        view,
        [
            EntityKeyProto(join_keys=["customer_id"], entity_values=[ValueProto(string_val=k)])
            for k in ("b", "x", "a")
        ],
        ["score"],
    )
    assert found[1] is None
    assert protos[1] == (None, None)
    for hit, (event_ts, values) in zip((found[0], found[2]), (protos[0], protos[2]), strict=True):
        micros, (score,) = hit
        assert datetime(1970, 1, 1, tzinfo=UTC) + timedelta(microseconds=micros) == event_ts
        assert score == values["score"]
    # A feature the stored rows lack reads as None, beside those they hold.
    [(_, both)] = store.read_values(config, view, ["customer_id"], [["a"]], ["absent", "score"])
    assert both[0] is None
    assert both[1].double_val == 1.5


def test_upsert_rule_newest_event_then_created(tmp_path: Path) -> None:
    config, view, store = _bare_config(tmp_path), _bare_view(), BulkSqliteOnlineStore()
    t, c = T0, T0 + timedelta(hours=1)
    store.update(config, [], [view], [], [], False)
    assert store.write_arrow(config, view, _rows(("a", 1.0, t, c), ("b", 1.0, t, None))) == 2
    # Older event: kept out, whatever its created timestamp.
    store.write_arrow(config, view, _rows(("a", 2.0, t - timedelta(seconds=1), c + timedelta(1))))
    assert _score(store, config, view, "a") == 1.0
    # Same event, older created: kept out; same event, same created: the later write wins.
    store.write_arrow(config, view, _rows(("a", 3.0, t, c - timedelta(seconds=1))))
    assert _score(store, config, view, "a") == 1.0
    store.write_arrow(config, view, _rows(("a", 4.0, t, c)))
    assert _score(store, config, view, "a") == 4.0
    # A missing created timestamp ranks below a present one, and equal to another missing.
    store.write_arrow(config, view, _rows(("a", 5.0, t, None), ("b", 6.0, t, None)))
    assert _score(store, config, view, "a") == 4.0
    assert _score(store, config, view, "b") == 6.0
    # Within one batch the same rule picks the winner before SQLite sees it.
    batch = _rows(("c", 7.0, t, c), ("c", 8.0, t + timedelta(1), None), ("c", 9.0, t, None))
    assert store.write_arrow(config, view, batch) == 1
    assert _score(store, config, view, "c") == 8.0
    assert _score(store, config, view, "nobody") is None


def test_write_arrow_reads_every_record_batch(tmp_path: Path) -> None:
    # Feast's own _convert_arrow_fv_to_proto converts only a table's first record batch.
    config, view, store = _bare_config(tmp_path), _bare_view(), BulkSqliteOnlineStore()
    first, second = _rows(("a", 1.0, T0, None)), _rows(("b", 2.0, T0, None))
    table = pa.Table.from_batches([*first.to_batches(), *second.to_batches()])
    assert table.column("customer_id").num_chunks == 2
    assert store.write_arrow(config, view, table) == 2
    assert _score(store, config, view, "b") == 2.0


def test_view_of_join_keys_only(tmp_path: Path) -> None:
    config, store = _bare_config(tmp_path), BulkSqliteOnlineStore()
    view = _bare_view()
    view.features = []
    assert store.write_arrow(config, view, _rows(("a", 1.0, T0, None))) == 1
    entity = EntityKeyProto(join_keys=["customer_id"], entity_values=[ValueProto(string_val="a")])
    assert store.online_read(config, view, [entity]) == [(T0, {})]


def test_online_write_batch_round_trip_and_rule(tmp_path: Path) -> None:
    config, view, store = _bare_config(tmp_path), _bare_view(), BulkSqliteOnlineStore()
    key = EntityKeyProto(join_keys=["customer_id"], entity_values=[ValueProto(string_val="a")])
    naive = datetime(2024, 6, 1, 12, 0, 0, 123456)  # naive means UTC in Feast
    store.online_write_batch(
        config,
        view,
        [
            (key, {"score": ValueProto(double_val=1.5)}, naive, None),
            (key, {"score": ValueProto(double_val=0.5)}, naive - timedelta(1), None),
        ],
        None,
    )
    [(event_ts, values)] = store.online_read(config, view, [key], ["score"])
    assert event_ts == naive.replace(tzinfo=UTC)
    assert values == {"score": ValueProto(double_val=1.5)}


def test_write_arrow_error_paths(tmp_path: Path) -> None:
    config, view, store = _bare_config(tmp_path), _bare_view(), BulkSqliteOnlineStore()
    with pytest.raises(ValueError, match="lacks columns"):
        store.write_arrow(config, view, _rows(("a", 1.0, T0, None)).drop_columns(["score"]))
    with pytest.raises(ValueError, match="missing values"):
        store.write_arrow(config, view, _rows((None, 1.0, T0, None)))  # type: ignore[arg-type]
    assert store.write_arrow(config, view, _rows(("a", 1.0, T0, None)).slice(0, 0)) == 0


def _tables(path: Path) -> set[str]:
    with closing(sqlite3.connect(path)) as conn:
        return {name for (name,) in conn.execute("SELECT name FROM sqlite_master")}


def test_update_creates_and_drops_tables_and_teardown_removes_file(tmp_path: Path) -> None:
    config, view, store = _bare_config(tmp_path), _bare_view(), BulkSqliteOnlineStore()
    db = store.db_path(config)
    store.update(config, [], [view], [], [], False)
    assert "unit_unit_view" in _tables(db)
    store.update(config, [view], [], [], [], False)
    assert "unit_unit_view" not in _tables(db)
    store.teardown(config, [view], [])
    assert not db.exists()


# --- a Feast repo end to end ----------------------------------------------------------------


def _source_frame() -> pd.DataFrame:
    """Offline rows: repeats, an event-timestamp tie, nulls, and rows outside the window."""
    rng = np.random.default_rng(5)
    rows: list[dict[str, Any]] = []

    def row(cid: str, event: datetime, created: datetime, **values: Any) -> None:
        rows.append({"customer_id": cid, "event_ts": event, "created_ts": created, **values})

    def random_values(i: int) -> dict[str, Any]:
        return {
            "spend": None if i % 4 == 0 else float(rng.normal() * 100),
            "ratio": float("nan") if i % 6 == 0 else float(rng.random()),
            "orders": None if i % 5 == 0 else int(rng.integers(-5, 1_000)),
            "tier": None if i % 3 == 0 else ["gold", "silver", "", "bronzé"][i % 4],
            "active": None if i % 7 == 0 else bool(i % 2),
            "visits": None if i % 8 == 0 else int(rng.integers(-(2**31), 2**31 - 1)),
        }

    day = timedelta(days=1)
    # Written twice within the first window: the later event wins.
    row("c01", T0 - 5 * day, T0 - 5 * day, **random_values(1))
    row("c01", T0 - 1 * day, T0 - 1 * day, **random_values(2))
    # Same event timestamp twice: the later created timestamp wins (listed first on purpose).
    row("c02", T0 - 2 * day, T0 - day, spend=2.0, ratio=0.2, orders=2, tier="late", active=True)
    row("c02", T0 - 2 * day, T0 - 2 * day, spend=1.0, ratio=0.1, orders=1, tier="early")
    # Every feature missing.
    row("c03", T0 - 3 * day, T0 - 3 * day)
    for i in range(4, 40):
        event = FIRST_START + timedelta(hours=int(rng.integers(0, 240)))
        row(f"c{i:02d}", event, event + timedelta(minutes=5), **random_values(i))
    # Before the first window: never materialised.
    row("c90", FIRST_START - day, FIRST_START - day, spend=9.0, tier="too old")
    # After the first window, picked up by materialize_incremental.
    row("c01", T0 + day, T0 + day, spend=111.0, ratio=0.5, orders=7, tier="newer", active=False)
    row("c91", T0 + day / 2, T0 + day / 2, spend=91.0, orders=91)
    frame = pd.DataFrame(rows)
    frame["orders"] = frame["orders"].astype("Int64")
    frame["active"] = frame["active"].astype("boolean")
    frame["visits"] = frame["visits"].astype("Int32")
    return frame


LATE_ROW = {"customer_id": "c92", "spend": 92.0, "tier": "late arrival"}


def _definitions(parquet: Path) -> list[Any]:
    customer = Entity(name="customer", join_keys=["customer_id"], value_type=ValueType.STRING)
    source = FileSource(
        path=str(parquet), timestamp_field="event_ts", created_timestamp_column="created_ts"
    )
    view = FeatureView(
        name="customer_stats",
        entities=[customer],
        ttl=timedelta(days=30),
        source=source,
        schema=[
            Field(name="customer_id", dtype=String),
            Field(name="spend", dtype=Float64),
            Field(name="ratio", dtype=Float32),
            Field(name="orders", dtype=Int64),
            Field(name="tier", dtype=String),
            Field(name="active", dtype=Bool),
            Field(name="visits", dtype=Int32),
        ],
    )
    return [customer, view, FeatureService(name="customer_stats_v1", features=[view])]


def _repo(folder: Path, parquet: Path, bulk: bool) -> FeatureStore:
    online = (
        {"type": STORE_TYPE, "path": str(folder / "online.db")}
        if bulk
        else {"type": "sqlite", "path": str(folder / "online_stock.db")}
    )
    config = RepoConfig(
        project="bulktest",
        provider="features.store.provider.BulkProvider" if bulk else "local",
        registry=str(folder / "registry.db"),
        online_store=online,
        offline_store={"type": "file"},
        entity_key_serialization_version=3,
        repo_path=str(folder),
    )
    store = FeatureStore(config=config)
    store.apply(_definitions(parquet))
    return store


def _read(store: FeatureStore, ids: list[str]) -> dict[str, list[Any]]:
    service = store.get_feature_service("customer_stats_v1")
    rows = [{"customer_id": cid} for cid in ids]
    return store.get_online_features(features=service, entity_rows=rows).to_dict()


def _materialize_twice(
    folder: Path, frame: pd.DataFrame, ids: list[str], bulk: bool
) -> tuple[FeatureStore, dict[str, list[Any]], dict[str, list[Any]]]:
    """First window; then late data lands in the file; then an incremental run.

    Returns the store and what `get_online_features` gave after each run.
    """
    parquet = folder / "source.parquet"
    folder.mkdir()
    frame.to_parquet(parquet)
    store = _repo(folder, parquet, bulk)
    store.materialize(FIRST_START, T0)
    after_first = _read(store, ids)
    late = {**LATE_ROW, "event_ts": T0 - timedelta(hours=2), "created_ts": T0}
    pd.concat([frame, pd.DataFrame([late])], ignore_index=True).to_parquet(parquet)
    store.materialize_incremental(INCREMENTAL_END)
    return store, after_first, _read(store, ids)


@dataclass
class Repo:
    frame: pd.DataFrame
    ids: list[str]
    bulk: FeatureStore
    bulk_writes: list[int]  # rows changed by each write_arrow call during materialisation
    after_first: dict[str, list[Any]]
    after_incremental: dict[str, list[Any]]
    stock_after_first: dict[str, list[Any]]
    stock_after_incremental: dict[str, list[Any]]


@pytest.fixture(scope="module")
def repo(tmp_path_factory: pytest.TempPathFactory) -> Repo:
    folder = tmp_path_factory.mktemp("bulk_repo")
    frame = _source_frame()
    ids = [*sorted(set(frame["customer_id"])), LATE_ROW["customer_id"], "nobody"]
    bulk_writes: list[int] = []
    write_arrow = BulkSqliteOnlineStore.write_arrow

    def counted(self: BulkSqliteOnlineStore, *args: Any, **kwargs: Any) -> int:
        bulk_writes.append(write_arrow(self, *args, **kwargs))
        return bulk_writes[-1]

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(BulkSqliteOnlineStore, "write_arrow", counted)
        bulk, *bulk_reads = _materialize_twice(folder / "bulk", frame, ids, bulk=True)
    _, *stock_reads = _materialize_twice(folder / "stock", frame, ids, bulk=False)
    return Repo(frame, ids, bulk, bulk_writes, *bulk_reads, *stock_reads)


def _expected(frame: pd.DataFrame, start: datetime, end: datetime) -> dict[str, dict[str, Any]]:
    """Latest row per customer with start <= event_ts <= end (newest event, then created)."""
    window = frame[(frame["event_ts"] >= start) & (frame["event_ts"] <= end)]
    latest = window.sort_values(["event_ts", "created_ts"]).groupby("customer_id").tail(1)
    return {row["customer_id"]: row for row in latest.to_dict("records")}


def _same(got: Any, want: Any, feature: str) -> bool:
    if want is None or (isinstance(want, float) and math.isnan(want)) or want is pd.NA:
        return got is None
    if feature == "ratio":  # Float32 on the way through
        return got == pytest.approx(float(np.float32(want)))
    return got == want


def _check_against_offline(online: dict[str, list[Any]], expected: dict[str, dict]) -> None:
    for i, cid in enumerate(online["customer_id"]):
        want = expected.get(cid)
        for feature in FEATURES:
            got = online[feature][i]
            if want is None:
                assert got is None, (cid, feature)
            else:
                assert _same(got, want[feature], feature), (cid, feature, got, want[feature])


def test_first_window_equals_latest_offline_row(repo: Repo) -> None:
    _check_against_offline(repo.after_first, _expected(repo.frame, FIRST_START, T0))


def test_incremental_equals_latest_offline_row(repo: Repo) -> None:
    _check_against_offline(
        repo.after_incremental, _expected(repo.frame, FIRST_START, INCREMENTAL_END)
    )


def test_entity_written_twice_keeps_newest_event(repo: Repo) -> None:
    at = repo.ids.index("c01")
    assert repo.after_first["spend"][at] == repo.frame["spend"][1]  # the T0 - 1 day row
    assert repo.after_incremental["tier"][at] == "newer"


def test_equal_event_ts_tie_broken_by_created_ts(repo: Repo) -> None:
    at = repo.ids.index("c02")
    got = {feature: repo.after_incremental[feature][at] for feature in ("spend", "orders", "tier")}
    assert got == {"spend": 2.0, "orders": 2, "tier": "late"}


def test_unknown_entity_reads_as_missing(repo: Repo) -> None:
    at = repo.ids.index("nobody")
    assert all(repo.after_incremental[feature][at] is None for feature in FEATURES)
    response = repo.bulk.get_online_features(
        features=repo.bulk.get_feature_service("customer_stats_v1"),
        entity_rows=[{"customer_id": "nobody"}],
    )
    assert response.to_dict()["spend"] == [None]


def test_incremental_writes_only_rows_after_previous_end(repo: Repo) -> None:
    first, incremental = repo.after_first, repo.after_incremental
    assert first["spend"][repo.ids.index("c91")] is None
    assert incremental["spend"][repo.ids.index("c91")] == 91.0
    # Landed in the file after the first run but stamped before its end: not re-read.
    assert incremental["spend"][repo.ids.index("c92")] is None
    # Older than the first window's start: never read.
    assert incremental["spend"][repo.ids.index("c90")] is None


def test_materialization_intervals_recorded(repo: Repo) -> None:
    view = repo.bulk.get_feature_view("customer_stats")
    assert view.most_recent_end_time == INCREMENTAL_END
    assert min(start for start, _ in view.materialization_intervals) == FIRST_START


def test_same_output_as_stock_sqlite_store(repo: Repo) -> None:
    assert repo.after_first == repo.stock_after_first
    assert repo.after_incremental == repo.stock_after_incremental


def test_materialize_goes_through_write_arrow(repo: Repo) -> None:
    provider = repo.bulk._get_provider()
    assert isinstance(provider, BulkProvider)
    assert isinstance(provider.online_store, BulkSqliteOnlineStore)
    first_window = _expected(repo.frame, FIRST_START, T0)
    # One call per run: every entity of the first window, then c01 (newer) and c91.
    assert repo.bulk_writes == [len(first_window), 2]


def test_write_to_online_store_goes_through_write_arrow(repo: Repo) -> None:
    stamp = INCREMENTAL_END + timedelta(days=1)
    frame = pd.DataFrame(
        {
            "customer_id": ["c93"],
            "event_ts": [stamp],
            "created_ts": [stamp],
            "spend": [93.0],
            "ratio": [0.25],
            "orders": [93],
            "tier": ["pushed"],
            "active": [True],
            "visits": [3],
        }
    )
    repo.bulk.write_to_online_store("customer_stats", frame)
    got = _read(repo.bulk, ["c93"])
    assert got["tier"] == ["pushed"]
    assert got["visits"] == [3]
