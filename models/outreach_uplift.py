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
from features.instants import watermark
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
    outreach["ts"] = pd.to_datetime(outreach["ts"], utc=True)
    outreach = outreach[outreach["ts"] + HORIZON <= end].reset_index(drop=True)
    orders = tables["orders"].select(["customer_id", "order_ts"]).to_pandas()
    orders["order_ts"] = pd.to_datetime(orders["order_ts"], utc=True)
    # Per row, the customer's first order after ts: one sorted search per customer block.
    orders = orders.sort_values(["customer_id", "order_ts"], kind="stable")
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
        # Bootstrap resamples of the test rows for the metrics' intervals, and their level.
        "bootstrap": 200,
        "interval": 0.9,
        # Bins of predicted uplift whose observed uplift on the validation window gives each
        # prediction its interval.
        "interval_bins": 5,
    },
)
