"""`aftersale train --data`: a dataset trained in its own data folder, the default untouched."""

from __future__ import annotations

import math
import shutil
from pathlib import Path

import pytest
from typer.testing import CliRunner

from aftersale.cli import app
from features.sources.olist import default_olist_path
from flows.train_dataset import DatasetError, train_dataset

OLIST = default_olist_path()


@pytest.fixture
def data_dir(tmp_path: Path, prefect_harness, monkeypatch) -> Path:
    """The default data folder, selected through the environment, holding one file."""
    folder = tmp_path / "data"
    folder.mkdir()
    (folder / "keep.txt").write_text("the default business")
    monkeypatch.setenv("AFTERSALE_DATA_DIR", str(folder))
    return folder


@pytest.mark.slow
def test_train_data_uses_its_own_folder(data_dir: Path, sim_dir: Path) -> None:
    result = CliRunner().invoke(
        app, ["train", "--data", str(sim_dir), "--model", "delay_risk", "--test-fraction", "0.3"]
    )
    assert result.exit_code == 0, result.output
    assert "delay_risk" in result.output
    assert "latest 30%" in result.output
    # Everything went to datasets/<name>: no raw, features, Feast or MLflow of the default;
    # only the command's log file.
    assert sorted(p.name for p in data_dir.iterdir()) == ["datasets", "keep.txt", "logs"]
    own = data_dir / "datasets" / sim_dir.name
    assert {"raw", "features", "feast", "mlflow"} <= {p.name for p in own.iterdir()}


def test_a_named_model_without_its_tables_is_refused(data_dir: Path, sim_dir: Path) -> None:
    folder = data_dir.parent / "orders_only"
    folder.mkdir()
    for table in ("customers", "orders"):
        shutil.copy(sim_dir / f"{table}.parquet", folder)
    with pytest.raises(DatasetError, match=r"delay_risk needs tables \['shipments'\]"):
        train_dataset(folder, models=["delay_risk"])
    assert sorted(p.name for p in data_dir.iterdir()) == ["datasets", "keep.txt"]


@pytest.mark.slow
@pytest.mark.real_data
@pytest.mark.skipif(not OLIST.is_file(), reason=f"Olist sample not found at {OLIST}")
def test_olist_delay_risk_beside_the_state_baseline(data_dir: Path) -> None:
    run = train_dataset(OLIST.parent, models=["delay_risk"])
    assert run.dataset.source == "olist"
    assert run.test_fraction == 0.3
    (summary,) = run.models
    # 3,512 parcels, one dispatch decision each (no scans); about 30% are tested.
    assert 900 <= summary.test_rows <= 1_150
    assert not math.isnan(summary.value)
    # The state-level late rate ranks lateness better than chance (about 0.63 expected).
    assert summary.baseline > 0.58
