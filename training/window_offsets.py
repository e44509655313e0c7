"""The delivery window's adaptive offsets, updated between retrains.

Training registers the offsets ACI reached at the end of its test window
(`training.conformal`); adaptive conformal inference only holds its coverage if it goes on
learning from the outcomes that become known after that. Each night the outcomes known
since the offsets were last updated are fed through the same update (`conformal.replay`),
from where ACI stood, and the result is published for the service under the serving folder
(`models.served.window.OFFSETS_FOLDER`): `<version>.json` (the offsets the service reads)
and `<version>.state.json` (ACI's state: each group's recent scores and miss rate, the
offsets given to decisions whose outcome is still to come, and up to which instant
outcomes were consumed). Both are written beside and renamed into place.

When an outcome is known follows training (`training.delivery.outcome_known`) on the data
as of the night's end: a delivery at its instant; a parcel not delivered by
`SETTLED_AFTER` past its promise is lost from then on (a later delivery is not fed again).
Only outcomes known after the previous update and by the night's end are fed, and only
decisions made after it take an offset, so a rerun of the same night changes nothing.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd

from models.delivery_estimate import DELIVERED, PROMISED, SETTLED_AFTER
from models.served.atomic import write_json_atomic
from models.served.window import (
    PublishedOffsets,
    WindowModel,
    group_keys,
    published_offsets_path,
)
from models.spec import EVENT_TIME, LABEL_KNOWN
from training.conformal import AciState, replay
from training.delivery import outcome_known, row_scores


def state_path(folder: Path, version: str) -> Path:
    """Where ACI's state for `version` is kept, beside its published offsets."""
    return Path(folder) / f"{version}.state.json"


def known_by(rows: pd.DataFrame, cut: pd.Timestamp, since: pd.Timestamp | None = None):
    """When each row's outcome became known as the data up to `cut` shows it, and the rows
    with their delivery as known then.

    Args:
        rows: Decisions (`models.delivery_estimate.decision_outcomes`).
        cut: The night's end.
        since: Outcomes known by this instant were already fed (None: none was).

    Returns:
        (known, as_of): `known` is NaT where the outcome was not known within (since, cut],
        or was fed before (a parcel settled as lost by `since` and delivered after);
        `as_of` is `rows` with a delivery after `cut` removed.
    """
    cut = pd.Timestamp(cut)
    delivered = pd.to_datetime(rows[DELIVERED], utc=True)
    settles = pd.to_datetime(rows[PROMISED], utc=True) + SETTLED_AFTER
    delivered = delivered.where(delivered <= cut)
    as_of = rows.assign(
        **{DELIVERED: delivered, LABEL_KNOWN: delivered.where(delivered > settles, settles)}
    )
    known = outcome_known(as_of)
    known = known.where(known <= cut)
    if since is not None:
        fed_as_lost = (settles <= since).to_numpy() & (delivered > since).to_numpy()
        known = known.where((known > since).to_numpy() & ~fed_as_lost)
    return known, as_of


def open_since(tables: dict, since: pd.Timestamp | None) -> dict:
    """The raw tables cut to the shipments an update from `since` can read: those not
    delivered by `since`. A parcel delivered by then had every decision made, and its
    outcome known, by then, so `rows_to_replay` of the cut tables is that of the whole
    ones, at a cost that follows the parcels still open, not the history (`since` None: the
    tables as they are). Scans follow their shipments, and orders the shipments kept;
    customers are kept whole."""
    import pyarrow as pa
    import pyarrow.compute as pc

    if since is None or "shipments" not in tables:
        return dict(tables)
    ships = tables["shipments"]
    delivered = ships.column(DELIVERED)
    bound = pa.scalar(pd.Timestamp(since).to_pydatetime(), delivered.type)
    cut = dict(tables)
    cut["shipments"] = ships.filter(
        pc.or_kleene(pc.is_null(delivered), pc.greater(delivered, bound))
    )
    kept = cut["shipments"].column("shipment_id").combine_chunks()
    if "tracking_events" in cut:
        scans = cut["tracking_events"]
        cut["tracking_events"] = scans.filter(pc.is_in(scans.column("shipment_id"), value_set=kept))
    if "orders" in cut:
        orders = cut["orders"]
        wanted = pc.unique(cut["shipments"].column("order_id").combine_chunks())
        cut["orders"] = orders.filter(pc.is_in(orders.column("order_id"), value_set=wanted))
    return cut


