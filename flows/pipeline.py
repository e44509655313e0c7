"""Flow `pipeline`: the main job, end to end, on one source."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from prefect import flow

from flows.build_features import build_features
from flows.ingest import ingest


@flow(name="pipeline")
def pipeline(
    source: Literal["simulator", "folder", "olist"] = "simulator",
    path: Path | None = None,
    customers: int | None = None,
    seed: int | None = None,
) -> dict[str, Path]:
    """Ingest a source, then build and materialise its features."""
    raw = ingest(source=source, path=path, customers=customers, seed=seed)
    features = build_features(materialize_to_online=True)
    return {"raw": raw, "features": features}
