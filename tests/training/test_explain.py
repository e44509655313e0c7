"""Reason codes and plots on a tiny model whose drivers are known."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from features.describe import DESCRIPTIONS, KINDS, describe, format_value, kind_of
from features.repo import feature_views
from models.served.classifier import CalibratedModel
from models.served.reasons import reason_codes
from training.calibrate import fit_calibrator
from training.explain import write_explanations
from training.fit import fit_lightgbm, layout_from_train


@pytest.fixture(scope="module")
def tiny():
    """Late parcels: driven by hours to the promise and the carrier; noise does nothing."""
    rng = np.random.default_rng(1)
    n = 3000
    frame = pd.DataFrame(
        {
            "hours_to_promise": rng.uniform(-10, 60, n),
            "carrier": rng.choice(["Swift", "Value", None], n),
            "noise": rng.normal(size=n),
        }
    )
    logit = -0.08 * frame["hours_to_promise"] + 1.5 * (frame["carrier"] == "Value") - 0.5
    frame["label"] = (rng.uniform(size=n) < 1 / (1 + np.exp(-logit))).astype(int)
    train, valid = frame.iloc[:2000], frame.iloc[2000:]
    layout = layout_from_train(train, ["hours_to_promise", "carrier", "noise"], ["carrier"])
    fitted = fit_lightgbm(train, valid, layout, params={"min_data_in_leaf": 20})
    calibrator = fit_calibrator("platt", fitted.raw_score(valid), valid["label"])
    words = {"hours_to_promise": "Hours left until the promised delivery", "carrier": "Carrier"}
    model = CalibratedModel(
        "tiny", fitted.booster, fitted.best_iteration, layout, calibrator, words
    )
    return model, valid


def test_categories_are_fixed_from_training(tiny) -> None:
    model, _ = tiny
    assert model.layout.categories["carrier"] == ("(missing)", "Swift", "Value")
    unseen = pd.DataFrame({"hours_to_promise": [5.0], "carrier": ["Brand new"], "noise": [0.0]})
    carrier = model.layout.features.index("carrier")
    assert np.isnan(model.layout.matrix(unseen)[:, carrier]).all()
    missing = pd.DataFrame({"hours_to_promise": [5.0], "carrier": [None], "noise": [0.0]})
    assert model.layout.matrix(missing)[0, carrier] == 0  # "(missing)" is a category
    assert 0.0 <= model.predict_proba(unseen)[0] <= 1.0


def test_reason_codes_name_the_drivers_in_words(tiny) -> None:
    model, valid = tiny
    rows = pd.DataFrame(
        {"hours_to_promise": [-5.0, 50.0], "carrier": ["Value", "Swift"], "noise": [0.0, 0.0]}
    )
    reasons = model.reasons(rows, k=2)
    top = reasons[0][0]
    assert top.feature in {"hours_to_promise", "carrier"}
    assert {r.feature for r in reasons[0]} == {"hours_to_promise", "carrier"}
    assert any(r.text == "Carrier: Value (raises the score)" for r in reasons[0])
    # A low-risk parcel has few or no reasons that raise its risk; "abs" explains it anyway.
    both = reason_codes(model.contributions(rows), rows, model.words, k=2, direction="abs")
    assert len(both[1]) == 2
    assert "lowers the score" in both[1][0].text
    contrib = model.contributions(valid)
    raw = model.raw_score(valid)
    # Contributions add up to the raw log-odds.
    assert np.allclose(1 / (1 + np.exp(-contrib.sum(axis=1))), raw, atol=1e-6)


def test_save_and_load_round_trip(tiny, tmp_path) -> None:
    model, valid = tiny
    loaded = CalibratedModel.load(model.save(tmp_path / "m"))
    assert np.allclose(loaded.predict_proba(valid), model.predict_proba(valid))
    assert loaded.layout == model.layout
    assert loaded.words == model.words


def test_write_explanations(tiny, tmp_path) -> None:
    model, valid = tiny
    paths = write_explanations(
        model.booster, model.layout, valid, model.words, tmp_path, rows=300, top=2
    )
    assert paths["shap_summary"].stat().st_size > 0
    assert len([k for k in paths if k.startswith("dependence_")]) == 2
    importance = pd.read_csv(paths["shap_importance"])
    assert importance["feature"].iloc[-1] == "noise"
    table = pd.read_csv(paths["reason_codes"])
    assert set(table.columns) >= {"row", "rank", "feature", "text"}


# A record as the users reported it: raw names and scientific notation in the reason texts.
REPORTED = {
    "hours_to_promise": -1180.0,
    "last_order_amount": 1550.0,
    "orders_per_day": 0.00922,
    "expected_orders_missed": 2.35,
    "lane_late_rate_28d": 0.125,
    "orders_total": 3.0,
    "tenure_days": 1250.4,
    "decision_month": 3.0,
    "wait_s_mean": 200.0,
    "category_in_order": 1.0,
}
# The words models trained before the fix stored (Feast descriptions; none for the
# derived rates, hours where the value is now shown in days).
STORED_WORDS = {
    "hours_to_promise": "Hours left until the promised delivery",
    "last_order_amount": "Amount of the latest order",
    "lane_late_rate_28d": (
        "Late share of the lane's parcels whose outcome became known in the trailing 28 days"
    ),
    "orders_total": "Orders placed so far",
    "tenure_days": "Days since signup",
    "wait_s_mean": "Mean wait before handling, seconds",
    "category_in_order": "Tracked order holds the category",
}
REPORTED_TEXTS = [
    "Promised delivery: 49 days ago (raises the score)",
    "Amount of the latest order: 1,550.00 (raises the score)",
    "Ordering rate since the first order: 0.281 a month (raises the score)",
    "Orders the customer's usual rate expected since the latest one: 2.35 (raises the score)",
    "Late share of the lane's parcels whose outcome became known in the trailing 28 days: "
    "12.5% (raises the score)",
    "Orders placed so far: 3 (raises the score)",
    "Time since signup: 3.4 years (raises the score)",
    "Month of the decision: March (raises the score)",
    "Mean wait before handling: 3 minutes (raises the score)",
    "Tracked order holds the category: yes (raises the score)",
]


def reported_contributions() -> pd.DataFrame:
    """Contributions ranking the reported features in their order, all raising the score."""
    names = list(REPORTED)
    values = np.linspace(1.0, 0.1, len(names))
    return pd.DataFrame([[*values, -1.0]], columns=[*names, "bias"])


def test_reason_texts_are_worded_for_people() -> None:
    data = pd.DataFrame([REPORTED])
    reasons = reason_codes(reported_contributions(), data, STORED_WORDS, k=len(REPORTED))[0]
    assert [r.text for r in reasons] == REPORTED_TEXTS
    # Clients key on the raw feature name; only the text is for people.
    assert [r.feature for r in reasons] == list(REPORTED)
    for r in reasons:
        assert r.feature not in r.text
        assert not re.search(r"\de[+-]?\d", r.text), r.text


def test_reason_texts_lowering_the_score_and_missing_values() -> None:
    contrib = pd.DataFrame([[-0.4, 0.1, 0.0]], columns=["hours_to_promise", "carrier", "bias"])
    data = pd.DataFrame({"hours_to_promise": [30.0], "carrier": [None]})
    (reasons,) = reason_codes(contrib, data, {}, k=2, direction="abs")
    assert [r.text for r in reasons] == [
        "Promised delivery: in 30 hours (lowers the score)",
        "Carrier: unknown (raises the score)",
    ]


@pytest.mark.parametrize(
    ("name", "value", "shown"),
    [
        ("hours_to_promise", -1180, "49 days ago"),
        ("hours_to_promise", 0.263, "in 16 minutes"),
        ("hours_to_promise", 5.5, "in 5.5 hours"),
        ("hours_in_transit", 54.3, "2.3 days"),
        ("hours_since_last_scan", 1.0, "1 hour"),
        ("days_since_last_order", 0.25, "6 hours"),
        ("days_since_last_order", 45.6, "46 days"),
        ("monetary_total", 1234567.891, "1,234,567.89"),
        ("order_total", 12.5, "12.50"),
        ("category_spend_share", 0.00922, "0.9%"),
        ("carrier_late_rate_7d", 0.0004, "0.04%"),
        ("fcr_rate", 1.0, "100%"),
        ("discount", 0.15, "15%"),
        ("nps_pct", 42.0, "42%"),
        ("orders_total", np.float64(1234.0), "1,234"),
        ("contacts_complaint_90d", np.int64(2), "2"),
        ("scans_so_far", 3.0, "3"),
        ("signup_epoch", 1_767_225_600.0, "1 Jan 2026"),
        ("distance_km", 1234.5, "1,234 km"),
        ("weight_g", 1250.0, "1.25 kg"),
        ("dispatch_weekday", 0, "Monday"),
        ("dispatch_hour", 7, "07:00"),
        ("decision_month", 12.0, "December"),
        ("consent_marketing", True, "yes"),
        ("parcel_late", 0.0, "no"),
        ("stage", "in_transit", "in transit"),
        ("timezone", "America/Sao_Paulo", "America/Sao_Paulo"),
        ("csat_mean", 4.25, "4.25"),
        ("some_new_feature", 0.000123456, "0.000123"),
        ("some_new_feature", 1.5e12, "1,500,000,000,000"),
        ("some_new_feature", 1e-12, "0"),
        ("some_new_feature", None, "unknown"),
        ("some_new_feature", float("nan"), "unknown"),
        ("some_new_feature", pd.NA, "unknown"),
    ],
)
def test_values_are_formatted_by_kind(name, value, shown) -> None:
    assert format_value(name, value) == shown


def test_no_value_of_any_kind_is_shown_in_scientific_notation() -> None:
    names = [*DESCRIPTIONS, *KINDS, "x", "x_rate", "x_amount", "x_hours", "x_days", "x_s"]
    names += ["x_total", "x_epoch", "x_pct", "x_per_day", "x_km", "x_g", "x_hour"]
    values = [0.0, -0.0, 1e-15, 3.3e-7, 0.00922, 0.5, 1.0, 7.0, 99.99, 1e5, 1e9, -1180.0, 1e15]
    for name in names:
        for value in values:
            shown = format_value(name, value)
            assert not re.search(r"\de[+-]?\d", shown), (name, value, shown)
            assert shown != "-0", (name, value)


class _Views:
    """The repository's feature views by name, as `FeatureStore.get_feature_view` gives."""

    def __init__(self) -> None:
        self.views = {v.name: v for v in feature_views()}

    def get_feature_view(self, name: str):
        return self.views[name]


