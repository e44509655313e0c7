"""Flow `pipeline`: the main job, end to end, on one source."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from prefect import flow

from flows.build_features import build_features
from flows.ingest import ingest
from flows.train import train


@flow(name="pipeline")
def pipeline(
    source: Literal["simulator", "folder", "olist"] = "simulator",
    path: Path | None = None,
    customers: int | None = None,
    seed: int | None = None,
) -> dict[str, object]:
    """Ingest a source, build and materialise its features, train the models."""
    raw = ingest(source=source, path=path, customers=customers, seed=seed)
    features = build_features(materialize_to_online=True)
    models = train()
    return {"raw": raw, "features": features, "models": models}
