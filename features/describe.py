"""Features in words for people: what a feature is, and its value formatted by kind.

Reason codes read "<description>: <value>" (`training.explain`), and the service and the
outreach queue show them to people. A stored feature is described by its Feast field
(`features/repo/*_views.py`); the ones computed at decision time (`features.build.derived`,
the decision columns and derived features of `models.next_best_offer`) have no view, and
are described here, in `DESCRIPTIONS`.

Values are formatted by the kind of the feature, which its name says by convention
(`kind_of`): `*_rate` / `*_share` are fractions shown as percentages, `*_amount`,
`monetary_*`, `*spend*` are money with two decimals, `*_hours` / `hours_*`, `*_days` /
`days_*` and `*_s` are durations shown in the unit a person would use (minutes, hours, days
or years), `*_total`, `*_count`, `*_so_far` and counts of things (`orders_*`,
`contacts_*`...) are whole numbers, `*_epoch` instants are dates. `KINDS` overrides the
convention where a name does not follow it. Anything else is a plain number with at most
three significant digits after the leading zeros; no value is ever shown in scientific
notation.
"""

from __future__ import annotations

import math
import re
from datetime import UTC, datetime
from functools import lru_cache

import numpy as np

# Words for features no Feast view describes, and for those whose stored words name a unit
# other than the one their value is shown in ("Hours left ..." shown in days) or read poorly
# as a reason. They win over a model's stored words: the value's format is decided here too,
# and a model trained before a description changed still gets the current one.
DESCRIPTIONS = {
    # Decision-time ages and rates (features.build.derived).
    "tenure_days": "Time since signup",
    "days_since_first_order": "Time since the first order",
    "days_since_last_order": "Time since the latest order",
    "days_since_last_contact": "Time since the latest contact",
    "days_since_last_experience": "Time since the latest order's delivery, contact or refund",
    "silence_over_gap": "Time since the latest order against the customer's usual gap",
    "days_since_category_purchase": "Time since the latest purchase in the category",
    "hours_in_transit": "Time since dispatch",
    "hours_since_last_scan": "Time since the latest tracking scan",
    "hours_to_promise": "Promised delivery",
    "past_promise": "Past the promised delivery",
    "category_spend_share": "Share of spend in the category",
    "orders_per_day": "Ordering rate since the first order",
    "orders_per_day_365d": "Ordering rate in the trailing 365 days",
    "expected_orders_missed": "Orders the customer's usual rate expected since the latest one",
    "p_alive_estimate": "Chance the order history says the customer still buys",
    "p_repurchase_90d_estimate": "Chance the order history says the customer orders in 90 days",
    "decision_month": "Month of the decision",
    # The decision and its derived features (models.next_best_offer).
    "channel": "Channel of the offer",
    "category_order_share": "Share of the customer's orders with the category",
    # Stored features whose field words name another unit or read poorly as a reason.
    "hours_since_prev_scan": "Time between the latest two scans",
    "promised_transit_days": "Promised transit time",
    "dispatch_weekday": "Weekday of dispatch (UTC)",
    "service_level": "Service level",
    "lane": "Route (origin>destination)",
    "peak_season": "Peak season (Black Friday week to Christmas Eve)",
    "wait_s_mean": "Mean wait before handling",
    "refund_lag_days_mean": "Mean time to refund",
    "language": "Language",
    "order_n_categories": "Distinct categories in the order",
}

# Kinds where the name does not say it by the conventions of `kind_of`.
KINDS = {
    "order_total": "money",
    "discount": "share",
    "past_promise": "flag",
    "parcel_late": "flag",
    "category_in_order": "flag",
    "peak_season": "flag",
    "expected_orders_missed": "number",
    # A logarithm of hours: shown as hours it would read as a duration it is not.
    "expected_log_transit_hours": "number",
    # A ratio of order counts ("1.35"), not a count of orders.
    "orders_7d_over_28d": "number",
}

_WINDOW = re.compile(r"_\d+d$")  # a trailing window ("_90d"), not a unit
_SNAKE = re.compile(r"^[a-z0-9]+(_[a-z0-9]+)+$")
_SNAKE_WORD = re.compile(r"\b[a-z0-9]+(_[a-z0-9]+)+\b")
_COUNTED = {
    "total",
    "count",
    "outcomes",
    "volume",
    "backlog",
    "items",
    "orders",
    "contacts",
    "returns",
    "offers",
    "invoices",
    "deliveries",
    "scans",
    "exceptions",
    "units",
    "transfers",
    "n",
}
_MONEY = {"amount", "monetary", "spend", "price", "revenue", "cost"}
_MEANS = {"mean", "avg", "average", "median"}
_WEEKDAYS = ("Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday", "Sunday")
_MONTHS = (
    "January",
    "February",
    "March",
    "April",
    "May",
    "June",
    "July",
    "August",
    "September",
    "October",
    "November",
    "December",
)
DAYS_PER_MONTH = 365.25 / 12


