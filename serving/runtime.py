"""What one service instance holds: champions, online feature readers, the queue cache.

A `Runtime` is built whole (models loaded, stores opened) before it serves; the service
swaps in a new one on reload, so the old champions answer until the new ones are ready.
"""

from __future__ import annotations

import logging
import os
import sys
import threading
import time
from dataclasses import dataclass, field, replace
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import numpy as np
import pandas as pd

from aftersale.settings import Settings
from features.build.derived import derive_record
from features.instants import utc_instant
from models import churn, delay_risk, delivery_estimate
from models import next_best_offer as nbo
from models import outreach_uplift as uplift_spec
from models.churn import has_ordered
from models.delay_risk import DELIVERED, LIKELY_LOST, parcel_states
from models.served.decisions import DecisionMemo, answering_ahead
from models.served.reasons import Reason, shown_value
from models.served.registry import ModelUnavailableError
from models.served.retrain import read_marks
from models.served.window import (
    OFFSETS_FOLDER,
    PublishedOffsets,
    WindowModel,
    day_start,
    published_offsets_path,
    read_published_offsets,
)
from serving import schemas
from serving.metrics import domain_metrics
from serving.online import ROW_TIME, FeatureReader
from serving.queue import EFFECTS_FILE, ChangedFile, QueueCache
from serving.recommend import NO_HISTORY, OfferRecommender, load_recommender
from serving.scoring import (
    PREDICT_THREADS,
    ContactValues,
    ServedModel,
    ServedUplift,
    ServedWindow,
    band,
    day_words,
    driving_contact_reason,
    load_champion,
    load_uplift_champion,
    load_window_champion,
    local_date,
    lost_words,
)
from serving.tracking import OrderParcels, in_transit_shipments, tracked_parcel

log = logging.getLogger(__name__)

DELAY_MODEL = delay_risk.NAME
CHURN_MODEL = churn.NAME
# Models the service answers with, and the feature service each reads.
SERVED = {spec.name: spec.feature_service for spec in (delay_risk.SPEC, churn.SPEC)}
# Optional: the delay answer carries a delivery window once a champion is registered.
WINDOW_MODEL = delivery_estimate.NAME
OFFER_MODEL = nbo.NAME
# Optional: /v1/explain explains the latest batch's best actions once a champion is loaded.
UPLIFT_MODEL = uplift_spec.NAME
REASONS_PER_SCORE = 3
# Rows answered ahead per batch: large enough for LightGBM to batch them, small enough that
# a request waiting on the interpreter lock waits little.
AHEAD_BATCH_ROWS = 64
# The niceness of the thread answering ahead (Linux: per thread).
AHEAD_NICENESS = 10
# Under the serving folder: the local copies of the champions (`registry.load_champion`).
CHAMPION_COPIES = "champions"
UTC_ZONE = "UTC"
# A customer without an order: outside the churn model's population (`churn.has_ordered`).
NO_ORDER = "no_order"
NO_ORDER_WORDS = (
    "No order yet: churn is scored only for customers with an earlier order, the population "
    "the model learnt from"
)
WINDOW_KINDS = ("most_likely", "earliest", "latest")


@dataclass(frozen=True)
class _Scored:
    model: ServedModel
    known: list[int]
    records: list[dict]
    probability: np.ndarray
    contrib: np.ndarray
    reasons: list


