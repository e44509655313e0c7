"""Feast's DuckDB offline store, reading the repository's Parquet folders, with an as-of join.

Two changes to Feast's own `DuckDBOfflineStore`, both through its offline-store interface:

- Paths. Feast hands a FileSource's path to DuckDB as it is: a relative path then resolves
  against the process's working directory rather than the repo path, and a folder without
  `file_format` is not read at all. Here relative paths resolve against `config.repo_path`
  (the `current` published version, see `features.store.config`) as in Feast's file store,
  and a folder means all its Parquet parts.
- The point-in-time join. Feast's ibis join pairs each label event with every earlier
  feature row of its entity (a range join carrying all feature columns) and keeps the
  newest with a window function; with daily snapshots that is tens of rows per event and
  dominated training time (see `get_historical_features`). Here DuckDB's ASOF join finds
  the newest (event_ts, created_ts) per event on the key and timestamp columns alone, and
  one equi-join then fetches that row's features. Same answer: the newest row at or before
  the event time, ties on event_ts broken by the latest created_ts, nothing where the
  view's TTL (when not zero) has expired, and every label event kept (missing values where
  nothing was known).

- Materialisation's latest rows. Feast's ibis pull numbers every row of the view in a
  window per entity; here the newest (event_ts, created_ts) per entity is found on the
  narrow columns and joined back (`newest_rows`), so a first materialisation of a long
  history holds only the rows it writes. The pull of every row is Feast's ibis function,
  with the path resolution above.
- Requests about a few entities, again and again (`entities_only`): each view is read once,
  cut to those entities' rows, and kept in DuckDB's memory for the next requests.
Configured with `offline_store: type: features.store.duckdb_offline.RepoDuckDBOfflineStore`.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, Literal

import ibis
import pandas as pd
import pyarrow as pa
from feast.data_format import ParquetFormat
from feast.data_source import DataSource
from feast.feature_view import FeatureView
from feast.infra.offline_stores import duckdb as feast_duckdb
from feast.infra.offline_stores import offline_utils
from feast.infra.offline_stores.file_source import FileSource
from feast.infra.offline_stores.ibis import (
    IbisRetrievalJob,
    get_historical_features_ibis,
    pull_all_from_table_or_query_ibis,
)
from feast.infra.offline_stores.offline_store import RetrievalJob, RetrievalMetadata
from feast.infra.registry.base_registry import BaseRegistry
from feast.on_demand_feature_view import OnDemandFeatureView
from feast.repo_config import RepoConfig
from ibis.expr import datatypes as dt
from ibis.expr.types import Table

from features.instants import utc_times

STORE_TYPE = "features.store.duckdb_offline.RepoDuckDBOfflineStore"


class RepoDuckDBOfflineStoreConfig(feast_duckdb.DuckDBOfflineStoreConfig):
    """Configuration of `RepoDuckDBOfflineStore` (`offline_store:` in feature_store.yaml).

    `memory_limit` holds DuckDB's memory to a share of the machine's (`10%`) or a size
    (`2GiB`); None leaves DuckDB's default, 80%, which it keeps once taken.
    """

    type: Literal["features.store.duckdb_offline.RepoDuckDBOfflineStore"] = STORE_TYPE
    memory_limit: str | None = None


def prepare_connection(config: RepoConfig) -> None:
    """Hold the connection the store's queries run on (ibis's default DuckDB) to the
    configured `memory_limit`, and keep its progress bar off the console.

    DuckDB keeps the buffers a query took until the process ends: a million customers'
    point-in-time join left about 9 GiB resident under the default limit, and 2 GiB
    under a limit of 2 GiB, for six seconds more of spilling. Its progress bar, drawn for
    any query of more than two seconds, would break into the commands' own output.
    """
    backend = ibis.get_backend()
    # DuckDB answers with the connection itself: fetch the answer, never close it.
    backend.raw_sql("SET enable_progress_bar = false").fetchall()
    limit = getattr(config.offline_store, "memory_limit", None)
    if limit:
        backend.raw_sql(f"SET memory_limit = '{limit}'").fetchall()


def release_memory() -> bool:
    """Close the connection the offline store's queries run on (ibis's default DuckDB),
    putting a new one in its place, which the next request prepares (`prepare_connection`).

    DuckDB keeps the buffers its queries took until its connection closes, up to
    `memory_limit`: a trainer would hold them through its fit, and a process training
    several models through every later one. At 100,000 customers the connection held
    0.35-0.43 GiB after delay risk's and churn's retrievals, with their frames let go.
    Nothing is closed inside `entities_only`, whose cut views live on the connection.

    Returns:
        Whether a connection was closed.
    """
    if _SCOPE.get() is not None:
        return False
    held = ibis.get_backend()
    ibis.set_backend(ibis.duckdb.connect())
    held.disconnect()
    return True


def local_parquet_path(data_source: FileSource, repo_path: str | Path | None) -> str | None:
    """What DuckDB should read for a local Parquet file source, or None for anything else.

    A relative path is taken relative to the repo path; a folder means its Parquet parts.
    """
    if data_source.file_format is not None and not isinstance(
        data_source.file_format, ParquetFormat
    ):
        return None
    uri = data_source.path
    if "://" in uri:
        return None
    path = Path(FileSource.get_uri_for_file_path(repo_path, uri))
    return str(path / "*.parquet") if path.is_dir() else str(path)


def read_source(data_source: DataSource, repo_path: str) -> Table:
    """Feast's DuckDB reader, with local Parquet paths resolved against the repo path."""
    if isinstance(data_source, FileSource):
        path = local_parquet_path(data_source, repo_path)
        if path is not None:
            return ibis.read_parquet(path)
    return feast_duckdb._read_data_source(data_source, repo_path)


