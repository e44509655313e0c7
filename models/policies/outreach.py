"""Outreach policy: whom to contact today, about what, on which channel and when.

- Actions: a proactive delay notice (an open parcel at risk of coming late, or one whose
  estimated delivery date has moved past the promise — see `window_past_promise`), a service
  recovery call (a customer with unresolved contacts who may churn, or a parcel likely lost:
  past its promise and silent for `lost_after_days`, due like a delay notice), a win-back offer (a
  customer who may churn) and a payment reminder (an overdue, unpaid invoice).
- Priority: the expected value saved, risk × value × uplift of the action. Risk is the
  calibrated probability of the model behind the action (1 for an overdue invoice: it is
  already unpaid); value is the customer's trailing 365-day spend × `MARGIN` (for a reminder,
  the amount overdue).
- Rules: a channel the action may use and the customer consented to (the preferred channel
  first), marketing consent for offers, no contact in quiet hours of the customer's own time
  zone, at most `frequency_cap` actions per customer within `frequency_cap_days` (counting
  what earlier queues held), and never more actions than the schedulers' capacity.
- Due actions: a candidate flagged `due` (a delay notice whose estimate passed the promise:
  the customer should hear the new date before it is missed) is queued ahead of the ranked
  rest, whatever its priority, under the same channel, consent, cap and capacity rules.

Plain functions on frames: `candidates` turns scores into every possible action, and
`plan_outreach` ranks them into the day's queue under the rules; batch scoring and the
tests call them alike.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from features.contract.schema import OUTREACH_ACTIONS, OUTREACH_CHANNELS

(
    DELAY_NOTICE,
    SERVICE_RECOVERY_CALL,
    WINBACK_OFFER,
    PAYMENT_REMINDER,
    SATISFACTION_CHECK,
    RENEWAL_REMINDER,
    ONBOARDING_FOLLOWUP,
    NPS_SURVEY,
) = ACTIONS = OUTREACH_ACTIONS
CHANNELS = OUTREACH_CHANNELS

# Expected uplift: the share of the value at risk an action saves. These are planning
# assumptions, not measurements (no action has been tested against a holdout yet); they are
# set from the usual ranges reported for post-purchase programmes: proactive delay notices
# cut "where is my order" contacts and post-delay churn by around a tenth; a recovery call on
# an unresolved case keeps roughly one in five at-risk customers; broadcast win-back offers
# convert a few percent; a reminder gets about a third of overdue invoices paid sooner.
# Replace them with uplift measured on control groups once outreach is logged. The proactive
# moments (satisfaction check, renewal reminder, onboarding follow-up, NPS survey) have no
# assumed uplift: they are ranked only once an uplift is measured for them, so until then
# they are never queued.
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
    SATISFACTION_CHECK: ("email", "sms"),
    RENEWAL_REMINDER: ("email", "sms"),
    ONBOARDING_FOLLOWUP: ("email", "voice"),
    NPS_SURVEY: ("email", "sms"),
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
# What a scheduler needs: who, what, about what, on which channel and in which language,
# when (the send window, in local time with its offset) and why. The customer's time zone
# and consents are used to plan and are not exported.
QUEUE_COLUMNS = (
    "rank",
    "customer_id",
    "action",
    "subject_id",
    "channel",
    "language",
    "region",
    "send_window_start",
    "send_window_end",
    "priority",
    "risk",
    "value",
    "uplift",
    "uplift_low",
    "uplift_high",
    "cost",
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
        lost_after_days: Days without a scan, past the promise, after which a parcel is
            taken for lost (a service-recovery call about it instead of a delay notice).
        channel_capacity: Channel → most actions on it in one queue (a channel not named:
            only `capacity` bounds it). Voice is the scarce one: agents' hours.
        channel_cost: Channel → the cost of one action on it, in the shop's currency (a
            channel not named: free); subtracted from the value an action saves.

    Raises:
        ValueError: A channel of `channel_capacity` or `channel_cost` is not an outreach
            channel, or a capacity or cost is negative.
    """

    capacity: int = 1_000
    quiet_hours_start: int = 21
    quiet_hours_end: int = 8
    frequency_cap: int = 1
    frequency_cap_days: int = 7
    lost_after_days: float = 14.0
    channel_capacity: Mapping[str, int] = field(default_factory=dict)
    channel_cost: Mapping[str, float] = field(default_factory=dict)

    def __post_init__(self) -> None:
        for name, values in (
            ("channel_capacity", self.channel_capacity),
            ("channel_cost", self.channel_cost),
        ):
            unknown = sorted(set(values) - set(CHANNELS))
            if unknown:
                raise ValueError(f"{name}: unknown channels {unknown}; known {list(CHANNELS)}")
            negative = sorted(c for c, v in values.items() if v < 0)
            if negative:
                raise ValueError(f"{name}: negative for {negative}")

    def cost(self, channel: str | None) -> float:
        """The cost of one action on a channel."""
        return float(self.channel_cost.get(channel, 0.0)) if channel is not None else 0.0

    @property
    def open_hours(self) -> int:
        """Hours per day contacts are allowed (quiet hours may wrap midnight)."""
        # Equal hours mean no quiet time at all.
        return (self.quiet_hours_start - self.quiet_hours_end) % 24 or 24


