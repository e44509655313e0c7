"""Outreach uplift: how much does each outreach action change whether the customer buys again?

- Entity: customer. Decisions: every logged `outreach` row, sent or held out, at its `ts`
  (the send time, or when a held-out row would have been sent), whose 90-day window ends by
  the data's end.
- Outcome (`label`): 1 when the customer places an order in (ts, ts + 90 days], from the raw
  orders; known at ts + 90 days.
- Treatment: `treated` = the row was sent (not held out). Held-out rows are the control arm
  of their action: the holdout is drawn at random among the rows the policy chose, so within
  an action treated and held-out rows differ only by chance.
- Effect: the uplift τ(x, a) = P(order | sent, x, a) − P(order | held out, x, a), for the
  customer's point-in-time features x as of `ts` (the `churn_v1` service plus the churn
  model's decision-time features) and the action a (a categorical input: the learners see
  every action at once and split on it where effects differ), and what the action is about:
  its subject order's experience as of ts (`features.build.outreach_context`: late, lost,
  damaged, unresolved, complained about, first order, amount).
- Baseline: today's ranking, the probability of no repurchase × the action's assumed
  constant uplift (`models.policies.outreach.UPLIFT`); actions without one rank last.
- Segments: the action.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pyarrow as pa

from features.build.outreach_context import CONTEXT_FEATURES, outreach_context
from features.frames import sorted_stably
from features.instants import utc_times, watermark
from models.churn import SPEC as CHURN
from models.spec import EVENT_TIME, LABEL, LABEL_KNOWN, Kind, ModelSpec

NAME = "outreach_uplift"
HORIZON = pd.Timedelta(days=90)
TREATED = "treated"
ACTION = "action"
PROPENSITY = "propensity"
# Columns of the label events besides the entity, time, label and label-known columns.
EVENT_COLUMNS = ("outreach_id", ACTION, "channel", "subject_id", TREATED, PROPENSITY)


def label_events(tables: dict[str, pa.Table]) -> pd.DataFrame:
    """One row per logged outreach row whose 90-day window has ended.

    Args:
        tables: Raw tables: `outreach`, `orders` (and `customers`, whose timestamps extend
            the data's end).

    Returns:
        customer_id, event_timestamp (the row's ts), label (1 = an order within 90 days
        after it), label_ts (ts + 90 days) and `EVENT_COLUMNS`.
    """
    columns = ["customer_id", EVENT_TIME, LABEL, LABEL_KNOWN, *EVENT_COLUMNS, *CONTEXT_FEATURES]
    outreach = tables["outreach"].to_pandas()
    if outreach.empty:
        return pd.DataFrame(columns=columns)
    end = watermark({n: tables[n] for n in ("orders", "customers", "outreach") if n in tables})
    outreach["ts"] = utc_times(outreach["ts"])
    outreach = outreach[outreach["ts"] + HORIZON <= end].reset_index(drop=True)
    orders = tables["orders"].select(["customer_id", "order_ts"]).to_pandas()
    orders["order_ts"] = utc_times(orders["order_ts"])
    # Per row, the customer's first order after ts: one sorted search per customer block.
    orders = sorted_stably(orders, ["customer_id", "order_ts"])
    codes = pd.Index(orders["customer_id"].unique())
    order_code = codes.get_indexer(orders["customer_id"])
    row_code = codes.get_indexer(outreach["customer_id"])
    # One sortable number per (customer, instant): the code above any second count.
    stride = np.int64(10**11)
    order_key = order_code.astype(np.int64) * stride + _seconds(orders["order_ts"])
    row_key = row_code.astype(np.int64) * stride + _seconds(outreach["ts"])
    window = np.int64(HORIZON.total_seconds())
    # Orders strictly after ts and at most 90 days later.
    after = np.searchsorted(order_key, row_key, side="right")
    until = np.searchsorted(order_key, row_key + window, side="right")
    bought = (until > after) & (row_code >= 0)
    context = outreach_context(outreach, tables).reset_index(drop=True)
    events = pd.DataFrame(
        {
            "customer_id": outreach["customer_id"].to_numpy(),
            EVENT_TIME: outreach["ts"],
            LABEL: bought.astype(np.int64),
            LABEL_KNOWN: outreach["ts"] + HORIZON,
            "outreach_id": outreach["outreach_id"].to_numpy(),
            ACTION: outreach["action"].astype(object).to_numpy(),
            "channel": outreach["channel"].astype(object).to_numpy(),
            "subject_id": outreach["subject_id"].astype(object).to_numpy(),
            TREATED: ~outreach["holdout"].astype(bool).to_numpy(),
            PROPENSITY: outreach["propensity"].astype(np.float64).to_numpy(),
        }
    )
    return pd.concat([events, context], axis=1)[columns]


# Second outcomes, each where it fits: name → (the actions it is measured for, its window,
# what it is). Both are measured as the difference between the sent and held-out rows of the
# action (`training.uplift.second_effects`), not learned per customer.
WISMO_REASONS = ("order_status", "delivery_delay")
SECOND_OUTCOMES = {
    "wismo_contacts_14d": (
        ("delay_notice",),
        pd.Timedelta(days=14),
        "contacts asking where the order is (order status, delivery delay) in the 14 days "
        "after the send",
    ),
    "days_to_pay_30d": (
        ("payment_reminder", "renewal_reminder"),
        pd.Timedelta(days=30),
        "days from the send to the invoice's payment, 30 when unpaid by then",
    ),
}


def second_outcomes(rows: pd.DataFrame, tables: dict[str, pa.Table]) -> pd.DataFrame:
    """The second outcomes of outreach rows, from the raw tables.

    A row gets a value only for an outcome that fits its action and whose window ended by the
    data's end (else NaN); a source without the outcome's table leaves it NaN.

    Args:
        rows: customer_id, event_timestamp (the send), action and subject_id.
        tables: Raw tables: `contacts` for the contacts, `invoices` for the payments.

    Returns:
        One column per `SECOND_OUTCOMES` entry, aligned with `rows`.
    """
    end = watermark(tables, happened=True)
    ts = utc_times(rows[EVENT_TIME]).reset_index(drop=True)
    action = rows[ACTION].astype(object).reset_index(drop=True)
    out = pd.DataFrame({name: np.nan for name in SECOND_OUTCOMES}, index=ts.index)
    wismo_actions, wismo_window, _ = SECOND_OUTCOMES["wismo_contacts_14d"]
    fits = action.isin(wismo_actions) & (ts + wismo_window <= end)
    if "contacts" in tables and fits.any():
        contacts = tables["contacts"].select(["customer_id", "ts", "reason"]).to_pandas()
        contacts = contacts[contacts["reason"].isin(WISMO_REASONS)]
        contacts["ts"] = utc_times(contacts["ts"])
        asked = rows.loc[fits.to_numpy(), ["customer_id"]].reset_index(drop=True)
        asked["sent"] = ts[fits].to_numpy()
        asked["row"] = np.flatnonzero(fits.to_numpy())
        pairs = asked.merge(contacts, on="customer_id", how="inner")
        within = pairs[
            (pairs["ts"] > pairs["sent"]) & (pairs["ts"] <= pairs["sent"] + wismo_window)
        ]
        counts = within.groupby("row").size()
        rows_asked = asked["row"].to_numpy()
        values = np.zeros(len(asked))
        values[np.searchsorted(rows_asked, counts.index.to_numpy())] = counts.to_numpy()
        out.loc[rows_asked, "wismo_contacts_14d"] = values
    pay_actions, pay_window, _ = SECOND_OUTCOMES["days_to_pay_30d"]
    fits = action.isin(pay_actions) & (ts + pay_window <= end)
    if "invoices" in tables and fits.any():
        invoices = tables["invoices"].select(["invoice_id", "paid_ts"]).to_pandas()
        paid = utc_times(invoices.set_index("invoice_id")["paid_ts"])
        subject = rows["subject_id"].astype(object).reset_index(drop=True)[fits]
        paid_at = pd.Series(paid.reindex(subject.to_numpy()).to_numpy(), index=subject.index)
        known = subject.isin(paid.index)
        days = (paid_at - ts[fits]).dt.total_seconds() / 86_400.0
        cap = pay_window.total_seconds() / 86_400.0
        # Paid before the send: no payment left to speed up (NaN); unpaid by the window's
        # end: the cap.
        days = days.where(days.isna() | (days >= 0), np.nan).where(paid_at.notna(), cap)
        days = days.clip(upper=cap).where(known, np.nan)
        out.loc[days.index, "days_to_pay_30d"] = days.to_numpy()
    return out


def _seconds(instants: pd.Series) -> np.ndarray:
    return instants.to_numpy(dtype="datetime64[s]").astype(np.int64)


def baseline(frame: pd.DataFrame) -> np.ndarray:
    """Today's ranking score: the probability of no repurchase (`risk`, filled by the
    trainer from a classifier on the same rows) × the action's assumed uplift (NaN for an
    action without one: today's queue never ranks it)."""
    from models.policies.outreach import UPLIFT

    assumed = frame[ACTION].map(UPLIFT).astype(np.float64).to_numpy()
    return frame["risk"].to_numpy(dtype=np.float64) * assumed


