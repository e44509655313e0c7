"""The analysts' report as one self-contained HTML page.

The page travels by e-mail and sits in shared folders, often opened offline: plots are PNG
images embedded as `data:` URIs, the style sheet is inline, and nothing is loaded from the
network.
"""

from __future__ import annotations

import base64
import html
import io
from dataclasses import dataclass

import numpy as np
import pandas as pd
import pyarrow as pa
from matplotlib.figure import Figure

from features.contract.schema import CONTRACT
from features.instants import watermark
from features.report.contact_centre import ALL, contact_measures
from features.report.outcomes import (
    CHURN_DAYS,
    COHORT_DAYS,
    REPEAT_DAYS,
    churn_by_reason,
    first_order_cohorts,
    repeat_purchase,
)

CONTACT_CENTRE = "Contact-centre measures by contact reason"
OUTCOMES = "Customer outcomes after service"
REASON_DRIVERS = "Churn drivers within each contact reason"
MODEL_CARDS = "Model cards"
DECISIONS = "What the decisions are worth"
HANDLER_NAMES = {"ai_agent": "AI agent", "human": "human"}
LABELS = {
    "reason": "contact reason",
    "handled_by": "handled by",
    "group": "orders",
    "cohort": "customers",
    "contacts": "contacts",
    "orders": "orders",
    "customers": "customers",
    "first_contact_resolution": "first-contact resolution",
    "mean_handle_s": "mean handle time",
    "mean_wait_s": "mean wait",
    "mean_transfers": "mean transfers",
    "mean_csat": "mean CSAT (1-5)",
    "mean_ces": "mean CES (1-7)",
    "nps": "NPS (points)",
    "surveys": "NPS answers",
    "repeat_rate": "repeat-purchase rate",
    "churn_rate": "churn rate",
    "mean_revenue": "mean revenue",
    "late_delivery": "late delivery",
    "transferred": "transferred",
    "unresolved": "unresolved",
    "metric": "metric",
    "test": "model",
    "baseline": "baseline",
    "oracle": "oracle",
    "rank": "rank",
    "feature": "feature",
    "description": "description",
    "mean_abs_shap": "mean |SHAP|",
    "value": "value",
    "low": "low",
    "high": "high",
    "note": "model's prediction",
    "mean_churn_score": "mean churn score",
}
STYLE = """
body { font-family: system-ui, sans-serif; margin: 2em auto; max-width: 72em; color: #222; }
h1 { font-size: 1.6em; } h2 { margin-top: 2em; border-bottom: 1px solid #ccc; }
table { border-collapse: collapse; margin: 0.8em 0; font-size: 0.9em; }
th, td { padding: 0.25em 0.7em; border-bottom: 1px solid #e4e4e4; }
th { text-align: left; background: #f4f4f4; } td.number { text-align: right; }
p.window, p.definition { color: #555; font-size: 0.9em; }
img { max-width: 100%; }
"""


@dataclass(frozen=True)
class Report:
    """The report's figures, each frame with `first_ts` and `last_ts` per row.

    Attributes:
        data_end: The data's end: the latest instant of anything that happened.
        by_reason: Contact-centre measures per reason, then `all`.
        by_handler: The same per reason and handler, then `all` per handler.
        repeat: Repeat-purchase rate of contacted and not contacted orders.
        churn: Churn rate after contacts, per reason.
        cohorts: Revenue after a smooth or a frictional first order.
    """

    data_end: pd.Timestamp
    by_reason: pd.DataFrame
    by_handler: pd.DataFrame
    repeat: pd.DataFrame
    churn: pd.DataFrame
    cohorts: pd.DataFrame


def _frame(tables: dict[str, pa.Table], name: str) -> pd.DataFrame:
    """A raw table as a frame; an absent optional table as an empty one of its schema."""
    table = tables.get(name)
    if table is None:
        table = CONTRACT[name].arrow_schema.empty_table()
    return table.to_pandas()


# The tables the figures read; the others only move the data's end.
REPORT_TABLES = ("orders", "contacts", "shipments")


