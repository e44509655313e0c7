"""Flow `ingest`: validate and load a source into the data folder, or append a day to it."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from prefect import flow, task

from aftersale.console import report_stage
from aftersale.settings import get_settings
from features import ingest as steps
from features import versioned
from features.sources.base import FolderSource, SimulatorSource, Source
from features.sources.olist import OlistSource, default_olist_path
from models.served.registry import ModelUnavailableError
from models.served.text_reason import champion_classifier


@task(retries=2, retry_delay_seconds=5)
def stage_source(source: Source, raw_root: Path) -> Path:
    """Write the source into a staging folder."""
    return steps.stage(source, raw_root)


def reason_loader(tracking_uri: str) -> steps.ReasonLoader:
    """Loads the contact-reason champion when a batch has reasons to infer."""

    def load() -> steps.ReasonReader:
        try:
            return champion_classifier(tracking_uri)
        except ModelUnavailableError as error:
            raise LookupError(str(error).splitlines()[0]) from error

    return load


@task
def check_contract(staging: Path, tracking_uri: str) -> dict[str, int]:
    """Validate the staged tables against the contract and infer missing contact reasons."""
    tables = steps.check(staging, reason_loader(tracking_uri))
    return {name: table.num_rows for name, table in tables.items()}


@task
def publish_raw(staging: Path) -> Path:
    """Make the staged folder the current raw data."""
    steps.record_history(staging)
    return versioned.publish(staging)


@task
def append_day(batch_dir: Path, raw_root: Path, tracking_uri: str) -> steps.Appended:
    """Check a day's batch against the current raw data and publish the two together."""
    return steps.append_day(batch_dir, raw_root, reason_loader(tracking_uri))


def make_source(
    kind: Literal["simulator", "folder", "olist"], path: Path | None, customers: int, seed: int
) -> Source:
    """The source named by `kind`: the simulator, a folder, or the Olist adapter."""
    if kind == "simulator":
        return SimulatorSource(customers=customers, seed=seed)
    if kind == "olist":
        return OlistSource(path or default_olist_path())
    if path is None:
        raise ValueError("source 'folder' needs a path")
    return FolderSource(path)


@flow(name="ingest")
def ingest(
    source: Literal["simulator", "folder", "olist"] = "simulator",
    path: Path | None = None,
    customers: int | None = None,
    seed: int | None = None,
) -> Path:
    """Validate and load a source, or append a folder holding one day's batch; returns
    the current raw folder."""
    settings = get_settings()
    if source == "folder" and path is not None and steps.day_manifest(path) is not None:
        with report_stage("append day") as stage:
            appended = append_day(path, settings.raw_root, settings.tracking_uri)
            stage.rows = appended.rows
            return appended.version
    chosen = make_source(source, path, customers or settings.customers, seed or settings.seed)
    with report_stage("ingest") as stage:
        staging = stage_source(chosen, settings.raw_root)
        stage.rows = sum(check_contract(staging, settings.tracking_uri).values())
        return publish_raw(staging)