def _served_features() -> dict[str, tuple[list[str], dict[str, str]]]:
    """Every model's features (as training builds its list) and its words (as training
    stores them: derived words, Feast descriptions, the spec's own)."""
    from features.repo import services
    from features.store.retrieval import feature_names
    from models import churn, delay_risk, delivery_estimate, next_best_offer
    from training.data import feature_words

    out = {}
    for module in (delay_risk, churn, delivery_estimate, next_best_offer):
        spec = module.SPEC
        service = getattr(services, spec.feature_service)
        retrieved = [f for f in feature_names(None, service) if f not in spec.exclude]
        features = [*retrieved, *spec.derived]
        if module is next_best_offer:
            features = [*next_best_offer.DECISION_COLUMNS, *features]
        words = {**feature_words(_Views(), service), **spec.words}
        out[spec.name] = (features, words)
    return out


DURATION_UNITS = re.compile(r"\b(seconds?|minutes?|hours?|days?|epoch)\b", re.IGNORECASE)


def test_every_served_feature_is_described_in_words() -> None:
    served = _served_features()
    assert set(served) == {"delay_risk", "churn", "delivery_estimate", "next_best_offer"}
    for model, (features, words) in served.items():
        assert features
        for name in features:
            text = describe(name, words)
            # Described by a view, the model or `DESCRIPTIONS`: not the name made words.
            assert name in DESCRIPTIONS or words.get(name), (model, name)
            assert text, (model, name)
            assert text != name, (model, name)
            assert "_" not in text, (model, name, text)
            if kind_of(name) in {"seconds", "minutes", "hours", "days", "hours_until"}:
                # The value is shown in the unit that reads best: the words name none.
                assert not DURATION_UNITS.search(text), (model, name, text)


DEMO_FEATURES = sorted(
    (Path(__file__).parents[2] / "data" / "mlflow" / "artifacts").glob(
        "*/*/artifacts/data/features.json"
    )
)


@pytest.mark.skipif(not DEMO_FEATURES, reason="no trained demo models under data/")
def test_models_trained_before_the_fix_get_words_too() -> None:
    """Already trained models keep the words they stored (none for some derived features,
    hours where the value is now shown in days): their reasons are worded all the same."""
    for path in DEMO_FEATURES:
        stored = json.loads(path.read_text())
        words = {f["name"]: f["description"] for f in stored}
        for name in words:
            text = describe(name, words)
            assert text != name, (path, name)
            assert "_" not in text, (path, name, text)
            if kind_of(name) in {"seconds", "minutes", "hours", "days", "hours_until"}:
                assert not DURATION_UNITS.search(text), (path, name, text)