def rows_to_replay(rows: pd.DataFrame, state: AciState, cut: pd.Timestamp) -> pd.DataFrame:
    """The decisions an update from `state` to `cut` reads: made after the state's last
    update, or with an outcome known since (the only rows whose features it needs)."""
    known, _ = known_by(rows, cut, state.consumed_until)
    decided = pd.to_datetime(rows[EVENT_TIME], utc=True)
    made = decided <= pd.Timestamp(cut)
    if state.consumed_until is not None:
        made &= decided > state.consumed_until
    return rows[made.to_numpy() | known.notna().to_numpy()].reset_index(drop=True)


def decision_names(rows: pd.DataFrame) -> list[str]:
    """Each decision's name in ACI's pending offsets: shipment and instant."""
    instants = pd.to_datetime(rows[EVENT_TIME], utc=True)
    return [f"{s}@{t.isoformat()}" for s, t in zip(rows["shipment_id"], instants, strict=True)]


def advance(model: WindowModel, state: AciState, rows: pd.DataFrame, cut: pd.Timestamp) -> AciState:
    """ACI moved on from `state` by the decisions and outcomes after it, up to `cut`.

    Args:
        model: The champion whose windows the offsets calibrate.
        state: Where ACI stood (the registered state, or the last night's).
        rows: Decisions with the model's features and their outcome columns (as
            `training.data.training_data` gives `decision_outcomes`); rows outside the
            update are ignored.
        cut: The night's end: nothing known after it is used.

    Returns:
        A new state, `consumed_until` = `cut` (`state` itself when `cut` is not after it).
    """
    cut = pd.Timestamp(cut)
    since = state.consumed_until
    if since is not None and cut <= since:
        return state
    rows = rows.reset_index(drop=True)
    known, as_of = known_by(rows, cut, since)
    decided = pd.to_datetime(rows[EVENT_TIME], utc=True)
    made = decided <= cut
    if since is not None:
        made &= decided > since
    decided = decided.where(made)
    keep = (decided.notna() | known.notna()).to_numpy()
    rows, as_of = rows[keep].reset_index(drop=True), as_of[keep].reset_index(drop=True)
    known, decided = known[keep].reset_index(drop=True), decided[keep].reset_index(drop=True)
    scores = np.full(len(rows), np.inf)
    arrived = known.notna().to_numpy()
    if arrived.any():
        scores[arrived] = row_scores(model, as_of[arrived])
    moved = AciState.from_dict(state.to_dict())
    replay(moved, scores, decided, known, group_keys(rows, model.group), decision_names(rows))
    return AciState.from_dict(moved.to_dict() | {"consumed_until": cut.isoformat()})


def read_state(folder: Path, version: str) -> AciState | None:
    """ACI's state last published for `version` (None when there is none)."""
    path = state_path(folder, version)
    return AciState.from_dict(json.loads(path.read_text())) if path.is_file() else None


def publish(folder: Path, version: str, state: AciState) -> PublishedOffsets:
    """Write ACI's state, then the offsets it serves, each renamed into place.

    The state goes first: a night stopped between the two leaves the state ahead, and its
    rerun publishes the offsets from it (the offsets always follow from the state).
    """
    write_json_atomic(state_path(folder, version), state.to_dict())
    published = PublishedOffsets(version, state.offsets(), pd.Timestamp(state.consumed_until))
    write_json_atomic(published_offsets_path(folder, version), published.to_dict())
    return published
