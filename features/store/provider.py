"""A Feast provider that routes materialisation into an online store's `write_arrow`.

Configured with `provider: features.store.provider.BulkProvider` in feature_store.yaml (Feast
imports any dotted `module.Class` there). The bulk stores are `BulkSqliteOnlineStore` and
`BulkRedisOnlineStore`. With any other online store, or a feature view the bulk path cannot
take (transformations, aggregations, offline write-back, ...), every call
goes to Feast's own `PassthroughProvider` code unchanged.

`FeatureStore.materialize` / `materialize_incremental` call `materialize_single_feature_view`
and then record the interval in the registry themselves, so incremental materialisation
continues from the right point whichever path wrote the rows.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from datetime import datetime
from typing import Any, Protocol, runtime_checkable

import pandas as pd
import pyarrow as pa
from feast.infra.passthrough_provider import PassthroughProvider
from feast.infra.registry.base_registry import BaseRegistry
from feast.repo_config import RepoConfig
from feast.utils import _get_column_names, _run_pyarrow_field_mapping
from tqdm import tqdm

from features.store.bulk_encoding import supports_bulk
from features.store.redis_bulk import BulkRedisOnlineStore
from features.store.sqlite_bulk import BulkSqliteOnlineStore

log = logging.getLogger(__name__)


@runtime_checkable
class BulkOnlineStore(Protocol):
    """An online store that takes a whole Arrow table of feature rows."""

    def write_arrow(
        self,
        config: RepoConfig,
        feature_view: Any,
        table: pa.Table,
        *,
        timestamp_field: str | None = None,
        created_timestamp_column: str | None = None,
    ) -> int:
        """Write the newest row per entity; return how many stored rows changed."""
        ...


BULK_STORES = (BulkSqliteOnlineStore, BulkRedisOnlineStore)


class BulkProvider(PassthroughProvider):
    """PassthroughProvider whose materialisation into a bulk online store is vectorised."""

    def _bulk_store(self, feature_view: Any) -> BulkOnlineStore | None:
        store = self.online_store
        if isinstance(store, BulkRedisOnlineStore) and not store.bulk_enabled(self.repo_config):
            return None
        if (
            isinstance(store, BULK_STORES)
            and self.repo_config.entity_key_serialization_version == 3
            and supports_bulk(feature_view)
        ):
            return store
        return None

    def materialize_single_feature_view(
        self,
        config: RepoConfig,
        feature_view: Any,
        start_date: datetime,
        end_date: datetime,
        registry: BaseRegistry,
        project: str,
        tqdm_builder: Callable[[int], tqdm],
        disable_event_timestamp: bool = False,
    ) -> None:
        """Read the view's offline rows in [start_date, end_date] and bulk-write the latest.

        Reads exactly as Feast's local compute engine does (`pull_latest_from_table_or_query`
        when `materialization.pull_latest_features` is set, else `pull_all_from_table_or_query`,
        on the reverse-mapped column names); `write_arrow` then keeps the newest row per
        entity by (event_ts, created_ts), so both pulls give the same online state.
        """
        store = self._bulk_store(feature_view)
        if store is None:
            super().materialize_single_feature_view(
                config,
                feature_view,
                start_date,
                end_date,
                registry,
                project,
                tqdm_builder,
                disable_event_timestamp,
            )
            return
        # disable_event_timestamp needs nothing here: callers already widened the interval.
        entities = [registry.get_entity(name, project) for name in feature_view.entities]
        join_keys, feature_cols, ts_col, created_col = _get_column_names(feature_view, entities)
        pull = (
            self.offline_store.pull_latest_from_table_or_query
            if config.materialization_config.pull_latest_features
            else self.offline_store.pull_all_from_table_or_query
        )
        started = time.perf_counter()
        job = pull(
            config=config,
            data_source=feature_view.batch_source,
            join_key_columns=join_keys,
            feature_name_columns=feature_cols,
            timestamp_field=ts_col,
            created_timestamp_column=created_col,
            start_date=start_date,
            end_date=end_date,
        )
        table = job.to_arrow()
        read_s = time.perf_counter() - started
        table = _mapped(feature_view, table)
        written = store.write_arrow(config, feature_view, table)
        log.info(
            "materialised %s: %d offline rows read in %.2f s, %d online rows written in %.2f s",
            feature_view.name,
            table.num_rows,
            read_s,
            written,
            time.perf_counter() - started - read_s,
        )

    def ingest_df(
        self,
        feature_view: Any,
        df: pd.DataFrame,
        field_mapping: dict | None = None,
    ) -> None:
        """`FeatureStore.write_to_online_store`: bulk-write the frame when the view allows."""
        store = self._bulk_store(feature_view)
        if store is None:
            super().ingest_df(feature_view, df, field_mapping)
            return
        table = pa.Table.from_pandas(df, preserve_index=False)
        store.write_arrow(self.repo_config, feature_view, _mapped(feature_view, table))

    async def ingest_df_async(
        self,
        feature_view: Any,
        df: pd.DataFrame,
        field_mapping: dict | None = None,
    ) -> None:
        """Async variant; the bulk write itself is synchronous."""
        if self._bulk_store(feature_view) is None:
            await super().ingest_df_async(feature_view, df, field_mapping)
            return
        self.ingest_df(feature_view, df, field_mapping)


def _mapped(feature_view: Any, table: pa.Table) -> pa.Table:
    """Rename source columns to feature names with the batch source's field mapping."""
    mapping = feature_view.batch_source.field_mapping
    return _run_pyarrow_field_mapping(table, mapping) if mapping else table
