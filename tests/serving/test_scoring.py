"""The per-request fast paths agree with the training code they stand in for."""

from __future__ import annotations

import itertools

import numpy as np
import pandas as pd
import pytest

from features.contract.schema import CONTACT_REASONS
from models.served.calibration import fast_calibration
from models.served.classifier import ARM_CALIBRATION_FILE, BaselineStart, CalibratedModel
from models.served.reasons import reason_codes, top_reasons
from serving.scoring import (
    NO_CONTACT,
    ContactValues,
    ServedModel,
    band,
    driving_contact_reason,
    own_contact_reasons,
)
from training.calibrate import choose_arm_calibration, fit_calibrator
from training.fit import fit_lightgbm, layout_from_train

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


def test_request_contributions_from_the_memo_are_the_models(served) -> None:
    """A request's rows answered again come from the memo, equal to the model's to the bit."""
    x = served.matrix_from_records(records(rows(200)))
    remembering = ServedModel("toy", "1", ["champion"], served.model, memo_rows=1_000)
    assert served.memo is None
    assert (served.request_contributions(x) == served.contributions(x)).all()
    first = np.concatenate([remembering.request_contributions(x[i : i + 1]) for i in range(200)])
    again = remembering.request_contributions(x)
    assert (first == served.contributions(x)).all()
    assert (again == first).all()
    assert remembering.memo.hits >= 200
    assert 0 < len(remembering.memo) < 200


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
    values = pd.DataFrame(
        {
            "contacts_billing_dispute_30d": [1, 0, 2],
            "contacts_delivery_delay_90d": [1, 1, 0],
            "last_contact_reason": ["delivery_delay", "delivery_delay", "billing_dispute"],
        }
    )
    # The third customer's only reason lowers the score: it is still the one named.
    assert driving_contact_reason(contrib, features, values) == [
        "billing_dispute",
        "delivery_delay",
        "billing_dispute",
    ]


def test_driving_contact_reason_is_always_one_of_the_customers_own() -> None:
    features = ["contacts_billing_dispute_30d", "contacts_complaint_90d", "last_contact_reason"]
    # Zero counts of reasons the customer never had raise the score most.
    contrib = np.array([[0.5, 0.4, 0.0, 0.0], [0.5, -0.2, 0.0, 0.0], [0.3, 0.2, 0.1, 0.0]])
    values = pd.DataFrame(
        {
            "contacts_billing_dispute_30d": [0, 0, 0],
            "contacts_complaint_90d": [0, 1, 0],
            # The third contacted about "other" over a year ago: its latest contact.
            "last_contact_reason": [None, "complaint", "other"],
        }
    )
    assert driving_contact_reason(contrib, features, values) == [
        NO_CONTACT,
        "complaint",
        "other",
    ]


def test_driving_contact_reason_with_every_reasons_columns() -> None:
    """A model with as many count columns per reason (the one-gather path) names what a
    reason-by-reason reading names, from a frame and from a request's dicts."""
    rng = np.random.default_rng(7)
    features = [
        *(f"contacts_{reason}_{days}d" for reason in CONTACT_REASONS for days in (30, 90)),
        "last_contact_reason",
    ]
    rows = 40
    contrib = rng.normal(size=(rows, len(features) + 1))
    counts = rng.choice([0, 0, 0, 1, 2, None], size=(rows, len(features) - 1))
    values = pd.DataFrame(counts, columns=features[:-1])
    values["last_contact_reason"] = rng.choice([*CONTACT_REASONS, None], size=rows)
    values.iloc[:2] = [[0] * (len(features) - 2) + [None, None]] * 2  # never contacted

    def reference(i: int) -> str:
        best, best_sum = NO_CONTACT, -np.inf
        latest = values["last_contact_reason"].iloc[i]
        for r, reason in enumerate(CONTACT_REASONS):
            own = [2 * r, 2 * r + 1]
            held = any((values.iat[i, j] or 0) > 0 for j in own) or latest == reason
            total = contrib[i, own].sum() + (contrib[i, -2] if latest == reason else 0.0)
            if held and total > best_sum:
                best, best_sum = reason, total
        return best

    expected = [reference(i) for i in range(rows)]
    assert NO_CONTACT in expected
    assert len(set(expected)) > 3
    assert driving_contact_reason(contrib, features, values) == expected
    records = values.astype(object).where(values.notna(), None).to_dict("records")
    assert driving_contact_reason(contrib, features, ContactValues.of_records(records)) == expected


