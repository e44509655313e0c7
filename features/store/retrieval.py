"""Point-in-time training data from label events, one row per event, through Feast.

Feast's file offline store loses label events in two ways: an event that found no feature
row at or before its time (an entity not yet known, or unknown) is dropped rather than
given missing values, and of several events sharing one entity and timestamp only one keeps
its values. Training sets built on that silently lose rows, and not at random (new
customers, repeated snapshots). The default DuckDB store (`features.store.duckdb_offline`)
keeps every event, but the guarantee belongs here, whatever store is configured: Feast is
asked once per distinct (entity, timestamp) and the answer is joined back onto every label
event, so each event yields exactly one row, in input order, with missing values where
nothing was known.
"""

from __future__ import annotations

import pandas as pd
from feast import FeatureService, FeatureStore

ROW_ID = "_label_row"
TIMESTAMP = "event_timestamp"


class RetrievalError(RuntimeError):
    """Feast answered with more than one row for a label event."""


def feature_names(store: FeatureStore, features: FeatureService | list[str]) -> list[str]:
    """Output column names of a feature service or a list of "view:feature" references."""
    if isinstance(features, FeatureService):
        return [
            f.name for projection in features.feature_view_projections for f in projection.features
        ]
    return [ref.split(":", 1)[1] for ref in features]


def historical_features(
    store: FeatureStore,
    entity_df: pd.DataFrame,
    features: FeatureService | list[str],
) -> pd.DataFrame:
    """Features as of each label event.

    Args:
        store: The Feast store.
        entity_df: Label events: join keys, `event_timestamp` (UTC) and any other columns
            (labels, weights), which are passed through.
        features: A feature service or "view:feature" references.

    Returns:
        `entity_df` (same rows, same order, same index) with the feature columns added.
    """
    if TIMESTAMP not in entity_df:
        raise ValueError(f"entity_df needs an {TIMESTAMP!r} column")
    frame = entity_df.reset_index(drop=True).copy()
    frame[TIMESTAMP] = pd.to_datetime(frame[TIMESTAMP], utc=True)
    keys = [k for k in join_keys(store, features) if k in frame.columns]
    frame[ROW_ID] = frame.groupby([*keys, TIMESTAMP], sort=False, dropna=False).ngroup()
    distinct = frame.drop_duplicates(ROW_ID)[[*keys, TIMESTAMP, ROW_ID]]
    got = store.get_historical_features(entity_df=distinct, features=features).to_df()
    if got[ROW_ID].duplicated().any():
        raise RetrievalError("Feast returned several rows for one (entity, timestamp)")
    names = [n for n in feature_names(store, features) if n in got.columns]
    out = frame.merge(got[[ROW_ID, *names]], on=ROW_ID, how="left").drop(columns=ROW_ID)
    out.index = entity_df.index
    return out


def join_keys(store: FeatureStore, features: FeatureService | list[str]) -> list[str]:
    """Join keys of every feature view the request touches."""
    if isinstance(features, FeatureService):
        views = [p.name for p in features.feature_view_projections]
    else:
        views = sorted({ref.split(":", 1)[0] for ref in features})
    keys: list[str] = []
    for view in views:
        for column in store.get_feature_view(view).entity_columns:
            if column.name not in keys:
                keys.append(column.name)
    return keys
