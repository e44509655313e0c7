"""How any model is trained: one interface, a trainer per kind of model, one run logger.

`trainers.train_model(spec, store, settings, options)` trains a declared model
(`models.spec.ModelSpec`) with its kind's trainer (`trainers.TRAINERS`): `binary`
(calibrated classifiers), `policy` (the offer policy, valued off-policy) and `delivery`
(time-to-event windows). They share the stages: `data` (raw tables, label events,
point-in-time features) → `split` (time windows) → `fit` (LightGBM) → `calibrate` or
`conformal` → `evaluate` (metrics, per segment) → `explain` (SHAP) → `record` (one MLflow
run, registry version and champion gate, through `register`). `oracle` holds the
simulator's best achievable on a run's test rows, for benchmarks and the demo;
`model_cards` reads the serving champions' runs back for the analysts' report.
"""

from aftersale.typechecks import library_typechecks_off

# Feast's type checks cost seconds at import and nothing a correct call needs.
library_typechecks_off()
