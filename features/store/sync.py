"""Register the repository's definitions with Feast and bring the online store up to date."""

from __future__ import annotations

import contextlib
import io
import logging
from dataclasses import dataclass
from datetime import UTC, datetime

from feast import FeatureStore

from features.repo import feast_objects, feature_views

log = logging.getLogger(__name__)

# Materialising from before any data: views without a TTL have no natural start, and
# Feast's own default (one year before now) would skip historical data.
EARLIEST = datetime(2000, 1, 1, tzinfo=UTC)


@dataclass(frozen=True)
class MaterializeRun:
    """One view's materialisation interval."""

    view: str
    start: datetime
    end: datetime
    incremental: bool


def apply_definitions(store: FeatureStore) -> int:
    """Register (or update) every entity, source, view and service; returns their count."""
    objects = feast_objects()
    store.apply(objects)
    return len(objects)


def materialize(store: FeatureStore, end: datetime) -> list[MaterializeRun]:
    """Load every view's rows up to `end` into the online store.

    The first run of a view loads everything since `EARLIEST`; later runs continue from the
    end of the previous one, so only rows stamped after it are written.
    """
    runs = []
    for view in feature_views():
        registered = store.get_feature_view(view.name)
        previous = registered.most_recent_end_time
        if previous is not None and previous.tzinfo is None:
            previous = previous.replace(tzinfo=UTC)
        if previous is not None and previous >= end:
            log.info("%s: online store already holds data up to %s", view.name, previous)
            continue
        start = previous or EARLIEST
        # Feast prints progress to stdout; keep it in the log instead.
        with contextlib.redirect_stdout(io.StringIO()) as printed:
            store.materialize(start_date=start, end_date=end, feature_views=[view.name])
        log.info("materialized %s: %s", view.name, " ".join(printed.getvalue().split()))
        runs.append(MaterializeRun(view.name, start, end, incremental=previous is not None))
    return runs