def _staging(config: RepoConfig) -> dict[str, Any]:
    return {
        "data_source_reader": read_source,
        "data_source_writer": feast_duckdb._write_data_source,
        "staging_location": config.offline_store.staging_location,
        "staging_location_endpoint_override": (
            config.offline_store.staging_location_endpoint_override
        ),
    }


class RepoDuckDBOfflineStore(feast_duckdb.DuckDBOfflineStore):
    """`DuckDBOfflineStore` whose file sources resolve against the repo path."""

    @staticmethod
    def pull_latest_from_table_or_query(
        config: RepoConfig,
        data_source: DataSource,
        join_key_columns: list[str],
        feature_name_columns: list[str],
        timestamp_field: str,
        created_timestamp_column: str | None,
        start_date: datetime,
        end_date: datetime,
    ) -> RetrievalJob:
        """Latest row per entity in [start_date, end_date] (materialisation).

        For a local Parquet source, the latest (event_ts, created_ts) per entity is found
        on the key and timestamp columns alone, and one equi-join then fetches those rows:
        the whole history's feature columns never pass through a window function, which at
        a million customers held every snapshot row in memory at once. Other sources go
        through Feast's own DuckDB store.
        """
        prepare_connection(config)
        if not (
            isinstance(data_source, FileSource)
            and local_parquet_path(data_source, config.repo_path) is not None
        ):
            # Feast's own store reads any other source as this one's reader would.
            return feast_duckdb.DuckDBOfflineStore.pull_latest_from_table_or_query(
                config,
                data_source,
                join_key_columns,
                feature_name_columns,
                timestamp_field,
                created_timestamp_column,
                start_date,
                end_date,
            )
        fields = [*join_key_columns, *feature_name_columns, timestamp_field]
        if created_timestamp_column:
            fields.append(created_timestamp_column)
        table = read_source(data_source, str(config.repo_path)).select(*fields)
        stamp = table[timestamp_field].cast("timestamp")
        table = table.filter(stamp >= _naive_utc(start_date), stamp <= _naive_utc(end_date))
        latest = newest_rows(table, join_key_columns, timestamp_field, created_timestamp_column)
        return IbisRetrievalJob(
            table=latest.select(*fields),
            on_demand_feature_views=[],
            full_feature_names=False,
            metadata=None,
            data_source_writer=feast_duckdb._write_data_source,
            staging_location=config.offline_store.staging_location,
            staging_location_endpoint_override=config.offline_store.staging_location_endpoint_override,
            repo_path=str(config.repo_path),
        )

    @staticmethod
    def pull_all_from_table_or_query(
        config: RepoConfig,
        data_source: DataSource,
        join_key_columns: list[str],
        feature_name_columns: list[str],
        timestamp_field: str,
        created_timestamp_column: str | None = None,
        start_date: datetime | None = None,
        end_date: datetime | None = None,
    ) -> RetrievalJob:
        """Every row in [start_date, end_date] (materialisation)."""
        prepare_connection(config)
        return pull_all_from_table_or_query_ibis(
            config=config,
            data_source=data_source,
            join_key_columns=join_key_columns,
            feature_name_columns=feature_name_columns,
            timestamp_field=timestamp_field,
            created_timestamp_column=created_timestamp_column,
            start_date=start_date,
            end_date=end_date,
            **_staging(config),
        )

    @staticmethod
    def get_historical_features(
        config: RepoConfig,
        feature_views: list[FeatureView],
        feature_refs: list[str],
        entity_df: pd.DataFrame | str,
        registry: BaseRegistry,
        project: str,
        full_feature_names: bool = False,
        filter_by_created_timestamp: bool = False,
    ) -> RetrievalJob:
        """Point-in-time join of the label events with the views.

        An as-of join where it gives Feast's answer; Feast's own ibis join for a SQL entity
        query or `filter_by_created_timestamp` (a created_ts cut-off is not monotone in
        event time, so the newest row by event time may not be the one to serve).
        """
        feast_duckdb._validate_lance_feature_views(feature_views)
        prepare_connection(config)
        if filter_by_created_timestamp or not isinstance(entity_df, pd.DataFrame):
            return get_historical_features_ibis(
                config=config,
                feature_views=feature_views,
                feature_refs=feature_refs,
                entity_df=entity_df,
                registry=registry,
                project=project,
                full_feature_names=full_feature_names,
                filter_by_created_timestamp=filter_by_created_timestamp,
                **_staging(config),
            )
        timestamp_col = offline_utils.infer_event_timestamp_from_entity_df(
            dict(zip(entity_df.columns, entity_df.dtypes, strict=True))
        )
        entity_df = entity_df.copy()
        entity_df[timestamp_col] = utc_times(entity_df[timestamp_col])
        result = ibis.memtable(entity_df)
        requested: list[str] = []
        for index, view in enumerate(feature_views):
            features, names = _view_features(config, view, feature_refs, full_feature_names)
            features = _in_scope(view.name, features, entity_df, full_feature_names)
            result = as_of_join(result, features, timestamp_col, f"__asof{index}", names)
            requested.extend(names)
        odfvs = OnDemandFeatureView.get_requested_odfvs(feature_refs, project, registry)
        for odfv in odfvs:
            if odfv.mode == "substrait":
                result = odfv.transform_ibis(result, full_feature_names)
        stamps = entity_df[timestamp_col]
        return IbisRetrievalJob(
            result,
            [odfv for odfv in odfvs if odfv.mode != "substrait"],
            full_feature_names,
            metadata=RetrievalMetadata(
                features=feature_refs,
                keys=list(set(entity_df.columns) - {timestamp_col}),
                min_event_timestamp=stamps.min().to_pydatetime(),
                max_event_timestamp=stamps.max().to_pydatetime(),
            ),
            data_source_writer=feast_duckdb._write_data_source,
            staging_location=config.offline_store.staging_location,
            staging_location_endpoint_override=config.offline_store.staging_location_endpoint_override,
            repo_path=str(config.repo_path),
        )


