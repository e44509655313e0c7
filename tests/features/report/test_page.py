"""The report page: every section, its windows and definitions, images embedded, nothing
fetched from the network."""

from __future__ import annotations

import re

import pandas as pd

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
            "model": ["churn", "churn"],
            "version": ["3", "3"],
            "metric": ["auc", "average_precision"],
            "test": [0.81, 0.42],
            "baseline": [0.70, None],
        }
    )
    page = render_report(figures, cards)
    assert "churn, version 3" in page
    assert "0.81" in page
    assert "0.70" in page
