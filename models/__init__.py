"""The models: one module per model declaring what it is (entity, label, features, baseline).

How each kind of model is trained lives in `training/`; what is trained and then served
(classifier, window, encoder, reasons) in `models.served`; the policies that turn scores
into decisions beside the model they use. `MODELS` lists every declared model by name.
"""

from models import churn, delay_risk, delivery_estimate, next_best_offer, outreach_uplift
from models.spec import ModelSpec

MODELS: dict[str, ModelSpec] = {
    spec.name: spec
    for spec in (
        delay_risk.SPEC,
        churn.SPEC,
        next_best_offer.SPEC,
        delivery_estimate.SPEC,
        outreach_uplift.SPEC,
    )
}
# The service cannot start without their champions; the others are optional.
REQUIRED_MODELS = (delay_risk.SPEC.name, churn.SPEC.name)