def test_top_reasons_skip_features_lowering_the_score() -> None:
    got = top_reasons(np.array([-0.5, 0.2, 0.0]), {"a": 1, "b": None}, ["a", "b"], {}, k=3)
    assert [(r.feature, r.value) for r in got] == [("b", "unknown")]


@pytest.mark.parametrize(
    ("p", "name"), [(0.0, "low"), (0.2, "medium"), (0.49, "medium"), (0.5, "high")]
)
def test_band(p, name) -> None:
    assert band(p) == name


def test_top_reasons_word_values_for_people_as_reason_codes_do() -> None:
    """The record users reported ("Hours left until the promised delivery: -1.18e+03",
    "orders_per_day: 0.00922"): durations in days, money with cents, rates per month,
    labels and flags in words; the same texts as `reason_codes`, the raw name as feature."""
    record = {
        "hours_to_promise": -1180.0,
        "last_order_amount": 1550.0,
        "orders_per_day": 0.00922,
        "lane_late_rate_28d": 0.125,
        "orders_total": 3,
        "stage": "in_transit",
        "consent_marketing": True,
        "days_since_last_contact": None,
    }
    features = list(record)
    words = {
        "hours_to_promise": "Hours left until the promised delivery",
        "last_order_amount": "Amount of the latest order",
        "lane_late_rate_28d": "Late share of the lane's parcels, trailing 28 days",
        "orders_total": "Orders placed so far",
        "stage": "Tracking stage",
        "consent_marketing": "May receive offers",
    }
    contrib = np.array([*np.linspace(0.9, 0.2, len(features)), -1.0])
    got = top_reasons(contrib, record, features, words, k=len(features))
    assert [r.text for r in got] == [
        "Promised delivery: 49 days ago (raises the score)",
        "Amount of the latest order: 1,550.00 (raises the score)",
        "Ordering rate since the first order: 0.281 a month (raises the score)",
        "Late share of the lane's parcels, trailing 28 days: 12.5% (raises the score)",
        "Orders placed so far: 3 (raises the score)",
        "Tracking stage: in transit (raises the score)",
        "May receive offers: yes (raises the score)",
        "Time since the latest contact: unknown (raises the score)",
    ]
    assert [r.feature for r in got] == features
    frame = pd.DataFrame([record])
    frame_contrib = pd.DataFrame([contrib], columns=[*features, "bias"])
    expected = reason_codes(frame_contrib, frame, words, k=len(features))[0]
    assert got == expected


def test_own_contact_reasons_read_missing_and_non_numeric_counts_as_none() -> None:
    # Records read from the online store hold None for a count never materialised.
    values = pd.DataFrame(
        [
            {"contacts_complaint_30d": None, "contacts_complaint_90d": 2, "contacts_other_30d": 0},
            {
                "contacts_complaint_30d": None,
                "contacts_complaint_90d": None,
                "contacts_other_30d": "x",
            },
        ]
    )
    held = own_contact_reasons(values)
    complaint, other = CONTACT_REASONS.index("complaint"), CONTACT_REASONS.index("other")
    assert held[0, complaint]
    assert not held[0, other]
    assert not held[1].any()
    assert own_contact_reasons(values.iloc[0:0]).shape == (0, len(CONTACT_REASONS))


@pytest.fixture(scope="module")
def arm_model() -> CalibratedModel:
    """A small model of an experiment: the "none" arm's rows calibrated apart."""
    rng = np.random.default_rng(11)
    n = 4_000
    frame = pd.DataFrame(
        {
            "offer_type": rng.choice(["none", "discount", "recommendation"], n),
            "affinity": rng.uniform(0, 1, n),
        }
    )
    p = np.where(frame["offer_type"] == "none", 0.1, 0.3) + 0.4 * frame["affinity"]
    frame["label"] = (rng.random(n) < p).astype(int)
    layout = layout_from_train(frame, ["offer_type", "affinity"], ["offer_type"])
    fit = fit_lightgbm(frame[:3_000], frame[3_000:], layout, params={"min_data_in_leaf": 20})
    valid = frame[3_000:]
    raw = fit.raw_score(valid)
    control = (valid["offer_type"] == "none").to_numpy()
    y = valid["label"].to_numpy()
    arms = choose_arm_calibration(raw, y, control, "offer_type", "none", min_rows=200)
    shared = fit_calibrator("platt", raw, valid["label"])
    return CalibratedModel(
        "offers", fit.booster, fit.best_iteration, layout, shared, {}, arms.calibration
    )