def customer_value(monetary_365d: pd.Series | np.ndarray) -> np.ndarray:
    """Value of a customer: trailing 365-day spend × `MARGIN` (0 where unknown)."""
    spend = np.nan_to_num(np.asarray(monetary_365d, dtype=np.float64), nan=0.0)
    return np.clip(spend, 0.0, None) * MARGIN


def choose_channels(
    action: np.ndarray,
    preferred: np.ndarray,
    consent: dict[str, np.ndarray],
    marketing: np.ndarray,
) -> np.ndarray:
    """The channel of each (action, customer) row, or None where no channel is allowed.

    The preferred channel when the action may use it and the customer consented to it,
    else the first of the action's channels the customer consented to.

    Args:
        action: The action of each row.
        preferred: The customer's preferred channel, per row.
        consent: Channel → whether the row's customer consented to it.
        marketing: Whether the row's customer consented to marketing.
    """
    # Small integer codes: comparing them is far cheaper than comparing strings.
    action_code = pd.Categorical(action, categories=list(ACTION_CHANNELS)).codes
    preferred_code = pd.Categorical(preferred, categories=list(CHANNELS)).codes
    chosen_code = np.full(len(action), -1, dtype=np.int8)
    for a, (name, options) in enumerate(ACTION_CHANNELS.items()):
        rows = action_code == a
        if name in NEEDS_MARKETING_CONSENT:
            rows &= marketing
        for channel in options:
            c = CHANNELS.index(channel)
            chosen_code[rows & (preferred_code == c) & consent[channel]] = c
        for channel in options:
            c = CHANNELS.index(channel)
            chosen_code[rows & (chosen_code < 0) & consent[channel]] = c
    return np.array([*CHANNELS, None], dtype=object)[chosen_code]


def contacted(history: pd.DataFrame, outreach_log: pd.DataFrame | None) -> pd.DataFrame:
    """Every earlier action the frequency cap counts: the queue's own history and each
    action the raw `outreach` table shows as sent (not held out), whoever sent it.

    A logged action that came from the queue (the same `outreach_id`) counts once.

    Args:
        history: The queue's history: customer_id, queued_ts, optionally outreach_id.
        outreach_log: The raw `outreach` table (customer_id, ts, holdout, outreach_id), or
            None where the source has none.

    Returns:
        customer_id and queued_ts (when the action was queued or sent), one row an action.
    """
    columns = ["customer_id", "queued_ts"]
    own = history.loc[:, columns]
    if outreach_log is None or outreach_log.empty:
        return own.reset_index(drop=True)
    sent = outreach_log[~outreach_log["holdout"].astype("boolean").fillna(False).to_numpy()]
    if "outreach_id" in history:
        sent = sent[~sent["outreach_id"].isin(history["outreach_id"])]
    logged = pd.DataFrame(
        {
            "customer_id": sent["customer_id"].to_numpy(dtype=object),
            "queued_ts": pd.to_datetime(sent["ts"], utc=True).reset_index(drop=True),
        }
    )
    frames = [f for f in (own, logged) if len(f)]
    if not frames:
        return own.reset_index(drop=True)
    return pd.concat(frames, ignore_index=True)


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
        # Calendar days on the wall clock: adding 24 hours to a midnight before a DST change
        # would land at 01:00 or 23:00.
        midnight = local.normalize().replace(tzinfo=None)
        for days in (-1, 0, 1):
            wall = midnight + pd.Timedelta(days=days, hours=rules.quiet_hours_end)
            opens, closes = (
                t.tz_localize(zone, ambiguous=False, nonexistent="shift_forward")
                for t in (wall, wall + length)
            )
            if closes > local:
                break
        first = max(opens, local)
        start.loc[rows] = first.isoformat()
        end.loc[rows] = closes.isoformat()
    return start, end