def _naive_utc(instant: datetime) -> datetime:
    """An instant as naive UTC, as Feast's pulls compare timestamps."""
    return instant.astimezone(tz=UTC).replace(tzinfo=None)


def newest_rows(table: Table, keys: list[str], timestamp: str, created: str | None) -> Table:
    """The rows of `table` with the newest (timestamp, created) of their keys.

    Found on the narrow key and timestamp columns first, then fetched by equality, so the
    wide rows are read once and never sorted. Keys are entity keys, never null. Rows equal
    in keys, timestamp and created are all kept (a bulk write keeps one).
    """
    names = {column: f"__latest_key{i}" for i, column in enumerate(keys)}
    narrow = table.select(
        *[table[c].name(n) for c, n in names.items()],
        table[timestamp].name("__latest_ts"),
        *([table[created].name("__latest_created")] if created else []),
    )
    newest = narrow.group_by(list(names.values())).aggregate(
        narrow["__latest_ts"].max().name("__latest_ts")
    )
    if created:
        at = narrow.join(newest, [*names.values(), "__latest_ts"])
        newest = at.group_by([*names.values(), "__latest_ts"]).aggregate(
            at["__latest_created"].max().name("__latest_created")
        )
    predicates = [table[c] == newest[n] for c, n in names.items()]
    predicates.append(table[timestamp] == newest["__latest_ts"])
    if created:
        predicates.append(table[created].identical_to(newest["__latest_created"]))
    return table.join(newest, predicates).select(*table.columns)


