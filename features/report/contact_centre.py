"""Contact-centre measures (resolution, handling, effort, satisfaction) by contact reason.

CX leads compare reasons and compare the AI agent with human agents on the same reasons:
a reason whose first-contact resolution is low for one handler only is a routing question,
low for both a process question.
"""

from __future__ import annotations

from collections.abc import Sequence

import pandas as pd

# What the rows of every reason together are labelled as.
ALL = "all"
PROMOTER_MIN = 9
DETRACTOR_MAX = 6


def net_promoter_score(scores: pd.Series) -> float:
    """Share of promoters (9-10) minus share of detractors (0-6), in points.

    Only answered surveys count; with none the score is NaN rather than zero, which would
    read as a neutral audience.
    """
    answered = scores.dropna()
    if answered.empty:
        return float("nan")
    promoters = float((answered >= PROMOTER_MIN).mean())
    detractors = float((answered <= DETRACTOR_MAX).mean())
    return 100.0 * (promoters - detractors)


def _measures(group: pd.DataFrame) -> dict[str, float]:
    """The measures of one set of contacts."""
    return {
        "contacts": len(group),
        "first_contact_resolution": float(group["resolved_first_contact"].astype(float).mean()),
        "mean_handle_s": float(group["handle_s"].mean()),
        "mean_wait_s": float(group["wait_s"].mean()),
        "mean_transfers": float(group["transfers"].mean()),
        "mean_csat": float(group["csat"].mean()),
        "mean_ces": float(group["ces"].mean()),
        "nps": net_promoter_score(group["nps"]),
        "surveys": int(group["nps"].notna().sum()),
        "first_ts": group["ts"].min(),
        "last_ts": group["ts"].max(),
    }


def contact_measures(contacts: pd.DataFrame, by: Sequence[str] = ("reason",)) -> pd.DataFrame:
    """Contact-centre measures per group of contacts, with totals over the first key.

    Means skip missing survey answers (CSAT, CES and NPS are answered by some customers
    only); `surveys` says how many NPS answers a row rests on.

    Args:
        contacts: Raw contacts (reason, handled_by, ts, wait_s, handle_s, transfers,
            resolved_first_contact, csat, ces, nps).
        by: Grouping columns; the rows of every value of the first are added up as `all`
            (per value of the others), e.g. `("reason", "handled_by")` ends with `all`
            rows for the AI agent and for humans.

    Returns:
        One row per group, sorted, then the `all` rows; columns are `by`, then contacts,
        first_contact_resolution (a share), mean_handle_s, mean_wait_s, mean_transfers,
        mean_csat, mean_ces, nps (points), surveys, first_ts and last_ts.
    """
    keys = list(by)
    rows = [
        {**dict(zip(keys, key, strict=True)), **_measures(group)}
        for key, group in contacts.groupby(keys, sort=True)
    ]
    rest = keys[1:]
    totals = contacts.groupby(rest, sort=True) if rest else [((), contacts)]
    for key, group in totals:
        if group.empty:
            continue
        values = key if isinstance(key, tuple) else (key,)
        rows.append({keys[0]: ALL, **dict(zip(rest, values, strict=True)), **_measures(group)})
    columns = [*keys, *_measures(contacts.head(0)).keys()]
    return pd.DataFrame(rows, columns=columns)
