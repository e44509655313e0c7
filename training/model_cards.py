"""Model cards for the analysts' report: what each serving champion is and how it tests.

A card says which registry version serves, the windows it was trained and tested on, its
primary test metric beside the baseline's (and the simulator's oracle where a run logged
one), and, for a binary model, its reliability plot. The drivers of the delay-risk and
churn champions are their runs' SHAP global importance, in words. Everything is read back
from what `training.record.log_and_register` logged, so the report shows what serves, not
what was last trained.

The report runs on a fresh data folder too: a SQLite tracking store whose file does not
exist is not opened, because MLflow would create it.
"""

from __future__ import annotations

import json
import tempfile
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from features.describe import describe
from models import MODELS, churn, delay_risk
from models.served.registry import CHAMPION, tracking
from models.spec import Kind, ModelSpec

# Models whose drivers the report shows: the two whose scores people act on one by one.
DRIVER_MODELS = (delay_risk.NAME, churn.NAME)
TOP_DRIVERS = 10
# The prefix of each kind's baseline test metrics; the delivery estimate's baseline is the
# shop's promise.
BASELINE_PREFIX = {Kind.WINDOW: "test_promise_"}
DEFAULT_BASELINE_PREFIX = "test_baseline_"
ORACLE_PREFIX = "test_oracle_"
# Artefacts a card reads, as `training.binary` and `training.explain` log them.
RELIABILITY = "evaluation/reliability.png"
SHAP_SUMMARY = "explain/shap_summary.png"
SHAP_IMPORTANCE = "explain/shap_importance.csv"
FEATURES = "data/features.json"
CARD_COLUMNS = [
    "model",
    "version",
    "run_id",
    "metric",
    "test",
    "baseline",
    "oracle",
    "train_first_ts",
    "train_last_ts",
    "test_first_ts",
    "test_last_ts",
    "train_rows",
    "test_rows",
    "data_version",
    "calibration_png",
    "shap_summary_png",
]
DRIVER_COLUMNS = ["model", "version", "rank", "feature", "description", "mean_abs_shap"]


@dataclass(frozen=True)
class Champion:
    """A model's serving version and the run that trained it."""

    spec: ModelSpec
    version: str
    run_id: str
    params: dict[str, str]
    metrics: dict[str, float]


def store_exists(tracking_uri: str) -> bool:
    """Whether the tracking store can be read without creating it: a SQLite store only when
    its file exists; any other store (a server, PostgreSQL) is taken to exist."""
    if not tracking_uri.startswith("sqlite:"):
        return True
    path = tracking_uri.removeprefix("sqlite:").removeprefix("///")
    return path != ":memory:" and Path(path).is_file()


def champions(tracking_uri: str, names: Iterable[str]) -> list[Champion]:
    """The `champion` version of each named model that has one, with its run's record.

    Raises:
        KeyError: A name is not a declared model.
    """
    specs = [MODELS[name] for name in names]
    if not store_exists(tracking_uri):
        return []
    import mlflow
    from mlflow.exceptions import MlflowException

    found = []
    with tracking(tracking_uri):
        client = mlflow.MlflowClient()
        for spec in specs:
            try:
                version = client.get_model_version_by_alias(spec.name, CHAMPION)
            except MlflowException:
                continue
            run = client.get_run(version.run_id)
            found.append(
                Champion(
                    spec=spec,
                    version=str(version.version),
                    run_id=version.run_id,
                    params=dict(run.data.params),
                    metrics=dict(run.data.metrics),
                )
            )
    return found


def _artifact(tracking_uri: str, run_id: str, path: str, folder: Path) -> Path | None:
    """Download one artefact of a run; None when the run has no such artefact."""
    import mlflow
    from mlflow.exceptions import MlflowException

    try:
        local = mlflow.artifacts.download_artifacts(
            run_id=run_id, artifact_path=path, dst_path=str(folder), tracking_uri=tracking_uri
        )
    except (MlflowException, OSError):
        return None
    local_path = Path(local)
    return local_path if local_path.is_file() else None


