"""Sources of raw contract tables behind one interface.

A source writes the contract tables it has into a folder; ingest validates that folder and
only then publishes it. Sources: the simulator (the embedded default), a folder of CSV or
Parquet files in the contract's shape, and adapters for real public datasets.
"""

from __future__ import annotations

import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from features.contract.batches import BATCH_FILE
from features.contract.io import SUFFIXES
from features.contract.schema import CONTRACT


class Source(Protocol):
    """Anything that can write contract tables into an empty folder."""

    name: str

    def write(self, out_dir: Path) -> None:
        """Write `<table>.parquet` files for the tables this source has."""


@dataclass(frozen=True)
class SimulatorSource:
    """The built-in simulated business."""

    customers: int
    seed: int = 7
    months: int = 24
    name: str = "simulator"

    def write(self, out_dir: Path) -> None:
        from features.sources.simulator import simulate

        simulate(out_dir, customers=self.customers, seed=self.seed, months=self.months)


@dataclass(frozen=True)
class FolderSource:
    """A folder of `<table>.csv` or `<table>.parquet` files in the contract's shape, with
    the `_batch.json` of a history when it has one."""

    path: Path
    name: str = "folder"

    def write(self, out_dir: Path) -> None:
        # Copied byte for byte: the contract check then reads the copy, not the original.
        manifest = self.path / BATCH_FILE
        if manifest.is_file():
            shutil.copyfile(manifest, out_dir / BATCH_FILE)
        for table_name in CONTRACT:
            for suffix in SUFFIXES:
                path = self.path / f"{table_name}{suffix}"
                if path.is_file():
                    shutil.copyfile(path, out_dir / path.name)
