"""What the service tells a Prometheus scraper about its answers, on `/metrics`.

BentoML's own metrics already count requests by route and HTTP status and time them
(`bentoml_service_request_total`, `bentoml_service_request_duration_seconds`); these add what
only the service knows:

- `aftersale_ids_total{model, status}`: ids answered per model and status (`ok`,
  `unknown_id`, `delivered`, `likely_lost`, `no_order`; for offers `ok` or `cold_start`): the
  unknown-id rate is `unknown_id` over the model's total;
- `aftersale_score{model}`: the distribution of calibrated scores served;
- `aftersale_band_total{model, band}`: scores served per band;
- `aftersale_model_loaded{model, version}`: 1 for each champion version loaded, 0 once a
  reload replaced it;
- `aftersale_online_read_seconds{view}`: online-store reads, point-in-time fallback
  included;
- `aftersale_model_retrain_due{model}`: 1 while the monitor has marked the model for
  retraining, else 0.

prometheus-client is imported when the service first reports, not when this module is: the
BentoML worker names its multiprocess folder (`PROMETHEUS_MULTIPROC_DIR`) at start-up, after
importing the service, and a client imported before that would count in a registry nobody
scrapes.
"""

from __future__ import annotations

import threading
from collections.abc import Iterable, Sequence
from functools import cache

SCORE_BUCKETS = (0.05, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 1.0)
READ_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5)


class DomainMetrics:
    """The service's own metrics, registered once per process."""

    def __init__(self) -> None:
        import prometheus_client as prom

        self.ids = prom.Counter(
            "aftersale_ids", "Ids answered, by model and status.", ["model", "status"]
        )
        self.scores = prom.Histogram(
            "aftersale_score", "Calibrated scores served.", ["model"], buckets=SCORE_BUCKETS
        )
        self.bands = prom.Counter(
            "aftersale_band", "Scores served, by model and band.", ["model", "band"]
        )
        self.loaded = prom.Gauge(
            "aftersale_model_loaded",
            "1 for each champion version the service has loaded, 0 once replaced.",
            ["model", "version"],
            multiprocess_mode="livemax",
        )
        self.reads = prom.Histogram(
            "aftersale_online_read_seconds",
            "Online feature-store reads, point-in-time fallback included.",
            ["view"],
            buckets=READ_BUCKETS,
        )
        self.retrain_due = prom.Gauge(
            "aftersale_model_retrain_due",
            "1 while the monitor has marked the model for retraining, else 0.",
            ["model"],
            multiprocess_mode="livemax",
        )
        self._versions: dict[str, str] = {}
        self._lock = threading.Lock()
        self._children: dict[tuple[int, tuple[str, ...]], object] = {}

    def child(self, metric, *labels: str):
        """`metric.labels(*labels)`, looked up once: the client checks and locks on each call,
        a cost paid several times per answer, and gives the same child every time."""
        key = (id(metric), labels)
        found = self._children.get(key)
        if found is None:
            found = self._children[key] = metric.labels(*labels)
        return found

    def answered(
        self,
        model: str,
        statuses: Iterable[str],
        probabilities: Sequence[float] = (),
        bands: Iterable[str] = (),
    ) -> None:
        """Count one answer: each id's status, and the scores and bands it served."""
        for status in statuses:
            self.child(self.ids, model, status).inc()
        for p in probabilities:
            self.child(self.scores, model).observe(p)
        for band in bands:
            self.child(self.bands, model, band).inc()

    def load(self, versions: dict[str, str]) -> None:
        """Mark the loaded champion versions (model → version), unmarking replaced ones."""
        with self._lock:
            for model, old in self._versions.items():
                if versions.get(model) != old:
                    self.loaded.labels(model, old).set(0)
            for model, version in versions.items():
                self.loaded.labels(model, version).set(1)
            self._versions = dict(versions)

    def marked(self, models: Iterable[str], due: Iterable[str]) -> None:
        """Set each model's retrain-due gauge: 1 for those in `due`, else 0."""
        due = set(due)
        for model in models:
            self.retrain_due.labels(model).set(1 if model in due else 0)


@cache
def domain_metrics() -> DomainMetrics:
    """The process's metrics (created on first use, after the worker's start-up)."""
    return DomainMetrics()