def _png(tracking_uri: str, run_id: str, path: str) -> bytes | None:
    with tempfile.TemporaryDirectory() as scratch:
        local = _artifact(tracking_uri, run_id, path, Path(scratch))
        return local.read_bytes() if local is not None else None


def _instant(params: dict[str, str], *keys: str) -> pd.Timestamp:
    """The first of `keys` logged, as an instant (NaT: none)."""
    value = next((params[k] for k in keys if params.get(k)), None)
    return pd.Timestamp(value) if value else pd.NaT


def _count(params: dict[str, str], *keys: str) -> int | None:
    """The first of `keys` logged, as a count (None: none)."""
    value = next((params[k] for k in keys if params.get(k) not in (None, "")), None)
    return int(value) if value is not None else None


def card(champion: Champion, tracking_uri: str) -> dict[str, object]:
    """One champion's card as a row of `CARD_COLUMNS`.

    The metric, baseline and oracle are the run's `test_<metric>`, its kind's baseline
    prefix (`BASELINE_PREFIX`) and `test_oracle_<metric>`, for the spec's primary metric;
    one that was not logged is NaN.
    """
    spec, params, metrics = champion.spec, champion.params, champion.metrics
    metric = spec.primary_metric
    baseline = BASELINE_PREFIX.get(spec.kind, DEFAULT_BASELINE_PREFIX) + metric
    nan = float("nan")
    binary = spec.kind == Kind.BINARY
    return {
        "model": spec.name,
        "version": champion.version,
        "run_id": champion.run_id,
        "metric": spec.metric_label,
        "test": metrics.get(f"test_{metric}", nan),
        "baseline": metrics.get(baseline, nan),
        "oracle": metrics.get(ORACLE_PREFIX + metric, nan),
        # What the served model learned from: a refit's every labelled decision
        # (`training.binary.served_span`), else the time split's training window.
        "train_first_ts": _instant(params, "served_train_start", "split_train_start"),
        "train_last_ts": _instant(params, "served_train_end", "split_train_end"),
        "test_first_ts": _instant(params, "split_test_start"),
        "test_last_ts": _instant(params, "split_test_end"),
        "train_rows": _count(params, "served_train_rows", "split_train_rows"),
        "test_rows": _count(params, "split_test_rows"),
        "data_version": params.get("data_version", ""),
        "calibration_png": _png(tracking_uri, champion.run_id, RELIABILITY) if binary else None,
        "shap_summary_png": (
            _png(tracking_uri, champion.run_id, SHAP_SUMMARY)
            if spec.name in DRIVER_MODELS
            else None
        ),
    }


def model_cards(tracking_uri: str, names: Iterable[str] = tuple(MODELS)) -> pd.DataFrame:
    """One card per named model that has a champion, in `names` order.

    Args:
        tracking_uri: MLflow tracking and registry URI.
        names: Declared models to look up (default: every one).

    Returns:
        A frame of `CARD_COLUMNS`: windows are the run's split parameters, images are PNG
        bytes (None where the run has none); empty when no model has a champion or the
        SQLite store does not exist.
    """
    rows = [card(champion, tracking_uri) for champion in champions(tracking_uri, names)]
    return pd.DataFrame(rows, columns=CARD_COLUMNS)


