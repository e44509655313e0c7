"""Batch scoring: every active customer and open shipment, and the day's outreach queue.

Features are the latest offline rows at or before `as_of` (the same tables the online store
is materialised from), scored by the registry's champions with plain LightGBM prediction.
SHAP contributions, the costly part, are computed only for the actions the queue selects:
the reasons explain what is acted on, not everything. The queue is an export: its words name
a personal feature (`features.personal.PERSONAL_FEATURES`) without its value.

Given a `dask.distributed` client (`AFTERSALE_DASK_ADDRESS`), the customers and shipments are
scored in chunks of rows as tasks of its workers; row by row the predictions, and so the
queue, are those of the one-call path.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd
import pyarrow as pa

from features.build.derived import add_time_features
from features.build.outreach_context import outreach_context
from features.personal import PERSONAL_FEATURES
from models import delivery_estimate
from models import outreach_uplift as uplift_spec
from models.delay_risk import LIKELY_LOST, parcel_states
from models.policies import outreach
from models.served.window import local_dates
from serving.scoring import NO_CONTACT, ServedModel, band, driving_contact_reason, lost_words

if TYPE_CHECKING:
    from distributed import Client

log = logging.getLogger(__name__)

REASONS_PER_ACTION = 3
# Rows per scoring task on a Dask cluster: large enough that a task's overhead (about a
# millisecond) is small against its prediction, small enough to spread a million customers.
SCORE_CHUNK_ROWS = 50_000
WINDOW_MODEL = delivery_estimate.NAME
UPLIFT_MODEL = uplift_spec.NAME
# How long after its moment a proactive action is still timely, in days.
MOMENT_DAYS = {
    outreach.SATISFACTION_CHECK: 7,
    outreach.ONBOARDING_FOLLOWUP: 14,
    outreach.NPS_SURVEY: 7,
}
# How long before a membership renewal falls due a renewal reminder is timely, in days (the
# simulator's `renewal_reminder_days`).
RENEWAL_REMINDER_DAYS = 7


@dataclass
class BatchResult:
    """The queue and what it took."""

    queue: pd.DataFrame
    customers_scored: int
    shipments_scored: int
    candidates: int
    seconds: dict[str, float] = field(default_factory=dict)
    effects: pd.DataFrame | None = None


def best_effects(
    candidates: pd.DataFrame, inputs: pd.DataFrame | None = None, features: list[str] = ()
) -> pd.DataFrame:
    """Per customer, the candidate action of highest predicted uplift above zero:
    customer_id, action, subject_id, uplift, uplift_low, uplift_high; then, given the uplift
    model's inputs (one row per candidate, positional), that action's `features`, from which
    the service explains its predicted effect (`/v1/explain`)."""
    columns = ["customer_id", "action", "subject_id", "uplift", "uplift_low", "uplift_high"]
    helps = candidates[candidates["uplift"].to_numpy(dtype=np.float64) > 0]
    best = helps.sort_values("uplift", ascending=False, kind="stable")
    best = best.drop_duplicates("customer_id")
    out = best[columns].reset_index(drop=True)
    if inputs is None:
        return out
    # `action` is an input too: the same value, kept once.
    chosen = inputs.iloc[best.index.to_numpy()][[f for f in features if f not in columns]]
    return pd.concat([out, chosen.reset_index(drop=True)], axis=1)


def open_shipments(
    tables: dict[str, pa.Table], as_of: pd.Timestamp, max_age: pd.Timedelta | None = None
) -> pd.DataFrame:
    """Shipments dispatched by `as_of` and not delivered by then, with their customer.

    Args:
        tables: Raw tables: shipments and orders.
        as_of: Decision instant.
        max_age: Leave out parcels dispatched longer ago (lost parcels are closed
            business); default the shipment view's TTL.
    """
    if max_age is None:
        from features.repo.shipment_views import shipment_events

        max_age = pd.Timedelta(shipment_events.ttl)
    ships = tables["shipments"].select(["shipment_id", "order_id", "shipped_ts", "delivered_ts"])
    ships = ships.to_pandas()
    shipped = pd.to_datetime(ships["shipped_ts"], utc=True)
    delivered = pd.to_datetime(ships["delivered_ts"], utc=True)
    is_open = (shipped <= as_of) & (shipped > as_of - max_age)
    is_open &= delivered.isna() | (delivered > as_of)
    orders = tables["orders"].select(["order_id", "customer_id"]).to_pandas()
    return ships.loc[is_open, ["shipment_id", "order_id"]].merge(orders, on="order_id")


def overdue_invoices(tables: dict[str, pa.Table], as_of: pd.Timestamp) -> pd.DataFrame:
    """Invoices past due and unpaid at `as_of`."""
    if "invoices" not in tables:
        return pd.DataFrame(columns=["invoice_id", "customer_id", "amount", "due_date"])
    invoices = tables["invoices"].to_pandas()
    due = pd.to_datetime(invoices["due_date"], utc=True)
    paid = pd.to_datetime(invoices["paid_ts"], utc=True)
    issued = pd.to_datetime(invoices["issued_ts"], utc=True)
    overdue = (issued <= as_of) & (due < as_of) & (paid.isna() | (paid > as_of))
    return invoices.loc[overdue, ["invoice_id", "customer_id", "amount", "due_date"]]


def renewals_due(
    tables: dict[str, pa.Table], as_of: pd.Timestamp, days: int = RENEWAL_REMINDER_DAYS
) -> pd.DataFrame:
    """Membership renewal invoices unpaid at `as_of` that fall due within the next `days`.

    The invoices' `kind` tells membership invoices from pay-later order invoices; a renewal
    is any membership invoice after the customer's first (which is billed with the first
    order, not renewed).
    """
    columns = ["invoice_id", "customer_id", "amount", "due_date"]
    if "invoices" not in tables:
        return pd.DataFrame(columns=columns)
    invoices = tables["invoices"].to_pandas()
    invoices = invoices[(invoices["kind"] == "membership").to_numpy()]
    issued = pd.to_datetime(invoices["issued_ts"], utc=True)
    invoices = invoices[(issued <= as_of).to_numpy()]
    later = invoices.sort_values("issued_ts", kind="stable").duplicated("customer_id")
    renewal = later.reindex(invoices.index).to_numpy()
    due = pd.to_datetime(invoices["due_date"], utc=True)
    paid = pd.to_datetime(invoices["paid_ts"], utc=True)
    soon = (due > as_of) & (due <= as_of + pd.Timedelta(days=days))
    unpaid = paid.isna() | (paid > as_of)
    return invoices.loc[renewal & (soon & unpaid).to_numpy(), columns]


def moments(tables: dict[str, pa.Table], as_of: pd.Timestamp) -> dict[str, pd.DataFrame]:
    """The proactive moments open at `as_of`: subject_id and customer_id per action.

    - satisfaction check: a parcel delivered within `MOMENT_DAYS` (about its shipment);
    - onboarding follow-up: a customer's first order placed within them (about the order);
    - NPS survey: a contact resolved at first contact within them (about the contact);
    - renewal reminder: a membership renewal unpaid and due within `RENEWAL_REMINDER_DAYS`
      (about the invoice).
    """
    columns = ["subject_id", "customer_id"]
    out = {
        action: pd.DataFrame(columns=columns)
        for action in (*MOMENT_DAYS, outreach.RENEWAL_REMINDER)
    }

    def recent(instants: pd.Series, action: str) -> np.ndarray:
        at = pd.to_datetime(instants, utc=True)
        since = as_of - pd.Timedelta(days=MOMENT_DAYS[action])
        return ((at > since) & (at <= as_of)).to_numpy()

    orders = tables["orders"].select(["order_id", "customer_id", "order_ts"]).to_pandas()
    if "shipments" in tables:
        ships = tables["shipments"].select(["shipment_id", "order_id", "delivered_ts"])
        ships = ships.to_pandas().merge(orders[["order_id", "customer_id"]], on="order_id")
        done = ships[recent(ships["delivered_ts"], outreach.SATISFACTION_CHECK)]
        out[outreach.SATISFACTION_CHECK] = done.rename(columns={"shipment_id": "subject_id"})[
            columns
        ]
    placed = pd.to_datetime(orders["order_ts"], utc=True)
    known = orders[(placed <= as_of).to_numpy()]
    first = known.sort_values("order_ts", kind="stable").drop_duplicates("customer_id")
    first = first[recent(first["order_ts"], outreach.ONBOARDING_FOLLOWUP)]
    out[outreach.ONBOARDING_FOLLOWUP] = first.rename(columns={"order_id": "subject_id"})[columns]
    if "contacts" in tables:
        contacts = (
            tables["contacts"]
            .select(["contact_id", "customer_id", "ts", "resolved_first_contact"])
            .to_pandas()
        )
        resolved = contacts["resolved_first_contact"].astype("boolean").fillna(False).to_numpy()
        done = contacts[resolved & recent(contacts["ts"], outreach.NPS_SURVEY)]
        out[outreach.NPS_SURVEY] = done.rename(columns={"contact_id": "subject_id"})[columns]
    renewals = renewals_due(tables, as_of)
    out[outreach.RENEWAL_REMINDER] = renewals.rename(columns={"invoice_id": "subject_id"})[columns]
    return {action: frame.reset_index(drop=True) for action, frame in out.items()}


def predict_uplift(
    model, candidates: pd.DataFrame, customers: pd.DataFrame, tables, as_of: pd.Timestamp
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The uplift model's inputs and predicted effect (with its interval) per candidate.

    Each candidate reads its customer's features (the churn features as of `as_of`) and
    what it is about (`features.build.outreach_context`, from the raw tables as of
    `as_of`); a candidate of an unscored customer or an action the model did not learn
    gets NaN.

    Returns:
        The inputs (one row per candidate) and uplift, uplift_low, uplift_high.
    """
    row = candidates["customer_row"].to_numpy(dtype=np.int64)
    known = row >= 0
    inputs = customers.iloc[np.where(known, row, 0)].reset_index(drop=True)
    events = pd.DataFrame(
        {
            "customer_id": candidates["customer_id"].to_numpy(dtype=object),
            "action": candidates["action"].to_numpy(dtype=object),
            "subject_id": candidates["subject_id"].to_numpy(dtype=object),
            "ts": as_of,
        }
    )
    # Without raw tables nothing is known of what an action is about: its features are
    # missing, as for a source that lacks the tables they come from.
    context = outreach_context(events, tables if tables is not None else {})
    inputs = inputs.assign(action=events["action"].to_numpy())
    inputs = pd.concat([inputs.drop(columns=context.columns, errors="ignore"), context], axis=1)
    uplift = np.where(known, model.predict(inputs), np.nan)
    low, high = model.interval(uplift)
    return inputs, pd.DataFrame(
        {"uplift": uplift, "uplift_low": low, "uplift_high": high}, index=candidates.index
    )


