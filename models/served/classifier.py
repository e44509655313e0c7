"""The calibrated binary classifier: booster, calibrator and feature layout as one object.

This is what the registry stores (wrapped as an MLflow pyfunc, `PyfuncModel`) and what
serving loads: it takes rows as the feature store and `add_time_features` give them
(strings for categories, numbers for the rest) and returns calibrated probabilities, the
SHAP contributions behind them, and reason codes in words.
"""

from __future__ import annotations

import json
import pickle
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import lightgbm as lgb
import mlflow.pyfunc
import numpy as np
import pandas as pd

from models import MODELS
from models.served.calibration import ArmCalibration, Calibrator, calibrate_by_arm, logit
from models.served.encoding import FeatureLayout
from models.served.reasons import Reason, contributions, reason_codes

BOOSTER_FILE = "booster.txt"
CALIBRATOR_FILE = "calibrator.pkl"
# Written only by a model calibrated per arm; a model without it calibrates every row alike.
ARM_CALIBRATION_FILE = "arm_calibration.pkl"
META_FILE = "model.json"
# A baseline's probabilities are clipped to this far from 0 and 1 before their log-odds
# start the trees: a state with no late parcel yet must not start at minus infinity.
OFFSET_CLIP = 1e-3


@dataclass(frozen=True)
class BaselineStart:
    """What a model's trees start from: the log-odds of its spec's baseline (`MODELS[name]`,
    found again by the name after a save: the registry stores no Python object), with
    `fallback` for a row the baseline knows no rate of. The fallback is the training
    window's rate, fixed with the model: the baseline's own last resort, the mean of the
    rows scored together, would make one row's score depend on the rows asked with it."""

    name: str
    fallback: float

    def __call__(self, frame: pd.DataFrame) -> np.ndarray:
        return MODELS[self.name].baseline(frame, fallback=self.fallback)

    def to_dict(self) -> dict[str, object]:
        """JSON-serialisable form."""
        return {"baseline_of": self.name, "fallback": self.fallback}


def offset_log_odds(
    offset: Callable[[pd.DataFrame], np.ndarray], layout: FeatureLayout, x: np.ndarray
) -> np.ndarray:
    """Log-odds of `offset`'s probabilities of the rows the input matrix `x` encodes: the
    offset reads numeric features by name, as the matrix holds them (categories are codes
    there), so a service that holds only the matrix adds what training added."""
    return logit(offset(pd.DataFrame(x, columns=list(layout.features))), OFFSET_CLIP)


def boosted_probability(
    booster: lgb.Booster,
    layout: FeatureLayout,
    x: np.ndarray,
    num_iteration: int,
    offset: Callable[[pd.DataFrame], np.ndarray] | None,
) -> np.ndarray:
    """The booster's probabilities of the rows `x` encodes, its trees added to the log-odds
    of `offset`'s probabilities where the trees were fitted from them."""
    if offset is None:
        return booster.predict(x, num_iteration=num_iteration)
    raw = booster.predict(x, num_iteration=num_iteration, raw_score=True)
    return 1.0 / (1.0 + np.exp(-(raw + offset_log_odds(offset, layout, x))))