class WindowOffsetsCache:
    """The delivery window's offsets published since training for one version, re-read
    when their file changes (`training.window_offsets` writes them nightly)."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self._file: ChangedFile[PublishedOffsets | None] = ChangedFile()
        # Each version's path, made once: a request asks for it twice.
        self._paths: dict[str, Path] = {}

    def get(self, version: str) -> PublishedOffsets | None:
        """The offsets published for `version` (None: none, or unreadable)."""

        def read(path: Path, _stamp) -> PublishedOffsets | None:
            try:
                return read_published_offsets(self.folder, version)
            except (OSError, ValueError, KeyError, TypeError) as error:
                # A damaged file leaves the registered offsets serving.
                log.warning("window offsets %s unreadable: %s", path, error)
                return None

        try:
            path = self._paths.get(version)
            if path is None:
                path = self._paths[version] = published_offsets_path(self.folder, version)
            return self._file.get(path, read)
        except OSError:
            return None


@dataclass
class Runtime:
    """Everything a request needs, loaded once."""

    settings: Settings
    models: dict[str, ServedModel]
    readers: dict[str, FeatureReader]
    queue: QueueCache
    recommender: OfferRecommender | None = None
    effects: QueueCache | None = None
    window: ServedWindow | None = None
    uplift: ServedUplift | None = None
    parcels: OrderParcels | None = None
    unavailable: dict[str, str] = field(default_factory=dict)
    loaded_at: datetime = field(default_factory=lambda: datetime.now(UTC))
    window_offsets: WindowOffsetsCache | None = None

    @classmethod
    def start(cls, settings: Settings) -> Runtime:
        """Load every champion and open the online store."""
        from features.store.config import feature_store

        uri = settings.tracking_uri
        store = feature_store(settings)
        # Each champion loads from its local copy; the last good copy serves where the
        # registry is unreachable or its champion does not load (reported on /v1/models).
        copies = settings.serving_dir / CHAMPION_COPIES
        memo = settings.answer_memo_rows
        models = {name: load_champion(name, uri, copies, memo) for name in SERVED}
        offline = settings.features_dir / "current"
        cached = settings.online_cache_rows
        readers = {
            name: FeatureReader.of_service(store, service, offline, cached)
            for name, service in SERVED.items()
        }
        unavailable: dict[str, str] = {}
        # Optional champions: scores and the queue serve without them. Not registered yet,
        # or registered but unloadable (a corrupted or incompatible artefact): either way
        # the service starts, says why on /v1/models, and /v1/recommend answers 503 (delay
        # scores carry no delivery window) until a reload loads them.
        recommender = _optional(
            OFFER_MODEL,
            "tracking-page offers",
            unavailable,
            lambda: load_recommender(store, uri, offline, copies, cached),
        )
        window = _optional(
            WINDOW_MODEL,
            "delivery windows",
            unavailable,
            lambda: load_window_champion(WINDOW_MODEL, uri, copies, memo),
        )
        uplift = _optional(
            UPLIFT_MODEL,
            "uplift explanations",
            unavailable,
            lambda: load_uplift_champion(UPLIFT_MODEL, uri, copies),
        )
        queue = QueueCache(settings.serving_dir)
        effects = QueueCache(settings.serving_dir, EFFECTS_FILE)
        return cls(
            settings,
            models,
            readers,
            queue,
            recommender=recommender,
            effects=effects,
            window=window,
            uplift=uplift,
            parcels=OrderParcels(settings.raw_root),
            unavailable=unavailable,
            window_offsets=WindowOffsetsCache(settings.serving_dir / OFFSETS_FOLDER),
        )

    def now(self) -> pd.Timestamp:
        """The decision instant: the configured one, else the wall clock."""
        if self.settings.as_of is None:
            return pd.Timestamp.now(tz="UTC")
        return utc_instant(self.settings.as_of)

    def _rows(self, name: str, ids: list[str], as_of: pd.Timestamp) -> list[dict | None]:
        """Each id's feature row as of the decision instant (None when unknown then)."""
        return self.readers[name].read([[i] for i in ids], as_of)

    def _score(self, name: str, rows: list[dict | None], as_of: pd.Timestamp) -> _Scored:
        model = self.models[name]
        known = [i for i, row in enumerate(rows) if row is not None]
        now_s = as_of.timestamp()
        records = [derive_record(rows[i], now_s) for i in known]
        if not records:
            return _Scored(model, known, records, np.zeros(0), np.zeros((0, 0)), [])
        x = model.matrix_from_records(records)
        contrib = model.request_contributions(x)
        reasons = model.reasons(contrib, records, k=REASONS_PER_SCORE)
        probability = model.probability_from_contributions(contrib, x)
        return _Scored(model, known, records, probability, contrib, reasons)

    def score_delay(
        self, ids: list[str], as_of: pd.Timestamp | None = None
    ) -> schemas.DelayResponse:
        """Delay risk and reasons per shipment id in transit; delivered and likely lost
        parcels are answered as such, unscored. As of `as_of` (default: `now`)."""
        as_of = self.now() if as_of is None else as_of
        rows = self._rows(DELAY_MODEL, ids, as_of)
        results = [schemas.DelayScore(shipment_id=i, status="unknown_id") for i in ids]
        moving: list[dict | None] = [None] * len(ids)
        for k, state in enumerate(self._parcel_states(rows, as_of)):
            if state == DELIVERED:
                results[k] = delivered_answer(ids[k], rows[k])
            elif state == LIKELY_LOST:
                results[k] = lost_answer(ids[k], rows[k], as_of)
            elif state is not None:
                moving[k] = rows[k]
        scored = self._score(DELAY_MODEL, moving, as_of)
        windows = self._windows(scored.records, as_of)
        for k, i in enumerate(scored.known):
            p = float(scored.probability[k])
            results[i] = schemas.DelayScore(
                shipment_id=ids[i],
                status="ok",
                features_as_of=_instant(rows[i][ROW_TIME]),
                probability=p,
                risk_score=round(100 * p),
                band=band(p),
                reasons=[_reason(r) for r in scored.reasons[k]],
                delivery_window=windows[k],
            )
        _report(DELAY_MODEL, results)
        return schemas.DelayResponse(
            model=scored.model.ref(), as_of=as_of.to_pydatetime(), results=results
        )

    def answer_ahead(self, stop: threading.Event | None = None) -> dict[str, int]:
        """Answer ahead, into the memos, what is likely asked next: the delay risk and window
        of each parcel in transit now (`serving.tracking.in_transit_shipments`) and churn
        of each customer the outreach queue names, at most each memo's rows, a batch at a
        time, until done or `stop` is set. The memo's key makes an answer found there
        exactly the one computed when asked, so this only moves work before the asks.

        Returns:
            Rows answered ahead per model (none where its memo is off).
        """
        as_of = self.now()
        done = {DELAY_MODEL: 0, CHURN_MODEL: 0}

        def batches(ids: list[str]):
            for start in range(0, len(ids), AHEAD_BATCH_ROWS):
                if stop is not None and stop.is_set():
                    return
                yield ids[start : start + AHEAD_BATCH_ROWS]

        with answering_ahead():
            delay = self.models[DELAY_MODEL].memo
            if delay is not None:
                ids = in_transit_shipments(self.settings.raw_root, as_of, delay.size)
                for batch in batches(ids):
                    rows = self._rows(DELAY_MODEL, batch, as_of)
                    states = self._parcel_states(rows, as_of)
                    moving = [
                        row if state not in (None, DELIVERED, LIKELY_LOST) else None
                        for row, state in zip(rows, states, strict=True)
                    ]
                    scored = self._score(DELAY_MODEL, moving, as_of)
                    self._windows(scored.records, as_of)
                    done[DELAY_MODEL] += len(scored.known)
            churn_memo = self.models[CHURN_MODEL].memo
            queue = self.queue.get()
            if churn_memo is not None and queue is not None and len(queue.frame):
                named = queue.frame["customer_id"].drop_duplicates().head(churn_memo.size)
                for batch in batches(named.astype(str).tolist()):
                    rows = self._rows(CHURN_MODEL, batch, as_of)
                    rows = _only_ok(rows, customer_statuses(rows))
                    done[CHURN_MODEL] += len(self._score(CHURN_MODEL, rows, as_of).known)
        return done

    def _parcel_states(self, rows: list[dict | None], as_of: pd.Timestamp) -> list[str | None]:
        """Each shipment row's state at the decision instant (`parcel_states`: in transit,
        delivered or likely lost); None for an unknown id."""
        present = [k for k, row in enumerate(rows) if row is not None]
        # The three columns as lists: a frame of one row cost a fifth of a millisecond.
        columns = {name: [rows[k].get(name) for k in present] for name in PARCEL_STATE_COLUMNS}
        states = parcel_states(
            columns,
            as_of.timestamp(),
            self.settings.lost_after_days,
        )
        out: list[str | None] = [None] * len(rows)
        for k, state in zip(present, states, strict=True):
            out[k] = str(state)
        return out

    def _windows(
        self, records: list[dict], as_of: pd.Timestamp
    ) -> list[schemas.DeliveryWindow | None]:
        """The delivery window of each scored shipment (None without a champion), in its
        customer's time zone (the shipment's `customer_timezone` feature); UTC, flagged
        with `timezone_known` false, where the zone is unknown."""
        if self.window is None or not records:
            return [None] * len(records)
        zones = [r.get("customer_timezone") for r in records]
        known = [zone is not None for zone in zones]
        zones = [zone or UTC_ZONE for zone in zones]
        rows = self.window_model().window_rows(
            records, as_of, zones, PREDICT_THREADS, self.window.memo, self.window.above_anchor
        )
        return [
            delivery_window(row, zone, timezone_known=k, as_of=as_of)
            for row, zone, k in zip(rows, zones, known, strict=True)
        ]

    def _published_offsets(self) -> PublishedOffsets | None:
        """The offsets published after training for the loaded window champion, if any."""
        if self.window is None or self.window_offsets is None:
            return None
        return self.window_offsets.get(self.window.version)

    def window_model(self) -> WindowModel:
        """The loaded window champion with its newest published offsets (its registered
        ones where none were published for its version).

        Raises:
            ModelUnavailableError: No window champion is loaded.
        """
        if self.window is None:
            raise ModelUnavailableError("no delivery-window champion is loaded")
        published = self._published_offsets()
        if published is None:
            return self.window.model
        return replace(self.window.model, offsets=published.offsets)

    def window_calibration(self) -> str | None:
        """Which offsets the window serves, in words: "adaptive, updated 2025-12-30", or
        "adaptive, as registered" (None without a window champion)."""
        if self.window is None:
            return None
        published = self._published_offsets()
        if published is not None:
            return published.calibration
        return f"{self.window.model.calibration}, as registered"

    def score_churn(self, ids: list[str]) -> schemas.ChurnResponse:
        """Churn risk, its driving contact reason and reasons per customer id; a customer
        who never ordered is answered as such, unscored."""
        as_of = self.now()
        rows = self._rows(CHURN_MODEL, ids, as_of)
        statuses = customer_statuses(rows)
        scored = self._score(CHURN_MODEL, _only_ok(rows, statuses), as_of)
        results = [
            no_order_answer(i, row)
            if status == NO_ORDER
            else schemas.ChurnScore(customer_id=i, status=status)
            for i, row, status in zip(ids, rows, statuses, strict=True)
        ]
        contact = driving_contact_reason(
            scored.contrib, scored.model.features, ContactValues.of_records(scored.records)
        )
        best = self._best_actions()
        for k, i in enumerate(scored.known):
            p = float(scored.probability[k])
            results[i] = schemas.ChurnScore(
                customer_id=ids[i],
                status="ok",
                features_as_of=_instant(rows[i][ROW_TIME]),
                probability=p,
                risk_score=round(100 * p),
                band=band(p),
                contact_reason=contact[k],
                reasons=[_reason(r) for r in scored.reasons[k]],
                **_best_action(best, ids[i]),
            )
        _report(CHURN_MODEL, results)
        return schemas.ChurnResponse(
            model=scored.model.ref(), as_of=as_of.to_pydatetime(), results=results
        )

    def explain(self, model: str, ids: list[str]) -> schemas.ExplainResponse:
        """Every feature's SHAP contribution to each id's served score with `model`, with
        the base value, the output they add up to and the served score (what each model
        explains, and for which ids: `schemas.ExplainRequest`).

        Raises:
            ModelUnavailableError: The offer or uplift model is not loaded, or the latest
                batch's effects came from another uplift model than the one loaded.
            StoreUnavailableError: The online store could not be read.
        """
        if model == OFFER_MODEL:
            return self._explain_offers(ids)
        if model == UPLIFT_MODEL:
            return self._explain_effects(ids)
        return self._explain_scores(model, ids)

    def _explain_scores(self, model: str, ids: list[str]) -> schemas.ExplainResponse:
        """Delay risk (shipments in transit) or churn (customers who have ordered):
        delivered, likely lost, never-ordered and unknown ids are answered as such, without
        contributions, as the scoring routes answer them."""
        as_of = self.now()
        rows = self._rows(model, ids, as_of)
        if model == DELAY_MODEL:
            statuses = ["unknown_id" if row is None else "ok" for row in rows]
            for k, state in enumerate(self._parcel_states(rows, as_of)):
                if state in (DELIVERED, LIKELY_LOST):
                    statuses[k] = state
        else:
            statuses = customer_statuses(rows)
        scored = self._score(model, _only_ok(rows, statuses), as_of)
        results = [schemas.Explanation(id=i, status=s) for i, s in zip(ids, statuses, strict=True)]
        words = scored.model.model.words
        for k, i in enumerate(scored.known):
            contrib = scored.contrib[k]
            results[i] = schemas.Explanation(
                id=ids[i],
                status="ok",
                features_as_of=_instant(rows[i][ROW_TIME]),
                base_value=float(contrib[-1]),
                output=float(contrib.sum()),
                score=float(scored.probability[k]),
                contributions=contribution_parts(
                    contrib, scored.records[k], scored.model.features, words
                ),
            )
        return schemas.ExplainResponse(
            model=scored.model.ref(), as_of=as_of.to_pydatetime(), results=results
        )

    def _explain_offers(self, order_ids: list[str]) -> schemas.ExplainResponse:
        """The top offer of each order's tracking page (`OfferRecommender.decide`, as
        `recommend` ranks it): its acceptance margin's contributions and the acceptance
        probability the page answers for it."""
        if self.recommender is None:
            why = self.unavailable.get(OFFER_MODEL, "no champion is registered")
            raise ModelUnavailableError(f"offer explanations unavailable: {why}")
        as_of = self.now()
        model = self.recommender.model
        results = []
        for order_id in order_ids:
            decision = self.recommender.decide(order_id, as_of)
            if isinstance(decision, str):
                status = "cold_start" if decision == NO_HISTORY else "unknown_id"
                results.append(schemas.Explanation(id=order_id, status=status))
                continue
            if not len(decision.ranked):
                results.append(schemas.Explanation(id=order_id, status="no_offer"))
                continue
            top = int(decision.ranked[0])
            contrib = model.contributions(decision.matrix[top : top + 1])[0]
            record = self.recommender.candidate_record(decision, top)
            results.append(
                schemas.Explanation(
                    id=order_id,
                    status="ok",
                    category=decision.names[top],
                    offer_type=decision.kinds[top],
                    discount=float(decision.discount[top]),
                    base_value=float(contrib[-1]),
                    output=float(contrib.sum()),
                    score=float(decision.probability[top]),
                    contributions=contribution_parts(
                        contrib, record, model.features, model.model.words
                    ),
                )
            )
        return schemas.ExplainResponse(
            model=model.ref(), as_of=as_of.to_pydatetime(), results=results
        )

    def _explain_effects(self, customer_ids: list[str]) -> schemas.ExplainResponse:
        """Each customer's best action in the latest batch (as the churn answer names it):
        the contributions to its predicted uplift, from the inputs the batch predicted it
        from. A customer the store does not know is `unknown_id`; one who never ordered
        (whom the batch does not score), `no_order`; one without an action predicted to
        help, `no_action`."""
        if self.uplift is None:
            why = self.unavailable.get(UPLIFT_MODEL, "no champion is registered")
            raise ModelUnavailableError(f"uplift explanations unavailable: {why}")
        loaded = self.effects.get() if self.effects is not None else None
        batch = None if loaded is None else loaded.meta.get("models", {}).get(UPLIFT_MODEL)
        if batch is not None and str(batch) != self.uplift.version:
            raise ModelUnavailableError(
                f"uplift explanations unavailable: the latest batch's effects came from "
                f"version {batch}, version {self.uplift.version} is loaded"
            )
        effects = loaded.frame if loaded is not None else pd.DataFrame({"customer_id": []})
        absent = [f for f in self.uplift.model.features if f not in effects.columns]
        if loaded is not None and absent:
            raise ModelUnavailableError(
                "uplift explanations unavailable: the latest batch's effects carry no model "
                f"inputs ({absent[:3]}); score the batch again"
            )
        as_of = self.now()
        rows = self._rows(CHURN_MODEL, customer_ids, as_of)
        batch_as_of = None if loaded is None else loaded.meta.get("as_of")
        at = pd.Index(effects["customer_id"]).get_indexer(customer_ids)
        statuses = customer_statuses(rows)
        results = [
            schemas.Explanation(id=i, status="no_action" if status == "ok" else status)
            for i, status in zip(customer_ids, statuses, strict=True)
        ]
        found = [k for k, status in enumerate(statuses) if status == "ok" and at[k] >= 0]
        if found:
            model = self.uplift.model
            chosen = effects.iloc[at[found]].reset_index(drop=True)
            contrib = model.contributions(chosen)
            features = list(contrib.columns[:-1])
            values = contrib.to_numpy()
            for n, k in enumerate(found):
                row = chosen.iloc[n]
                results[k] = schemas.Explanation(
                    id=customer_ids[k],
                    status="ok",
                    features_as_of=None if batch_as_of is None else _instant(batch_as_of),
                    action=row["action"],
                    base_value=float(values[n, -1]),
                    output=float(values[n].sum()),
                    score=float(row["uplift"]),
                    contributions=contribution_parts(
                        values[n], row.to_dict(), features, model.words
                    ),
                )
        return schemas.ExplainResponse(
            model=self.uplift.ref(), as_of=as_of.to_pydatetime(), results=results
        )

    def _best_actions(self) -> dict[str, dict]:
        """Customer id → its action of highest predicted uplift in the latest batch (empty
        without one): read once per request, so one answer reads one batch."""
        loaded = self.effects.get() if self.effects is not None else None
        return {} if loaded is None else _effects_index(loaded)

    def recommend(self, order_id: str, k: int) -> schemas.RecommendResponse:
        """Top-k tracking-page offers for an order.

        Raises:
            ModelUnavailableError: No next-best-offer champion is loaded.
            StoreUnavailableError: The online store could not be read.
        """
        if self.recommender is None:
            why = self.unavailable.get(OFFER_MODEL, "no champion is registered")
            raise ModelUnavailableError(f"tracking-page offers unavailable: {why}")
        answer = self.recommender.recommend(order_id, k, self.now())
        domain_metrics().answered(
            self.recommender.model.name, ["cold_start" if answer.cold_start else "ok"]
        )
        return answer

    def track(self, order_id: str) -> schemas.TrackingResponse:
        """An order's parcels as its tracking page shows them: each as `score_delay` answers
        it at the same instant.

        Raises:
            StoreUnavailableError: The online store could not be read.
        """
        as_of = self.now()
        found = None if self.parcels is None else self.parcels.parcels(order_id, as_of)
        model = self.models[DELAY_MODEL].ref()
        if not found:
            status = "unknown_id" if found is None else "not_shipped"
            return schemas.TrackingResponse(
                model=model,
                as_of=as_of.to_pydatetime(),
                order_id=order_id,
                status=status,
                parcels=[],
            )
        scored = self.score_delay(found, as_of)
        return schemas.TrackingResponse(
            model=scored.model,
            as_of=scored.as_of,
            order_id=order_id,
            status="ok",
            parcels=[tracked_parcel(result) for result in scored.results],
        )

    def served(self) -> list[ServedModel | ServedWindow]:
        """Every champion loaded: the scorers, the offer, window and uplift models."""
        return [
            *self.models.values(),
            *([self.recommender.model] if self.recommender else []),
            *([self.window] if self.window else []),
            *([self.uplift] if self.uplift else []),
        ]

    def online_readers(self) -> dict[str, FeatureReader]:
        """Every online feature reader, by what reads it."""
        readers = dict(self.readers)
        if self.recommender is not None:
            for part in ("orders", "customers", "categories"):
                readers[f"{self.recommender.model.name}:{part}"] = getattr(self.recommender, part)
        return readers

    def versions(self) -> dict[str, str]:
        """Model → the champion version loaded."""
        return {m.name: m.version for m in self.served()}

    def models_info(self) -> schemas.ModelsResponse:
        """Loaded versions and aliases, and the queue being served."""
        queue = self.queue.get()
        return schemas.ModelsResponse(
            models=[
                schemas.LoadedModel(
                    name=m.name,
                    version=m.version,
                    aliases=m.aliases,
                    loaded_at=self.loaded_at,
                    memo=_memo_counts(getattr(m, "memo", None)),
                )
                for m in self.served()
            ],
            online_rows=[
                schemas.OnlineRows(
                    reader=name,
                    view=reader.view.name,
                    kept=reader.kept_rows,
                    found=reader.found_kept,
                    read=reader.read_rows,
                )
                for name, reader in self.online_readers().items()
            ],
            outreach_queue=queue.meta.get("queue_date") if queue else None,
            unavailable=self.unavailable,
            fallbacks={
                m.name: m.champion.fallback
                for m in self.served()
                if m.champion is not None and m.champion.fallback
            },
            retrain_due=self.retrain_due(),
            window_calibration=self.window_calibration(),
        )

    def retrain_due(self) -> dict[str, str]:
        """Model → why the monitor marked it for retraining; the gauge on `/metrics` follows
        (read from the marks file at each call: the monitor writes it after the service
        started)."""
        marks = {m: mark["reason"] for m, mark in read_marks(self.settings.monitoring_dir).items()}
        domain_metrics().marked({*self.versions(), *marks}, marks)
        return marks