def score_rows(model: ServedModel, rows: pd.DataFrame) -> np.ndarray:
    """Calibrated probabilities of a frame's rows: one unit of scoring work."""
    return model.probability(model.matrix(rows))


def probabilities(
    model: ServedModel,
    frame: pd.DataFrame,
    client: Client | None = None,
    chunk_rows: int | None = None,
) -> np.ndarray:
    """Calibrated probabilities of every row, in one call or, given a Dask client, in
    chunks of `chunk_rows` rows (default `SCORE_CHUNK_ROWS`) as tasks of its workers,
    gathered in row order."""
    if not len(frame):
        return np.zeros(0)
    if client is None:
        return score_rows(model, frame)
    chunk_rows = chunk_rows or SCORE_CHUNK_ROWS
    # Sent once to every worker rather than with each chunk.
    shared = client.scatter(model, broadcast=True, hash=False)
    futures = [
        client.submit(score_rows, shared, frame.iloc[lo : lo + chunk_rows], pure=False)
        for lo in range(0, len(frame), chunk_rows)
    ]
    return np.concatenate(client.gather(futures))


def _explain(model: ServedModel, values: pd.DataFrame, rows: np.ndarray):
    """Contributions and reasons of the chosen rows only."""
    chosen = values.iloc[rows]
    x = model.matrix(chosen)
    contrib = model.contributions(x)
    return contrib, model.reasons_frame(
        contrib, chosen, k=REASONS_PER_ACTION, withheld=PERSONAL_FEATURES
    )