@dataclass
class CalibratedModel:
    """A LightGBM booster followed by a probability calibrator.

    Attributes:
        name: The model's name (its registry name).
        booster: The fitted booster.
        best_iteration: Trees used when predicting.
        layout: Input columns and fixed categories.
        calibrator: Raw probability → calibrated probability.
        words: Feature → description, for reason codes.
        arm_calibration: Calibrators per arm of an experiment, applied instead of
            `calibrator` where they exist (None: `calibrator` for every row).
        offset: Rows → the probabilities whose log-odds the trees started from: the
            model's declared baseline (`ModelSpec.offset_rule`, a `BaselineStart` for a
            model to save; None: the trees alone).
    """

    name: str
    booster: lgb.Booster
    best_iteration: int
    layout: FeatureLayout
    calibrator: Calibrator
    words: dict[str, str] = field(default_factory=dict)
    arm_calibration: ArmCalibration | None = None
    offset: Callable[[pd.DataFrame], np.ndarray] | None = None

    @property
    def features(self) -> list[str]:
        """Input columns the model reads."""
        return list(self.layout.features)

    def raw_score(self, data: pd.DataFrame) -> np.ndarray:
        """Uncalibrated probabilities."""
        return boosted_probability(
            self.booster, self.layout, self.layout.matrix(data), self.best_iteration, self.offset
        )

    def predict_proba(self, data: pd.DataFrame) -> np.ndarray:
        """Calibrated probability of the positive class for each row."""
        x = self.layout.matrix(data)
        raw = boosted_probability(self.booster, self.layout, x, self.best_iteration, self.offset)
        return self.calibrate(raw, x)

    def calibrate(self, raw: np.ndarray, x: np.ndarray) -> np.ndarray:
        """Calibrated probabilities of raw ones, given the rows' input matrix (which says
        each row's arm when the model is calibrated per arm)."""
        arms = self.arm_calibration
        if arms is None:
            return self.calibrator(raw)
        control = arms.control_rows(self.layout.features, self.layout.codes[arms.feature], x)
        return calibrate_by_arm(
            raw, control, self.calibrator, arms.control_calibrator, arms.treated_calibrator
        )

    def contributions(self, data: pd.DataFrame) -> pd.DataFrame:
        """SHAP contributions (log-odds of the raw model) per row and feature, plus `bias`
        (with the baseline's log-odds where the trees started from them)."""
        values = contributions(self.booster, self.layout, data, self.best_iteration)
        if self.offset is not None:
            values["bias"] += offset_log_odds(self.offset, self.layout, self.layout.matrix(data))
        return values

    def reasons(self, data: pd.DataFrame, k: int = 3, direction: str = "up") -> list[list[Reason]]:
        """Top-k reason codes per row, in words (see `models.served.reasons.reason_codes`)."""
        return reason_codes(self.contributions(data), data, self.words, k=k, direction=direction)

    def input_frame(self, data: pd.DataFrame) -> pd.DataFrame:
        """The feature columns as the model's signature declares them."""
        return self.layout.input_frame(data)

    def save(self, folder: Path) -> Path:
        """Write the model as plain files: LightGBM text, pickled calibrator (and per-arm
        calibrators when it has them), JSON layout."""
        folder.mkdir(parents=True, exist_ok=True)
        self.booster.save_model(folder / BOOSTER_FILE, num_iteration=self.best_iteration)
        with open(folder / CALIBRATOR_FILE, "wb") as handle:
            pickle.dump(self.calibrator, handle)
        if self.arm_calibration is not None:
            with open(folder / ARM_CALIBRATION_FILE, "wb") as handle:
                pickle.dump(self.arm_calibration, handle)
        meta = {
            "name": self.name,
            "best_iteration": self.best_iteration,
            "layout": self.layout.to_dict(),
            "calibration": self.calibrator.method,
            "words": self.words,
        }
        if self.arm_calibration is not None:
            meta["arm_calibration"] = self.arm_calibration.describe()
        if self.offset is not None:
            if not isinstance(self.offset, BaselineStart):
                raise ValueError("a model's offset is saved as a BaselineStart only")
            meta["offset"] = self.offset.to_dict()
        (folder / META_FILE).write_text(json.dumps(meta, indent=2))
        return folder

    @staticmethod
    def load(folder: Path) -> CalibratedModel:
        """Read a model written by `save`."""
        meta = json.loads((Path(folder) / META_FILE).read_text())
        booster = lgb.Booster(model_file=str(Path(folder) / BOOSTER_FILE))
        with open(Path(folder) / CALIBRATOR_FILE, "rb") as handle:
            calibrator = pickle.load(handle)
        arm_calibration = None
        # Models registered before per-arm calibration have no such file.
        if (Path(folder) / ARM_CALIBRATION_FILE).is_file():
            with open(Path(folder) / ARM_CALIBRATION_FILE, "rb") as handle:
                arm_calibration = pickle.load(handle)
        offset = None
        if meta.get("offset") is not None:
            start = meta["offset"]
            offset = BaselineStart(str(start["baseline_of"]), float(start["fallback"]))
        return CalibratedModel(
            name=meta["name"],
            booster=booster,
            best_iteration=int(meta["best_iteration"]),
            layout=FeatureLayout.from_dict(meta["layout"]),
            calibrator=calibrator,
            words=meta.get("words", {}),
            arm_calibration=arm_calibration,
            offset=offset,
        )


# The file MLflow runs to build `PyfuncModel` when it loads a logged classifier.
PYFUNC_CODE = Path(__file__).with_name("pyfunc_classifier.py")


class PyfuncModel(mlflow.pyfunc.PythonModel):
    """MLflow pyfunc wrapper of a `CalibratedModel` saved as plain files."""

    def load_context(self, context) -> None:
        """Load booster, calibrator and layout from the logged artifacts."""
        self.model = CalibratedModel.load(Path(context.artifacts["model_dir"]))

    def predict(self, context, model_input: pd.DataFrame, params=None) -> np.ndarray:
        """Calibrated probabilities of the rows."""
        return self.model.predict_proba(model_input)