@dataclass(frozen=True)
class ViewTable:
    """One feature view's offline rows, as the join needs them."""

    table: Table
    timestamp: str
    created: str | None
    join_keys: dict[str, str]  # column in the view's table -> column in the entity table
    ttl: timedelta | None


@dataclass
class _Scope:
    """The entities of `entities_only` (join key column -> ids), the views cut so far
    (by view, key column and naming) and the temporary tables that hold them."""

    ids: dict[str, pd.Index]
    views: dict[tuple[str, str, bool], Table] = field(default_factory=dict)
    tables: list[str] = field(default_factory=list)


_SCOPE: ContextVar[_Scope | None] = ContextVar("entities_only", default=None)


@contextmanager
def entities_only(ids: Mapping[str, pa.Array]) -> Iterator[None]:
    """Within: a point-in-time request about entities among `ids` (join key column -> the
    ids) reads each view's rows of those entities, cut once and kept in DuckDB's memory.

    A view's Parquet parts decode every row group, however few entities a request asks
    about: a sample of a million customers' entities spread over the key range touches all
    of them. A caller that asks about the same sample several times (the monitor: its
    windows, its quality and the offer policy's valuation) then pays the scan once per view.
    A request about any entity outside `ids` reads the whole view, so the answers are the
    same as without the scope. The cut views are dropped on exit.
    """
    scope = _Scope({key: pd.Index(values.to_pandas()) for key, values in ids.items()})
    token = _SCOPE.set(scope)
    try:
        yield
    finally:
        _SCOPE.reset(token)
        backend = ibis.get_backend()
        for name in scope.tables:
            backend.raw_sql(f'DROP TABLE IF EXISTS "{name}"').fetchall()


def _in_scope(name: str, view: ViewTable, entity_df: pd.DataFrame, full_names: bool) -> ViewTable:
    """`view` cut to the entities of `entities_only` when the request asks about those only
    (by the first of its join keys that the scope holds), else `view` as it is."""
    scope = _SCOPE.get()
    if scope is None:
        return view
    for column, asked in view.join_keys.items():
        ids = scope.ids.get(column)
        if ids is None or asked not in entity_df:
            continue
        if not entity_df[asked].isin(ids).all():
            return view
        cut = scope.views.get((name, column, full_names))
        if cut is None:
            chosen = ibis.memtable(pa.table({"__scope_id": pa.array(ids)}))
            table = view.table
            rows = table.semi_join(chosen, table[column] == chosen["__scope_id"])
            # A temporary table of its own, dropped by `entities_only` on exit.
            held = f"aftersale_scope_{uuid.uuid4().hex}"
            backend = ibis.get_backend()
            backend.create_table(held, rows, temp=True)
            scope.tables.append(held)
            cut = scope.views[(name, column, full_names)] = backend.table(held)
        return ViewTable(cut, view.timestamp, view.created, view.join_keys, view.ttl)
    return view