_effects_by_stamp: dict[tuple[int, int], dict[str, dict]] = {}


def answer_ahead_quietly(
    runtime: Runtime, stop: threading.Event | None = None, every_s: float = 0.0
) -> None:
    """`runtime.answer_ahead(stop)` at a low priority on Linux (this thread only: requests
    come first), logging what it answered, and any error instead of raising it: an answer
    not found ahead is computed when asked. With `every_s` above 0 and a `stop` event, again
    every `every_s` seconds at the instant of each pass, until `stop` is set: a parcel
    shipped since, a row materialised since, or a clock feature that crossed a split is
    answered before its next ask (rows whose key is unchanged cost their key only)."""
    if sys.platform == "linux":
        try:
            os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), AHEAD_NICENESS)
        except OSError:
            log.info("answering ahead at the service's own priority")
    while True:
        started = time.perf_counter()
        try:
            done = runtime.answer_ahead(stop)
        except Exception:
            log.exception("answering ahead failed; each answer is computed when asked")
        else:
            rows = ", ".join(f"{name} {count}" for name, count in done.items())
            log.info("answered ahead in %.1f s: %s", time.perf_counter() - started, rows)
        if every_s <= 0 or stop is None or stop.wait(every_s):
            return


def _effects_index(loaded) -> dict[str, dict]:
    """Customer id → its best action's row, built once per effects file."""
    found = _effects_by_stamp.get(loaded.stamp)
    if found is None:
        frame = loaded.frame.astype(object).where(loaded.frame.notna(), None)
        found = {row["customer_id"]: row for row in frame.to_dict("records")}
        _effects_by_stamp.clear()
        _effects_by_stamp[loaded.stamp] = found
    return found


