"""Flow `build_features`: compute feature tables, publish them offline, register the Feast
definitions and materialise incrementally to the online store."""

from __future__ import annotations

from datetime import datetime
from pathlib import Path

import pyarrow.parquet as pq
from prefect import flow, task
from prefect.cache_policies import NO_CACHE

from aftersale.cluster import dask_client
from aftersale.console import report_stage
from aftersale.settings import get_settings
from features.build.parallel import publish_features as build_and_publish
from features.build.parallel import watermark_of
from features.ingest import latest_raw
from features.store.config import feature_store
from features.store.sync import MaterializeRun, apply_definitions, materialize


@task(retries=2, retry_delay_seconds=5, cache_policy=NO_CACHE)
def publish_features(raw_folder: Path, root: Path) -> tuple[Path, datetime]:
    """Compute every feature table from the raw folder into a new offline version."""
    settings = get_settings()
    if settings.dask_address:
        with dask_client(settings.dask_address) as client:
            version, end = build_and_publish(raw_folder, root, client=client)
    else:
        version, end = build_and_publish(raw_folder, root, settings.feature_workers)
    return version, end.to_pydatetime()


@task(retries=2, retry_delay_seconds=5, cache_policy=NO_CACHE)
def register_definitions() -> int:
    """Apply the Feast repository (entities, sources, views, services)."""
    return apply_definitions(feature_store(get_settings()))


@task(retries=2, retry_delay_seconds=5, cache_policy=NO_CACHE)
def materialize_online(end: datetime) -> list[MaterializeRun]:
    """Materialise new rows up to `end` into the online store."""
    return materialize(feature_store(get_settings()), end)


@flow(name="build_features")
def build_features(materialize_to_online: bool = True) -> Path:
    """Build, publish, register and (optionally) materialise; returns the offline version."""
    settings = get_settings()
    raw = latest_raw(settings.raw_root)
    with report_stage("build features") as stage:
        version, _ = publish_features(raw, settings.features_dir)
        register_definitions()
        stage.rows = sum(pq.read_metadata(part).num_rows for part in version.glob("*/*.parquet"))
    if materialize_to_online:
        with report_stage("materialise") as stage:
            # Up to the data's end: rows stamped later (a window an event will leave, a due
            # date still ahead) are the future of this data, not its present.
            runs = materialize_online(watermark_of(raw, happened=True).to_pydatetime())
            stage.rows, stage.unit = len(runs), "views"
    return version