def _words(reasons) -> str:
    return "; ".join(r.text for r in reasons)


def score_batch(
    models: dict[str, ServedModel],
    customers: pd.DataFrame,
    shipments: pd.DataFrame,
    invoices: pd.DataFrame,
    history: pd.DataFrame,
    as_of: pd.Timestamp,
    rules: outreach.OutreachRules,
    tables: dict[str, pa.Table] | None = None,
    client: Client | None = None,
    chunk_rows: int | None = None,
) -> BatchResult:
    """Score customers and open shipments and build the outreach queue with reasons.

    Args:
        models: Champions by name: "churn" and "delay_risk", and optionally
            "delivery_estimate" (a `ServedWindow`): a parcel whose most likely delivery
            date, in its customer's zone, falls after the promised date gets a due delay
            notice (`outreach.window_past_promise`).
        customers: Latest stored churn features per active customer (with the profile
            columns outreach needs).
        shipments: Latest stored delay features per open shipment, with `customer_id`.
        invoices: Overdue invoices: invoice_id, customer_id, amount, due_date.
        history: Earlier queued actions (for the frequency cap).
        as_of: Decision instant.
        rules: Outreach rules.
        tables: Raw tables as of `as_of` (orders, and shipments, contacts, returns, tracking
            events where present): the proactive moments and what each action is about.
            With an "outreach_uplift" champion in `models`, the queue ranks by its predicted
            uplift (`outreach.plan_outreach`), and each action carries it with its
            interval and the reasons of the effect.
        client: A Dask client whose workers score the customers and shipments in chunks
            of `chunk_rows` rows; None scores them here in one call each.
        chunk_rows: Rows per scoring task on the cluster (default `SCORE_CHUNK_ROWS`).
    """
    seconds: dict[str, float] = {}
    clock = time.perf_counter()
    churn, delay = models["churn"], models["delay_risk"]
    customers = add_time_features(customers.reset_index(drop=True), as_of)
    shipments = add_time_features(shipments.reset_index(drop=True), as_of)
    churn_p = probabilities(churn, customers, client, chunk_rows)
    # A parcel past its promise and silent for too long is likely lost: no delay notice
    # with an arrival date, but a service-recovery call about it.
    states = (
        parcel_states(shipments, as_of.timestamp(), rules.lost_after_days)
        if len(shipments)
        else np.zeros(0, dtype=object)
    )
    lost = states == LIKELY_LOST
    delay_p = probabilities(delay, shipments, client, chunk_rows)
    windows = _windows(models.get(WINDOW_MODEL), shipments, customers, as_of)
    seconds["predict"] = time.perf_counter() - clock

    clock = time.perf_counter()
    candidates = outreach.candidates(
        customers,
        churn_p,
        shipments,
        delay_p,
        lost,
        windows["due"].to_numpy(dtype=bool),
        invoices,
        moments(tables, as_of) if tables is not None else None,
    )
    effect = models.get(UPLIFT_MODEL)
    inputs = None
    if effect is not None:
        inputs, predicted = predict_uplift(effect.model, candidates, customers, tables, as_of)
        candidates = candidates.join(predicted)
    seconds["predict_uplift"] = time.perf_counter() - clock
    clock = time.perf_counter()
    profile = customers.loc[:, list(outreach.CUSTOMER_COLUMNS)]
    queue = outreach.plan_outreach(candidates.drop(columns="_row"), profile, history, as_of, rules)
    seconds["plan"] = time.perf_counter() - clock

    clock = time.perf_counter()
    queue["reason"] = _reasons(
        queue,
        candidates,
        customers,
        shipments,
        invoices,
        churn,
        delay,
        churn_p,
        delay_p,
        as_of,
        windows,
    )
    if effect is not None and len(queue):
        queue["reason"] = _effect_words(effect.model, inputs, queue)
    queue = queue.reset_index(drop=True)
    seconds["explain"] = time.perf_counter() - clock
    effects = (
        best_effects(candidates, inputs, effect.model.features) if effect is not None else None
    )
    return BatchResult(queue, len(customers), len(shipments), len(candidates), seconds, effects)