def customer_statuses(rows: list[dict | None]) -> list[str]:
    """Each customer row's status before scoring: `unknown_id` without a row, `no_order` for
    a customer who never ordered (outside the churn model's population), else `ok`."""
    ordered = has_ordered([None if row is None else row.get("orders_total") for row in rows])
    return [
        "unknown_id" if row is None else "ok" if known else NO_ORDER
        for row, known in zip(rows, ordered.tolist(), strict=True)
    ]


def _only_ok(rows: list[dict | None], statuses: list[str]) -> list[dict | None]:
    """The rows to score: those whose status is `ok` (None in place of the others)."""
    return [row if status == "ok" else None for row, status in zip(rows, statuses, strict=True)]


def no_order_answer(customer_id: str, row: dict) -> schemas.ChurnScore:
    """A customer without an order: outside the churn model's population, no score."""
    return schemas.ChurnScore(
        customer_id=customer_id,
        status=NO_ORDER,
        features_as_of=_instant(row[ROW_TIME]),
        status_reason=NO_ORDER_WORDS,
    )


def _best_action(best: dict[str, dict], customer_id: str) -> dict[str, object]:
    """The answer's best-action fields for the customer (none without one)."""
    found = best.get(customer_id)
    if found is None:
        return {}
    return {
        "best_action": found["action"],
        "best_action_uplift": found["uplift"],
        "best_action_uplift_low": found["uplift_low"],
        "best_action_uplift_high": found["uplift_high"],
    }


