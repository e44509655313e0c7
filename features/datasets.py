"""Datasets trained on beside the default business: a folder of contract tables, or the
Olist sample, each in a data folder of its own.

A dataset run must not touch the default business in the data folder, so everything it
publishes (raw versions, feature tables, the Feast registry, MLflow runs) goes under
`<data_dir>/datasets/<name>`, selected for the duration of the run with `data_dir_set_to`.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from features.contract.schema import CONTRACT
from features.sources.olist import OLIST_RELATIVE_PATH

DATASETS_FOLDER = "datasets"
OLIST_FILE = OLIST_RELATIVE_PATH.name
# The Olist benchmark's split: the latest 30% of decisions are the test window.
OLIST_TEST_FRACTION = 0.3
DATA_DIR_VARIABLE = "AFTERSALE_DATA_DIR"


@dataclass(frozen=True)
class Dataset:
    """A dataset to train on.

    Attributes:
        name: Folder name under `<data_dir>/datasets/`.
        source: Ingest source kind: "folder" (contract tables) or "olist" (the adapter).
        path: What the ingest source reads: the folder, or the Olist CSV.
        test_fraction: The dataset's own test share (None: each model's split).
    """

    name: str
    source: Literal["folder", "olist"]
    path: Path
    test_fraction: float | None = None


def detect_dataset(path: Path) -> Dataset:
    """What a `--data` path holds: the Olist CSV, a folder holding it, or contract tables.

    Args:
        path: A folder of `<table>.parquet` / `<table>.csv` contract tables, a folder holding
            `olist_classified_public_dataset.csv`, or that file itself.

    Raises:
        FileNotFoundError: The path does not exist.
        ValueError: It holds neither contract tables nor the Olist file.
    """
    path = path.expanduser().resolve()
    if not path.exists():
        raise FileNotFoundError(f"--data: {path} does not exist")
    if path.is_file():
        if path.name != OLIST_FILE:
            raise ValueError(
                f"--data: {path} is a file but not the Olist sample ({OLIST_FILE}); pass a "
                "folder of contract tables instead"
            )
        return Dataset(_name(path.parent.name), "olist", path, OLIST_TEST_FRACTION)
    if (path / OLIST_FILE).is_file():
        return Dataset(_name(path.name), "olist", path / OLIST_FILE, OLIST_TEST_FRACTION)
    tables = [n for n in CONTRACT if any((path / f"{n}.{x}").is_file() for x in ("parquet", "csv"))]
    if not tables:
        raise ValueError(
            f"--data: {path} holds neither contract tables (<table>.parquet or <table>.csv "
            f"for tables such as {', '.join(list(CONTRACT)[:4])}) nor the Olist file {OLIST_FILE}"
        )
    return Dataset(_name(path.name), "folder", path)


def _name(text: str) -> str:
    """A folder name from a path component: letters, digits, dot, dash and underscore."""
    return re.sub(r"[^A-Za-z0-9._-]+", "_", text).strip("._") or "dataset"


def dataset_dir(data_dir: Path, name: str) -> Path:
    """The data folder of a dataset: `<data_dir>/datasets/<name>`."""
    return data_dir / DATASETS_FOLDER / name


@contextmanager
def data_dir_set_to(folder: Path) -> Iterator[Path]:
    """Point `get_settings().data_dir` at `folder` until the block ends, then restore it.

    The flows build their settings from the environment, step by step, so the variable is
    what reaches them all; it is process-wide, so one dataset run at a time per process.
    """
    before = os.environ.get(DATA_DIR_VARIABLE)
    os.environ[DATA_DIR_VARIABLE] = str(folder)
    try:
        yield folder
    finally:
        if before is None:
            os.environ.pop(DATA_DIR_VARIABLE, None)
        else:
            os.environ[DATA_DIR_VARIABLE] = before


def missing_tables(required: dict[str, tuple[str, ...]], present: set[str]) -> dict[str, list[str]]:
    """Per model, the required raw tables a dataset lacks (models lacking none left out).

    Args:
        required: Model name → the raw tables it needs.
        present: Tables the dataset holds.
    """
    lacking = {name: sorted(set(tables) - present) for name, tables in required.items()}
    return {name: tables for name, tables in lacking.items() if tables}