def build_report(tables: dict[str, pa.Table], data_end: pd.Timestamp | None = None) -> Report:
    """Compute every figure of the report from raw contract tables.

    Args:
        tables: Raw contract tables: orders, and contacts and shipments where present.
        data_end: The data's end (default: the latest instant of anything that happened in
            `tables`); pass the whole folder's when only `REPORT_TABLES` were read.
    """
    if data_end is None:
        data_end = watermark(tables, happened=True)
    orders = _frame(tables, "orders")
    contacts = _frame(tables, "contacts")
    shipments = _frame(tables, "shipments")
    return Report(
        data_end=data_end,
        by_reason=contact_measures(contacts, ("reason",)),
        by_handler=contact_measures(contacts, ("reason", "handled_by")),
        repeat=repeat_purchase(orders, contacts, data_end),
        churn=churn_by_reason(orders, contacts, data_end),
        cohorts=first_order_cohorts(orders, shipments, contacts, data_end),
    )


def _instant(value: pd.Timestamp) -> str:
    return "—" if pd.isna(value) else f"{value:%Y-%m-%d %H:%M} UTC"


def _window(frame: pd.DataFrame) -> str:
    """The sentence stating which instants a frame's rows cover."""
    if frame.empty or frame["first_ts"].isna().all():
        return '<p class="window">No rows in this window.</p>'
    first, last = frame["first_ts"].min(), frame["last_ts"].max()
    return f'<p class="window">Data from {_instant(first)} to {_instant(last)}.</p>'


def _cell(column: str, value) -> str:
    """One value as people read it: shares in per cent, durations in seconds."""
    if isinstance(value, str):
        return html.escape(HANDLER_NAMES.get(value, value))
    if value is None or pd.isna(value):
        return "—"
    if isinstance(value, pd.Timestamp):
        return _instant(value)
    if column.endswith("_rate") or column == "first_contact_resolution":
        return f"{value:.1%}"
    if column.endswith("_s"):
        return f"{value:,.0f} s"
    if column == "nps":
        return f"{value:+.1f}"
    if column == "mean_abs_shap":
        return f"{value:.3g}"
    if column == "mean_revenue" or column.startswith("mean_"):
        return f"{value:,.2f}"
    if isinstance(value, int | np.integer):
        return f"{value:,}"
    return f"{value:,.3f}"


def _table(frame: pd.DataFrame) -> str:
    """A frame as an HTML table; the window columns are stated above the table instead."""
    columns = [c for c in frame.columns if not c.endswith("_ts")]
    head = "".join(f"<th>{html.escape(LABELS.get(c, c))}</th>" for c in columns)
    body = []
    for row in frame[columns].itertuples(index=False):
        cells = []
        for column, value in zip(columns, row, strict=True):
            kind = "" if isinstance(value, str) else ' class="number"'
            cells.append(f"<td{kind}>{_cell(column, value)}</td>")
        body.append(f"<tr>{''.join(cells)}</tr>")
    return f"<table><thead><tr>{head}</tr></thead><tbody>{''.join(body)}</tbody></table>"


def _image(figure: Figure, description: str) -> str:
    """A figure as an embedded PNG (no software or network reference in its metadata)."""
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=110, metadata={"Software": None})
    encoded = base64.b64encode(buffer.getvalue()).decode("ascii")
    alt = html.escape(description, quote=True)
    return f'<img alt="{alt}" src="data:image/png;base64,{encoded}">'


def _bars(frame: pd.DataFrame, value: str, series: str | None, title: str) -> str:
    """A horizontal bar chart of a share per contact reason, one bar per series value."""
    rows = frame[frame["reason"] != ALL]
    reasons = sorted(rows["reason"].unique())
    figure = Figure(figsize=(7, 0.45 * max(len(reasons), 2) + 1.2), layout="constrained")
    axes = figure.subplots()
    groups = [(None, rows)] if series is None else list(rows.groupby(series, sort=True))
    height = 0.8 / len(groups)
    for index, (name, group) in enumerate(groups):
        shares = group.set_index("reason")[value].reindex(reasons)
        positions = np.arange(len(reasons)) + index * height
        label = None if name is None else HANDLER_NAMES.get(name, name)
        axes.barh(positions, shares.to_numpy() * 100, height=height, label=label)
    axes.set_yticks(np.arange(len(reasons)) + height * (len(groups) - 1) / 2, reasons)
    axes.invert_yaxis()
    axes.set_xlabel("per cent")
    axes.set_xlim(0, 100)
    axes.set_title(title)
    if series is not None:
        axes.legend(loc="lower right")
    return _image(figure, title)