def _view_features(
    config: RepoConfig,
    view: FeatureView,
    feature_refs: list[str],
    full_feature_names: bool,
) -> tuple[ViewTable, list[str]]:
    """A view's table and requested output columns, prepared as Feast's ibis join does.

    Field mappings are undone, timestamps cast to UTC, and with `full_feature_names` the
    features renamed `<view>__<feature>`.
    """
    if view.batch_source is None:
        raise ValueError(f"Feature view '{view.name}' has no batch_source and cannot be queried.")
    source = view.batch_source
    table = read_source(source, str(config.repo_path))
    for old_name, new_name in source.field_mapping.items():
        if old_name in table.columns:
            table = table.rename({new_name: old_name})
    stamps = [c for c in (source.timestamp_field, source.created_timestamp_column) if c]
    table = table.mutate(**{c: table[c].cast(dt.Timestamp(timezone="UTC")) for c in stamps})
    prefix = view.projection.name_to_use()
    names = [ref.split(":")[1] for ref in feature_refs if ref.startswith(f"{prefix}:")]
    if full_feature_names:
        base = view.projection.name_alias or view.name
        table = table.rename({f"{base}__{name}": name for name in names})
        names = [f"{base}__{name}" for name in names]
    join_keys = view.projection.join_key_map or {e.name: e.name for e in view.entity_columns}
    ttl = view.ttl if view.ttl else None  # Feast: a zero TTL never expires
    return ViewTable(
        table, source.timestamp_field, source.created_timestamp_column or None, join_keys, ttl
    ), names


def as_of_join(
    entities: Table, view: ViewTable, timestamp_col: str, tag: str, features: list[str]
) -> Table:
    """`entities` with `features` added from the newest view row at or before each event.

    Args:
        entities: Label events: the view's join keys (entity-side names), `timestamp_col`,
            anything else (passed through).
        view: The view's rows.
        timestamp_col: Event time column of `entities` (UTC).
        tag: Prefix of the helper columns, unique per view in one query.
        features: Columns of the view's table to add.

    Returns:
        One row per row of `entities` (no row dropped, none repeated unless the view holds
        several rows with equal keys, event_ts and created_ts).
    """
    table = view.table
    found_ts, found_created = f"{tag}_ts", f"{tag}_created"
    keys = {column: f"{tag}_key{i}" for i, column in enumerate(view.join_keys)}
    stamps = {view.timestamp: found_ts}
    if view.created:
        stamps[view.created] = found_created
    # Narrow side: one row per (keys, event_ts), holding its latest created_ts, of the
    # entities asked only (a request in chunks then sorts each chunk's rows, not the view's).
    narrow = table.select(*[table[c].name(n) for c, n in {**keys, **stamps}.items()])
    asked = entities.select(*[entities[view.join_keys[c]].name(n) for c, n in keys.items()])
    narrow = narrow.semi_join(asked.distinct(), list(keys.values()))
    if view.created:
        narrow = narrow.group_by([*keys.values(), found_ts]).aggregate(
            narrow[found_created].max().name(found_created)
        )
    else:
        narrow = narrow.distinct()
    picked = entities.asof_join(
        narrow,
        on=entities[timestamp_col] >= narrow[found_ts],
        predicates=[narrow[n] == entities[view.join_keys[c]] for c, n in keys.items()],
    ).select(*entities.columns, *stamps.values())
    # Wide side: the picked row's features, by equality on keys, event_ts and created_ts.
    wide = table.select(
        *[table[c].name(f"{n}_w") for c, n in {**keys, **stamps}.items()],
        *[table[f] for f in features],
    )
    predicates = [wide[f"{n}_w"] == picked[view.join_keys[c]] for c, n in keys.items()]
    predicates.append(wide[f"{found_ts}_w"] == picked[found_ts])
    if view.created:
        predicates.append(wide[f"{found_created}_w"].identical_to(picked[found_created]))
    if view.ttl is not None:
        predicates.append(picked[found_ts] >= picked[timestamp_col] - ibis.interval(view.ttl))
    joined = picked.left_join(wide, predicates, lname="", rname="{name}" + f"{tag}_right")
    return joined.select(*entities.columns, *[joined[f] for f in features])
