"""The models: one module per model saying what it is (entity, label, features, baseline).

How a model is trained lives in `training/`. `MODELS` lists every trainable model by name
(`training.entry.ModelEntry`); `REGISTRY` the binary classifiers the generic loop trains
from their `training.spec.ModelSpec`.
"""

from models import churn, delay_risk, delivery_estimate, next_best_offer
from training.entry import ModelEntry
from training.spec import ModelSpec

REGISTRY: dict[str, ModelSpec] = {
    delay_risk.NAME: delay_risk.SPEC,
    churn.NAME: churn.SPEC,
}

MODELS: dict[str, ModelEntry] = {
    entry.name: entry
    for entry in (
        delay_risk.ENTRY,
        churn.ENTRY,
        next_best_offer.ENTRY,
        delivery_estimate.ENTRY,
    )
}
