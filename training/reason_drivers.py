"""Churn drivers within each contact reason: what the churn champion sees behind the risk of
each reason's customers.

The churn champion scores every customer who has ordered, with their features as of one
instant (the data's end, in the report): the newest row of the customer feature table at or
before it (`features.store.latest.latest_rows`, the rows batch scoring reads) plus the
decision-time features. Customers are grouped by the reason of their latest contact, and
those who never contacted service form a group of their own; within each group, the
features with the largest mean |SHAP| contribution (log-odds of the raw model) are its
drivers. Like the report's outcomes, these are associations: a driver says what moves the
model's score, not what a customer would do if it changed.
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from features.describe import describe
from features.repo.customer_views import customer_snapshots
from features.report.outcomes import NOT_CONTACTED
from models import churn
from models.served.registry import load_champion
from training.explain import global_importance
from training.model_cards import champions
from training.monitor import customers_as_of

# Drivers shown per contact reason.
TOP_REASON_DRIVERS = 5
REASON_DRIVER_COLUMNS = [
    "model",
    "version",
    "as_of_ts",
    "reason",
    "customers",
    "mean_churn_score",
    "rank",
    "feature",
    "description",
    "mean_abs_shap",
]


def churn_drivers_by_reason(
    tracking_uri: str,
    features_dir: Path,
    as_of: pd.Timestamp,
    top: int = TOP_REASON_DRIVERS,
) -> pd.DataFrame:
    """The churn champion's `top` drivers among the customers of each latest contact reason.

    Args:
        tracking_uri: MLflow tracking and registry URI.
        features_dir: The published feature tables' root (`<data_dir>/features`).
        as_of: The instant customers are scored at (the data's end).
        top: Features per reason.

    Returns:
        A frame of `REASON_DRIVER_COLUMNS`, one row per (reason, rank), reasons sorted with
        `no contact` among them; `customers` and `mean_churn_score` (calibrated) describe
        the reason's group. Empty when churn has no champion, the SQLite store does not
        exist, or no customer feature table is published.
    """
    empty = pd.DataFrame(columns=REASON_DRIVER_COLUMNS)
    table = features_dir / "current" / customer_snapshots.name
    if not champions(tracking_uri, [churn.NAME]) or not any(table.glob("*.parquet")):
        return empty
    version, model = load_champion(churn.NAME, tracking_uri)
    customers = customers_as_of(features_dir, as_of)
    if customers.empty:
        return empty
    contributions = model.contributions(customers)
    scores = pd.Series(model.predict_proba(customers), index=customers.index)
    latest_reason = customers["last_contact_reason"].fillna(NOT_CONTACTED)
    rows = []
    for reason, group in customers.groupby(latest_reason, sort=True):
        importance = global_importance(contributions.loc[group.index]).head(top)
        for rank, (feature, mean_abs_shap) in enumerate(importance.items(), start=1):
            rows.append(
                {
                    "model": churn.NAME,
                    "version": str(version.version),
                    "as_of_ts": as_of,
                    "reason": reason,
                    "customers": len(group),
                    "mean_churn_score": float(scores.loc[group.index].mean()),
                    "rank": rank,
                    "feature": feature,
                    "description": describe(feature, model.words),
                    "mean_abs_shap": float(mean_abs_shap),
                }
            )
    return pd.DataFrame(rows, columns=REASON_DRIVER_COLUMNS)
