"""Outreach policy: whom to contact today, about what, on which channel and when.

- Actions: a proactive delay notice (an open parcel at risk of coming late), a service
  recovery call (a customer with unresolved contacts who may churn), a win-back offer (a
  customer who may churn) and a payment reminder (an overdue, unpaid invoice).
- Priority: the expected value saved, risk × value × uplift of the action. Risk is the
  calibrated probability of the model behind the action (1 for an overdue invoice: it is
  already unpaid); value is the customer's trailing 365-day spend × `MARGIN` (for a reminder,
  the amount overdue).
- Rules: a channel the action may use and the customer consented to (the preferred channel
  first), marketing consent for offers, no contact in quiet hours of the customer's own time
  zone, at most `frequency_cap` actions per customer within `frequency_cap_days` (counting
  what earlier queues held), and never more actions than the schedulers' capacity.

Plain functions on frames: the batch flow and the tests call them alike.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

DELAY_NOTICE = "delay_notice"
SERVICE_RECOVERY_CALL = "service_recovery_call"
WINBACK_OFFER = "winback_offer"
PAYMENT_REMINDER = "payment_reminder"
ACTIONS = (DELAY_NOTICE, SERVICE_RECOVERY_CALL, WINBACK_OFFER, PAYMENT_REMINDER)
CHANNELS = ("email", "sms", "voice")

# Expected uplift: the share of the value at risk an action saves. These are planning
# assumptions, not measurements (no action has been tested against a holdout yet); they are
# set from the usual ranges reported for post-purchase programmes: proactive delay notices
# cut "where is my order" contacts and post-delay churn by around a tenth; a recovery call on
# an unresolved case keeps roughly one in five at-risk customers; broadcast win-back offers
# convert a few percent; a reminder gets about a third of overdue invoices paid sooner.
# Replace them with uplift measured on control groups once outreach is logged.
UPLIFT = {
    DELAY_NOTICE: 0.10,
    SERVICE_RECOVERY_CALL: 0.20,
    WINBACK_OFFER: 0.05,
    PAYMENT_REMINDER: 0.30,
}
# Channels an action may use, in the order tried after the customer's preferred one.
ACTION_CHANNELS = {
    DELAY_NOTICE: ("sms", "email"),
    SERVICE_RECOVERY_CALL: ("voice",),
    WINBACK_OFFER: ("email", "sms"),
    PAYMENT_REMINDER: ("email", "sms"),
}
# Offers are marketing: they also need marketing consent.
NEEDS_MARKETING_CONSENT = frozenset({WINBACK_OFFER})
# Gross margin that turns spend into customer value: the simulated catalogue's margins
# centre near it; a real shop would use its own margin per customer.
MARGIN = 0.30

CANDIDATE_COLUMNS = ("customer_id", "action", "subject_id", "risk", "value")
CUSTOMER_COLUMNS = (
    "customer_id",
    "region",
    "timezone",
    "language",
    "preferred_channel",
    "consent_email",
    "consent_sms",
    "consent_voice",
    "consent_marketing",
)
QUEUE_COLUMNS = (
    "rank",
    "customer_id",
    "action",
    "subject_id",
    "channel",
    "language",
    "region",
    "timezone",
    "send_window_start",
    "send_window_end",
    "priority",
    "risk",
    "value",
    "uplift",
)


@dataclass(frozen=True)
class OutreachRules:
    """The scheduler's limits.

    Attributes:
        capacity: Most actions in one queue.
        quiet_hours_start: Local hour from which nobody is contacted.
        quiet_hours_end: Local hour from which contacts may resume.
        frequency_cap: Most actions per customer within the cap window.
        frequency_cap_days: Length of that window.
    """

    capacity: int = 1_000
    quiet_hours_start: int = 21
    quiet_hours_end: int = 8
    frequency_cap: int = 1
    frequency_cap_days: int = 7

    @property
    def open_hours(self) -> int:
        """Hours per day contacts are allowed (quiet hours may wrap midnight)."""
        # Equal hours mean no quiet time at all.
        return (self.quiet_hours_start - self.quiet_hours_end) % 24 or 24


def customer_value(monetary_365d: pd.Series | np.ndarray) -> np.ndarray:
    """Value of a customer: trailing 365-day spend × `MARGIN` (0 where unknown)."""
    spend = np.nan_to_num(np.asarray(monetary_365d, dtype=np.float64), nan=0.0)
    return np.clip(spend, 0.0, None) * MARGIN


def choose_channels(frame: pd.DataFrame) -> np.ndarray:
    """The channel of each (action, customer) row, or None where no channel is allowed.

    The preferred channel when the action may use it and the customer consented to it,
    else the first of the action's channels the customer consented to.
    """
    n = len(frame)
    consent = {c: frame[f"consent_{c}"].fillna(False).to_numpy(dtype=bool) for c in CHANNELS}
    preferred = frame["preferred_channel"].astype(object).to_numpy()
    action = frame["action"].to_numpy()
    marketing = frame["consent_marketing"].fillna(False).to_numpy(dtype=bool)
    chosen = np.full(n, None, dtype=object)
    for name, options in ACTION_CHANNELS.items():
        rows = action == name
        if name in NEEDS_MARKETING_CONSENT:
            rows &= marketing
        for channel in options:
            pick = rows & (preferred == channel) & consent[channel]
            chosen[pick] = channel
        for channel in options:
            pick = rows & (chosen == None) & consent[channel]  # noqa: E711 (element-wise)
            chosen[pick] = channel
    return chosen


def recent_counts(history: pd.DataFrame, as_of: pd.Timestamp, days: int) -> pd.Series:
    """Actions queued per customer in (as_of − days, as_of]."""
    if history.empty:
        return pd.Series(dtype=np.int64)
    queued = pd.to_datetime(history["queued_ts"], utc=True)
    recent = history[(queued > as_of - pd.Timedelta(days=days)) & (queued <= as_of)]
    return recent.groupby("customer_id").size()


def send_windows(
    timezones: pd.Series, as_of: pd.Timestamp, rules: OutreachRules
) -> tuple[pd.Series, pd.Series]:
    """The first allowed send window at or after `as_of`, in each customer's local time.

    Returns:
        Window start and end per row, as ISO-8601 strings with the local UTC offset.
    """
    start = pd.Series(index=timezones.index, dtype=object)
    end = pd.Series(index=timezones.index, dtype=object)
    length = pd.Timedelta(hours=rules.open_hours)
    for zone, rows in timezones.groupby(timezones.astype(str), sort=False).groups.items():
        local = as_of.tz_convert(zone)
        midnight = local.normalize()
        for days in (-1, 0, 1):
            opens = (midnight + pd.Timedelta(days=days)).replace(tzinfo=None)
            opens = (opens + pd.Timedelta(hours=rules.quiet_hours_end)).tz_localize(
                zone, ambiguous=False, nonexistent="shift_forward"
            )
            closes = opens + length
            if closes > local:
                break
        first = max(opens, local)
        start.loc[rows] = first.isoformat()
        end.loc[rows] = closes.isoformat()
    return start, end


def plan_outreach(
    candidates: pd.DataFrame,
    customers: pd.DataFrame,
    history: pd.DataFrame,
    as_of: pd.Timestamp,
    rules: OutreachRules,
) -> pd.DataFrame:
    """The day's outreach queue, highest expected value saved first.

    Args:
        candidates: One row per possible action: customer_id, action, subject_id (the
            shipment or invoice it is about; None for the customer as a whole), risk, value.
        customers: customer_id, region, timezone, language, preferred_channel and the
            consent flags.
        history: Actions queued before: customer_id, queued_ts.
        as_of: The decision instant (UTC).
        rules: Capacity, quiet hours and frequency cap.

    Returns:
        `QUEUE_COLUMNS`, at most `rules.capacity` rows, ranked from 1.
    """
    as_of = pd.Timestamp(as_of).tz_convert("UTC")
    frame = candidates.loc[:, list(CANDIDATE_COLUMNS)].merge(
        customers.loc[:, list(CUSTOMER_COLUMNS)], on="customer_id", how="inner"
    )
    uplift = frame["action"].map(UPLIFT).to_numpy(dtype=np.float64)
    risk = frame["risk"].to_numpy(dtype=np.float64)
    value = frame["value"].to_numpy(dtype=np.float64)
    priority = risk * value * uplift
    channel = choose_channels(frame)
    keep = np.isfinite(priority) & (priority > 0) & (channel != None)  # noqa: E711
    frame = frame.assign(uplift=uplift, priority=priority, channel=channel)[keep]

    # Frequency cap: what earlier queues hold counts against this one.
    room = rules.frequency_cap - frame["customer_id"].map(
        recent_counts(history, as_of, rules.frequency_cap_days)
    ).fillna(0).to_numpy(dtype=np.int64)
    frame = frame[room > 0].assign(_room=room[room > 0])
    frame = frame.sort_values(
        ["priority", "customer_id", "action"], ascending=[False, True, True], kind="stable"
    )
    nth = frame.groupby("customer_id", sort=False).cumcount().to_numpy()
    frame = frame[nth < frame["_room"].to_numpy()].head(rules.capacity)

    start, end = send_windows(frame["timezone"], as_of, rules)
    frame = frame.assign(
        rank=np.arange(1, len(frame) + 1, dtype=np.int64),
        send_window_start=start,
        send_window_end=end,
    )
    return frame.loc[:, list(QUEUE_COLUMNS)].reset_index(drop=True)
