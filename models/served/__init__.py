"""What is trained and then served: the objects training produces and serving loads.

- `encoding`: a model's input layout and its one encoder, frames and records alike.
- `calibration`: the fitted map from raw to calibrated probability.
- `reasons`: SHAP contributions and the reasons in words.
- `classifier`: the calibrated binary classifier (`CalibratedModel`) and its MLflow pyfunc.
- `window`: the time-to-event window model (`WindowModel`), local dates and its pyfunc.

Nothing here imports training or Feast: serving and batch scoring import these alone.
"""
