"""Contact-centre measures against values worked out by hand on the hand-made shop."""

from __future__ import annotations

import math

import pandas as pd
import pytest

from features.report.contact_centre import ALL, contact_measures, net_promoter_score


@pytest.mark.parametrize(
    ("scores", "expected"),
    [
        ([10, 9, 8, 7], 50.0),
        ([10, 6, 0, 8], -25.0),
        ([7, 8], 0.0),
        ([10, None, 3], 0.0),
    ],
)
def test_nps_is_promoters_minus_detractors_in_points(scores, expected) -> None:
    assert net_promoter_score(pd.Series(scores, dtype="float")) == pytest.approx(expected)


def test_nps_without_answers_is_missing_not_neutral() -> None:
    assert math.isnan(net_promoter_score(pd.Series([None, None], dtype="float")))


def test_measures_by_reason(shop) -> None:
    frame = contact_measures(shop["contacts"].to_pandas()).set_index("reason")
    assert list(frame.index) == ["billing_dispute", "complaint", "delivery_delay", ALL]
    delay = frame.loc["delivery_delay"]
    assert delay["contacts"] == 3
    assert delay["first_contact_resolution"] == pytest.approx(2 / 3)
    assert delay["mean_handle_s"] == pytest.approx((100 + 300 + 400) / 3)
    assert delay["mean_wait_s"] == pytest.approx((10 + 30 + 40) / 3)
    assert delay["mean_transfers"] == pytest.approx(1 / 3)
    # ct4 answered no survey: the means rest on ct1 and ct2.
    assert delay["mean_csat"] == pytest.approx(3.5)
    assert delay["mean_ces"] == pytest.approx(3.0)
    assert delay["nps"] == pytest.approx(0.0)
    assert delay["surveys"] == 2
    assert frame.loc["complaint", "nps"] == pytest.approx(-100.0)
    overall = frame.loc[ALL]
    assert overall["contacts"] == 5
    assert overall["first_contact_resolution"] == pytest.approx(3 / 5)
    # Answers 10, 3, 8, 0: one promoter, two detractors of four.
    assert overall["nps"] == pytest.approx(100 * (1 / 4 - 2 / 4))
    assert str(overall["first_ts"].date()) == "2024-01-12"
    assert str(overall["last_ts"].date()) == "2025-06-30"


def test_measures_by_reason_and_handler(shop) -> None:
    frame = contact_measures(shop["contacts"].to_pandas(), ("reason", "handled_by"))
    frame = frame.set_index(["reason", "handled_by"])
    assert frame.loc[("delivery_delay", "human"), "contacts"] == 2
    assert frame.loc[("delivery_delay", "human"), "first_contact_resolution"] == 0.5
    assert frame.loc[(ALL, "ai_agent"), "first_contact_resolution"] == pytest.approx(1 / 2)
    assert frame.loc[(ALL, "ai_agent"), "nps"] == pytest.approx(0.0)
    assert frame.loc[(ALL, "human"), "first_contact_resolution"] == pytest.approx(2 / 3)
    assert frame.loc[(ALL, "human"), "nps"] == pytest.approx(-50.0)
    assert frame.loc[(ALL, "human"), "contacts"] == 3


def test_no_contacts_give_an_empty_frame(shop) -> None:
    frame = contact_measures(shop["contacts"].to_pandas().head(0))
    assert frame.empty
    assert "first_contact_resolution" in frame.columns
