"""The Hillstrom part of the uplift benchmark: its written test rows point at the CSV rows
whose treatment and outcome they state."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from benchmarks.uplift import HILLSTROM_CONTROL, bench_hillstrom, hillstrom_path

LIMIT = 4_000

needs_data = pytest.mark.skipif(
    not hillstrom_path().is_file(), reason=f"Hillstrom data not found at {hillstrom_path()}"
)


@pytest.fixture(scope="module")
def written(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, float]]:
    out = tmp_path_factory.mktemp("uplift")
    figures = bench_hillstrom(out, limit=LIMIT, outcomes=("visit",), resamples=10)
    return out, figures


@pytest.mark.real_data
@needs_data
def test_rows_state_the_csv_treatment_and_outcome(
    written: tuple[Path, dict[str, float]],
) -> None:
    out, _ = written
    rows = pd.read_parquet(out / "uplift_hillstrom_visit.parquet")
    data = pd.read_csv(hillstrom_path(), nrows=LIMIT)

    assert list(rows.columns) == ["row", "treatment", "outcome", "score"]
    assert rows["row"].is_unique
    assert rows["row"].between(0, LIMIT - 1).all()
    # The seeded 30% test share of the rows read.
    assert len(rows) == round(LIMIT * 0.3)
    source = data.iloc[rows["row"].to_numpy()]
    expected_treatment = (source["segment"] != HILLSTROM_CONTROL).astype(np.int64).to_numpy()
    np.testing.assert_array_equal(rows["treatment"].to_numpy(), expected_treatment)
    np.testing.assert_array_equal(rows["outcome"].to_numpy(), source["visit"].to_numpy())
    assert np.isfinite(rows["score"].to_numpy()).all()


@pytest.mark.real_data
@needs_data
def test_figures_are_finite(written: tuple[Path, dict[str, float]]) -> None:
    _, figures = written
    for name in ("visit_chosen_qini", "visit_response_qini", "visit_average_effect"):
        assert np.isfinite(figures[name]), name
