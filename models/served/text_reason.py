"""The contact-reason text classifier as served: a fitted scikit-learn pipeline, the
contract's reasons and the confidence threshold as one object.

It takes rows with a `text` column and returns a probability per contract reason
(`predict_proba`), or the answer (`answer`): the most probable reason, its probability, and
whether it fell below the threshold and became `other`. What the registry stores is this
object saved as files (the pipeline pickled by joblib, the rest in JSON), wrapped as an
MLflow pyfunc (`ReasonPyfunc`) that returns the probability frame.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import joblib
import mlflow.pyfunc
import numpy as np
import pandas as pd

from models.contact_reason import CONFIDENCE_THRESHOLD, FALLBACK, NAME, REASONS, TEXT
from models.served.registry import load_champion

PIPELINE_FILE = "pipeline.joblib"
META_FILE = "model.json"
ANSWER_COLUMNS = ("reason", "confidence", "low_confidence")


@dataclass
class ReasonClassifier:
    """A fitted text pipeline whose classes are contract reasons.

    Attributes:
        name: The model's name (its registry name).
        pipeline: A fitted scikit-learn pipeline with `predict_proba` on raw texts.
        reasons: The reasons reported, in order (the contract's); a reason the pipeline
            never saw gets probability 0.
        threshold: Below this probability of the most likely reason the answer is `other`.
    """

    name: str
    pipeline: object
    reasons: tuple[str, ...] = REASONS
    threshold: float = CONFIDENCE_THRESHOLD

    def __post_init__(self) -> None:
        unknown = sorted(set(self.pipeline.classes_) - set(self.reasons))
        if unknown:
            raise ValueError(f"the pipeline answers reasons outside {self.reasons}: {unknown}")
        if FALLBACK not in self.reasons:
            raise ValueError(f"the reasons must include the fallback {FALLBACK!r}")

    def input_frame(self, data: pd.DataFrame) -> pd.DataFrame:
        """The text column as the model's signature declares it."""
        return pd.DataFrame({TEXT: data[TEXT].fillna("").astype(str).to_numpy()})

    def predict_proba(self, data: pd.DataFrame) -> pd.DataFrame:
        """Probability of each reason per row (columns: `reasons`)."""
        texts = self.input_frame(data)[TEXT]
        raw = self.pipeline.predict_proba(texts)
        frame = pd.DataFrame(0.0, index=range(len(texts)), columns=list(self.reasons))
        frame[list(self.pipeline.classes_)] = raw
        return frame

    def signature_output(self, data: pd.DataFrame) -> pd.DataFrame:
        """What the registered pyfunc returns for `data`."""
        return self.predict_proba(data)

    def answer(self, data: pd.DataFrame) -> pd.DataFrame:
        """The answer per row: `reason`, its `confidence`, and `low_confidence` (the most
        probable reason was below the threshold, so the reason is `other`)."""
        return answers_of(self.predict_proba(data).to_numpy(), self.reasons, self.threshold)

    def classify(self, texts: Sequence[str]) -> pd.DataFrame:
        """`answer` of plain texts."""
        return self.answer(pd.DataFrame({TEXT: list(texts)}))

    def save(self, folder: Path) -> Path:
        """Write the pipeline (joblib) and the reasons and threshold (JSON)."""
        folder.mkdir(parents=True, exist_ok=True)
        joblib.dump(self.pipeline, folder / PIPELINE_FILE)
        meta = {"name": self.name, "reasons": list(self.reasons), "threshold": self.threshold}
        (folder / META_FILE).write_text(json.dumps(meta, indent=2))
        return folder

    @staticmethod
    def load(folder: Path) -> ReasonClassifier:
        """Read a model written by `save`."""
        meta = json.loads((Path(folder) / META_FILE).read_text())
        return ReasonClassifier(
            name=meta["name"],
            pipeline=joblib.load(Path(folder) / PIPELINE_FILE),
            reasons=tuple(meta["reasons"]),
            threshold=float(meta["threshold"]),
        )


def answers_of(
    probabilities: np.ndarray, reasons: Sequence[str], threshold: float = CONFIDENCE_THRESHOLD
) -> pd.DataFrame:
    """Answers from a probability matrix (rows × `reasons`): the most probable reason, or
    `other` flagged low-confidence when its probability is below `threshold`."""
    probabilities = np.asarray(probabilities, dtype=np.float64)
    best = probabilities.argmax(axis=1)
    confidence = probabilities[np.arange(len(best)), best]
    low = confidence < threshold
    reason = np.where(low, FALLBACK, np.asarray(reasons, dtype=object)[best])
    return pd.DataFrame({"reason": reason, "confidence": confidence, "low_confidence": low})


# The file MLflow runs to build `ReasonPyfunc` when it loads a logged text classifier.
PYFUNC_CODE = Path(__file__).with_name("pyfunc_text_reason.py")


class ReasonPyfunc(mlflow.pyfunc.PythonModel):
    """MLflow pyfunc wrapper of a `ReasonClassifier`: texts in, a probability per reason out."""

    def load_context(self, context) -> None:
        """Load the pipeline, reasons and threshold from the logged artifacts."""
        self.model = ReasonClassifier.load(Path(context.artifacts["model_dir"]))

    def predict(self, context, model_input: pd.DataFrame, params=None) -> pd.DataFrame:
        """Probability of each reason per row."""
        return self.model.predict_proba(model_input)


def champion_classifier(tracking_uri: str) -> ReasonClassifier:
    """The registered champion of the contact-reason classifier.

    Raises:
        ModelUnavailableError: No champion is registered, or the registry cannot be reached.
    """
    return load_champion(NAME, tracking_uri)[1]
