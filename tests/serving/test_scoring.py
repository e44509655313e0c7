"""The per-request fast paths agree with the training code they stand in for."""

from __future__ import annotations

import itertools

import numpy as np
import pandas as pd
import pytest

from serving.scoring import (
    ServedModel,
    band,
    driving_contact_reason,
    fast_calibration,
    top_reasons,
)
from training.calibrate import fit_calibrator
from training.explain import reason_codes
from training.fit import fit_lightgbm, layout_from_train
from training.model import CalibratedModel

AS_OF = pd.Timestamp("2025-06-01T12:00:00Z")


@pytest.fixture(scope="module")
def served() -> ServedModel:
    """A small model with numeric, missing and categorical inputs."""
    rng = np.random.default_rng(3)
    n = 3_000
    frame = pd.DataFrame(
        {
            "distance_km": rng.uniform(0, 1_000, n),
            "carrier": rng.choice(["A", "B", "C", None], n),
            "scans_so_far": rng.integers(0, 6, n).astype(float),
        }
    )
    frame.loc[rng.random(n) < 0.1, "distance_km"] = np.nan
    logit = frame["distance_km"].fillna(500) / 300 - 2 + (frame["carrier"] == "B") * 1.5
    frame["label"] = (rng.random(n) < 1 / (1 + np.exp(-logit))).astype(int)
    layout = layout_from_train(frame, ["distance_km", "carrier", "scans_so_far"], ["carrier"])
    fit = fit_lightgbm(frame[:2_000], frame[2_000:], layout, params={"min_data_in_leaf": 20})
    calibrator = fit_calibrator("isotonic", fit.raw_score(frame[2_000:]), frame["label"][2_000:])
    model = CalibratedModel("toy", fit.booster, fit.best_iteration, layout, calibrator)
    return ServedModel("toy", "1", ["champion"], model)


def rows(n: int = 40) -> pd.DataFrame:
    rng = np.random.default_rng(5)
    frame = pd.DataFrame(
        {
            "distance_km": rng.uniform(0, 1_000, n),
            "carrier": rng.choice(["A", "B", "C", "never seen", None], n),
            "scans_so_far": rng.integers(0, 6, n).astype(float),
        }
    )
    frame.loc[::7, "distance_km"] = np.nan
    return frame


def records(frame: pd.DataFrame) -> list[dict]:
    clean = frame.astype(object).where(frame.notna(), None)
    return clean.to_dict("records")


def test_matrix_paths_score_like_the_trained_model(served) -> None:
    frame = rows()
    expected = served.model.predict_proba(frame)
    np.testing.assert_allclose(served.probability(served.matrix(frame)), expected)
    np.testing.assert_allclose(
        served.probability(served.matrix_from_records(records(frame))), expected
    )


def test_top_reason_has_the_largest_contribution(served) -> None:
    frame = rows()
    x = served.matrix_from_records(records(frame))
    contrib = served.contributions(x)
    reasons = served.reasons(contrib, records(frame), k=3)
    for row, got in zip(contrib, reasons, strict=True):
        if got:
            assert got[0].contribution == pytest.approx(row[:-1].max())
            assert all(a.contribution >= b.contribution for a, b in itertools.pairwise(got))
    # The same words as the training code's reason codes.
    frame_contrib = served.model.contributions(frame)
    expected = reason_codes(frame_contrib, frame, served.model.words, k=3)
    assert [[r.text for r in row] for row in reasons] == [[r.text for r in row] for row in expected]
    assert reasons == served.reasons_frame(contrib, frame, k=3)


def test_contributions_add_up_to_the_raw_score(served) -> None:
    frame = rows(10)
    x = served.matrix(frame)
    raw = served.model.raw_score(frame)
    logit = served.contributions(x).sum(axis=1)
    np.testing.assert_allclose(1 / (1 + np.exp(-logit)), raw, rtol=1e-6)


@pytest.mark.parametrize("method", ["isotonic", "platt", "identity"])
def test_fast_calibration_matches_the_calibrator(method) -> None:
    rng = np.random.default_rng(8)
    raw = rng.uniform(0, 1, 2_000)
    y = (rng.random(2_000) < raw**2).astype(int)
    calibrator = fit_calibrator(method, raw, y)
    probe = np.concatenate([rng.uniform(0, 1, 500), [0.0, 1.0, 1e-12, 1 - 1e-12]])
    np.testing.assert_allclose(fast_calibration(calibrator)(probe), calibrator(probe), atol=1e-12)


def test_probability_from_contributions_matches_prediction(served) -> None:
    x = served.matrix(rows())
    np.testing.assert_allclose(
        served.probability_from_contributions(served.contributions(x)),
        served.probability(x),
        atol=1e-9,
    )


def test_driving_contact_reason() -> None:
    features = [
        "contacts_billing_dispute_30d",
        "contacts_delivery_delay_90d",
        "last_contact_reason",
    ]
    contrib = np.array([[0.2, 0.1, 0.0, 0.0], [0.0, 0.1, 0.3, 0.0], [-0.2, -0.1, -0.1, 0.0]])
    latest = ["other", "delivery_delay", "billing_dispute"]
    assert driving_contact_reason(contrib, features, latest) == [
        "billing_dispute",
        "delivery_delay",
        None,
    ]


def test_top_reasons_skip_features_lowering_the_score() -> None:
    got = top_reasons(np.array([-0.5, 0.2, 0.0]), {"a": 1, "b": None}, ["a", "b"], {}, k=3)
    assert [(r.feature, r.value) for r in got] == [("b", "unknown")]


@pytest.mark.parametrize(
    ("p", "name"), [(0.0, "low"), (0.2, "medium"), (0.49, "medium"), (0.5, "high")]
)
def test_band(p, name) -> None:
    assert band(p) == name
