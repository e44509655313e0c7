"""Ingest: write a source into staging, check it against the contract, publish it.

A whole source replaces the current raw data; a day's batch (a folder whose `_batch.json`
names a day) is appended to it: checked against the contract and against the current data,
upserted, and published as a new version whose metadata records the days ingested. A
rejected batch is discarded whole and the previously published raw data stays current.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, timedelta
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from features import versioned
from features.contract.batches import (
    BATCH_FILE,
    Manifest,
    batch_violations,
    fingerprint,
    read_manifest,
    upsert,
)
from features.contract.io import find_table_file, read_table, read_validated
from features.contract.schema import CONTRACT
from features.contract.validate import check_tables, load_folder
from features.contract.violations import ValidationReport, Violation
from features.instants import watermark
from features.sources.base import Source


class ContractError(ValueError):
    """Raw data broke the contract; the message lists every violation."""

    def __init__(self, report: ValidationReport) -> None:
        self.report = report
        lines = "\n".join(f"  {v}" for v in report.violations)
        super().__init__(
            f"{len(report.violations)} contract violations in {report.folder}:\n{lines}"
        )


def stage(source: Source, raw_root: Path) -> Path:
    """Write a source into a new staging folder under `raw_root`."""
    staging = versioned.staging_dir(raw_root)
    try:
        source.write(staging)
    except BaseException:
        versioned.discard(staging)
        raise
    return staging


def check(staging: Path) -> dict[str, pa.Table]:
    """Validate a staged folder; rewrite CSV tables as typed Parquet. Raises ContractError
    (after discarding the staging folder) on any violation."""
    try:
        tables, report = load_folder(staging)
    except BaseException:
        # Validation reports bad content as violations; anything else it raises must still
        # not leave a staging folder behind.
        versioned.discard(staging)
        raise
    if not report.ok:
        versioned.discard(staging)
        raise ContractError(report)
    for name, table in tables.items():
        csv = staging / f"{name}.csv"
        if csv.exists():
            pq.write_table(table, staging / f"{name}.parquet")
            csv.unlink()
    return tables


def latest_raw(raw_root: Path) -> Path:
    """The current published raw folder; raises when nothing was ingested yet."""
    folder = versioned.current(raw_root)
    if folder is None:
        raise FileNotFoundError(f"no raw data under {raw_root}: run `aftersale ingest` first")
    return folder


class BatchError(ValueError):
    """A day's batch does not follow from the current raw data; nothing was published."""


@dataclass(frozen=True)
class Appended:
    """The outcome of appending a day's batch.

    Attributes:
        version: The current raw folder afterwards.
        day: The batch's day.
        rows: Rows in the batch.
        changed: False when the batch replayed a day already ingested (nothing published).
    """

    version: Path
    day: date
    rows: int
    changed: bool


def day_manifest(folder: Path) -> Manifest | None:
    """The manifest of a folder holding one day's batch, or None for any other folder.

    Raises:
        BatchError: The folder's `_batch.json` cannot be read.
    """
    try:
        manifest = read_manifest(folder)
    except ValueError as exc:
        raise BatchError(str(exc)) from None
    return manifest if manifest is not None and manifest.kind == "day" else None


def record_history(staging: Path) -> None:
    """Turn a staged history's manifest into the version's metadata: the last day it holds,
    from which day batches continue."""
    path = staging / BATCH_FILE
    manifest = read_manifest(staging) if path.is_file() else None
    path.unlink(missing_ok=True)
    if manifest is not None and manifest.kind == "history":
        versioned.write_metadata(staging, {"through": manifest.day.isoformat(), "days": {}})


def append_day(batch_dir: Path, raw_root: Path) -> Appended:
    """Validate one day's batch against the contract and the current raw data, then
    publish the current data with the batch upserted as a new version.

    Replaying a day already ingested, with the same content, changes nothing.

    Raises:
        ContractError: The batch, or the data with it applied, breaks the contract
            (unreadable values, unknown references, duplicate keys, time orders).
        BatchError: The batch does not follow from the current data: no current data, a
            day not after the current end (unless an exact replay) or one that skips days,
            re-sent rows that change more than their updates, rows not of its day.
    """
    manifest = day_manifest(batch_dir)
    if manifest is None:
        raise BatchError(f"{batch_dir} is not a day's batch: its {BATCH_FILE} names no day")
    day = manifest.day
    current = versioned.current(raw_root)
    if current is None:
        raise BatchError(f"no raw data under {raw_root} to append {day} to: ingest a history")
    batch = _read_batch(batch_dir)
    record = versioned.metadata(current)
    days: dict[str, str] = record.get("days", {})
    digest = fingerprint(batch)
    current_tables = read_validated(current)
    through = _through(record, current_tables)
    if day <= through:
        if days.get(day.isoformat()) == digest:
            return Appended(current, day, _rows(batch), changed=False)
        again = " and differs from the batch ingested for it" if day.isoformat() in days else ""
        raise BatchError(f"day {day} is not after the current end {through}{again}")
    if "through" in record and day > through + timedelta(days=1):
        missing = through + timedelta(days=1)
        raise BatchError(f"day {day} skips {missing}: the current data end on {through}")
    found = batch_violations(current_tables, batch, day)
    if found:
        raise BatchError(_listed(f"day {day} does not follow from the current data", found))
    combined = upsert(current_tables, batch)
    found, _ = check_tables(combined)
    if found:
        raise ContractError(ValidationReport(folder=str(batch_dir), violations=found))
    staging = versioned.staging_dir(raw_root)
    try:
        for name, table in combined.items():
            pq.write_table(table.cast(CONTRACT[name].arrow_schema), staging / f"{name}.parquet")
        days = {**days, day.isoformat(): digest}
        versioned.write_metadata(staging, {"through": day.isoformat(), "days": days})
        version = versioned.publish(staging)
    except BaseException:
        versioned.discard(staging)
        raise
    return Appended(version, day, _rows(batch), changed=True)


def ingested_through(raw_root: Path) -> date | None:
    """The last day the current raw data hold (a day batch after it appends); None before
    anything was ingested."""
    current = versioned.current(raw_root)
    if current is None:
        return None
    record = versioned.metadata(current)
    return _through(record, None if "through" in record else read_validated(current))


def _through(record: dict, tables: dict[str, pa.Table] | None) -> date:
    """The day a version's metadata says its data end on, else the day of the latest thing
    that happened in its tables (a whole source ingested without a manifest)."""
    if "through" in record:
        return date.fromisoformat(record["through"])
    return watermark(tables, happened=True).date()


def _read_batch(folder: Path) -> dict[str, pa.Table]:
    """The batch's typed tables; a table absent from the folder has no rows that day.

    Raises:
        ContractError: A table cannot be read in the contract's shape.
    """
    tables, found = {}, []
    for name, schema in CONTRACT.items():
        path, problem = find_table_file(folder, name)
        if problem is not None:
            found.append(problem)
            continue
        if path is None:
            continue
        result = read_table(path, schema)
        found.extend(result.violations)
        if result.table is not None:
            tables[name] = result.table
    if found:
        raise ContractError(ValidationReport(folder=str(folder), violations=found))
    return tables


def _rows(tables: dict[str, pa.Table]) -> int:
    return sum(table.num_rows for table in tables.values())


def _listed(headline: str, found: list[Violation]) -> str:
    lines = "\n".join(f"  {v}" for v in found)
    return f"{headline}:\n{lines}"