def test_a_model_calibrated_per_arm_applies_each_arms_map_and_round_trips(
    arm_model, tmp_path
) -> None:
    frame = pd.DataFrame(
        {"offer_type": ["none", "discount", "none", "recommendation"], "affinity": 0.5}
    )
    arms = arm_model.arm_calibration
    raw = arm_model.raw_score(frame)
    control = (frame["offer_type"] == "none").to_numpy()
    expected = np.where(control, arms.control_calibrator(raw), arms.treated_calibrator(raw))
    np.testing.assert_allclose(arm_model.predict_proba(frame), expected)

    loaded = CalibratedModel.load(arm_model.save(tmp_path / "model"))
    assert loaded.arm_calibration.describe() == arms.describe()
    np.testing.assert_allclose(loaded.predict_proba(frame), expected)
    # Serving's matrix paths read each row's arm from the encoded input.
    served = ServedModel("offers", "1", ["champion"], loaded)
    x = served.matrix(frame)
    np.testing.assert_allclose(served.probability(x), expected)
    np.testing.assert_allclose(
        served.probability_from_contributions(served.contributions(x), x), expected, atol=1e-9
    )
    with pytest.raises(ValueError, match="per arm"):
        served.probability_from_contributions(served.contributions(x))


def test_a_model_saved_without_arm_calibrators_scores_as_before(arm_model, tmp_path) -> None:
    frame = pd.DataFrame({"offer_type": ["none", "discount"], "affinity": [0.2, 0.8]})
    folder = arm_model.save(tmp_path / "model")
    # What a model registered before per-arm calibration holds: no per-arm file.
    (folder / ARM_CALIBRATION_FILE).unlink()
    loaded = CalibratedModel.load(folder)
    assert loaded.arm_calibration is None
    shared = arm_model.calibrator(arm_model.raw_score(frame))
    np.testing.assert_allclose(loaded.predict_proba(frame), shared)
    served = ServedModel("offers", "1", ["champion"], loaded)
    np.testing.assert_allclose(served.probability(served.matrix(frame)), shared)


def test_a_model_fitted_from_its_baseline_serves_what_it_trained(tmp_path) -> None:
    """Trees fitted from the delay-risk baseline's log-odds: the matrix paths (frame,
    records, the memo of contributions) add the same log-odds the trained model adds."""
    from models import delay_risk

    rng = np.random.default_rng(11)
    n = 3_000
    frame = pd.DataFrame(
        {
            "distance_km": rng.uniform(1, 1_000, n),
            "carrier": rng.choice(["A", "B", None], n),
            "lane_late_rate_28d": rng.uniform(0.02, 0.6, n),
            "carrier_late_rate_28d": rng.uniform(0.05, 0.2, n),
        }
    )
    logit = np.log(frame["lane_late_rate_28d"] / (1 - frame["lane_late_rate_28d"]))
    logit += (frame["carrier"] == "B") * 1.0
    frame["label"] = (rng.random(n) < 1 / (1 + np.exp(-logit))).astype(int)
    layout = layout_from_train(frame, [*frame.columns.drop("label")], ["carrier"])
    fit = fit_lightgbm(
        frame[:2_000],
        frame[2_000:2_500],
        layout,
        params={"min_data_in_leaf": 20, "num_leaves": 2},
        offset=BaselineStart(delay_risk.NAME, 0.1),
    )
    calibrator = fit_calibrator(
        "platt", fit.raw_score(frame[2_000:2_500]), frame["label"][2_000:2_500]
    )
    trained = CalibratedModel(
        delay_risk.NAME, fit.booster, fit.best_iteration, layout, calibrator, offset=fit.offset
    )
    model = CalibratedModel.load(trained.save(tmp_path / "model"))
    served = ServedModel(delay_risk.NAME, "1", ["champion"], model, memo_rows=1_000)
    scored = frame[2_500:].drop(columns="label")
    expected = trained.predict_proba(scored)
    np.testing.assert_allclose(served.probability(served.matrix(scored)), expected)
    x = served.matrix_from_records(records(scored))
    np.testing.assert_allclose(served.probability(x), expected)
    contrib = served.request_contributions(x)
    np.testing.assert_allclose(served.request_contributions(x), contrib)
    np.testing.assert_allclose(served.probability_from_contributions(contrib, x), expected)
    np.testing.assert_allclose(contrib, trained.contributions(scored).to_numpy())
    # The trees alone would not score so: the offset is the baseline's, not a constant.
    assert not np.allclose(served.calibrate(served._raw(x), x), expected)