def window_past_promise(most_likely_date, promised_date) -> np.ndarray:
    """Whether each parcel's most likely delivery date falls after its promised date.

    The trigger of a proactive delay notice beside the risk-based one. The most likely date,
    not the window's latest, decides: it is the date the notice tells the customer, and the
    latest date of a 90% window passes the promise whenever lateness is merely possible,
    which the risk already prices. Both dates are calendar dates in the customer's zone; a
    missing date (NaT) never triggers.

    Args:
        most_likely_date: Estimated delivery dates (`datetime64[D]`-like).
        promised_date: Promised delivery dates, in the same zone.
    """
    estimate = np.asarray(most_likely_date, dtype="datetime64[D]")
    promise = np.asarray(promised_date, dtype="datetime64[D]")
    return ~np.isnat(estimate) & ~np.isnat(promise) & (estimate > promise)


def _flags(values: pd.Series) -> np.ndarray:
    """Booleans with missing as False (consent unknown is no consent)."""
    return values.astype("boolean").fillna(False).to_numpy(dtype=bool)


def _fill(
    order: np.ndarray,
    pos: np.ndarray,
    room: np.ndarray,
    action: np.ndarray,
    channel: np.ndarray,
    saved: np.ndarray,
    due: np.ndarray,
    consent: dict[str, np.ndarray],
    marketing: np.ndarray,
    rules: OutreachRules,
) -> tuple[np.ndarray, list[str]]:
    """Take candidates in `order` while the queue, each customer's cap and each channel's
    capacity have room.

    A candidate whose channel is full falls back to the next of its action's channels the
    customer consented to, if that one has room and the action is still worth its cost there
    (a due action is taken whatever its worth). Only the candidates near the top are walked,
    so this loop is a few thousand steps however many customers there are.

    Returns:
        The chosen candidates, in queue order, and the channel each one goes out on.
    """
    left = {c: rules.channel_capacity.get(c, rules.capacity) for c in CHANNELS}
    taken: dict[int, int] = {}
    chosen: list[int] = []
    channels: list[str] = []
    for i in order.tolist():
        if len(chosen) >= rules.capacity:
            break
        customer = int(pos[i])
        if taken.get(customer, 0) >= room[i]:
            continue
        first = channel[i]
        options = [first] + [
            c
            for c in ACTION_CHANNELS[action[i]]
            if c != first
            and consent[c][i]
            and (action[i] not in NEEDS_MARKETING_CONSENT or marketing[i])
        ]
        for option in options:
            if left[option] <= 0:
                continue
            if option != first and not due[i] and not saved[i] - rules.cost(option) > 0:
                continue
            left[option] -= 1
            taken[customer] = taken.get(customer, 0) + 1
            chosen.append(i)
            channels.append(option)
            break
    return np.asarray(chosen, dtype=np.int64), channels