SPEC = ModelSpec(
    name=NAME,
    kind=Kind.UPLIFT,
    metric_label="test Qini",
    entity=("customer_id",),
    decision_time="each logged outreach row's send time",
    raw_tables=("outreach", "orders", "customers"),
    optional_tables=("shipments", "tracking_events", "contacts", "returns", "invoices"),
    label_events=label_events,
    feature_service=CHURN.feature_service,
    categorical=(*CHURN.categorical, ACTION),
    exclude=CHURN.exclude,
    derived=(*CHURN.derived, *CONTEXT_FEATURES),
    words=dict(CONTEXT_FEATURES),
    baseline=baseline,
    segments=(ACTION,),
    primary_metric="qini",
    higher_is_better=True,
    # Few, large leaves: an effect is a small difference of noisy outcomes, and measured on
    # 100,000 simulated customers these beat 31 leaves of 50 rows on every learner.
    params={"num_leaves": 7, "learning_rate": 0.03, "min_data_in_leaf": 300},
    num_boost_round=600,
    early_stopping_rounds=40,
    # The share of eligible moments the queue can act on, for the uplift at capacity and
    # the selections compared against today's ranking, random and the oracle.
    capacity=0.2,
    baseline_is_probability=False,
    options={
        # The learners compared on the validation window; the best Qini serves.
        "learners": (
            "action_means",
            "t_learner",
            "s_learner",
            "x_learner",
            "dr_learner",
            "r_learner",
        ),
        # Fewer treated or held-out rows than this for an action: it is not learned (its
        # effect is unknown and the queue never ranks it by one).
        "min_arm_rows": 30,
        # A per-customer learner serves only when its validation Qini beats each action's
        # mean effect in this share of paired bootstrap resamples.
        "beat_simplest": 0.9,
        # Bootstrap resamples of the test rows for the metrics' intervals, and their level.
        "bootstrap": 200,
        "interval": 0.9,
        # Bins of predicted uplift whose observed uplift on the validation window gives each
        # prediction its interval.
        "interval_bins": 5,
    },
)
