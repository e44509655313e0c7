"""Which trainer fits which kind of model, and one call to train any declared model.

`TRAINERS` maps each `models.spec.Kind` to its trainer; every trainer has the one
interface of `training.trainer.Trainer`, so the `train` flow, the command line and the
benchmarks train any model the same way: `train_model(spec, store, settings, options)`.
"""

from __future__ import annotations

from feast import FeatureStore

from aftersale.memory import return_freed_memory
from aftersale.settings import Settings
from models.spec import Kind, ModelSpec
from training.binary import train as train_binary
from training.delivery import train_window
from training.policy import train_policy
from training.trainer import Trainer, TrainOptions, TrainResult
from training.uplift import train_uplift

TRAINERS: dict[Kind, Trainer] = {
    Kind.BINARY: train_binary,
    Kind.POLICY: train_policy,
    Kind.WINDOW: train_window,
    Kind.UPLIFT: train_uplift,
}


def train_model(
    spec: ModelSpec,
    store: FeatureStore,
    settings: Settings,
    options: TrainOptions | None = None,
) -> TrainResult:
    """Train, evaluate, explain, log and register one model with its kind's trainer.

    Raises:
        ValueError: No trainer fits the model's kind.
    """
    trainer = TRAINERS.get(spec.kind)
    if trainer is None:
        raise ValueError(f"{spec.name}: no trainer for kind {spec.kind!r}; known {list(TRAINERS)}")
    # Training frees frames of hundreds of MiB between its stages: give them back.
    return_freed_memory()
    return trainer(spec, store, settings, options or TrainOptions())