def contribution_parts(
    contrib: np.ndarray, record: dict, features, words: dict[str, str]
) -> list[schemas.Contribution]:
    """Every feature's contribution (then the bias, left out) with its value and the reason
    in words, largest absolute contribution first."""
    order = np.argsort(-np.abs(contrib[: len(features)]), kind="stable")
    parts = []
    for j in order:
        feature = features[j]
        shown = shown_value(record.get(feature), feature)
        reason = Reason.of(feature, shown, float(contrib[j]), words)
        parts.append(
            schemas.Contribution(
                feature=feature, value=shown, contribution=reason.contribution, text=reason.text
            )
        )
    return parts


def _optional(name: str, what: str, unavailable: dict[str, str], load):
    """An optional champion from `load()`, or None with why recorded under `name`."""
    try:
        return load()
    except Exception as error:
        unavailable[name] = _why(error)
        log.warning("%s unavailable: %s", what, unavailable[name])
        return None


def _why(error: Exception) -> str:
    """Why a champion could not be loaded, in one line."""
    if isinstance(error, ModelUnavailableError):
        return str(error)
    return f"champion could not be loaded: {type(error).__name__}: {error}"


def _memo_counts(memo: DecisionMemo | None) -> schemas.MemoCounts | None:
    if memo is None:
        return None
    return schemas.MemoCounts(
        rows=len(memo), hits=memo.hits, misses=memo.misses, answered_ahead=memo.ahead
    )


