"""Flow `train_dataset`: train models on a dataset (a folder of contract tables, or the
Olist sample) in its own data folder, leaving the default business untouched.

Inside `<data_dir>/datasets/<name>` the usual flows run in order: ingest (validate and
publish), build_features (offline tables and Feast definitions; nothing materialised), and
train. Models whose tables the dataset lacks, or whose labels it cannot provide, are skipped
with the reason when no model was named, and refused when one was.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from prefect import flow

from aftersale.settings import get_settings
from features.datasets import Dataset, data_dir_set_to, dataset_dir, detect_dataset, missing_tables
from flows.build_features import build_features
from flows.ingest import ingest
from flows.train import train
from training.report import ModelSummary
from training.split import SplitError


class DatasetError(ValueError):
    """A named model cannot be trained on the dataset; the message says what is missing."""


@dataclass
class DatasetRun:
    """What a dataset run did.

    Attributes:
        dataset: The dataset as detected.
        data_dir: Its data folder.
        raw: The published raw version.
        features: The published feature version (None when no model could be trained).
        test_fraction: The test share used (None: each model's own split).
        models: Summaries of the trained models.
        skipped: Model → why it was not trained.
        notes: What else a reader of the results should know.
    """

    dataset: Dataset
    data_dir: Path
    raw: Path
    features: Path | None
    test_fraction: float | None
    models: list[ModelSummary] = field(default_factory=list)
    skipped: dict[str, str] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)


@flow(name="train_dataset")
def train_dataset(
    path: Path, models: list[str] | None = None, test_fraction: float | None = None
) -> DatasetRun:
    """Ingest, build and train on a dataset in its own data folder.

    Args:
        path: The dataset (see `features.datasets.detect_dataset`).
        models: Models to train (default: every model the dataset can train).
        test_fraction: Latest share of label events in the test window (default: the
            dataset's own, 0.3 for Olist, else each model's split).

    Raises:
        DatasetError: A named model needs tables the dataset lacks, or its labels there are
            of one class.
    """
    from models import MODELS

    dataset = detect_dataset(path)
    folder = dataset_dir(get_settings().data_dir.resolve(), dataset.name)
    fraction = test_fraction if test_fraction is not None else dataset.test_fraction
    names = list(models or MODELS)
    with data_dir_set_to(folder):
        raw = ingest(source=dataset.source, path=dataset.path)
        present = {p.stem for p in raw.glob("*.parquet")}
        lacking = missing_tables({n: MODELS[n].raw_tables for n in names}, present)
        if models and lacking:
            raise DatasetError(
                "; ".join(
                    f"{n} needs tables {t}, absent from {dataset.path}" for n, t in lacking.items()
                )
            )
        run = DatasetRun(dataset, folder, raw, None, fraction)
        run.skipped = {n: f"needs tables {', '.join(t)}" for n, t in lacking.items()}
        trainable = [n for n in names if n not in lacking]
        if not trainable:
            return run
        run.features = build_features(materialize_to_online=False)
        for name in trainable:
            try:
                run.models += train(models=[name], test_fraction=fraction)
            except SplitError as exc:
                if models:
                    raise DatasetError(str(exc)) from exc
                run.skipped[name] = str(exc)
    return run
