"""Fit LightGBM on a Dask cluster's workers, with early stopping on the validation window.

With `AFTERSALE_DASK_ADDRESS` set, the binary classifiers are fitted by
`lightgbm.dask.DaskLGBMClassifier`: data-parallel LightGBM, each worker building histograms
of its own rows and the workers summing them over LightGBM's network. The training rows
are cut into one partition per worker (every n-th row, so each partition spans the whole
training window and the bins each worker proposes come from all of it), encoded to float32
one partition at a time and placed on their worker. A trainer hands over the training
window's label events instead (`fit_retrieving_on_cluster`): each worker retrieves the
point-in-time features of its partition itself, encodes them where it fits, and sends back
only the categories it saw (the layout is their union) and the columns a report reads, so
the window's features are never gathered in one process.

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
import operator
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import lightgbm as lgb
import numpy as np
import pandas as pd

from models.served.encoding import FeatureLayout
from training.fit import (
    DEFAULT_EARLY_STOPPING,
    DEFAULT_PARAMS,
    DEFAULT_ROUNDS,
    FitResult,
    layout_from_train,
)

if TYPE_CHECKING:
    import dask.array as da
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
    workers = _workers(client)
    started = time.perf_counter()

    # One partition per worker, encoded one at a time: the client never holds the whole
    # training matrix, only the frame it already had.
    shares = [train.iloc[i :: len(workers)] for i in range(len(workers))]
    parts = [
        tuple(_placed(client, v, worker) for v in _encoded(share, layout, label, weight))
        for share, worker in zip(shares, workers, strict=True)
    ]
    del shares
    recipe = _Recipe(label, params, num_boost_round, early_stopping_rounds, weight)
    return _fit_parts(client, workers, parts, valid, layout, recipe, started)


def fit_retrieving_on_cluster(
    client: Client,
    retrieve: Callable[[pd.DataFrame], pd.DataFrame],
    events: pd.DataFrame,
    valid: pd.DataFrame,
    features: list[str],
    categorical: list[str],
    label: str = "label",
    params: dict[str, object] | None = None,
    num_boost_round: int = DEFAULT_ROUNDS,
    early_stopping_rounds: int = DEFAULT_EARLY_STOPPING,
    weight: str | None = None,
    kept_columns: Sequence[str] | None = (),
) -> tuple[FitResult, pd.DataFrame]:
    """`fit_lightgbm_on_cluster` of the training window's label events, each worker
    retrieving the features of its own partition: `retrieve(events)` (the point-in-time
    and decision-time features of those events, row for row) runs on the worker that fits
    the partition, and the frame, encoded there, never reaches the client. The partitions
    are those `fit_lightgbm_on_cluster` cuts of the retrieved window (every n-th event), and
    the layout's categories are the union of the partitions' (`training.fit.layout_from_train`
    of the window), so the fit is the same as retrieving the window here and fitting it.

    Args:
        retrieve: Label events → the same rows with their features; it must pickle
            (a module's function, or a `functools.partial` of one).
        events: The training window's label events.
        valid: The validation window, retrieved.
        features, categorical: The model's inputs and those of them that are categories.
        kept_columns: Columns of the partitions' frames handed back beside the fit (for
            reports over every labelled row); None hands back every column.

    Returns:
        The fit, and the kept columns of the training window's rows (partition after
        partition).

    Raises:
        ValueError: The cluster has no workers.
    """
    from distributed import wait

    workers = _workers(client)
    started = time.perf_counter()
    shares = [events.iloc[i :: len(workers)] for i in range(len(workers))]

    def on(worker: str, function: Callable, *args):
        return client.submit(function, *args, workers=[worker], allow_other_workers=False)

    frames = [
        on(w, retrieve, client.scatter(s, workers=[w]))
        for s, w in zip(shares, workers, strict=True)
    ]
    seen = client.gather(
        [on(w, _categories, f, categorical) for f, w in zip(frames, workers, strict=True)]
    )
    layout = FeatureLayout(
        tuple(features),
        {name: tuple(sorted(set().union(*(s[name] for s in seen)))) for name in categorical},
    )
    encoded = [
        on(w, _encoded, f, layout, label, weight) for f, w in zip(frames, workers, strict=True)
    ]
    kept = client.gather(
        [on(w, _columns, f, kept_columns) for f, w in zip(frames, workers, strict=True)]
    )
    with client.as_current():
        wait(encoded)
    del frames  # the workers let their frames go; the encoded matrices stay
    parts = []
    for values, share, worker in zip(encoded, shares, workers, strict=True):
        shapes = [(len(share), len(layout.features)), (len(share),), (len(share),)]
        dtypes = [np.float32, np.int32, np.float32]
        parts.append(
            tuple(
                _chunk(on(worker, operator.itemgetter(k), values), shapes[k], dtypes[k])
                for k in range(3 if weight else 2)
            )
        )
    del encoded
    recipe = _Recipe(label, params, num_boost_round, early_stopping_rounds, weight)
    fitted = _fit_parts(client, workers, parts, valid, layout, recipe, started)
    return fitted, pd.concat(kept, ignore_index=True)


@dataclass(frozen=True)
class _Recipe:
    """What a fit learns and how long: `fit_lightgbm_on_cluster`'s arguments of that name."""

    label: str
    params: dict[str, object] | None
    num_boost_round: int
    early_stopping_rounds: int
    weight: str | None