def _effect_words(model, inputs: pd.DataFrame, queue: pd.DataFrame) -> list[str]:
    """Each queued action's predicted effect, interval and its top reasons (SHAP of the
    uplift model), before the reasons of the risk behind it."""
    chosen = inputs.iloc[queue.index.to_numpy()]
    reasons = model.reasons(chosen, k=REASONS_PER_ACTION, withheld=PERSONAL_FEATURES)
    out = []
    for (_, row), why in zip(queue.iterrows(), reasons, strict=True):
        head = f"Uplift {100 * row['uplift']:+.1f} pp on the chance of another order"
        if np.isfinite(row["uplift_low"]):
            head += f" ({100 * row['uplift_low']:+.1f} to {100 * row['uplift_high']:+.1f} pp"
            head += " as precisely as held-out customers measure like predictions)"
        because = f"; works better with {_words(why)}" if why else ""
        risk = f". {row['reason']}" if row["reason"] else ""
        out.append(f"{head}{because}{risk}")
    return out


def _windows(
    window, shipments: pd.DataFrame, customers: pd.DataFrame, as_of: pd.Timestamp
) -> pd.DataFrame:
    """Each open shipment's estimated and promised dates in its customer's zone (UTC for a
    customer not scored), and whether the estimate passed the promise (`due`); all False
    without a delivery-estimate champion."""
    n = len(shipments)
    if window is None or n == 0:
        return pd.DataFrame({"due": np.zeros(n, dtype=bool)})
    zones = pd.Series(shipments["customer_id"].to_numpy()).map(
        pd.Series(customers["timezone"].to_numpy(), index=customers["customer_id"].to_numpy())
    )
    zones = zones.where(zones.notna(), "UTC")
    frame = window.model.predict_window(shipments, as_of, zones).reset_index(drop=True)
    promised = pd.to_datetime(shipments["promised_epoch"].to_numpy(), unit="s", utc=True)
    frame["promised_date"] = local_dates(promised, zones)
    frame["due"] = outreach.window_past_promise(frame["most_likely_date"], frame["promised_date"])
    return frame


