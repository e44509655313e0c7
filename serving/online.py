"""Feature rows by entity key as of a decision instant: the online store, point in time.

The online store holds one row per entity, the latest one materialised. A decision at
instant t must see the newest row stamped at or before t, as training's point-in-time join
does, never a row from after it (a scan that had not happened, a snapshot on which an event
had already left its trailing window). So every online row comes with its timestamp: a row
stamped at or before t is served as it is; for the entities whose online row is newer than
t, the row as of t is read from the offline tables the online store was materialised from.
"""

from __future__ import annotations

import math
import threading
import time
from collections import OrderedDict
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd
import pyarrow as pa

from features.instants import UTC, utc_instant
from features.store.latest import latest_rows
from serving.metrics import domain_metrics

if TYPE_CHECKING:
    from features.store.sqlite_bulk import BulkSqliteOnlineStore

# The instant of the row a record came from, stored in the record under this key.
ROW_TIME = "feature_ts"


class StoreUnavailableError(RuntimeError):
    """The online feature store could not be read."""


def _python(value) -> object:
    """A Feast ValueProto as a Python scalar (None when null or unset)."""
    if value is None:
        return None
    kind = value.WhichOneof("val")
    return None if kind is None or kind == "null_val" else getattr(value, kind)


def _direct_store(provider) -> BulkSqliteOnlineStore | None:
    """The provider's online store where it is a `BulkSqliteOnlineStore` read through Feast's
    pass-through provider unchanged (so its own read is what the provider would do)."""
    from feast.infra.passthrough_provider import PassthroughProvider

    from features.store.sqlite_bulk import BulkSqliteOnlineStore

    if type(provider).online_read is not PassthroughProvider.online_read:
        return None
    store = getattr(provider, "online_store", None)
    return store if isinstance(store, BulkSqliteOnlineStore) else None