def plan_outreach(
    candidates: pd.DataFrame,
    customers: pd.DataFrame,
    history: pd.DataFrame,
    as_of: pd.Timestamp,
    rules: OutreachRules,
) -> pd.DataFrame:
    """The day's outreach queue, highest expected value saved first.

    Priority is the value an action saves less the cost of its channel: with a measured
    `uplift` column (the uplift model's predicted effect on the customer's repurchase),
    uplift × the customer's value, and an action whose predicted effect is not above zero
    is never queued, due or not; without one, risk × value × the assumed `UPLIFT`. Only
    actions worth more than they cost are queued (due ones whatever their worth).
    Equivalent to walking every allowed candidate by priority (ties: input order), skipping
    those beyond their customer's remaining frequency cap or whose channels are full
    (`_fill`), and keeping the first `capacity`; only the candidates that can reach the queue
    are sorted, so a million customers cost a pass over arrays, not a sort of the million.

    Args:
        candidates: One row per possible action: customer_id, action, subject_id (the
            shipment or invoice it is about; None for the customer as a whole), risk, value;
            optionally `customer_row`, the row of the customer in `customers` (-1: unknown),
            which saves looking the ids up; optionally `due` (bool), candidates a rule
            makes due: they come first, by priority among themselves, and need no
            positive priority; optionally `uplift` (the predicted effect),
            `uplift_low`/`uplift_high` (its interval) and `customer_value` (what the
            customer's repurchase is worth; default `value`).
        customers: customer_id, region, timezone, language, preferred_channel and the
            consent flags.
        history: Actions queued before: customer_id, queued_ts.
        as_of: The decision instant (UTC).
        rules: Capacity, quiet hours and frequency cap.

    Returns:
        `QUEUE_COLUMNS`, at most `rules.capacity` rows, ranked from 1, indexed by the
        labels of the candidates they came from.
    """
    as_of = pd.Timestamp(as_of).tz_convert("UTC")
    customers = customers.reset_index(drop=True)
    cand = candidates.reset_index(drop=True)
    if "customer_row" in cand:
        pos = cand["customer_row"].to_numpy(dtype=np.int64)
    else:
        pos = pd.Index(customers["customer_id"]).get_indexer(cand["customer_id"])
    known = pos >= 0
    at = np.where(known, pos, 0)
    action = cand["action"].to_numpy(dtype=object)
    risk = cand["risk"].to_numpy(dtype=np.float64)
    value = cand["value"].to_numpy(dtype=np.float64)
    measured = "uplift" in cand
    if measured:
        # The measured effect on the customer's repurchase, worth the customer's value.
        uplift = cand["uplift"].to_numpy(dtype=np.float64)
        worth = cand["customer_value"] if "customer_value" in cand else cand["value"]
        with np.errstate(invalid="ignore"):
            saved = uplift * worth.to_numpy(dtype=np.float64)
    else:
        uplift = np.array([UPLIFT.get(a, np.nan) for a in ACTION_CHANNELS] + [np.nan])[
            pd.Categorical(action, categories=list(ACTION_CHANNELS)).codes
        ]
        with np.errstate(invalid="ignore"):
            saved = risk * value * uplift
    bounds = {
        end: cand[f"uplift_{end}"].to_numpy(dtype=np.float64)
        if f"uplift_{end}" in cand
        else np.full(len(cand), np.nan)
        for end in ("low", "high")
    }
    consent = {c: _flags(customers[f"consent_{c}"])[at] for c in CHANNELS}
    marketing = _flags(customers["consent_marketing"])[at]
    channel = choose_channels(
        action, customers["preferred_channel"].astype(object).to_numpy()[at], consent, marketing
    )
    cost_of = np.array([rules.cost(c) for c in CHANNELS] + [0.0])
    channel_code = pd.Categorical(channel, categories=list(CHANNELS)).codes
    with np.errstate(invalid="ignore"):
        priority = saved - cost_of[channel_code]
    counts = recent_counts(history, as_of, rules.frequency_cap_days)
    room_of_customer = rules.frequency_cap - counts.reindex(customers["customer_id"]).fillna(
        0
    ).to_numpy(dtype=np.int64)
    room = room_of_customer[at]
    due = _flags(cand["due"]) if "due" in cand else np.zeros(len(cand), dtype=bool)
    with np.errstate(invalid="ignore"):
        ranked = np.isfinite(priority) & (priority > 0)
        allowed = known & (ranked | due) & (room > 0)
        if measured:
            # An action measured to harm (or not known to help) is never queued, due or not.
            allowed &= np.isfinite(uplift) & (uplift > 0)
    allowed &= channel != None  # noqa: E711 (element-wise)
    eligible = np.flatnonzero(allowed)

    # Due candidates rank above every other: their key is lifted past the highest priority.
    key = np.where(np.isfinite(priority), priority, 0.0)
    if due.any():
        key = np.where(due, key + (key[eligible].max(initial=0.0) + 1.0), key)

    # The queue can only hold candidates among the top ones by key: take the top k (all
    # ties at the cut included), fill the queue from them, widen if too few were taken.
    chosen = np.zeros(0, dtype=np.int64)
    k = max(4 * rules.capacity, 1)
    while rules.capacity > 0 and len(eligible):
        if k < len(eligible):
            cut = np.partition(key[eligible], len(eligible) - k)[len(eligible) - k]
            top = eligible[key[eligible] >= cut]
        else:
            top = eligible
        top = top[np.lexsort((top, -key[top]))]
        chosen, channel_taken = _fill(top, pos, room, action, channel, saved, due, consent,
                                      marketing, rules)  # fmt: skip
        if len(chosen) >= rules.capacity or len(top) == len(eligible):
            break
        k *= 4
    if len(chosen):
        channel = channel.copy()
        channel[chosen] = channel_taken
        priority = priority.copy()
        priority[chosen] = saved[chosen] - np.array([rules.cost(c) for c in channel_taken])
        # Ranked by what each action is worth on the channel it goes out on (a fallback
        # channel costs differently), due actions first.
        chosen = chosen[np.lexsort((np.arange(len(chosen)), -priority[chosen], ~due[chosen]))]

    rows = pos[chosen]
    frame = pd.DataFrame(
        {
            "rank": np.arange(1, len(chosen) + 1, dtype=np.int64),
            "customer_id": customers["customer_id"].to_numpy()[rows],
            "action": action[chosen],
            "subject_id": cand["subject_id"].to_numpy(dtype=object)[chosen],
            "channel": channel[chosen],
            "language": customers["language"].to_numpy()[rows],
            "region": customers["region"].to_numpy()[rows],
            "timezone": customers["timezone"].to_numpy()[rows],
            "priority": priority[chosen],
            "risk": risk[chosen],
            "value": value[chosen],
            "uplift": uplift[chosen],
            "uplift_low": bounds["low"][chosen],
            "uplift_high": bounds["high"][chosen],
            "cost": [rules.cost(c) for c in channel[chosen]],
        },
        index=candidates.index[chosen],
    )
    start, end = send_windows(frame["timezone"], as_of, rules)
    frame = frame.assign(send_window_start=start, send_window_end=end)
    return frame.loc[:, list(QUEUE_COLUMNS)]


