"""Flow `build_features`: compute feature tables, publish them offline, register the Feast
definitions and materialise incrementally to the online store."""

from __future__ import annotations

from datetime import datetime
from pathlib import Path

import pyarrow as pa
from prefect import flow, task
from prefect.cache_policies import NO_CACHE

from aftersale.settings import get_settings
from features.build.tables import build_feature_tables, publish_tables, watermark
from features.contract.validate import load_folder
from features.ingest import ContractError, latest_raw
from features.store.config import feature_store
from features.store.sync import MaterializeRun, apply_definitions, materialize


# Feature tables are large in-memory objects: never hash or persist them as task inputs.
@task(cache_policy=NO_CACHE)
def compute_features(raw_folder: Path) -> tuple[dict[str, pa.Table], datetime]:
    """Read the raw tables and compute every feature table."""
    tables, report = load_folder(raw_folder)
    if not report.ok:
        raise ContractError(report)
    return build_feature_tables(tables), watermark(tables).to_pydatetime()


@task(retries=2, retry_delay_seconds=5, cache_policy=NO_CACHE)
def publish_features(feature_tables: dict[str, pa.Table], root: Path) -> Path:
    """Write the feature tables as a new offline version and make it current."""
    return publish_tables(feature_tables, root)


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
    feature_tables, end = compute_features(latest_raw(settings.raw_root))
    version = publish_features(feature_tables, settings.features_dir)
    register_definitions()
    if materialize_to_online:
        materialize_online(end)
    return version