def _plain(value) -> object:
    """An offline (pandas) value as the online read gives it: None for missing."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return None
    if value is pd.NA or value is pd.NaT:
        return None
    if isinstance(value, np.generic):
        value = value.item()
        if isinstance(value, float) and math.isnan(value):
            return None
    return value


class FeatureReader:
    """Rows of one feature view by entity key, as of a decision instant.

    Args:
        store: The Feast store.
        view_name: The feature view.
        features: Feature names to read (default: all of the view's).
        offline_root: The published offline tables (`<features>/current`): the view's own
            table there (its batch source's path, which need not be the view's name) is read
            for entities whose online row is newer than the decision instant (None: such
            entities are answered as unknown, never with the newer row).
        cache_rows: Rows read from the online store kept in this process, the latest asked
            (0: none). Only where the store is our SQLite one read directly: its
            `generation` says when anything may have changed, and then every kept row is
            let go of, so a row is served from here only while the store holds exactly it.
    """

    def __init__(
        self,
        store,
        view_name: str,
        features: Sequence[str] | None = None,
        offline_root: Path | None = None,
        cache_rows: int = 0,
    ) -> None:
        from feast.protos.feast.types.EntityKey_pb2 import EntityKey
        from feast.protos.feast.types.Value_pb2 import Value

        self.store = store
        self.view = store.get_feature_view(view_name)
        self.keys = [c.name for c in self.view.entity_columns]
        self.names = list(features) if features else [f.name for f in self.view.features]
        source = getattr(self.view.batch_source, "path", None) or view_name
        self.offline_folder = None if offline_root is None else Path(offline_root) / source
        self._entity_key, self._value = EntityKey, Value
        self._provider: object | None = None
        self._direct: BulkSqliteOnlineStore | None = None
        self.cache_rows = cache_rows
        self._cache: OrderedDict[tuple, tuple[pd.Timestamp, dict] | None] = OrderedDict()
        self._cache_token: object = None
        self._cache_lock = threading.Lock()
        # Rows asked and found kept, and rows read from the store, since the reader opened.
        self.found_kept = 0
        self.read_rows = 0

    @classmethod
    def of_service(
        cls, store, service_name: str, offline_root: Path | None, cache_rows: int = 0
    ) -> FeatureReader:
        """The reader of a feature service over one view (the service's features only)."""
        service = store.get_feature_service(service_name)
        (projection,) = service.feature_view_projections
        names = [f.name for f in projection.features]
        return cls(store, projection.name, names, offline_root, cache_rows)

    @property
    def kept_rows(self) -> int:
        """Rows kept now."""
        return len(self._cache)

    def read(self, keys: Sequence[Sequence[str]], as_of: pd.Timestamp) -> list[dict | None]:
        """One dict per key tuple (in `self.keys` order), the row as of `as_of`; None where
        no row at or before it is known. Each dict holds the row's instant under `ROW_TIME`.

        Raises:
            StoreUnavailableError: The store could not be read.
        """
        started = time.perf_counter()
        try:
            return self._read(keys, utc_instant(as_of))
        finally:
            metrics = domain_metrics()
            metrics.child(metrics.reads, self.view.name).observe(time.perf_counter() - started)

    def _read(self, keys: Sequence[Sequence[str]], as_of: pd.Timestamp) -> list[dict | None]:
        try:
            found = self._found(keys)
        except Exception as error:  # any backend failure: the caller answers 503
            raise StoreUnavailableError(f"online feature store unavailable: {error}") from error
        out: list[dict | None] = []
        newer: list[int] = []
        for i, hit in enumerate(found):
            if hit is None:
                out.append(None)
                continue
            instant, record = hit
            if instant > as_of:
                out.append(None)
                newer.append(i)
                continue
            out.append(dict(record))  # a copy: a kept record stays as it was read
        if newer and self.offline_folder is not None:
            found_offline = self._offline([keys[i] for i in newer], as_of)
            for i, record in zip(newer, found_offline, strict=True):
                out[i] = record
        return out

    def _found(self, keys: Sequence[Sequence[str]]) -> list[tuple[pd.Timestamp, dict] | None]:
        """Each key's online row as a record (its instant under `ROW_TIME` too), None where
        the store has none: from the rows kept while the store's generation is the one they
        were read under, the others from the store (and kept, the latest asked first)."""
        direct = self._direct_store() if self.cache_rows > 0 else None
        if direct is None:
            self.read_rows += len(keys)
            return [self._record(hit) for hit in self._online(keys, self._direct_store())]
        with self._cache_lock:
            token = direct.generation(self.store.config)
            if token != self._cache_token:
                self._cache.clear()
                self._cache_token = token
            asked = [tuple(key) for key in keys]
            cache = self._cache
            missing = [key for key in dict.fromkeys(asked) if key not in cache]
            if missing:
                for key, hit in zip(missing, self._online(missing, direct), strict=True):
                    cache[key] = self._record(hit)
            self.read_rows += len(missing)
            self.found_kept += len(asked) - len(missing)
            found = []
            for key in asked:
                cache.move_to_end(key)
                found.append(cache[key])
            while len(cache) > self.cache_rows:
                cache.popitem(last=False)
            return found

    def _record(self, hit: tuple[pd.Timestamp, list] | None) -> tuple[pd.Timestamp, dict] | None:
        if hit is None:
            return None
        instant, values = hit
        record = {n: _python(v) for n, v in zip(self.names, values, strict=True)}
        record[ROW_TIME] = instant
        return instant, record

    def _direct_store(self) -> BulkSqliteOnlineStore | None:
        provider = self.store._get_provider()
        if provider is not self._provider:
            self._provider, self._direct = provider, _direct_store(provider)
        return self._direct

    def _online(
        self, keys: Sequence[Sequence[str]], direct: BulkSqliteOnlineStore | None
    ) -> list[tuple[pd.Timestamp, list] | None]:
        """Each key's online row: its instant and its values (Feast ValueProtos, None where
        unset) in `self.names` order; None where the store has none (`direct`: the store
        where `_direct_store` found ours, read straight).

        Straight from the store where it is our SQLite one behind Feast's pass-through
        provider (a third of a one-key read went into the provider's entity-key protos and
        per-name dicts); through the provider otherwise, as for any other online store."""
        if direct is not None:
            rows = direct.read_values(self.store.config, self.view, self.keys, keys, self.names)
            # The instant `utc_instant` makes of the stored microseconds, without a datetime.
            return [
                None if row is None else (pd.Timestamp(row[0], unit="us", tz=UTC), row[1])
                for row in rows
            ]
        entity_keys = [
            self._entity_key(
                join_keys=self.keys, entity_values=[self._value(string_val=v) for v in values]
            )
            for values in keys
        ]
        found = self._provider.online_read(
            config=self.store.config,
            table=self.view,
            entity_keys=entity_keys,
            requested_features=self.names,
        )
        return [
            None if values is None else (utc_instant(event_ts), [values.get(n) for n in self.names])
            for event_ts, values in found
        ]

    def _offline(self, keys: Sequence[Sequence[str]], as_of: pd.Timestamp) -> list[dict | None]:
        """The rows as of `as_of` from the offline table, aligned with `keys`."""
        wanted = pa.table({k: [str(v[j]) for v in keys] for j, k in enumerate(self.keys)})
        try:
            frame = latest_rows(self.offline_folder, self.keys, as_of, wanted, with_time=True)
        except Exception as error:  # the published tables could not be read
            raise StoreUnavailableError(f"offline feature tables unavailable: {error}") from error
        found = {}
        for row in frame.to_dict("records"):
            record = {n: _plain(row.get(n)) for n in self.names}
            record[ROW_TIME] = utc_instant(row["event_ts"])
            found[tuple(str(row[k]) for k in self.keys)] = record
        return [found.get(tuple(str(v) for v in key)) for key in keys]