def candidates(
    customers: pd.DataFrame,
    churn_p: np.ndarray,
    shipments: pd.DataFrame,
    delay_p: np.ndarray,
    lost: np.ndarray,
    due: np.ndarray,
    invoices: pd.DataFrame,
    moments: Mapping[str, pd.DataFrame] | None = None,
) -> pd.DataFrame:
    """Every action the policy may queue, with its risk and value.

    - a win-back offer for every scored customer (risk: churn);
    - a service-recovery call for a customer with unresolved contacts (risk: churn);
    - a delay notice for every open parcel not taken for lost (risk: late delivery; `due`
      when its estimated date passed the promise);
    - a service-recovery call about a parcel taken for lost (risk 1, due);
    - a payment reminder for every overdue invoice (risk 1: it is already unpaid);
    - the proactive moments of `moments` (risk: churn): a satisfaction check after a
      delivery, an onboarding follow-up after a first order, an NPS survey after a
      resolved contact, a renewal reminder before an unpaid membership renewal falls due.

    Args:
        customers: Scored customers: customer_id, monetary_365d, unresolved_contacts_90d.
        churn_p: Their churn probabilities.
        shipments: Open shipments: shipment_id, customer_id.
        delay_p: Their late-delivery probabilities.
        lost: Whether each shipment is taken for lost.
        due: Whether each shipment's delay notice is due.
        invoices: Overdue invoices: invoice_id, customer_id, amount.
        moments: Action → its moments: subject_id, customer_id (`serving.batch.moments`).

    Returns:
        `CANDIDATE_COLUMNS` plus `due`, `customer_row` (the customer's row in `customers`,
        -1 when not scored), `customer_value` (the customer's value, whatever the action's
        own) and `_row` (the row in the frame the candidate came from).
    """
    value = customer_value(customers["monetary_365d"])
    unresolved = customers["unresolved_contacts_90d"].fillna(0).to_numpy() > 0
    n = len(customers)
    ids = customers["customer_id"].to_numpy()
    index = pd.Index(customers["customer_id"])
    shipment_owner = index.get_indexer(shipments["customer_id"])
    invoice_owner = index.get_indexer(invoices["customer_id"])

    def of_owner(values: np.ndarray, owner: np.ndarray, missing: float) -> np.ndarray:
        return np.where(owner >= 0, values[np.maximum(owner, 0)], missing)

    owner_value = of_owner(value, shipment_owner, 0.0)
    lost = np.asarray(lost, dtype=bool)
    due = np.asarray(due, dtype=bool)
    ship_ids = shipments["shipment_id"].to_numpy()
    owners = shipments["customer_id"].to_numpy()
    parts = [
        {
            "customer_id": ids,
            "action": WINBACK_OFFER,
            "subject_id": None,
            "risk": churn_p,
            "value": value,
            "_row": np.arange(n),
            "customer_row": np.arange(n),
        },
        {
            "customer_id": ids[unresolved],
            "action": SERVICE_RECOVERY_CALL,
            "subject_id": None,
            "risk": churn_p[unresolved],
            "value": value[unresolved],
            "_row": np.flatnonzero(unresolved),
            "customer_row": np.flatnonzero(unresolved),
        },
        {
            "customer_id": owners[~lost],
            "action": DELAY_NOTICE,
            "subject_id": ship_ids[~lost],
            "risk": delay_p[~lost],
            "value": owner_value[~lost],
            "_row": np.flatnonzero(~lost),
            "customer_row": shipment_owner[~lost],
            "due": due[~lost],
        },
        {
            "customer_id": owners[lost],
            "action": SERVICE_RECOVERY_CALL,
            "subject_id": ship_ids[lost],
            # Past its promise undelivered: late for certain, and the customer should hear
            # from us before they call.
            "risk": 1.0,
            "value": owner_value[lost],
            "_row": np.flatnonzero(lost),
            "customer_row": shipment_owner[lost],
            "due": True,
        },
        {
            "customer_id": invoices["customer_id"].to_numpy(),
            "action": PAYMENT_REMINDER,
            "subject_id": invoices["invoice_id"].to_numpy(),
            "risk": 1.0,
            "value": invoices["amount"].to_numpy(dtype=np.float64),
            "_row": np.arange(len(invoices)),
            "customer_row": invoice_owner,
        },
    ]
    for action, frame in (moments or {}).items():
        owner = index.get_indexer(frame["customer_id"])
        parts.append(
            {
                "customer_id": frame["customer_id"].to_numpy(),
                "action": action,
                "subject_id": frame["subject_id"].to_numpy(dtype=object),
                "risk": of_owner(np.asarray(churn_p, dtype=np.float64), owner, np.nan),
                "value": of_owner(value, owner, 0.0),
                "_row": np.arange(len(frame)),
                "customer_row": owner,
            }
        )
    frames = [pd.DataFrame(part) for part in parts]
    out = pd.concat([f for f in frames if len(f)], ignore_index=True)
    row = out["customer_row"].to_numpy(dtype=np.int64)
    return out.assign(customer_value=of_owner(value, row, 0.0))


def hold_out(
    queue: pd.DataFrame, share: float, seed: int | Sequence[int]
) -> tuple[np.ndarray, np.ndarray]:
    """Draw the day's holdout among the queued actions.

    Each queued action is held out (recorded, not sent) with probability `share`,
    independently of everything else, so its effect stays measurable against the sent ones;
    the same seed draws the same holdout.

    Returns:
        Whether each action is held out, and the probability of its arm (the propensity the
        `outreach` table records: 1 − share for a sent action, share for a held-out one;
        the queue itself is deterministic given the scores).
    """
    if not 0.0 <= share < 1.0:
        raise ValueError(f"holdout share must lie in [0, 1), got {share}")
    held = np.random.default_rng(seed).random(len(queue)) < share
    return held, np.where(held, share, 1.0 - share)
