"""Shared fixtures: one small simulated business per test session."""

from __future__ import annotations

from pathlib import Path

import pyarrow as pa
import pytest

SIM_CUSTOMERS = 400
SIM_SEED = 11


@pytest.fixture(scope="session")
def sim_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A small simulated business written as contract tables."""
    from features.sources.simulator import simulate

    out = tmp_path_factory.mktemp("sim") / "raw"
    simulate(out, customers=SIM_CUSTOMERS, seed=SIM_SEED)
    return out


@pytest.fixture(scope="session")
def sim_tables(sim_dir: Path) -> dict[str, pa.Table]:
    """The small simulated business, read and validated."""
    from features.contract.validate import load_folder

    tables, report = load_folder(sim_dir)
    assert report.ok, [str(v) for v in report.violations]
    return tables
