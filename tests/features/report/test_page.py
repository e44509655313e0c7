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


def _figure_png() -> bytes:
    figure = Figure(figsize=(2, 2))
    figure.subplots().plot([0, 1], [0, 1])
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png")
    return buffer.getvalue()