def _workers(client: Client) -> list[str]:
    workers = sorted(client.scheduler_info(n_workers=-1)["workers"])
    if not workers:
        raise ValueError("the Dask cluster has no workers to fit on")
    return workers


def _labels(rows: pd.DataFrame, label: str) -> np.ndarray:
    return rows[label].to_numpy(dtype=np.int32)


def _weights(rows: pd.DataFrame, weight: str) -> np.ndarray:
    return rows[weight].to_numpy(dtype=np.float32)


def _chunk(future, shape: tuple[int, ...], dtype) -> da.Array:
    import dask.array as da

    return da.from_delayed(future, shape=shape, dtype=dtype)


def _placed(client: Client, values: np.ndarray, worker: str) -> da.Array:
    """`values` held by `worker` alone, as one chunk of a Dask array."""
    future = client.scatter(values, workers=[worker], broadcast=False, hash=False)
    return _chunk(future, values.shape, values.dtype)


def _categories(frame: pd.DataFrame, categorical: list[str]) -> dict[str, set[str]]:
    """The categories each categorical column of `frame` holds (`layout_from_train`'s)."""
    layout = layout_from_train(frame, [], categorical)
    return {name: set(values) for name, values in layout.categories.items()}


def _encoded(
    frame: pd.DataFrame, layout: FeatureLayout, label: str, weight: str | None
) -> tuple[np.ndarray, ...]:
    """A partition's matrix, labels and weights (where weighted), as fitted."""
    values = (layout.matrix(frame, np.float32), _labels(frame, label))
    return (*values, _weights(frame, weight)) if weight else values


def _columns(frame: pd.DataFrame, columns: Sequence[str] | None) -> pd.DataFrame:
    return frame.copy() if columns is None else frame[list(columns)].copy()


def _fit_parts(
    client: Client,
    workers: list[str],
    parts: list[tuple[da.Array, ...]],
    valid: pd.DataFrame,
    layout: FeatureLayout,
    recipe: _Recipe,
    started: float,
) -> FitResult:
    """The data-parallel fit of the training partitions `parts` ((matrix, labels[, weights])
    held by each worker in `workers`' order), stopping on the whole validation window."""
    import dask.array as da
    from lightgbm.dask import DaskLGBMClassifier

    label, params, weight = recipe.label, recipe.params, recipe.weight
    num_boost_round, early_stopping_rounds = recipe.num_boost_round, recipe.early_stopping_rounds

    merged = {**DEFAULT_PARAMS, **(params or {})}
    merged.setdefault("metric", "binary_logloss")
    x_parts = [p[0] for p in parts]
    y_parts = [p[1] for p in parts]
    w_parts = [p[2] for p in parts] if weight else []
    # The whole validation window beside each worker's partition (see the module's note).
    x_valid, y_valid = layout.matrix(valid, np.float32), _labels(valid, label)
    xv_parts = [_placed(client, x_valid, worker) for worker in workers]
    yv_parts = [_placed(client, y_valid, worker) for worker in workers]
    wv_parts = [_placed(client, _weights(valid, weight), w) for w in workers] if weight else []
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