def _day(value) -> str:
    day = pd.Timestamp(value)
    return f"{day:%a} {day.day} {day:%b}"


def _reasons(
    queue,
    candidates,
    customers,
    shipments,
    invoices,
    churn,
    delay,
    churn_p,
    delay_p,
    as_of,
    windows,
) -> list[str]:
    """Words for each selected action: the model's top reasons, or the overdue invoice."""
    text = [""] * len(queue)
    actions = queue["action"].to_numpy()
    # The queue is indexed by candidate; `_row` is the candidate's row in its source frame.
    source_row = candidates["_row"].to_numpy()[queue.index.to_numpy()]

    def positions(*names: str) -> tuple[np.ndarray, np.ndarray]:
        at = np.flatnonzero(np.isin(actions, names))
        return at, source_row[at].astype(np.int64)

    about_parcel = queue["subject_id"].notna().to_numpy()
    at, rows = positions(outreach.WINBACK_OFFER, outreach.SERVICE_RECOVERY_CALL)
    at, rows = at[~about_parcel[at]], rows[~about_parcel[at]]
    if len(at):
        contrib, reasons = _explain(churn, customers, rows)
        contact = driving_contact_reason(contrib, churn.features, customers.iloc[rows])
        for k, (i, r) in enumerate(zip(at, rows, strict=True)):
            p = float(churn_p[r])
            driver = (
                ", no contact with service"
                if contact[k] == NO_CONTACT
                else f", driven by {contact[k].replace('_', ' ')} contacts"
            )
            text[i] = f"Churn risk {p:.0%} ({band(p)}){driver}: {_words(reasons[k])}"
    at, rows = positions(outreach.SERVICE_RECOVERY_CALL)
    at, rows = at[about_parcel[at]], rows[about_parcel[at]]
    for i, r in zip(at, rows, strict=True):
        parcel = shipments.iloc[r]
        text[i] = f"Parcel {parcel['shipment_id']}: {lost_words(parcel, as_of)}"
    at, rows = positions(outreach.DELAY_NOTICE)
    if len(at):
        _, reasons = _explain(delay, shipments, rows)
        for k, (i, r) in enumerate(zip(at, rows, strict=True)):
            p = float(delay_p[r])
            text[i] = f"Late-delivery risk {p:.0%} ({band(p)}): {_words(reasons[k])}"
            if windows["due"].iat[r]:
                w = windows.iloc[r]
                text[i] = (
                    f"Expected {_day(w['most_likely_date'])}, after the promised "
                    f"{_day(w['promised_date'])} (arrives between {_day(w['earliest_date'])} "
                    f"and {_day(w['latest_date'])}); {text[i]}"
                )
    at, rows = positions(outreach.PAYMENT_REMINDER)
    for i, r in zip(at, rows, strict=True):
        invoice = invoices.iloc[r]
        days = (as_of - pd.Timestamp(invoice["due_date"])).days
        text[i] = (
            f"Invoice {invoice['invoice_id']} of {invoice['amount']:,.2f} is {days} days overdue"
        )
    return text
