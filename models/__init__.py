"""The models: one module per model saying what it is (entity, label, features, baseline).

How a model is trained lives in `training/`; `training.loop.train(REGISTRY[name], ...)`
trains one.
"""

from models import churn, delay_risk
from training.spec import ModelSpec

REGISTRY: dict[str, ModelSpec] = {
    delay_risk.NAME: delay_risk.SPEC,
    churn.NAME: churn.SPEC,
}
