"""Ingest: write a source into staging, check it against the contract, publish it.

A rejected batch is discarded whole and the previously published raw data stays current.
"""

from __future__ import annotations

from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from features import versioned
from features.contract.validate import load_folder
from features.contract.violations import ValidationReport
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