def _report(model: str, results: list) -> None:
    """Count an answer's ids by status, and the scores and bands it served."""
    scored = [r for r in results if r.probability is not None]
    domain_metrics().answered(
        model,
        [r.status for r in results],
        [r.probability for r in scored],
        [r.band for r in scored],
    )


PARCEL_STATE_COLUMNS = ("stage", "promised_epoch", "last_scan_epoch")


def _instant(value) -> datetime:
    """An instant as an answer carries it, floored to the microsecond: dropping a
    timestamp's nanoseconds floors it, as they count forward from its microsecond."""
    instant = value if isinstance(value, pd.Timestamp) else pd.Timestamp(value)
    return instant.to_pydatetime(warn=False)


def delivered_answer(shipment_id: str, row: dict) -> schemas.DelayScore:
    """A delivered parcel: when, on which local date, and whether after its promise."""
    delivered = pd.Timestamp(row[ROW_TIME])
    promised = row.get("promised_epoch")
    late = None if promised is None else bool(delivered.timestamp() > promised)
    day = local_date(delivered, row.get("customer_timezone"))
    timing = "" if late is None else (", after its promise" if late else ", on time")
    return schemas.DelayScore(
        shipment_id=shipment_id,
        status="delivered",
        features_as_of=_instant(delivered),
        delivered_at=_instant(delivered),
        delivered_date=day,
        late=late,
        status_reason=f"Delivered on {day_words(day)}{timing}",
    )


