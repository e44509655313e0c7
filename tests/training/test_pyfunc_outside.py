"""A registered champion is an MLflow pyfunc that opens anywhere: loaded by its registry URI
in a fresh Python process working outside the checkout, it predicts what the service's own
scoring object predicts for the same rows."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest

from features.build.derived import derive_record
from models import delay_risk
from models.served.registry import CHAMPION

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[2]
ROWS = 60
# Run by the fresh process: load the champion by its registry URI, predict, write the scores.
LOAD_AND_PREDICT = """
import sys

import mlflow.pyfunc
import pandas as pd

frame_path, scores_path, model_uri = sys.argv[1:]
model = mlflow.pyfunc.load_model(model_uri)
scores = model.predict(pd.read_parquet(frame_path))
pd.DataFrame({"probability": scores}).to_parquet(scores_path)
"""


@pytest.fixture(scope="module")
def trained(tmp_path_factory, prefect_harness, sim_dir):
    """A data folder with a delay-risk champion and a materialised online store."""
    from aftersale.settings import get_settings
    from flows.build_features import build_features
    from flows.ingest import ingest
    from flows.train import train

    folder = tmp_path_factory.mktemp("pyfunc")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("AFTERSALE_DATA_DIR", str(folder))
        ingest(source="folder", path=sim_dir)
        build_features(materialize_to_online=True)
        train(models=[delay_risk.NAME])
        yield get_settings()


@pytest.fixture(scope="module")
def served_rows(trained, sim_tables):
    """Shipments as the service reads them at the data's end: online features by id, then
    the decision-time features."""
    from features.build.tables import watermark
    from features.store.config import feature_store
    from serving.online import FeatureReader

    settings = trained
    as_of = watermark(sim_tables, happened=True)
    reader = FeatureReader.of_service(
        feature_store(settings), delay_risk.SPEC.feature_service, settings.features_dir / "current"
    )
    ids = sim_tables["shipments"].column("shipment_id").to_pylist()[-ROWS:]
    rows = reader.read([[i] for i in ids], as_of)
    records = [derive_record(row, as_of.timestamp()) for row in rows if row is not None]
    assert len(records) > ROWS // 2
    return records


def test_champion_loads_outside_the_checkout_and_predicts_like_the_service(
    trained, served_rows, tmp_path
) -> None:
    from serving.scoring import load_champion

    settings = trained
    served = load_champion(delay_risk.NAME, settings.tracking_uri)
    # The service's path (`serving.runtime.Runtime._score`): one booster call gives the
    # contributions, whose sum is the score.
    expected = served.probability_from_contributions(
        served.contributions(served.matrix_from_records(served_rows))
    )

    outside = tmp_path / "elsewhere"
    outside.mkdir()
    assert not outside.resolve().is_relative_to(ROOT)
    frame_path, scores_path = outside / "rows.parquet", outside / "scores.parquet"
    served.model.input_frame(pd.DataFrame(served_rows)).to_parquet(frame_path)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AFTERSALE_", "MLFLOW_"))}
    env["MLFLOW_TRACKING_URI"] = settings.tracking_uri
    done = subprocess.run(
        [
            *[sys.executable, "-c", LOAD_AND_PREDICT],
            *[str(frame_path), str(scores_path), f"models:/{delay_risk.NAME}@{CHAMPION}"],
        ],
        cwd=outside,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr

    scores = pq.read_table(scores_path).column("probability").to_numpy()
    assert len(scores) == len(served_rows)
    np.testing.assert_allclose(scores, expected, rtol=1e-9, atol=1e-12)
