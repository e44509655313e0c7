"""Fit LightGBM on a Dask cluster's workers, with early stopping on the validation window.

With `AFTERSALE_DASK_ADDRESS` set, the binary classifiers are fitted by
`lightgbm.dask.DaskLGBMClassifier`: data-parallel LightGBM, each worker building histograms
of its own rows and the workers summing them over LightGBM's network. The training rows
are cut into one partition per worker (every n-th row, so each partition spans the whole
training window and the bins each worker proposes come from all of it), encoded to float32
one partition at a time and placed on their worker.

lightgbm.dask (4.7) does not support early stopping: a worker stops on its own share of
the validation rows, the workers disagree, and training hangs (LightGBM issues #4493 and
#6351). Here every worker is given the whole validation window instead, so each computes
the same metric of the same model after each tree and all stop at the same one; the
validation window, a fraction of the training rows, is then held once per worker.

lightgbm.dask numbers the workers for LightGBM's network (rank 0 returns the model) in the
order `Client.who_has` lists where the parts are, and `who_has` collects the parts' keys
through a set: the order changed from fit to fit, and with it which worker's rows bin which
feature, so one cluster, one seed and the same data gave two different models in six fits.
The client handed to lightgbm.dask lists them by the workers' addresses
(`_AddressOrderedClient`), so the ranks are those of the sorted workers, which the
partitions follow, and a fit is the same from run to run.

The fit returns the same `FitResult` as one machine's: a plain `lgb.Booster` truncated to
its best iteration, so calibration, explanations and the registry do not change.
"""

from __future__ import annotations

import logging
import time
from typing import TYPE_CHECKING

import lightgbm as lgb
import numpy as np
import pandas as pd

from models.served.encoding import FeatureLayout
from training.fit import DEFAULT_EARLY_STOPPING, DEFAULT_PARAMS, DEFAULT_ROUNDS, FitResult

if TYPE_CHECKING:
    from distributed import Client

log = logging.getLogger(__name__)

VALIDATION = "validation"


class _AddressOrderedClient:
    """A Dask client whose `who_has` lists the parts in the order of the workers' addresses
    holding them (each part's own workers sorted too); everything else is the client's."""

    def __init__(self, client: Client) -> None:
        self._client = client

    def __getattr__(self, name: str):
        return getattr(self._client, name)

    def who_has(self, *args, **kwargs) -> dict:
        held = self._client.who_has(*args, **kwargs)
        placed = {key: sorted(workers) for key, workers in held.items()}
        return dict(sorted(placed.items(), key=lambda item: (item[1][:1], str(item[0]))))


def fit_lightgbm_on_cluster(
    client: Client,
    train: pd.DataFrame,
    valid: pd.DataFrame,
    layout: FeatureLayout,
    label: str = "label",
    params: dict[str, object] | None = None,
    num_boost_round: int = DEFAULT_ROUNDS,
    early_stopping_rounds: int = DEFAULT_EARLY_STOPPING,
    weight: str | None = None,
) -> FitResult:
    """Fit a binary LightGBM classifier on the cluster's workers, stopping when the
    validation metric stops improving; the arguments are `training.fit.fit_lightgbm`'s.

    Raises:
        ValueError: The cluster has no workers.
    """
    import dask.array as da
    from lightgbm.dask import DaskLGBMClassifier

    workers = sorted(client.scheduler_info(n_workers=-1)["workers"])
    if not workers:
        raise ValueError("the Dask cluster has no workers to fit on")
    merged = {**DEFAULT_PARAMS, **(params or {})}
    merged.setdefault("metric", "binary_logloss")
    started = time.perf_counter()

    def placed(values: np.ndarray, worker: str) -> da.Array:
        """`values` held by `worker` alone, as one chunk of a Dask array."""
        future = client.scatter(values, workers=[worker], broadcast=False, hash=False)
        return da.from_delayed(future, shape=values.shape, dtype=values.dtype)

    def labels(rows: pd.DataFrame) -> np.ndarray:
        return rows[label].to_numpy(dtype=np.int32)

    def weights(rows: pd.DataFrame) -> np.ndarray:
        return rows[weight].to_numpy(dtype=np.float32)

    # One partition per worker, encoded one at a time: the client never holds the whole
    # training matrix, only the frame it already had.
    shares = [train.iloc[i :: len(workers)] for i in range(len(workers))]
    x_parts, y_parts, w_parts = [], [], []
    for share, worker in zip(shares, workers, strict=True):
        x_parts.append(placed(layout.matrix(share, np.float32), worker))
        y_parts.append(placed(labels(share), worker))
        if weight:
            w_parts.append(placed(weights(share), worker))
    del shares
    # The whole validation window beside each worker's partition (see the module's note).
    x_valid, y_valid = layout.matrix(valid, np.float32), labels(valid)
    xv_parts = [placed(x_valid, worker) for worker in workers]
    yv_parts = [placed(y_valid, worker) for worker in workers]
    wv_parts = [placed(weights(valid), worker) for worker in workers] if weight else []
    del x_valid

    # Each worker fits with as many threads as it has (lightgbm.dask sets them).
    cluster_params = {k: v for k, v in merged.items() if k != "num_threads"}
    model = DaskLGBMClassifier(
        client=_AddressOrderedClient(client), n_estimators=num_boost_round, **cluster_params
    )
    # lightgbm.dask waits on its parts with the current client; ours is not the default.
    with client.as_current():
        model.fit(
            da.concatenate(x_parts),
            da.concatenate(y_parts),
            sample_weight=da.concatenate(w_parts) if weight else None,
            eval_X=(da.concatenate(xv_parts),),
            eval_y=(da.concatenate(yv_parts),),
            eval_names=[VALIDATION],
            eval_sample_weight=[da.concatenate(wv_parts)] if weight else None,
            feature_name=list(layout.features),
            categorical_feature=layout.categorical_indices,
            callbacks=[lgb.early_stopping(early_stopping_rounds, verbose=False)]
            if early_stopping_rounds > 0
            else None,
        )
    booster = model.booster_
    best = model.best_iteration_ or booster.current_iteration()
    metric = str(merged["metric"])
    score = model.best_score_.get(VALIDATION, {}).get(metric, float("nan"))
    seconds = time.perf_counter() - started
    log.info(
        "fitted %d trees (best %d) on %d Dask workers in %.1f s; validation %s %.5f",
        booster.current_iteration(),
        best,
        len(workers),
        seconds,
        metric,
        score,
    )
    # The parameters as one machine's fit records them; the workers' network settings
    # are the run's, not the model's.
    return FitResult(booster, layout, merged, int(best), float(score), seconds)