@lru_cache(maxsize=4096)
def kind_of(name: str) -> str:
    """The kind of a feature's value, from `KINDS` or its name's conventions.

    One of: flag, share (a fraction), percent (already ×100), money, seconds, minutes,
    hours, days, hours_until, days_until (signed time left), per_day, km, grams, kg, epoch,
    hour_of_day, weekday, month, count, number.
    """
    if name in KINDS:
        return KINDS[name]
    stem = _WINDOW.sub("", name)
    tokens = stem.split("_")
    last = tokens[-1]
    if last in ("epoch", "ts"):
        return "epoch"
    if tokens[0] in ("is", "has", "consent") or last == "flag":
        return "flag"
    if last in ("pct", "percent"):
        return "percent"
    if stem.endswith("_per_day"):
        return "per_day"
    if last in ("rate", "share", "ratio", "fraction", "prob", "probability"):
        return "share"
    if tokens[0] in ("p", "prob", "share"):
        return "share"
    if _MONEY & set(tokens):
        return "money"
    for unit in ("hours", "days"):
        if stem.startswith((f"{unit}_to_", f"{unit}_until_")):
            return f"{unit}_until"
    for unit, words in (
        ("seconds", ("s", "sec", "secs", "seconds")),
        ("minutes", ("min", "mins", "minutes")),
        ("hours", ("hours",)),
        ("days", ("days",)),
    ):
        if set(words) & set(tokens):
            return unit
    if last in ("km", "g", "kg"):
        return {"km": "km", "g": "grams", "kg": "kg"}[last]
    if last == "hour":
        return "hour_of_day"
    if last == "weekday":
        return "weekday"
    if last == "month":
        return "month"
    if last in _MEANS or tokens[0] == "expected":
        return "number"
    if stem.endswith("_so_far") or _COUNTED & set(tokens):
        return "count"
    return "number"


_UNIT_TOKENS = {
    "seconds": {"s", "sec", "secs", "seconds"},
    "minutes": {"min", "mins", "minutes"},
    "hours": {"hours"},
    "days": {"days"},
    "hours_until": {"hours"},
    "days_until": {"days"},
    "km": {"km"},
    "grams": {"g"},
    "kg": {"kg"},
    "epoch": {"epoch", "ts"},
    "percent": {"pct", "percent"},
}


def humanize(name: str) -> str:
    """A feature name as words, where nothing describes it: the unit its value is shown
    in dropped ("hours_in_transit" → "Time in transit", "distance_km" → "Distance"), and
    a trailing window spelled out ("orders_365d" → "Orders, trailing 365 days")."""
    window = _WINDOW.search(name)
    tokens = [t for t in _WINDOW.sub("", name).split("_") if t]
    units = _UNIT_TOKENS.get(kind_of(name), set())
    kept = [t for t in tokens if t not in units] or tokens
    if units and kept[0] in ("since", "in", "to", "until", "between", "left"):
        kept = ["time", *kept]
    words = " ".join(kept) or name
    if window:
        words += f", trailing {window.group(0)[1:-1]} days"
    return words[:1].upper() + words[1:]


def describe(name: str, words: dict[str, str] | None = None) -> str:
    """What a feature is, in words: `DESCRIPTIONS`, else the model's words (its Feast
    descriptions and its spec's; snake_case labels in them spaced), else the name made
    words (`humanize`). Never the raw name."""
    if name in DESCRIPTIONS:
        return DESCRIPTIONS[name]
    given = (words or {}).get(name, "").strip()
    if given and given != name:
        # Labels in stored words ("reason order_status") read as words too.
        return _SNAKE_WORD.sub(lambda m: m.group(0).replace("_", " "), given)
    return humanize(name)


def _trim(text: str) -> str:
    """Drop trailing zeros of a fixed-point number ("1.50" → "1.5", "2.0" → "2")."""
    if "." in text:
        text = text.rstrip("0").rstrip(".")
    return "0" if text in ("-0", "") else text


