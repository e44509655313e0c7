"""One line per trained model for people: the test metric beside its baseline, the
simulator's oracle where the data come with one, which registry version is champion, and
for a window model the coverage and median width of its window on the same test rows."""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

from models.spec import Kind, ModelSpec
from training.oracle import ORACLES
from training.trainer import TrainResult

TRUTH_FOLDER = "_truth"


@dataclass(frozen=True)
class ModelSummary:
    """What one training run amounts to.

    Attributes:
        name: Model name.
        metric: Human label of the primary metric.
        value: The model's primary test metric.
        baseline: The baseline's, on the same rows.
        oracle: The simulator's best achievable on the oracle's rows (None without truth).
        oracle_model: The model on the oracle's rows (None without truth).
        oracle_baseline: The baseline on the oracle's rows (None without truth).
        oracle_rows: Test rows the oracle scores.
        version: Registered version of this run (None when not registered).
        champion: The champion version after the gate (None when not registered).
        promoted: Whether this run's version became champion.
        reason: The gate's reason.
        run_id: MLflow run id.
        seconds: Wall time of the run.
        test_rows: Rows of the test window the metric and baseline were measured on.
        coverage: A window model's share of test outcomes inside its window (None for
            other kinds).
        median_width_days: A window model's median window width in days on the test rows
            (None for other kinds).
    """

    name: str
    metric: str
    value: float
    baseline: float
    oracle: float | None
    oracle_model: float | None
    oracle_baseline: float | None
    oracle_rows: int | None
    version: str | None
    champion: str | None
    promoted: bool
    reason: str
    run_id: str | None
    seconds: float
    test_rows: int | None = None
    coverage: float | None = None
    median_width_days: float | None = None


def test_decisions(scores) -> int:
    """Test decisions behind a run's scores (a policy's scores hold one row per candidate
    action of each decision)."""
    return int(scores["decision"].nunique()) if "decision" in scores else len(scores)


def summarize(spec: ModelSpec, result: TrainResult, raw_folder: Path | None) -> ModelSummary:
    """Summarise a run; the oracle is scored when `raw_folder` holds the simulator's truth."""
    truth = raw_folder / TRUTH_FOLDER if raw_folder is not None else None
    comparison = None
    oracle = ORACLES.get(spec.name)
    if oracle is not None and truth is not None and truth.is_dir():
        comparison = oracle(result, truth)
    promotion = result.promotion
    champion = None
    window = spec.kind == Kind.WINDOW
    if promotion is not None:
        champion = result.version if promotion.promoted else promotion.champion_version
    return ModelSummary(
        name=result.name,
        metric=spec.metric_label,
        value=float(result.metrics[result.primary_metric]),
        baseline=float(result.baseline_metrics.get(result.primary_metric, math.nan)),
        oracle=comparison.oracle if comparison else None,
        oracle_model=comparison.model if comparison else None,
        oracle_baseline=comparison.baseline if comparison else None,
        oracle_rows=comparison.rows if comparison else None,
        version=result.version,
        champion=champion,
        promoted=bool(promotion and promotion.promoted),
        reason=promotion.reason if promotion else "not registered",
        run_id=result.run_id,
        seconds=float(result.seconds.get("total", math.nan)),
        test_rows=test_decisions(result.scores),
        coverage=float(result.metrics["coverage"]) if window else None,
        median_width_days=float(result.metrics["median_width_days"]) if window else None,
    )