def _contact_centre(report: Report) -> str:
    if report.by_reason.empty:
        return f"<h2>{CONTACT_CENTRE}</h2><p>No contacts in the data.</p>"
    return "\n".join(
        [
            f"<h2>{CONTACT_CENTRE}</h2>",
            _window(report.by_reason),
            '<p class="definition">First-contact resolution: the share of contacts resolved '
            "without a repeat contact. Handle time and wait are in seconds. CSAT, CES and NPS "
            "average the answered surveys only; NPS is the share of promoters (9-10) minus "
            "the share of detractors (0-6), in points.</p>",
            _table(report.by_reason),
            "<h3>AI agent and human agents</h3>",
            _window(report.by_handler),
            _table(report.by_handler),
            _bars(
                report.by_handler,
                "first_contact_resolution",
                "handled_by",
                "First-contact resolution by contact reason",
            ),
        ]
    )


def _outcomes(report: Report) -> str:
    parts = [
        f"<h2>{OUTCOMES}</h2>",
        f'<p class="definition">Outcomes are counted only where their window ended by the '
        f"data's end ({_instant(report.data_end)}). They are associations, not effects: "
        "customers who contact service differ from those who do not in more than the "
        "contact.</p>",
        f"<h3>{REPEAT_DAYS}-day repeat purchase</h3>",
        _window(report.repeat),
        f'<p class="definition">Every order whose {REPEAT_DAYS} days ended by the data\'s '
        f"end counts once. It repeats when the same customer placed another order within "
        f"{REPEAT_DAYS} days after it. It counts as contacted when the customer contacted "
        f"service about that order, or contacted service without naming an order within "
        f"those {REPEAT_DAYS} days.</p>",
        _table(report.repeat),
        "<h3>Churn by contact reason</h3>",
        _window(report.churn),
        f'<p class="definition">Every contact whose {CHURN_DAYS} days ended by the data\'s '
        f"end counts once; churn is no order by that customer within {CHURN_DAYS} days "
        "after the contact.</p>",
    ]
    if report.churn.empty:
        parts.append("<p>No contacts in the window.</p>")
    else:
        parts.append(_table(report.churn))
        parts.append(
            _bars(report.churn, "churn_rate", None, f"Churn within {CHURN_DAYS} days after contact")
        )
    parts += [
        "<h3>First-order experience and later revenue</h3>",
        _window(report.cohorts),
        f'<p class="definition">Customers whose first order was at least {COHORT_DAYS} days '
        f"before the data's end. A first order had friction when one of its parcels was "
        f"late (delivered after its promise, or undelivered once the promise passed), or a "
        f"contact about it within {COHORT_DAYS} days was transferred or not resolved at "
        f"first contact. Revenue is the amount of the customer's later orders within "
        f"{COHORT_DAYS} days after the first (the first order left out; refunds not "
        "deducted). The friction columns count customers with each kind; one customer can "
        "have several.</p>",
        _table(report.cohorts),
    ]
    return "\n".join(parts)


def _reason_drivers(drivers: pd.DataFrame | None) -> str:
    if drivers is None or drivers.empty:
        return ""
    first = drivers.iloc[0]
    parts = [
        f"<h2>{REASON_DRIVERS}</h2>",
        f'<p class="window">Customers who had ordered by {_instant(first["as_of_ts"])}, '
        f"scored with their features as of that instant by {html.escape(first['model'])} "
        f"version {html.escape(str(first['version']))}.</p>",
        '<p class="definition">Customers are grouped by the reason of their latest contact; '
        "those who never contacted service form a group of their own. Within each group, "
        "the features with the largest mean absolute SHAP contribution (log-odds of the "
        "raw model) are its drivers: what moves the churn score of that group's customers, "
        "not what would change their behaviour.</p>",
    ]
    for reason, rows in drivers.groupby("reason", sort=True):
        head = rows.iloc[0]
        parts.append(
            f"<h3>{html.escape(str(reason))}: {head['customers']:,} customers, mean churn "
            f"score {head['mean_churn_score']:.1%}</h3>"
        )
        parts.append(_table(rows[["rank", "description", "feature", "mean_abs_shap"]]))
    return "\n".join(parts)