def lost_answer(shipment_id: str, row: dict, as_of: pd.Timestamp) -> schemas.DelayScore:
    """A parcel past its promise and silent for too long: likely lost, no date."""
    return schemas.DelayScore(
        shipment_id=shipment_id,
        status="likely_lost",
        features_as_of=_instant(row[ROW_TIME]),
        status_reason=lost_words(row, as_of),
    )


def delivery_window(
    row, timezone: str, *, timezone_known: bool, as_of: pd.Timestamp | None = None
) -> schemas.DeliveryWindow:
    """One row of `WindowModel.predict_window` (or a `WindowRow`) as the answer carries it."""
    dates = [_date(getattr(row, f"{k}_date")) for k in WINDOW_KINDS]
    most_likely, earliest, latest = dates
    # The window is calibrated on local calendar dates (`models.served.window`): its coverage
    # holds for the dates, so its instants span those whole days (never before the decision).
    start = day_start(earliest, timezone)
    after = day_start(latest + timedelta(days=1), timezone)
    start = start if as_of is None else max(start, as_of)
    end = after - pd.Timedelta(microseconds=1)
    return schemas.DeliveryWindow(
        most_likely=_microseconds(pd.Timestamp(row.most_likely_ts)),
        earliest=_microseconds(start),
        latest=_microseconds(end),
        most_likely_date=most_likely,
        earliest_date=earliest,
        latest_date=latest,
        timezone=timezone,
        timezone_known=timezone_known,
        coverage=float(row.coverage),
        calibration=getattr(row, "calibration", "split"),
        text=window_text(earliest, latest),
    )


def _microseconds(instant: pd.Timestamp) -> datetime:
    """An instant to the microsecond below it, as a `datetime` (`floor("us")`: a Timestamp's
    nanoseconds are a field of their own, and dropping them floors it)."""
    return instant.to_pydatetime(warn=False)


def _date(value) -> date:
    """A calendar date from a date, or from a `datetime64`/Timestamp of one."""
    if type(value) is date:
        return value
    return pd.Timestamp(value).date()


def window_text(earliest: date, latest: date) -> str:
    """The window in words, as a tracking page shows it."""
    if earliest == latest:
        return f"arrives on {day_words(earliest)}"
    return f"arrives between {day_words(earliest)} and {day_words(latest)}"


def _reason(reason) -> schemas.ReasonOut:
    return schemas.ReasonOut(
        feature=reason.feature, text=reason.text, contribution=float(reason.contribution)
    )
