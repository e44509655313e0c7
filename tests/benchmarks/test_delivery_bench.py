"""The delivery window's figures: `aftersale train` returns and prints its coverage and
median width beside its MAE, and on the Olist sample the command and the benchmark test the
same split and report the same figures."""

from __future__ import annotations

import math
from pathlib import Path

import pandas as pd
import pytest
from rich.console import Console
from typer.testing import CliRunner

from features.sources.olist import default_olist_path
from models import churn, delivery_estimate
from training.report import summarize
from training.trainer import TrainResult

OLIST = default_olist_path()


def _result(name: str, metrics: dict[str, float], primary: str) -> TrainResult:
    """A run's result as a trainer returns it, unregistered."""
    return TrainResult(
        name=name,
        primary_metric=primary,
        metrics=metrics,
        baseline_metrics={primary: metrics[primary] + 1.0},
        validation_metrics={},
        calibration={},
        data_version="test",
        features=[],
        split={},
        scores=pd.DataFrame({"score": [0.1, 0.2, 0.3]}),
        model=None,
        seconds={"total": 1.0},
    )


@pytest.mark.parametrize(
    ("spec", "metrics", "coverage", "width"),
    [
        (
            delivery_estimate.SPEC,
            {"mae_days": 8.1, "coverage": 0.886, "median_width_days": 29.0},
            0.886,
            29.0,
        ),
        (churn.SPEC, {"roc_auc": 0.7}, None, None),
    ],
)
def test_a_window_models_summary_carries_its_coverage_and_width(
    spec, metrics, coverage, width
) -> None:
    summary = summarize(spec, _result(spec.name, metrics, spec.primary_metric), None)
    assert summary.value == metrics[spec.primary_metric]
    assert summary.coverage == coverage
    assert summary.median_width_days == width


def _printed(summaries) -> str:
    from aftersale.cli import render_models

    console = Console(record=True, width=140)
    console.print(render_models(summaries))
    return console.export_text()


def _row(text: str, name: str) -> dict[str, str]:
    """The cells of one model's row of the printed models table, by column header."""
    lines = text.splitlines()
    header = next(line for line in lines if "model score" in line)
    row = next(line for line in lines if line.startswith("│") and f" {name} " in line)
    names = [cell.strip() for cell in header.split("┃")[1:-1]]
    return dict(zip(names, (cell.strip() for cell in row.split("│")[1:-1]), strict=True))


def test_the_models_table_prints_a_window_models_coverage_and_width() -> None:
    window = summarize(
        delivery_estimate.SPEC,
        _result(
            delivery_estimate.NAME,
            {"mae_days": 8.138, "coverage": 0.8861, "median_width_days": 29.0},
            "mae_days",
        ),
        None,
    )
    binary = summarize(churn.SPEC, _result(churn.NAME, {"roc_auc": 0.7}, "roc_auc"), None)
    text = _printed([window, binary])
    row = _row(text, delivery_estimate.NAME)
    assert (row["model score"], row["coverage"], row["width (d)"]) == ("8.138", "0.886", "29.0")
    assert _row(text, churn.NAME)["coverage"] == "—"
    # Without a window model the table keeps its columns.
    assert "coverage" not in _printed([binary])


@pytest.mark.slow
@pytest.mark.real_data
@pytest.mark.skipif(not OLIST.is_file(), reason=f"Olist sample not found at {OLIST}")
def test_the_command_and_the_benchmark_report_the_same_olist_window(
    tmp_path: Path, prefect_harness, monkeypatch
) -> None:
    """`aftersale train --model delivery_estimate --data <Olist sample>` and
    `python -m benchmarks delivery` test the same decisions: the same MAE, coverage and
    median width, returned and printed."""
    import aftersale.cli as cli
    from benchmarks.delivery import bench_olist

    monkeypatch.setenv("AFTERSALE_DATA_DIR", str(tmp_path / "data"))
    rendered = []

    def render_models(summaries, **kwargs):
        rendered.extend(summaries)
        return original(summaries, **kwargs)

    original = cli.render_models
    monkeypatch.setattr(cli, "render_models", render_models)
    result = CliRunner().invoke(
        cli.app, ["train", "--model", delivery_estimate.NAME, "--data", str(OLIST.parent)]
    )
    assert result.exit_code == 0, result.output
    (summary,) = rendered
    bench = bench_olist(tmp_path / "bench")
    assert bench is not None
    assert summary.test_rows == bench["rows"]
    assert summary.value == pytest.approx(bench["mae_days"], abs=1e-12)
    assert summary.coverage == pytest.approx(bench["coverage"], abs=1e-12)
    assert summary.median_width_days == pytest.approx(bench["median_width_days"], abs=1e-12)
    assert not math.isnan(summary.value)
    printed = _row(result.output, delivery_estimate.NAME)
    assert printed["model score"] == f"{bench['mae_days']:.3f}"
    assert printed["coverage"] == f"{bench['coverage']:.3f}"
    assert printed["width (d)"] == f"{bench['median_width_days']:.1f}"