def _png(data: bytes, description: str) -> str:
    """A PNG file's bytes as an embedded image."""
    encoded = base64.b64encode(data).decode("ascii")
    alt = html.escape(description, quote=True)
    return f'<img alt="{alt}" src="data:image/png;base64,{encoded}">'


def _windows(card) -> str:
    """The sentence stating which events a model was trained and tested on."""

    def rows(count) -> str:
        return "" if count is None or pd.isna(count) else f" ({int(count):,} events)"

    parts = []
    for name in ("train", "test"):
        first, last = (
            getattr(card, f"{name}_first_ts", None),
            getattr(card, f"{name}_last_ts", None),
        )
        if first is not None and not pd.isna(first):
            verb = "Trained" if name == "train" else "tested"
            count = rows(getattr(card, f"{name}_rows", None))
            parts.append(f"{verb} on events from {_instant(first)} to {_instant(last)}{count}")
    if not parts:
        return ""
    version = getattr(card, "data_version", "")
    data = f"; data version {html.escape(str(version)[:12])}" if version else ""
    return f'<p class="window">{"; ".join(parts)}{data}.</p>'


_MONITOR_SHOWN = {
    "monitored_ts": "monitored",
    "window_start": "newest labelled window from",
    "window_end": "to",
    "roc_auc": "realised AUC",
    "estimated_roc_auc": "estimated AUC (no labels)",
    "test_roc_auc": "test AUC",
    "mae_days": "realised MAE (days)",
    "coverage": "realised coverage",
    "drifted_feature_share": "share of features drifted",
    "retrain_due": "retrain due",
}


def _monitor(model: str, version: str, status: pd.DataFrame | None) -> str:
    """The monitor's latest run on this champion, where it ran on this version."""
    if status is None or status.empty:
        return ""
    own = status[(status["model"] == model) & (status["version"].astype(str) == version)]
    if own.empty:
        return ""
    shown = own[[c for c in _MONITOR_SHOWN if c in own]].dropna(axis=1, how="all")
    shown = shown.rename(columns=_MONITOR_SHOWN)
    return (
        "<h4>Monitor</h4>"
        '<p class="definition">The latest `aftersale monitor` run on this version: its '
        "quality on the newest labelled window, the AUC estimated without labels, the drift "
        "of its features against its training window, and whether it is marked for "
        "retraining.</p>" + _table(shown)
    )


def _model_card(card, drivers: pd.DataFrame | None, status: pd.DataFrame | None = None) -> str:
    model, version = str(card.model), str(card.version)
    parts = [f"<h3>{html.escape(model)}, version {html.escape(version)}</h3>", _windows(card)]
    measures = pd.DataFrame(
        [
            {
                column: getattr(card, column, None)
                for column in ("metric", "test", "baseline", "oracle")
            }
        ]
    )
    if measures["oracle"].isna().all():
        measures = measures.drop(columns="oracle")
    parts.append(_table(measures))
    calibration = getattr(card, "calibration_png", None)
    if isinstance(calibration, bytes):
        parts.append(
            '<p class="definition">Reliability on the test window: predicted probability '
            "against the observed rate; a calibrated model lies on the diagonal.</p>"
        )
        parts.append(_png(calibration, f"{model}: reliability on the test window"))
    if drivers is not None and not drivers.empty:
        own = drivers[(drivers["model"] == model) & (drivers["version"].astype(str) == version)]
        if not own.empty:
            parts += [
                "<h4>Drivers</h4>",
                f'<p class="definition">The {len(own)} features that move the score most on '
                "the test window: mean absolute SHAP contribution, in the model's raw score "
                "units (log-odds for a probability).</p>",
                _table(own[["rank", "description", "feature", "mean_abs_shap"]]),
            ]
    summary = getattr(card, "shap_summary_png", None)
    if isinstance(summary, bytes):
        parts.append(_png(summary, f"{model}: SHAP summary on the test window"))
    parts.append(_monitor(model, version, status))
    return "\n".join(part for part in parts if part)


