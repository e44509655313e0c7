"""The generic training loop, one module per stage.

`split` (time windows) → `fit` (LightGBM) → `calibrate` (isotonic or Platt) → `evaluate`
(metrics, per segment) → `explain` (SHAP, reason codes) → `register` (MLflow run, registry,
champion gate); `loop.train(spec, store, settings)` runs them for a `spec.ModelSpec`, and
`model.CalibratedModel` is the artefact serving loads.
"""
