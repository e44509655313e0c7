"""Reason codes and plots on a tiny model whose drivers are known."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from training.calibrate import fit_calibrator
from training.explain import reason_codes, write_explanations
from training.fit import fit_lightgbm, layout_from_train
from training.model import CalibratedModel


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
    assert model.layout.frame(unseen)["carrier"].isna().all()
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
