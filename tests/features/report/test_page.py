"""The report page: every section, its windows and definitions, images embedded, nothing
fetched from the network."""

from __future__ import annotations

import io
import re

import pandas as pd
from matplotlib.figure import Figure

from features.report.page import (
    CONTACT_CENTRE,
    MODEL_CARDS,
    OUTCOMES,
    REASON_DRIVERS,
    build_report,
    render_report,
)


def test_page_holds_each_section_with_its_figures(shop) -> None:
    page = render_report(build_report(shop))
    assert page.startswith("<!DOCTYPE html>")
    assert page.index(CONTACT_CENTRE) < page.index(OUTCOMES)
    assert MODEL_CARDS not in page
    # Overall first-contact resolution 3/5, NPS -25 points, churn after delivery delays 2/3.
    assert "60.0%" in page
    assert "-25.0" in page
    assert "66.7%" in page
    assert "Data from 2024-01-12 12:00 UTC to 2025-06-30 12:00 UTC." in page
    assert "up to 2025-06-30 12:00 UTC" in page
    assert len(re.findall(r'src="data:image/png;base64,[A-Za-z0-9+/=]+"', page)) == 2
    assert not re.search(r"https?://", page)


def test_page_without_contacts_says_so(shop) -> None:
    tables = {name: shop[name] for name in ("customers", "orders", "shipments")}
    page = render_report(build_report(tables))
    assert "No contacts in the data." in page
    assert "No contacts in the window." in page


def test_model_cards_section_lists_each_champion_or_says_there_is_none(shop) -> None:
    figures = build_report(shop)
    assert "No champion model is registered." in render_report(figures, pd.DataFrame())
    cards = pd.DataFrame(
        {
            "model": ["churn", "delivery_estimate"],
            "version": ["3", "1"],
            "metric": ["test AUC", "test MAE (days)"],
            "test": [0.81, 1.25],
            "baseline": [0.70, None],
        }
    )
    page = render_report(figures, cards)
    assert page.index("churn, version 3") < page.index("delivery_estimate, version 1")
    assert "0.810" in page
    assert "0.700" in page
    assert "—" in page
    assert "<th>oracle</th>" not in page
    assert "Drivers" not in page


def test_model_card_states_its_windows_and_embeds_its_plots(shop) -> None:
    figures = build_report(shop)
    png = _figure_png()
    cards = pd.DataFrame(
        {
            "model": ["churn"],
            "version": ["3"],
            "metric": ["test AUC"],
            "test": [0.81],
            "baseline": [0.70],
            "oracle": [0.90],
            "train_first_ts": [pd.Timestamp("2024-01-01", tz="UTC")],
            "train_last_ts": [pd.Timestamp("2024-06-30", tz="UTC")],
            "test_first_ts": [pd.Timestamp("2024-09-01", tz="UTC")],
            "test_last_ts": [pd.Timestamp("2024-12-31", tz="UTC")],
            "train_rows": [1200],
            "test_rows": [400],
            "data_version": ["0123456789abcdef"],
            "calibration_png": [png],
            "shap_summary_png": [png],
        }
    )
    drivers = pd.DataFrame(
        {
            "model": ["churn", "churn", "churn"],
            "version": ["3", "3", "2"],
            "rank": [1, 2, 1],
            "feature": ["days_since_last_order", "late_rate_28d", "stale_feature"],
            "description": ["Time since the latest order", "Late parcels, 28 days", "old"],
            "mean_abs_shap": [0.4321, 0.0123, 0.9],
        }
    )
    page = render_report(figures, cards, drivers)
    assert "Trained on events from 2024-01-01 00:00 UTC to 2024-06-30 00:00 UTC" in page
    assert "(1,200 events)" in page
    assert "data version 0123456789ab." in page
    assert "0.900" in page
    assert "Time since the latest order" in page
    assert "0.432" in page
    # Drivers of another version of the model are not this card's.
    assert "stale_feature" not in page
    assert page.index("days_since_last_order") < page.index("late_rate_28d")
    assert len(re.findall(r'src="data:image/png;base64,[A-Za-z0-9+/=]+"', page)) == 2 + 2
    assert not re.search(r"https?://", page)


def test_reason_drivers_section_states_its_instant_and_a_table_per_reason(shop) -> None:
    figures = build_report(shop)
    assert REASON_DRIVERS not in render_report(figures)
    as_of = pd.Timestamp("2025-06-30 12:00", tz="UTC")
    drivers = pd.DataFrame(
        {
            "model": "churn",
            "version": "4",
            "as_of_ts": as_of,
            "reason": ["delivery_delay", "delivery_delay", "no contact"],
            "customers": [1200, 1200, 35],
            "mean_churn_score": [0.25, 0.25, 0.125],
            "rank": [1, 2, 1],
            "feature": ["days_since_last_order", "late_rate_28d", "orders_total"],
            "description": ["Time since the latest order", "Late parcels, 28 days", "Orders"],
            "mean_abs_shap": [0.4321, 0.0123, 0.25],
        }
    )
    page = render_report(figures, reason_drivers=drivers)
    assert page.index(OUTCOMES) < page.index(REASON_DRIVERS)
    assert (
        "Customers who had ordered by 2025-06-30 12:00 UTC, scored with their features as of "
        "that instant by churn version 4." in page
    )
    assert "<h3>delivery_delay: 1,200 customers, mean churn score 25.0%</h3>" in page
    assert "<h3>no contact: 35 customers, mean churn score 12.5%</h3>" in page
    assert page.index("Time since the latest order") < page.index("Late parcels, 28 days")
    assert page.index("Late parcels, 28 days") < page.index("no contact: 35")
    assert "0.432" in page
    assert "0.0123" in page


def _figure_png() -> bytes:
    figure = Figure(figsize=(2, 2))
    figure.subplots().plot([0, 1], [0, 1])
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png")
    return buffer.getvalue()


def test_model_card_shows_the_monitors_latest_run_on_its_version(shop, tmp_path) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    from models.served.retrain import mark
    from training.monitor import latest_status

    figures = build_report(shop)
    cards = pd.DataFrame(
        {
            "model": ["churn"],
            "version": ["3"],
            "metric": ["test AUC"],
            "test": [0.81],
            "baseline": [0.7],
        }
    )
    ran = pd.Timestamp("2025-07-01T02:00:00Z")
    quality = pd.DataFrame(
        {
            "model": ["churn", "churn"],
            "version": ["2", "3"],
            "monitored_ts": [ran - pd.Timedelta(days=1), ran],
            "roc_auc": [0.5, 0.7634],
            "estimated_roc_auc": [0.5, 0.7412],
            "test_roc_auc": [0.8, 0.81],
        }
    )
    pq.write_table(pa.Table.from_pandas(quality), tmp_path / "quality.parquet")
    mark(tmp_path, "churn", "its score drifted", ran.isoformat())
    status = latest_status(tmp_path)
    assert status.set_index("model").loc["churn", "roc_auc"] == 0.7634
    page = render_report(figures, cards, monitor_status=status)
    monitor = page[page.index("<h4>Monitor</h4>") :]
    for shown in ("0.763", "0.741", "its score drifted", "2025-07-01 02:00 UTC"):
        assert shown in monitor, shown
    # A run on another version is not this card's.
    other = status.assign(version="2")
    assert "<h4>Monitor</h4>" not in render_report(figures, cards, monitor_status=other)