def _decimals(x: float, significant: int, most: int) -> int:
    """Decimals that show `significant` digits of |x| < 10**significant, at most `most`."""
    a = abs(x)
    if a == 0 or a >= 10 ** (significant - 1):
        return 0
    return min(most, significant - 1 - math.floor(math.log10(a)))


def plain(x: float) -> str:
    """A number for people: whole with thousands separators from 100 up, else three
    significant digits (at most six decimals); never scientific notation."""
    if abs(x) >= 100:
        return _trim(f"{x:,.0f}")
    return _trim(f"{x:,.{_decimals(x, 3, 6)}f}")


def percent(p: float) -> str:
    """A percentage (given ×100): "12.5%", "0.9%", "0.04%"."""
    a = abs(p)
    digits = 0 if a >= 100 else 1 if a >= 0.1 else _decimals(p, 1, 4)
    return f"{_trim(f'{p:,.{digits}f}')}%"


def _unit(value: float, digits: int, singular: str, plural: str) -> str:
    shown = _trim(f"{value:,.{digits}f}")
    return f"{shown} {singular if shown in ('1', '-1') else plural}"


def duration(seconds: float) -> str:
    """A span of time in the unit a person would use: seconds under a minute, minutes
    under an hour, hours under two days, days under two years, then years."""
    a = abs(seconds)
    if a < 60:
        return _unit(seconds, 0, "second", "seconds")
    if a < 3_600:
        return _unit(seconds / 60, 0, "minute", "minutes")
    if a < 48 * 3_600:
        return _unit(seconds / 3_600, 1, "hour", "hours")
    days = seconds / 86_400
    if abs(days) < 730:
        return _unit(days, 1 if abs(days) < 10 else 0, "day", "days")
    return _unit(days / 365.25, 1, "year", "years")


def date_of(epoch_s: float) -> str:
    """An instant (epoch seconds) as its UTC calendar date, "4 Jan 2026"."""
    day = datetime.fromtimestamp(epoch_s, tz=UTC)
    return f"{day.day} {_MONTHS[day.month - 1][:3]} {day.year}"


_SECONDS_PER = {"seconds": 1.0, "minutes": 60.0, "hours": 3_600.0, "days": 86_400.0}


def _missing(value: object) -> bool:
    if value is None:
        return True
    try:
        return bool(value != value)  # NaN, NaT, pd.NA (raises on pd.NA)
    except TypeError:
        return True


def format_value(name: str, value: object) -> str:
    """A feature's value for people, by the kind of the feature (`kind_of`).

    Missing values read "unknown", booleans "yes"/"no", snake_case labels with spaces
    ("in_transit" → "in transit"); numbers by kind: "12.5%", "1,550.00", "49 days",
    "in 5.5 hours" / "49 days ago" (time left), "3", "4 Jan 2026", "0.00922".
    """
    if _missing(value):
        return "unknown"
    if isinstance(value, bool | np.bool_):
        return "yes" if value else "no"
    if isinstance(value, str):
        return value.replace("_", " ") if _SNAKE.match(value) else value
    if not isinstance(value, int | float | np.integer | np.floating):
        return str(value)
    x = float(value)
    if not math.isfinite(x):
        return "unknown"
    kind = kind_of(name)
    if kind == "flag":
        return "yes" if x else "no"
    if kind == "share":
        return percent(100 * x)
    if kind == "percent":
        return percent(x)
    if kind == "money":
        return f"{x:,.2f}"
    if kind in _SECONDS_PER:
        return duration(x * _SECONDS_PER[kind])
    if kind.endswith("_until"):
        seconds = x * _SECONDS_PER[kind.removesuffix("_until")]
        return f"in {duration(seconds)}" if seconds >= 0 else f"{duration(-seconds)} ago"
    if kind == "per_day":
        return f"{plain(x * DAYS_PER_MONTH)} a month"
    if kind == "km":
        return f"{plain(x)} km"
    if kind == "kg":
        return f"{plain(x)} kg"
    if kind == "grams":
        return f"{plain(x / 1000)} kg" if abs(x) >= 1000 else f"{plain(x)} g"
    if kind == "epoch":
        try:
            return date_of(x)
        except (OverflowError, OSError, ValueError):
            return plain(x)
    if kind == "hour_of_day" and x.is_integer() and 0 <= x < 24:
        return f"{int(x):02d}:00"
    if kind == "weekday" and x.is_integer() and 0 <= x < 7:
        return _WEEKDAYS[int(x)]
    if kind == "month" and x.is_integer() and 1 <= x <= 12:
        return _MONTHS[int(x) - 1]
    if kind == "count":
        return f"{round(x):,}"
    return plain(x)