def _model_cards(
    cards: pd.DataFrame | None,
    drivers: pd.DataFrame | None,
    status: pd.DataFrame | None = None,
) -> str:
    if cards is None:
        return ""
    if cards.empty:
        return f"<h2>{MODEL_CARDS}</h2><p>No champion model is registered.</p>"
    parts = [
        f"<h2>{MODEL_CARDS}</h2>",
        '<p class="definition">The version of each model that serves (its registry '
        "champion), measured on its own test window beside the baseline it must beat; the "
        "oracle, where shown, is the best achievable on simulated data.</p>",
    ]
    for card in cards.sort_values(["model", "version"], kind="stable").itertuples(index=False):
        parts.append(_model_card(card, drivers, status))
    return "\n".join(parts)


def _decisions(decisions: pd.DataFrame | None) -> str:
    if decisions is None or decisions.empty:
        return ""
    parts = [
        f"<h2>{DECISIONS}</h2>",
        '<p class="definition">From each decision champion\'s test window. Offer policy: the '
        "value per tracking-page decision (margin less discounts), a doubly robust estimate "
        "from the logged offers' propensities, with its 95% interval, beside the popularity "
        "and random policies. Outreach: each action's observed uplift on the chance of an "
        "order within 90 days (sent less held out) beside the model's mean prediction, and "
        "the second outcomes measured the same way, with 90% intervals.</p>",
    ]
    titles = {
        "policy value": "Offer policy value per decision",
        "outreach effect": "Outreach effect by action",
        "second outcome": "Outreach second outcomes",
    }
    for kind, part in decisions.groupby("kind", sort=False):
        version = ", ".join(sorted(set(part["model"] + " v" + part["version"].astype(str))))
        shown = part[["name", "value", "low", "high", "note"]].rename(
            columns={"name": kind.split()[0]}
        )
        shown = shown.dropna(axis=1, how="all")
        if "note" in shown and (shown["note"] == "").all():
            shown = shown.drop(columns="note")
        parts.append(f"<h3>{html.escape(titles[kind])} ({html.escape(version)})</h3>")
        parts.append(_table(shown))
    return "\n".join(parts)


def render_report(
    report: Report,
    model_cards: pd.DataFrame | None = None,
    drivers: pd.DataFrame | None = None,
    decisions: pd.DataFrame | None = None,
    reason_drivers: pd.DataFrame | None = None,
    monitor_status: pd.DataFrame | None = None,
) -> str:
    """The report as one HTML page.

    Args:
        report: The figures (`build_report`).
        model_cards: One row per champion: `model`, `version`, `metric` (in words),
            `test`, `baseline` and optionally `oracle` values, the windows
            (`train_first_ts`... `test_last_ts`, `train_rows`, `test_rows`),
            `data_version`, and PNG bytes `calibration_png` and `shap_summary_png` (see
            `training.model_cards`); only the first five are required. None leaves the
            section out, an empty frame says no champion exists.
        drivers: Features by model and version: `rank`, `description`, `feature`,
            `mean_abs_shap`, shown under the card of the same version.
        decisions: The offer policy's value and the outreach effects
            (`training.model_cards.decisions`); None or empty leaves the section out.
        reason_drivers: The churn champion's drivers per latest contact reason
            (`training.reason_drivers.churn_drivers_by_reason`): `model`, `version`,
            `as_of_ts`, `reason`, `customers`, `mean_churn_score`, `rank`, `feature`,
            `description`, `mean_abs_shap`; None or empty leaves the section out.
        monitor_status: Each model's latest monitor run (`training.monitor.latest_status`),
            shown in the card of the version it ran on; None or empty shows none.
    """
    return "\n".join(
        [
            "<!DOCTYPE html>",
            '<html lang="en"><head><meta charset="utf-8">',
            "<title>Aftersale report</title>",
            f"<style>{STYLE}</style></head><body>",
            "<h1>Aftersale report</h1>",
            f"<p>Computed from the raw data up to {_instant(report.data_end)}.</p>",
            _contact_centre(report),
            _outcomes(report),
            _reason_drivers(reason_drivers),
            _model_cards(model_cards, drivers, monitor_status),
            _decisions(decisions),
            "</body></html>",
        ]
    )
