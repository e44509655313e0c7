"""Where trained models are kept: the MLflow registry's names, aliases and champions.

Training registers versions and moves the `champion` alias (`training.register`); serving
and batch scoring load the champion through `load_champion`. The tracking URI is passed in
and set only for the duration of a call: nothing here touches MLflow's global state on
import, and the previous URIs are restored after.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

CHAMPION = "champion"
CHALLENGER = "challenger"
MODEL_ARTIFACT = "model"


class ModelUnavailableError(RuntimeError):
    """No champion of a model is registered."""


@contextlib.contextmanager
def tracking(uri: str) -> Iterator[None]:
    """Point MLflow's fluent API at `uri` (tracking and registry) for the block only."""
    import mlflow

    before_tracking = mlflow.get_tracking_uri()
    before_registry = mlflow.get_registry_uri()
    mlflow.set_tracking_uri(uri)
    mlflow.set_registry_uri(uri)
    try:
        yield
    finally:
        mlflow.set_tracking_uri(before_tracking)
        mlflow.set_registry_uri(before_registry)


def load_champion(name: str, tracking_uri: str):
    """The champion's registry version and the model object its pyfunc wraps.

    Raises:
        ModelUnavailableError: The model has no champion.
    """
    import mlflow
    from mlflow.exceptions import MlflowException

    with tracking(tracking_uri):
        client = mlflow.MlflowClient()
        try:
            version = client.get_model_version_by_alias(name, CHAMPION)
        except MlflowException as error:
            raise ModelUnavailableError(f"no {CHAMPION} version of {name!r}: {error}") from error
        loaded = mlflow.pyfunc.load_model(f"models:/{name}/{version.version}")
    return version, loaded.unwrap_python_model().model