def drivers(champion: Champion, tracking_uri: str, top: int = TOP_DRIVERS) -> pd.DataFrame:
    """A champion's `top` features by mean |SHAP| on its test window, with descriptions.

    Descriptions come from `features.describe` with the words the run logged for its
    features, so a description changed since training reads as it does today.
    """
    with tempfile.TemporaryDirectory() as scratch:
        folder = Path(scratch)
        importance_path = _artifact(tracking_uri, champion.run_id, SHAP_IMPORTANCE, folder)
        if importance_path is None:
            return pd.DataFrame(columns=DRIVER_COLUMNS)
        importance = pd.read_csv(importance_path)
        features_path = _artifact(tracking_uri, champion.run_id, FEATURES, folder)
        logged = json.loads(features_path.read_text()) if features_path is not None else []
    words = {f["name"]: f["description"] for f in logged if f.get("description")}
    importance = importance.sort_values(
        "mean_abs_contribution", ascending=False, kind="stable"
    ).head(top)
    return pd.DataFrame(
        {
            "model": champion.spec.name,
            "version": champion.version,
            "rank": range(1, len(importance) + 1),
            "feature": importance["feature"].to_numpy(),
            "description": [describe(f, words) for f in importance["feature"]],
            "mean_abs_shap": importance["mean_abs_contribution"].to_numpy(),
        },
        columns=DRIVER_COLUMNS,
    )


def model_drivers(
    tracking_uri: str, names: Iterable[str] = DRIVER_MODELS, top: int = TOP_DRIVERS
) -> pd.DataFrame:
    """The drivers (`drivers`) of each named model's champion, one row per feature.

    Returns:
        A frame of `DRIVER_COLUMNS`, each model's features by mean |SHAP| descending; empty
        when no named model has a champion or its run logged no importance.
    """
    frames = [drivers(c, tracking_uri, top) for c in champions(tracking_uri, names)]
    frames = [frame for frame in frames if not frame.empty]
    if not frames:
        return pd.DataFrame(columns=DRIVER_COLUMNS)
    return pd.concat(frames, ignore_index=True)


POLICIES = ("model", "popularity", "random")
DECISION_COLUMNS = ["model", "version", "kind", "name", "value", "low", "high", "note"]


def _decision(champion: Champion, kind: str, name: str, key: str, note: str = "") -> dict | None:
    """One logged figure of a champion with its interval (`<key less _effect>_low`/`_high`,
    where logged); None when the run has no such metric."""
    metrics = champion.metrics
    if key not in metrics:
        return None
    stem = key.removesuffix("_effect")
    return {
        "model": champion.spec.name,
        "version": champion.version,
        "kind": kind,
        "name": name,
        "value": metrics[key],
        "low": metrics.get(f"{stem}_low"),
        "high": metrics.get(f"{stem}_high"),
        "note": note,
    }


def decisions(tracking_uri: str) -> pd.DataFrame:
    """What the decision champions are worth, from their runs' logged test metrics.

    - The offer policy's value per decision (doubly robust off-policy estimate, with its
      95% interval) beside the popularity and random policies (`kind` "policy value").
    - Each outreach action's observed uplift on the test window (sent less held out), with
      the model's mean predicted uplift as a note (`kind` "outreach effect"), and each
      second outcome's measured effect with its 90% interval (`kind` "second outcome").

    Returns:
        A frame of `DECISION_COLUMNS`; empty without such champions.
    """
    from features.contract.schema import OUTREACH_ACTIONS
    from models import next_best_offer, outreach_uplift

    rows = []
    for champion in champions(tracking_uri, (next_best_offer.NAME, outreach_uplift.NAME)):
        metrics = champion.metrics
        if champion.spec.name == next_best_offer.NAME:
            for policy in POLICIES:
                rows.append(_decision(champion, "policy value", policy, f"test_policy_{policy}_dr"))
            continue
        for action in OUTREACH_ACTIONS:
            predicted = metrics.get(f"test_action_{action}_predicted_uplift")
            note = "" if predicted is None else f"predicted {predicted:+.3f}"
            key = f"test_action_{action}_observed_uplift"
            rows.append(_decision(champion, "outreach effect", action, key, note))
        for outcome, (actions, _, words) in outreach_uplift.SECOND_OUTCOMES.items():
            for action in actions:
                key = f"second_{outcome}_{action}_effect"
                rows.append(_decision(champion, "second outcome", f"{action}: {words}", key))
    return pd.DataFrame([r for r in rows if r is not None], columns=DECISION_COLUMNS)
